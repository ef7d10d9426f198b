"""What every target is: a card a scenario runs against, with what the runner needs to know
about it, and the real-card part (:class:`GuardedCard`) a target of a card that is not the
emulator mixes in.

A target declares what it can do (:attr:`Target.capabilities`, :mod:`harness.capabilities`):
its class's :attr:`~Target.declared` capabilities with its reader profile's. What only some
cards allow is reached through the target's typed methods (:meth:`~Target.verified`,
:meth:`~Target.reset_code`, :meth:`~Target.write_points`), each refused on a target without
its capability (:func:`harness.safety.refuse_without`).

A target gives each scenario a card in a known state: emulated targets restore a freshly
personalised card before every scenario; on a real card the guard puts every PIN the scenario
uses back to its maximum with the lab's PIN, and puts back what the scenario spent at its end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import ClassVar, Protocol, runtime_checkable

from harness.capabilities import READER, Capability
from harness.cards.emulated import WriteHook
from harness.cards.profile import CardProfile
from harness.errors import HarnessError
from harness.lab.power import PowerSwitch, power_switch
from harness.safety import refuse_without
from harness.safety.guard import RealCardGuard, Spend
from harness.secret import Secret
from harness.targets.reader_profile import ReaderProfile
from harness.timing import ApduTime
from harness.transport.base import Transport


class TargetError(HarnessError):
    """A target cannot be set up or used (lab fault)."""


class Target:
    """Common parts; subclasses set ``transport``, declare their capabilities and implement
    the hooks."""

    name: str
    transport: Transport
    #: the kind of card this target holds: what the runner, the guard and reports know of it
    card_profile: CardProfile
    profile: ReaderProfile | None = None
    #: the reader as reports name it, when that is not its PC/SC name: the slots of a spread
    #: run are one reader (``harness/plugin/stations.py``)
    shown_as: str | None = None
    #: what every target of this class can do, whatever its reader (:mod:`harness.capabilities`)
    declared: ClassVar[frozenset[Capability]] = frozenset()

    @property
    def capabilities(self) -> frozenset[Capability]:
        """What this target can do: its class's declaration (less what this one lacks) with
        its reader's (:attr:`ReaderProfile.capabilities`: the reader's own abilities only)."""
        reader = self.profile.capabilities if self.profile is not None else frozenset()
        if isinstance(self, GuardedCard):  # a card behind the guard, whatever its bases say
            return reader & READER
        return (self.declared - self.lacks()) | reader

    def lacks(self) -> frozenset[Capability]:
        """Declared capabilities this one target has not (e.g. an emulator without reset
        codes): they can only be taken away here, never added."""
        return frozenset()

    @property
    def emulated(self) -> bool:
        """Whether the card is no citizen's card but pinloop's emulator (``emulator``): what
        the reports call it. Every rule asks for the capability it needs instead."""
        return Capability.EMULATOR in self.capabilities

    @property
    def card_description(self) -> str:
        """What reports call the card."""
        return "real card"

    @property
    def report_name(self) -> str:
        """The reader in the summary, JUnit properties and Allure parameters."""
        return self.shown_as or self.name

    def secret(self, pin_id: str) -> Secret:
        raise NotImplementedError

    def max_tries(self, pin_id: str) -> int:
        """``pin_id``'s maximum of tries on this card: the figure the card profile
        establishes; a target that can observe the card's (:meth:`observed_max`) uses that
        where the profile has none."""
        spec = self.card_profile.pins_by_id[pin_id]
        if spec.established_max is not None:
            return spec.established_max
        seen = self.observed_max(pin_id)
        if seen is None:
            raise TargetError(
                f"{self.name}: the maximum of tries of {pin_id} is not established "
                f"({spec.tries_fact.confidence.label}: {spec.tries_source or 'no source'}) and "
                "was not observed on this card"
            )
        return seen

    def observed_max(self, pin_id: str) -> int | None:
        """The maximum of tries this card showed for ``pin_id`` (its counter after a right
        VERIFY), if the target has seen it; None otherwise."""
        return None

    @property
    def record(self) -> list[ApduTime]:
        """Where the APDUs this target sends on its own are recorded (the identification
        of its emulator, the guard's own): the current scenario's record."""
        rows: list[ApduTime] | None = self.__dict__.get("_record")
        if rows is None:
            rows = self.__dict__["_record"] = []
        return rows

    def new_record(self) -> list[ApduTime]:
        """The record of the scenario that starts: it holds what the target sent on its own
        since the last one ended (the identification at its set-up), and what it sends until
        :meth:`end_record`."""
        return self.record

    def end_record(self) -> None:
        """The scenario's record is complete: what the target sends from now on goes to the
        next one."""
        self.__dict__["_record"] = []

    def _record_row(self, row: ApduTime) -> None:
        self.record.append(row)

    def apdus_received(self) -> int | None:
        """APDUs the card has received since this target was set up, if it can count them
        (the emulator can; a real card cannot)."""
        return None

    def path_threads(self) -> list[str]:
        """``schedstat`` files of the threads besides the measuring one that an answer waits
        on (the PC/SC daemon's, an emulator's): the time they wait for a CPU is the host's,
        and latency figures leave it out (:class:`~harness.timing.CpuWait`)."""
        return []

    def begin(
        self,
        pins: frozenset[str] = frozenset(),
        *,
        spend: Spend | None = None,
        destructive_ok: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """Bring the card to the state a scenario starts from (``pins``: those it uses;
        ``spend``: the tries it declares per PIN; ``log``: where notes go). The runner calls it
        through :func:`harness.safety.begin`."""

    def end(self) -> None:
        """After a scenario whose connection did not fail: put back what it spent."""

    def reinsert(self) -> None:
        """The card out of the reader and back: an operator told to do it (profile
        ``power_switch: {kind: operator}``); without one it cannot happen here."""
        spec = self.profile.power_switch if self.profile is not None else None
        if spec is None or spec.kind != "operator":
            raise TargetError(
                f"{self.name}: taking the card out needs an operator; give the reader "
                "power_switch: {kind: operator} in readers/ and run attended"
            )
        switch = self.power_switch()
        try:
            switch.cut()
            switch.restore()
        finally:
            switch.close()
        self.recover()

    # -- what only a target with the capability does (refused on any other) ----------------
    def verified(self, pin_id: str) -> bool:
        """Whether ``pin_id`` is verified (``observe-verified``)."""
        if Capability.OBSERVE_VERIFIED not in self.capabilities:
            raise TargetError(f"{self.name}: the verified state of a real card is not observable")
        return self._verified(pin_id)

    def reset_code(self, route: str) -> bytes:
        """The card's reset code of ``route`` for its test re-initialisation (``test-reinit``;
        :class:`~harness.safety.guard.UnsafeStep` on a target without it)."""
        refuse_without(self, Capability.TEST_REINIT)
        return self._reset_code(route)

    @contextlib.contextmanager
    def write_points(self, hook: WriteHook) -> Iterator[None]:
        """``hook`` called at every NVM write point of the card while the block runs (it
        raises :class:`~harness.errors.CardPowerLost` to cut there; ``write-points``;
        :class:`~harness.safety.guard.UnsafeStep` on a target without it)."""
        refuse_without(self, Capability.WRITE_POINTS)
        self._write_hook(hook)
        try:
            yield
        finally:
            self._write_hook(None)

    def _verified(self, pin_id: str) -> bool:
        raise TargetError(f"{self.name}: the verified state of its card is not observable")

    def _reset_code(self, route: str) -> bytes:
        raise TargetError(f"{self.name}: its card has no test re-initialisation")

    def _write_hook(self, hook: WriteHook | None) -> None:
        raise TargetError(f"{self.name}: its card's write points are not reachable")

    def recover(self) -> None:
        """Reach the card again after it lost power in the middle of a command."""
        self.transport.power_cycle()

    def power_switch(self) -> PowerSwitch:
        """What cuts this card's power: the reader profile's ``power_switch`` (its kind from
        :data:`harness.lab.power.SWITCHES`), else PC/SC."""
        return power_switch(self.profile.power_switch if self.profile is not None else None, self)

    @property
    def power_off_ms(self) -> float:
        spec = self.profile.power_switch if self.profile is not None else None
        return spec.off_ms if spec is not None else 500.0

    def close(self) -> None:
        self.transport.close()


@runtime_checkable
class ResetCodes(Protocol):
    """An emulation that knows its card's reset codes (the test re-initialisation)."""

    def reset_code(self, route: str) -> bytes: ...


class GuardedCard:
    """The real-card part of a target: its guard, its PINs from the environment, and how a
    scenario begins and ends on it. Mixed into a :class:`Target` whose transport it wraps
    (first among its bases): it declares no capability of its own, whatever the target's
    class would, so a card behind the guard has only what its reader gives."""

    name: str
    declared: ClassVar[frozenset[Capability]] = frozenset()
    guard: RealCardGuard
    card_profile: CardProfile

    def _guard(self, transport: Transport) -> RealCardGuard:
        self.guard = RealCardGuard(transport, self.card_profile.guard_facts, self.secret)
        return self.guard

    def secret(self, pin_id: str) -> Secret:
        return env_secret(self.card_profile, pin_id, self.name)

    def begin(
        self,
        pins: frozenset[str] = frozenset(),
        *,
        spend: Spend | None = None,
        destructive_ok: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """Every PIN the scenario uses back to its maximum with the lab's PIN (checked), the
        status query checked to be free, then a power cycle: see :meth:`RealCardGuard.begin`.
        A blocked PIN cannot be restored from here: that is a lab fault, not a test result."""
        self.guard.log = log or (lambda text: None)
        self.guard.record = self._record_row  # type: ignore[attr-defined]
        self.guard.begin(pins, spend or {}, destructive_ok=destructive_ok)

    def observed_max(self, pin_id: str) -> int | None:
        """The counter the guard confirmed after a right VERIFY at a scenario's start."""
        watch = self.guard.watch.get(pin_id)
        return watch.top if watch is not None else None

    def end(self) -> None:
        self.guard.end()


def env_name(pin_id: str, card: CardProfile) -> str:
    """The environment variable of the lab's PIN ``pin_id`` of a ``card``."""
    return card.env_name(pin_id)


def env_secret(card: CardProfile, pin_id: str, reader: str) -> Secret:
    """The lab's PIN for ``pin_id`` from the environment, checked against its format (a
    mistyped PIN would spend a try), never shown."""
    name = card.env_name(pin_id)
    value = os.environ.get(name)
    if not value:
        raise TargetError(f"missing PIN for {pin_id} on {reader}: set {name}")
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise TargetError(f"{name} is not ASCII: not a PIN of {pin_id}") from None
    finally:
        del value
    secret, spec = Secret(raw), card.pins_by_id[pin_id]
    ok = spec.format.accepts(raw)
    del raw
    if not ok:
        raise TargetError(
            f"{name} is not a PIN of {pin_id} ({spec.format.describe()}): not sent to the card"
        )
    return secret
