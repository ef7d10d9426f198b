"""The exception tree of the harness.

Two roots decide how a test ends in a report:

- :class:`DeviceDefect` subclasses :class:`AssertionError`: the device under test (card or
  reader) misbehaved. pytest and Allure show the test as *failed*.
- :class:`HarnessError` is everything else that stops a run: the lab, the configuration, the
  infrastructure. Allure shows the test as *broken*.

Configuration errors carry the file and line they come from.
"""

from __future__ import annotations

from dataclasses import dataclass


class DeviceDefect(AssertionError):
    """The card or reader did something its specification forbids."""


class HarnessError(Exception):
    """A lab, configuration or infrastructure fault (not a defect of the device)."""


@dataclass(frozen=True)
class SourceLocation:
    """Where in a configuration file something was written (1-based line and column)."""

    path: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.path
        if self.column is None:
            return f"{self.path}:{self.line}"
        return f"{self.path}:{self.line}:{self.column}"


def shorten(text: str, limit: int = 300) -> str:
    """``text`` on one line, its middle cut out when it is longer than ``limit`` characters
    (the start and the end of a message say what it is about)."""
    text = text.replace("\r", " ").replace("\n", " ")
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head - 3
    return f"{text[:head]} … {text[-tail:]}"


class ConfigError(HarnessError):
    """A configuration or scenario file is wrong. Rendered as ``file:line: message``.

    Message and expectation are kept to a line each (a value quoted in a message may be as
    long as the file): the error stays one screen.
    """

    def __init__(
        self,
        message: str,
        location: SourceLocation | None = None,
        *,
        snippet: str | None = None,
        expected: str | None = None,
    ) -> None:
        self.message = shorten(message)
        self.location = location
        self.snippet = snippet
        self.expected = shorten(expected) if expected is not None else None
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.location}: {self.message}" if self.location else self.message
        parts = [head]
        if self.expected:
            parts.append(f"  expected: {self.expected}")
        if self.snippet:
            parts.extend("  | " + line for line in self.snippet.splitlines())
        return "\n".join(parts)


class APDUFormatError(HarnessError, ValueError):
    """Bytes that are not a well-formed command or response APDU."""


class CardStateError(HarnessError):
    """An emulated card's state file is missing, corrupt, or in use by another process."""


class CardPowerLost(HarnessError):
    """The card lost power in the middle of a command (an injected tear, or a real cut).

    The command's outcome is unknown to the host; the card must be powered on again.
    """

    def __init__(self, write_point: str, phase: str) -> None:
        self.write_point = write_point
        self.phase = phase
        super().__init__(f"card power lost {phase} write point {write_point!r}")


class CardNotPowered(HarnessError):
    """A command was sent to a card that is not powered on."""


class TransportError(HarnessError):
    """The path to the card failed; the card's state after the failed call is unknown."""


class TransportTimeout(TransportError):
    """A call to the reader or link did not return before its deadline."""


class NoCard(TransportError):
    """No card in the reader."""


class CardRemoved(TransportError):
    """The card left the reader (or the emulator behind a virtual reader went away)."""


class CardReset(TransportError):
    """Another party reset the card; the session (selection, verified state) is gone."""


class ReaderGone(TransportError):
    """The reader is unknown or was unplugged."""


class SharingViolation(TransportError):
    """Another process holds the card in exclusive mode."""


class DaemonGone(TransportError):
    """The PC/SC daemon is not running or went away."""


class StaleEmulator(TransportError):
    """The card in a virtual reader is not the emulator this run started."""
