"""The card profile: everything pinloop knows about one kind of card, as data.

A :class:`CardProfile` is what the generic engine (scenario loader and schema, runner, guard,
targets, reports) asks when it needs to know something about the card: its applications and
their AIDs, its PIN objects (where each is, its format, its maximum of tries and where that
figure comes from, how it is changed), the named PIN sets a scenario may run for, which key
signs and which certificate holds its public key, whether the status query is free, the
environment variables a real card's PINs come from, what reports call things, and how a real
card is brought to its starting state.

Data flows one way: a card profile is read by the emulator that implements it, by the targets
that serve it, and from the target by everything else. Nothing here imports the emulator.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from harness.apdu.model import CommandAPDU
from harness.cards.facts import ASSERTED, Confidence, Fact, max_tries_fact_id
from harness.secret import Secret


@dataclass(frozen=True, slots=True)
class PinFormat:
    """Lengths and characters a PIN object accepts."""

    name: str
    min_len: int
    max_len: int
    charset: frozenset[int]

    def length_ok(self, value: bytes) -> bool:
        return self.min_len <= len(value) <= self.max_len

    def charset_ok(self, value: bytes) -> bool:
        return all(b in self.charset for b in value)

    def accepts(self, value: bytes) -> bool:
        return self.length_ok(value) and self.charset_ok(value)

    @property
    def letters(self) -> bool:
        """Whether the format admits upper-case letters (so that ``lower`` means something)."""
        return any(chr(b) in string.ascii_uppercase for b in self.charset)

    def describe(self) -> str:
        n = str(self.min_len) if self.min_len == self.max_len else f"{self.min_len}-{self.max_len}"
        return f"{n} characters of {self.name}"


DIGITS = frozenset(string.digits.encode())
UPPER_ALNUM = frozenset((string.ascii_uppercase + string.digits).encode())


def digits(n: int, m: int | None = None) -> PinFormat:
    """``n`` (to ``m``) decimal digits."""
    return PinFormat("0-9", n, n if m is None else m, DIGITS)


@dataclass(frozen=True, slots=True)
class PinChange:
    """The command that sets a new value of a PIN after a VERIFY of it (P2 names the PIN)."""

    name: str
    cla: int
    ins: int
    p1: int

    def command(self, new: bytes | Secret, *, sfi: int | None = None) -> CommandAPDU:
        data = new.reveal() if isinstance(new, Secret) else new
        return CommandAPDU(self.cla, self.ins, self.p1, 0x80 if sfi is None else 0x80 | sfi, data)

    def describe(self) -> str:
        return f"{self.cla:02X} {self.ins:02X} {self.p1:02X} 80"


@dataclass(frozen=True, slots=True)
class Application:
    id: str
    aid: bytes
    label: str


@dataclass(frozen=True, slots=True)
class PinSpec:
    """A PIN object (an IEF holding reference data) and its rules."""

    id: str
    app: str
    fid: int
    format: PinFormat
    #: its maximum of tries; None where no figure is established (an emulated card takes it
    #: from its card config, a real card's is observed: :attr:`tries_fact`)
    max_tries: int | None
    #: how its value is changed after a VERIFY; None: it cannot be (a number on the card face)
    change: PinChange | None
    #: whether the lab's re-initialisation may set a new value (not only unblock it)
    settable: bool
    label: str
    #: where the maximum comes from (or why it is not known)
    tries_source: str = ""
    tries_confidence: Confidence = Confidence.CONFIRMED

    def __post_init__(self) -> None:
        if self.max_tries is None and self.tries_confidence >= ASSERTED:
            raise ValueError(f"PIN {self.id}: an established maximum of tries needs its figure")
        if self.max_tries is not None and not 1 <= self.max_tries <= 15:
            raise ValueError(f"PIN {self.id}: a maximum of tries is 1 to 15 (63 Cx)")

    @property
    def sfi(self) -> int:
        return self.fid  # profiles keep PIN EFs in 0001-001E, so FID == SFI (checked below)

    @property
    def tries_fact(self) -> Fact:
        """The fact "the maximum of tries of this PIN", with its provenance."""
        figure = f"{self.max_tries}" if self.max_tries is not None else "not known"
        return Fact(
            max_tries_fact_id(self.id),
            f"the maximum of tries of {self.id} ({self.label}) is {figure}",
            self.tries_confidence,
            self.tries_source,
            self.max_tries,
        )

    @property
    def established_max(self) -> int | None:
        """The maximum of tries a check on a real card may assume (None: observe it)."""
        return self.max_tries if self.tries_confidence >= ASSERTED else None


class FileKind(Enum):
    TRANSPARENT = "transparent"
    RECORD = "record"
    KEY = "key"  # a private key; used by COMPUTE DIGITAL SIGNATURE, never readable
    INTERNAL = "internal"  # other internal objects (key references), never readable


@dataclass(frozen=True, slots=True)
class FileSpec:
    """An EF other than a PIN. ``access`` lists PIN ids of which any one opens it."""

    app: str
    fid: int
    kind: FileKind
    content: str  # key into an emulated card's contents / keys
    access: tuple[str, ...] = ()
    label: str = ""


@dataclass(frozen=True, slots=True)
class DFLayout:
    """Everything addressable inside one application, by FID."""

    app: Application
    pins: Mapping[int, PinSpec]
    files: Mapping[int, FileSpec]


@dataclass(frozen=True, slots=True)
class SignKey:
    """A private key that signs (COMPUTE DIGITAL SIGNATURE), and the EF of its certificate."""

    app: str
    key_fid: int
    cert_fid: int


@dataclass(frozen=True, slots=True)
class GuardFacts:
    """The card knowledge the real-card guard (:mod:`harness.safety.guard`) runs on."""

    #: application id → AID (a SELECT by DF name may give a prefix of it)
    applications: Mapping[str, bytes]
    #: (application id, FID == SFI) → PIN id
    pins: Mapping[tuple[str, int], str]
    #: PIN id → (application id, FID)
    where: Mapping[str, tuple[str, int]]
    #: (CLA, INS) of commands that present no PIN and never touch a retry counter
    safe: frozenset[tuple[int, int]]
    #: (CLA, INS) of VERIFY
    verify: tuple[int, int]
    #: (CLA, INS) of commands that change a PIN's value and may spend a try
    change: frozenset[tuple[int, int]]
    #: (CLA, INS) of commands that re-initialise a PIN and may spend a try
    reset: frozenset[tuple[int, int]]
    #: PIN id → its maximum of tries, where that fact is established; the others are observed
    #: on each card, never assumed
    max_tries: Mapping[str, int]
    #: PIN id → (CLA, INS, P1) of the command that changes it after a VERIFY (P2 80)
    change_command: Mapping[str, tuple[int, int, int]]
    #: how an operator restores a blocked PIN of this card
    unblock_hint: str
    #: the empty VERIFY answers ``63 Cx`` without spending a try
    status_query_free: bool = True
    #: a correct VERIFY puts the counter back to its maximum
    verify_restores: bool = True


@dataclass(frozen=True, slots=True)
class RealCardStart:
    """How a real card of this kind is brought to a scenario's starting state, and what the
    guard may rely on while it is (each a fact of the card, with its source in the profile)."""

    #: the empty VERIFY (``00 20 00 80``) answers ``63 Cx`` without spending a try
    status_query_free: bool
    #: a correct VERIFY puts the counter back to its maximum
    verify_restores: bool
    #: how an operator restores a blocked PIN (shown when one is found blocked)
    unblock_hint: str


@dataclass(frozen=True, slots=True)
class ReportLabels:
    """What reports call the card (Allure's parent suite, the summary)."""

    card: str
    #: an Allure epic for a scenario whose PINs are in several applications
    several_applications: str = "several applications"


@dataclass(frozen=True, eq=False)
class CardProfile:
    """One kind of card. Frozen; compared and hashed by identity (one object per profile)."""

    #: short id, used on the command line (``--pinloop-card-profile``) and in reports
    name: str
    applications: tuple[Application, ...]
    pins: tuple[PinSpec, ...]
    labels: ReportLabels
    start: RealCardStart
    #: EFs other than PINs (what an emulated card holds)
    files: tuple[FileSpec, ...] = ()
    #: named PIN sets beyond the standard ones (``all``, ``changeable``, ``settable``)
    extra_pin_sets: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: key name (a scenario's ``sign: {key: NAME}``) → the key and its certificate
    sign_keys: Mapping[str, SignKey] = field(default_factory=dict)
    #: routes of an emulated card's re-initialisation test mechanism (``reinit: {route: R}``)
    reinit_routes: tuple[str, ...] = ()
    #: prefix of the environment variables that hold a real card's PINs
    pin_env_prefix: str = "PINLOOP_PIN_"
    #: (CLA, INS) of commands that present no PIN and never touch a retry counter
    safe_commands: frozenset[tuple[int, int]] = frozenset()
    verify_command: tuple[int, int] = (0x00, 0x20)
    #: (CLA, INS) of commands that re-initialise a PIN and may spend a try
    reset_commands: frozenset[tuple[int, int]] = frozenset()
    #: ``module:ATTRIBUTE`` of the factory of this card's emulator (called with the name of a
    #: defect, or None; returns an :class:`~harness.cards.emulated.Emulation`); None: the
    #: built-in emulator (:mod:`harness.emulator`, the JPKI card)
    emulator: str | None = None
    #: the behaviours of the card that checks rest on, each with its provenance (the maxima
    #: of tries are the PINs' own: :attr:`PinSpec.tries_fact`)
    facts: tuple[Fact, ...] = ()
    #: what a step does (``verify:short``, ``verify:sfi``, ``status:sfi`` …: the features the
    #: step kinds name) → the fact a check of it rests on
    step_facts: Mapping[str, str] = field(default_factory=dict)
    #: PIN objects the card in the reader does not have (a lab's card profile says so):
    #: scenarios on them are skipped, sweeps leave them out
    absent: frozenset[str] = frozenset()
    #: PIN objects whose value the lab does not know: scenarios on them are skipped
    unknown_pins: frozenset[str] = frozenset()
    #: where this profile was declared (a lab's card profile: ``file:line``), for messages
    declared_in: str = ""
    #: the lab's name for its card (a lab's card profile), "" for the kind of card itself
    variant: str = ""

    def __post_init__(self) -> None:
        apps = [a.id for a in self.applications]
        pins = [p.id for p in self.pins]
        for what, ids in (("application", apps), ("PIN", pins)):
            if len(set(ids)) != len(ids):
                raise ValueError(f"card profile {self.name}: a {what} id given twice")
        where = [(p.app, p.fid) for p in self.pins]
        if len(set(where)) != len(where):
            raise ValueError(f"card profile {self.name}: two PINs in one EF")
        for p in self.pins:
            if p.app not in apps:
                raise ValueError(f"card profile {self.name}: {p.id} is in no application")
            if not 1 <= p.fid <= 0x1E:
                raise ValueError(f"card profile {self.name}: {p.id}'s EF is not an SFI")
        for name, members in self.pin_sets.items():
            if not members or set(members) - set(pins):
                raise ValueError(f"card profile {self.name}: PIN set {name} names unknown PINs")
        for key in self.sign_keys.values():
            if key.app not in apps:
                raise ValueError(f"card profile {self.name}: a sign key is in no application")
        ids = [f.id for f in self.all_facts]
        if len(set(ids)) != len(ids):
            raise ValueError(f"card profile {self.name}: a fact id given twice")
        for feature, fact in self.step_facts.items():
            if fact not in ids:
                raise ValueError(f"card profile {self.name}: {feature} rests on no fact {fact}")
        if (self.absent | self.unknown_pins) - set(pins):
            raise ValueError(f"card profile {self.name}: absent or unknown PINs it does not have")

    # -- lookups (made once) --------------------------------------------------------------
    @functools.cached_property
    def apps_by_id(self) -> Mapping[str, Application]:
        return {a.id: a for a in self.applications}

    @functools.cached_property
    def pins_by_id(self) -> Mapping[str, PinSpec]:
        return {p.id: p for p in self.pins}

    @property
    def all_facts(self) -> tuple[Fact, ...]:
        """Every fact of the card: its own, then each PIN's maximum of tries."""
        return self.facts + tuple(p.tries_fact for p in self.pins)

    @functools.cached_property
    def facts_by_id(self) -> Mapping[str, Fact]:
        return {f.id: f for f in self.all_facts}

    @functools.cached_property
    def present_pins(self) -> tuple[PinSpec, ...]:
        """The PIN objects the card has (all but :attr:`absent`)."""
        return tuple(p for p in self.pins if p.id not in self.absent)

    @functools.cached_property
    def pin_ids(self) -> tuple[str, ...]:
        return tuple(p.id for p in self.pins)

    @functools.cached_property
    def pin_at(self) -> Mapping[tuple[str, int], str]:
        """(application id, FID) → PIN id."""
        return {(p.app, p.fid): p.id for p in self.pins}

    @functools.cached_property
    def layout(self) -> Mapping[str, DFLayout]:
        return {
            a.id: DFLayout(
                a,
                {p.fid: p for p in self.pins if p.app == a.id},
                {f.fid: f for f in self.files if f.app == a.id},
            )
            for a in self.applications
        }

    @functools.cached_property
    def pin_sets(self) -> Mapping[str, tuple[str, ...]]:
        """Named PIN sets a scenario may run for (``for_each: {pin: SET}``)."""
        sets = {
            "all": tuple(p.id for p in self.pins),
            "changeable": tuple(p.id for p in self.pins if p.change is not None),
            "settable": tuple(p.id for p in self.pins if p.settable),
        }
        return {k: v for k, v in sets.items() if v} | dict(self.extra_pin_sets)

    @functools.cached_property
    def guard_facts(self) -> GuardFacts:
        return GuardFacts(
            applications={a.id: a.aid for a in self.applications},
            pins=self.pin_at,
            where={p.id: (p.app, p.fid) for p in self.pins},
            safe=self.safe_commands,
            verify=self.verify_command,
            change=frozenset((p.change.cla, p.change.ins) for p in self.pins if p.change),
            reset=self.reset_commands,
            max_tries={p.id: m for p in self.pins if (m := p.established_max) is not None},
            change_command={
                p.id: (p.change.cla, p.change.ins, p.change.p1) for p in self.pins if p.change
            },
            unblock_hint=self.start.unblock_hint,
            status_query_free=self.start.status_query_free,
            verify_restores=self.start.verify_restores,
        )

    def env_name(self, pin_id: str) -> str:
        """The environment variable that holds a real card's value of ``pin_id``."""
        return self.pin_env_prefix + re.sub(r"[^A-Z0-9]", "_", pin_id.upper())

    def __repr__(self) -> str:
        return f"CardProfile({self.name!r})"
