"""Power switches: how the lab takes power away from a card and gives it back.

A reader profile names one by its kind (``power_switch: {kind: …}`` in ``readers/*.yaml``);
without one a reader uses ``pcsc-unpower``. The kinds come from :data:`SWITCHES`: the built-in
ones below, and those a lab package declares under the entry-point group
``pinloop.power_switches`` (a :class:`SwitchKind`; :mod:`harness.registry`).

- ``pcsc-unpower``: PC/SC ``SCardDisconnect(SCARD_UNPOWER_CARD)``, then a new connection. It
  acts **between** commands only: pcsc-lite serialises the calls on one card handle, and the
  handle is held exclusively, so no second caller can cut a command that is running. Good for
  power-loss persistence checks, not for tearing.
- ``operator``: a person pulls the card when told to and puts it back; the harness sees both
  through ``SCardGetStatusChange`` with a deadline. Unattended (no terminal) it refuses at
  once instead of waiting for nobody.
- ``EmulatedPower`` (no profile needed): the emulated card's own supply, for the in-process
  target and, behind the simulated relay, for the pcscd target.
- ``relay``: a serial-controlled relay (or a USB hub port-power switch behind a small
  microcontroller) reached through any pyserial URL, switching the reader's or card's supply.
  It can cut in the middle of a command, at a chosen delay.

The relay protocol (ASCII lines ending in ``\\n``, one answer line per command, 8N1, the
baud rate of the URL; every answer within ``deadline`` seconds)::

    PING         ->  PONG <free text identifying the device>
    OFF <ch>     ->  OK OFF <ch>          channel <ch> (1..16) loses power
    ON <ch>      ->  OK ON <ch>
    STATE <ch>   ->  ON <ch> | OFF <ch>
    anything else -> ERR <reason>

``harness/lab/relay_sim.py`` implements it on a pty for tests and dry runs.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import serial

from harness.errors import CardPowerLost, ConfigError, HarnessError, TransportError
from harness.registry import Registry, UnknownName, of_type

if TYPE_CHECKING:
    from harness.cards.emulated import CardEmulator
    from harness.targets import Target


class PowerSwitchError(HarnessError):
    """The power switch did not do what it was told (a lab fault)."""


class RelayTimeout(PowerSwitchError):
    """The relay did not answer before its deadline."""


class PowerSwitch(Protocol):
    #: whether :meth:`cut` may be called while a command is running (tearing)
    mid_command: bool

    def describe(self) -> str: ...

    def cut(self) -> None:
        """Take power away from the card (returns once the switch confirmed it)."""

    def restore(self) -> None:
        """Give power back (the target then reaches the card again)."""

    def close(self) -> None: ...


class EmulatedPower:
    """The emulated card's supply: a cut takes effect at the card's next NVM write (the
    command in flight is torn there) and the card is unpowered until restored."""

    mid_command = True

    def __init__(self, card: CardEmulator, on_change: Callable[[bool], None] | None = None) -> None:
        self.card = card
        self.on_change = on_change

    def describe(self) -> str:
        return "the emulated card's supply"

    def set(self, on: bool) -> None:
        def gone(point: str, phase: str) -> None:
            raise CardPowerLost(point, phase)

        self.card.write_hook = None if on else gone
        if self.on_change is not None:
            self.on_change(on)

    def cut(self) -> None:
        self.set(False)

    def restore(self) -> None:
        self.set(True)

    def close(self) -> None:
        self.card.write_hook = None


class TimedCut:
    """Cuts ``switch`` ``delay_us`` after :meth:`fire`, from a thread of its own (armed at
    construction so that starting it costs nothing when the command goes out)."""

    def __init__(self, switch: PowerSwitch, delay_us: float) -> None:
        self.switch = switch
        self.delay_ns = int(delay_us * 1000)
        self.error: BaseException | None = None
        #: µs from fire() to the switch confirming the cut (its own latency included)
        self.confirmed_us: float | None = None
        self._go = threading.Event()
        self._t0 = 0
        self._thread = threading.Thread(target=self._run, name="power-cut", daemon=True)
        self._thread.start()

    def fire(self) -> None:
        self._t0 = time.perf_counter_ns()
        self._go.set()

    def _run(self) -> None:
        self._go.wait()
        # sleep, never spin: a spinning thread holds the GIL for up to 5 ms and would delay
        # the very command it is meant to cut (measured: 2 ms cuts landed before the VERIFY)
        left = self.delay_ns - (time.perf_counter_ns() - self._t0)
        if left > 0:
            time.sleep(left / 1e9)
        try:
            self.switch.cut()
            self.confirmed_us = (time.perf_counter_ns() - self._t0) / 1e3
        except BaseException as exc:  # re-raised by join() in the caller's thread
            self.error = exc

    def join(self, slack: float = 5.0) -> None:
        self._thread.join(self.delay_ns / 1e9 + slack)
        if self._thread.is_alive():
            raise PowerSwitchError(f"{self.switch.describe()}: the cut did not return")
        if self.error is not None:
            raise PowerSwitchError(f"{self.switch.describe()}: {self.error}") from self.error


class SerialRelay:
    """A relay speaking the protocol above over a pyserial URL."""

    mid_command = True

    def __init__(self, url: str, channel: int = 1, *, deadline: float = 1.0) -> None:
        if not 1 <= channel <= 16:
            raise PowerSwitchError(f"relay channel must be 1..16, got {channel}")
        self.url, self.channel, self.deadline = url, channel, deadline
        try:
            self._port = serial.serial_for_url(url, timeout=0.05, do_not_open=True)
            self._port.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PowerSwitchError(f"relay {url}: cannot open: {exc}") from None
        self._buffer = b""
        with contextlib.suppress(serial.SerialException, OSError):
            self._port.reset_input_buffer()
        try:
            self.identity = self.ask("PING", expect="PONG")
        except PowerSwitchError:
            self._port.close()
            raise

    def describe(self) -> str:
        return f"relay {self.url} channel {self.channel} ({self.identity})"

    def ask(self, command: str, *, expect: str) -> str:
        """Send one command line; its answer line, which must start with ``expect``."""
        try:
            self._port.write(command.encode() + b"\n")
            self._port.flush()
        except (serial.SerialException, OSError) as exc:
            raise PowerSwitchError(f"relay {self.url}: write failed: {exc}") from None
        end = time.monotonic() + self.deadline
        while b"\n" not in self._buffer:
            if time.monotonic() >= end:
                raise RelayTimeout(
                    f"relay {self.url}: no answer to {command!r} within {self.deadline} s"
                )
            try:  # one byte blocks until something arrives (≤ 50 ms), then what is waiting
                self._buffer += self._port.read(1)
                self._buffer += self._port.read(self._port.in_waiting)
            except (serial.SerialException, OSError) as exc:
                raise PowerSwitchError(f"relay {self.url}: read failed: {exc}") from None
        line, _, self._buffer = self._buffer.partition(b"\n")
        answer = line.decode("ascii", "replace").strip()
        if not answer.startswith(expect):
            raise PowerSwitchError(f"relay {self.url}: {command!r} answered {answer!r}")
        return answer

    def state(self) -> bool:
        """Whether the channel is powered."""
        return self.ask(f"STATE {self.channel}", expect="").startswith("ON")

    def cut(self) -> None:
        self.ask(f"OFF {self.channel}", expect=f"OK OFF {self.channel}")

    def restore(self) -> None:
        self.ask(f"ON {self.channel}", expect=f"OK ON {self.channel}")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._port.close()


class PcscUnpower:
    """``SCardDisconnect`` with ``SCARD_UNPOWER_CARD``; the target connects again."""

    mid_command = False

    def __init__(self, close: Callable[[], None]) -> None:
        self._close = close

    def describe(self) -> str:
        return "PC/SC disconnect with SCARD_UNPOWER_CARD"

    def cut(self) -> None:
        with contextlib.suppress(TransportError):
            self._close()

    def restore(self) -> None:
        pass  # the next connection powers the card

    def close(self) -> None:
        pass


def _terminal_say(text: str) -> None:
    print(f"\n[pinloop operator] {text}", file=sys.stderr, flush=True)


class OperatorSwitch:
    """A person pulls the card out and puts it back; the reader's state confirms each."""

    mid_command = False

    def __init__(
        self,
        reader: str,
        *,
        deadline: float = 60.0,
        say: Callable[[str], None] = _terminal_say,
        wait_for: Callable[[str, float, bool], object] | None = None,
        interactive: bool | None = None,
    ) -> None:
        from harness.transport.pcsc import wait_for_card

        self.reader, self.deadline, self.say = reader, deadline, say
        self._wait = wait_for or (lambda r, t, present: wait_for_card(r, t, present=present))
        self.interactive = (
            interactive if interactive is not None else os.isatty(sys.stderr.fileno())
        )

    def describe(self) -> str:
        return f"operator at {self.reader}"

    def _act(self, what: str, present: bool) -> None:
        if not self.interactive:
            raise PowerSwitchError(
                f"{self.reader}: this step needs an operator to {what}, and the run is "
                "unattended (no terminal); give the reader a relay in readers/ (power_switch)"
            )
        self.say(f"{what} ({self.reader}); waiting up to {self.deadline:.0f} s")
        try:
            self._wait(self.reader, self.deadline, present)
        except TransportError as exc:
            raise PowerSwitchError(f"{self.reader}: the operator did not {what}: {exc}") from None

    def cut(self) -> None:
        self._act("remove the card", present=False)

    def restore(self) -> None:
        self._act("insert the card again", present=True)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class SwitchSpec:
    """``power_switch:`` of a reader profile: which switch cuts this reader's card power, and
    how."""

    kind: str  # a name of SWITCHES: pcsc-unpower | operator | relay | a lab's own
    url: str = ""
    channel: int = 1
    off_ms: float = 500.0  # how long the power stays off
    deadline_s: float = 1.0  # relay answers; operator: 60 s per action
    source: str = ""
    #: what a lab's own kind reads (``options:`` of the profile's power_switch)
    options: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class SwitchKind:
    """One ``power_switch: {kind: …}`` of reader profiles: how to make its switch for a target
    from the profile's spec (``url``, ``channel``, ``deadline_s``, and ``options`` for a kind
    of the lab's own)."""

    make: Callable[[SwitchSpec, Target], PowerSwitch]
    #: whether its switch cuts a command while it runs (the target then has mid-command-cut)
    mid_command: bool
    #: the spec's keys it cannot do without, each with an example (``url: /dev/ttyUSB0``)
    needs: Mapping[str, str] = field(default_factory=dict)
    #: one line for the docs
    doc: str = ""


#: the power switches reader profiles may name (entry-point group ``pinloop.power_switches``)
SWITCHES: Registry[SwitchKind] = Registry(
    "pinloop.power_switches", "power switch", of_type(SwitchKind, "power switch")
)
SWITCHES.built_in(
    "pcsc-unpower",
    SwitchKind(
        lambda spec, target: PcscUnpower(target.transport.close),
        mid_command=False,
        doc="SCardDisconnect with SCARD_UNPOWER_CARD, between commands only (the default)",
    ),
)
SWITCHES.built_in(
    "operator",
    SwitchKind(
        lambda spec, target: OperatorSwitch(target.name, deadline=spec.deadline_s),
        mid_command=False,
        doc="a person pulls the card and puts it back, confirmed by the reader",
    ),
)
SWITCHES.built_in(
    "relay",
    SwitchKind(
        lambda spec, target: SerialRelay(spec.url, spec.channel, deadline=spec.deadline_s),
        mid_command=True,
        needs={"url": "url: /dev/ttyUSB0"},
        doc="a serial relay (the protocol above) on a pyserial URL; cuts mid-command",
    ),
)

#: the kind of a reader without ``power_switch:``
DEFAULT_KIND = "pcsc-unpower"


def switch_kind(name: str) -> SwitchKind:
    """The registered kind ``name``; a :class:`ConfigError` listing the known ones if none."""
    try:
        return SWITCHES.get(name)
    except UnknownName as exc:
        raise ConfigError(str(exc), expected="kind: " + " | ".join(exc.known)) from None


def power_switch(spec: SwitchSpec | None, target: Target) -> PowerSwitch:
    """The switch a reader profile's ``power_switch`` names for ``target`` (none:
    ``pcsc-unpower``)."""
    spec = spec if spec is not None else SwitchSpec(DEFAULT_KIND)
    return switch_kind(spec.kind).make(spec, target)
