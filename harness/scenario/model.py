"""Typed scenario model: what a ``*.pin.yaml`` file means after loading and expansion."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import SourceLocation


@dataclass(frozen=True)
class Literal:
    """A PIN value written in the scenario (emulated cards only)."""

    value: str


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
        parts = [f"{k}={v}" for k, v in self.__dict__.items() if v not in (None, False)]
        return ", ".join(parts) or "nothing"


@dataclass(frozen=True)
class Step:
    """Common to every step: where it is written, and what it expects."""

    where: SourceLocation
    snippet: str
    expect: Expect | None
    id: str | None

    @property
    def action(self) -> str:
        return type(self).__name__.lower()


@dataclass(frozen=True)
class Select(Step):
    pin: str | None = None
    app: str | None = None
    ef: int | None = None
    aid: bytes | None = None


@dataclass(frozen=True)
class Verify(Step):
    pin: str = ""
    values: tuple[Value, ...] = ()
    sfi: bool = False
    repeat: int = 1


@dataclass(frozen=True)
class Status(Step):
    pin: str = ""
    sfi: bool = False
    repeat: int = 1


@dataclass(frozen=True)
class Change(Step):
    pin: str = ""
    new: Value = "fresh"


@dataclass(frozen=True)
class Reinit(Step):
    pin: str = ""
    route: str = "window"
    new: Value = "fresh"


@dataclass(frozen=True)
class Power(Step):
    how: str = "cycle"


@dataclass(frozen=True)
class Read(Step):
    ef: int = 0
    sfi: bool = False
    offset: int = 0
    length: int = 256


@dataclass(frozen=True)
class Sign(Step):
    key: str = "auth"


@dataclass(frozen=True)
class Apdu(Step):
    raw: bytes = b""


@dataclass(frozen=True)
class OthersUnchanged(Step):
    pin: str = ""


@dataclass(frozen=True)
class Latency(Step):
    pin: str = ""
    samples: int = 50
    of: str = "status"


@dataclass(frozen=True)
class Tear(Step):
    pin: str = ""
    command: str = "verify"  # verify | change | reinit
    delays_us: tuple[float, ...] = ()  # timed cuts by the power switch instead of write points


@dataclass(frozen=True)
class Leak(Step):
    pin: str = ""
    samples: int = 300
    classes: str = "first-vs-last"


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

    @property
    def id(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.params.items())

    @property
    def pins(self) -> frozenset[str]:
        """Every PIN object a step of this scenario addresses."""
        return frozenset(getattr(s, "pin", "") for s in self.steps) - {"", None}
