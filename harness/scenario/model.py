"""Typed scenario model: what a ``*.pin.yaml`` file means after loading and expansion.

The scenario, the values and expectations every step shares, and the base of the steps; each
step kind's own model is in its module of :mod:`harness.steps`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import ClassVar

from harness.apdu.mask import render_raw_command
from harness.capabilities import TAG_REQUIRES, Capability
from harness.errors import SourceLocation


@dataclass(frozen=True)
class Literal:
    """A PIN value written in the scenario (emulated cards only); its repr hides it."""

    value: str = field(repr=False)


#: ``right``, ``wrong``, ``wrong-first``, ``wrong-last``, ``lower``, ``short``, ``long``,
#: ``new``, ``bad-charset``, ``fresh``, ``none`` or a :class:`Literal`
Value = str | Literal


@dataclass(frozen=True)
class Expect:
    sw: str | None = None
    tries: int | str | None = None
    blocked: bool | None = None
    verified: bool | None = None
    identical: bool = False
    length: int | None = None
    signature: str | None = None

    def describe(self) -> str:
        """What is expected, ``sw=63C0, tries=0, blocked=True`` (every key that is set: a
        ``tries`` of 0 and a ``blocked`` of false are expectations too); "" for nothing."""
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value is not f.default:
                parts.append(f"{f.name}={str(value).lower() if isinstance(value, bool) else value}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Count:
    """How many times a step repeats: ``n``, or (``of_max``) the PIN's maximum of tries less
    ``n`` (``max``, ``max-1``). The maximum is the card's: resolved when the step runs (a real
    card's may be observed only then), never when the file is loaded."""

    n: int = 1
    of_max: bool = False

    def times(self, max_tries: int) -> int:
        return max_tries - self.n if self.of_max else self.n

    def __str__(self) -> str:
        if not self.of_max:
            return str(self.n)
        return "max" if self.n == 0 else f"max-{self.n}"


#: one time (a step without ``repeat:``)
ONCE = Count()


@dataclass(frozen=True)
class Step:
    """Common to every step: where it is written, what it expects, and the card facts its
    checks rest on (:mod:`harness.cards.facts`: on a card that is not pinloop's emulator, a
    check that rests on a fact that is not established is observed, not asserted)."""

    #: the action word of the step's kind (each kind's model sets it; :mod:`harness.steps`)
    action: ClassVar[str] = ""

    where: SourceLocation
    snippet: str
    expect: Expect | None
    id: str | None
    #: ids of the card profile's facts the step's checks rest on (its own ``rests_on:``, the
    #: scenario's, and what the card profile says the step's features rest on)
    facts: tuple[str, ...] = ()

    def title(self) -> str:
        """The step as reports name it, from its typed model: its action, what its kind sets
        beyond the defaults (parameters resolved; literal PINs and PIN material in raw APDUs
        masked), then what it expects: ``verify: pin=jpki-sign, value=wrong, repeat=4``."""
        common = {f.name for f in fields(Step)}
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in common or value == f.default or value == () or value is None:
                continue
            parts.append(f.name if value is True else f"{f.name}={_shown(value)}")
        text = self.action + (": " + ", ".join(parts) if parts else "")
        expected = self.expect.describe() if self.expect is not None else ""
        if expected:
            text += f"; expect {expected}"
        return text


def _shown(value: object) -> str:
    """One setting of a step for its title: never a PIN."""
    if isinstance(value, Literal):
        return "literal:****"
    if isinstance(value, Count):
        return str(value)
    if isinstance(value, bytes | bytearray):  # a raw APDU: its PIN material masked
        return render_raw_command(bytes(value))
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, tuple | list | frozenset | set):
        items = sorted(value, key=str) if isinstance(value, frozenset | set) else value
        return "[" + ", ".join(_shown(v) for v in items) + "]"
    if is_dataclass(value) and not isinstance(value, type):
        inner = ", ".join(f"{f.name}={_shown(getattr(value, f.name))}" for f in fields(value))
        return "{" + inner + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_shown(v)}" for k, v in value.items()) + "}"
    return str(value)


@dataclass(frozen=True)
class Scenario:
    """One runnable scenario: a file's steps for one set of parameters."""

    name: str
    rule: str
    path: str
    line: int
    steps: tuple[Step, ...]
    params: dict[str, str] = field(default_factory=dict)
    description: str = ""
    severity: str = "normal"
    tags: frozenset[str] = frozenset()
    #: the card profile it was loaded for (its PINs are that card's)
    card: str = ""
    #: what its steps and its ``requires:`` need of a target beyond its tags: each capability
    #: with what needs it (``tear step, line 12``)
    needs: tuple[tuple[Capability, str], ...] = ()

    @property
    def id(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.params.items())

    @property
    def requires(self) -> dict[Capability, str]:
        """Every capability a target needs to run this scenario, each with what needs it: its
        tags first (:data:`~harness.capabilities.TAG_REQUIRES`), then its steps."""
        out: dict[Capability, str] = {}
        for tag in sorted(self.tags):
            for capability in sorted(TAG_REQUIRES.get(tag, ())):
                out.setdefault(capability, f"tag {tag}")
        for capability, why in self.needs:
            out.setdefault(capability, why)
        return out

    @property
    def pins(self) -> frozenset[str]:
        """Every PIN object a step of this scenario addresses."""
        return frozenset(getattr(s, "pin", "") for s in self.steps) - {"", None}

    @property
    def facts(self) -> tuple[str, ...]:
        """Every card fact a step's checks rest on, in the order the steps name them."""
        return tuple(dict.fromkeys(f for s in self.steps for f in s.facts))
