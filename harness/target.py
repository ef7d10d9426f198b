"""Targets: a card a scenario runs against, with what the runner needs to know about it.

- ``inprocess``: the emulated card called directly.
- ``pcscd``: the emulated card behind pcscd + vpcd, reached with pyscard (pcscd and the
  emulator are started here; the emulator is checked to be ours).
- ``reader:NAME``: a real card in a real reader (exactly one reader must match NAME; its
  profile comes from ``readers/``, its card's from ``--pinloop-card-profile``). Its PINs come
  from the environment (named by the card profile: ``PINLOOP_PIN_JPKI_AUTH`` …), never from a
  scenario. Every APDU to it passes the real-card guard (:mod:`harness.guard`).
- any kind a lab package registers under the entry-point group ``pinloop.targets`` (a
  :class:`TargetKind`; :data:`TARGETS`, :mod:`harness.registry`).

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
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

from harness.capabilities import EMULATED, READER, Capability
from harness.cards.emulated import CardEmulator, Emulation, WriteHook, emulation_for
from harness.cards.profile import CardProfile
from harness.errors import ConfigError, HarnessError, TransportError, TransportTimeout
from harness.guard import RealCardGuard
from harness.lab.power import EmulatedPower, PowerSwitch, SerialRelay, power_switch
from harness.readerprofile import (
    ReaderProfile,
    UnknownReader,
    load_profiles,
    reader_pattern,
    select_profile,
)
from harness.registry import Registry, UnknownName, of_type
from harness.safety import check_target, refuse_without
from harness.secret import Secret
from harness.timing import ApduTime
from harness.transport.base import Transport

if TYPE_CHECKING:
    from harness.emulator import DefectProfile
    from harness.emulator.config import CardConfig
    from harness.lab.pcscd import VirtualSlot
    from harness.lab.relay_sim import SimulatedRelay

#: how long an emulator's card may take to show in pcscd after it (re)connects: ~0.5 s
#: (pcscd polls every 400 ms), but more than 5 s was seen at load 10 on 2 cores
EMULATED_CARD_WAIT_S = 15.0


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
    #: run are one reader (``harness/stations.py``)
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
        return self.card_profile.pins_by_id[pin_id].default_max_tries

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
        spend: Mapping[str, int] | None = None,
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
        :class:`~harness.guard.UnsafeStep` on a target without it)."""
        refuse_without(self, Capability.TEST_REINIT)
        return self._reset_code(route)

    @contextlib.contextmanager
    def write_points(self, hook: WriteHook) -> Iterator[None]:
        """``hook`` called at every NVM write point of the card while the block runs (it
        raises :class:`~harness.errors.CardPowerLost` to cut there; ``write-points``;
        :class:`~harness.guard.UnsafeStep` on a target without it)."""
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


class _BuiltInEmulation:
    """The built-in emulator (:mod:`harness.emulator`, the JPKI card) personalised from a
    card config."""

    def __init__(self, config: CardConfig, defects: DefectProfile) -> None:
        from harness.emulator import EmulatedCard, MemoryStore, personalise

        self.config = config
        self.template = personalise(config)
        self.card = EmulatedCard(MemoryStore(self.template.copy()), defects=defects)

    def secrets(self) -> Mapping[str, bytes]:
        return {k: v.encode() for k, v in self.config.secrets().items()}

    def max_tries(self, pin_id: str) -> int:
        return self.template.pins[pin_id].max_tries

    def restore(self) -> None:
        from harness.emulator import MemoryStore

        self.card.store = MemoryStore(self.template.copy())

    def reset_code(self, route: str) -> bytes:
        return self.card.store.state.reset_codes[route]


class _Emulated(Target):
    """pinloop's emulator, checked to be this target's own: it can do everything a scenario
    asks of a card (:data:`harness.capabilities.EMULATED`)."""

    declared = EMULATED
    #: what :func:`harness.safety.check_target` takes for "this card is pinloop's emulator"
    _pinloop_emulator: ClassVar[bool] = True

    def __init__(
        self,
        config: CardConfig | None,
        defects: DefectProfile | None,
        *,
        emulation: Emulation | None = None,
    ) -> None:
        """The built-in emulator personalised from ``config`` with ``defects``, or
        ``emulation``: another card's emulator (:attr:`CardProfile.emulator`)."""
        if emulation is None:
            if config is None or defects is None:
                raise TargetError("the built-in emulator needs its card config and defects")
            built_in = _BuiltInEmulation(config, defects)
            self.config, self.template = config, built_in.template
            emulation = built_in
        self.emulation = emulation
        self.card: CardEmulator = emulation.card
        self.card_profile = self.card.card_profile  # the card the emulator implements
        self._secrets = {k: Secret(v) for k, v in emulation.secrets().items()}

    def secret(self, pin_id: str) -> Secret:
        return self._secrets[pin_id]

    def max_tries(self, pin_id: str) -> int:
        return self.emulation.max_tries(pin_id)

    @property
    def power_off_ms(self) -> float:
        return 0.0  # the emulator keeps the card out long enough for pcscd to see it leave

    def lacks(self) -> frozenset[Capability]:
        """An emulator that does not give its reset codes has no test re-initialisation."""
        if isinstance(self.emulation, ResetCodes):
            return frozenset()
        return frozenset({Capability.TEST_REINIT})

    @property
    def card_description(self) -> str:
        return self.card.description

    def _verified(self, pin_id: str) -> bool:
        return pin_id in self.card.verified

    def _reset_code(self, route: str) -> bytes:
        if not isinstance(self.emulation, ResetCodes):
            raise TargetError(f"{self.name}: its emulator gives no reset codes")
        return self.emulation.reset_code(route)

    def _write_hook(self, hook: WriteHook | None) -> None:
        self.card.write_hook = hook

    def apdus_received(self) -> int | None:
        return self.card.apdus

    def begin(
        self,
        pins: frozenset[str] = frozenset(),
        *,
        spend: Mapping[str, int] | None = None,
        destructive_ok: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.emulation.restore()
        self.transport.power_cycle()


class InProcessTarget(_Emulated):
    def __init__(
        self,
        config: CardConfig | None,
        defects: DefectProfile | None,
        *,
        emulation: Emulation | None = None,
    ) -> None:
        from harness.transport.inprocess import InProcessTransport

        super().__init__(config, defects, emulation=emulation)
        self.name = "emulated (in-process)"
        self.transport = InProcessTransport(self.card, name=self.name)
        self.profile = _profile_for(self.name)

    def reinsert(self) -> None:
        self.transport.power_cycle()

    def power_switch(self) -> PowerSwitch:
        return EmulatedPower(self.card)

    def recover(self) -> None:
        self.card.write_hook = None
        self.card.power_off()  # whatever the cut left running, the card was unpowered
        self.transport.power_cycle()


class PcscdTarget(_Emulated):
    """The emulated card in a virtual reader slot: slot 0 of a pcscd this target starts, or
    a slot of a pcscd another process runs (one station of several, ``harness/stations.py``)."""

    def __init__(
        self,
        config: CardConfig | None,
        defects: DefectProfile | None,
        workdir: Path,
        *,
        shared: tuple[VirtualSlot, Path] | None = None,
        emulation: Emulation | None = None,
    ) -> None:
        """Starts its own pcscd, or with ``shared`` (a slot and the log of a pcscd another
        process runs, e.g. the xdist controller) serves its card in that slot only."""
        from harness.lab.pcscd import Pcscd, SharedPcscd
        from harness.links.vicc import EmulatorServer, serve_in_thread

        super().__init__(config, defects, emulation=emulation)
        self.lab: Pcscd | SharedPcscd
        #: pcscd's folder (its debug log, ~4 MB a run): removed at close unless kept
        self.workdir: Path | None = workdir if shared is None else None
        self.keep_workdir = False
        if shared is None:
            self.lab = Pcscd(workdir / "pcscd.log", slots=2)
            self.lab.start()
            slot = self.lab.slots[0]
        else:
            slot, log = shared
            self.lab = SharedPcscd(log)
        self.name = slot.reader
        self.port = slot.port
        self.server = EmulatorServer(self.card, slot.url)
        self.thread = serve_in_thread(self.server)
        self.profile = _profile_for(self.name)
        self.relay: SimulatedRelay | None = None
        try:
            self.transport = self._connect()
        except BaseException:
            self.server.stop()
            self.lab.stop()
            raise

    def _connect(self, timeout: float = EMULATED_CARD_WAIT_S) -> Transport:
        from harness.transport.identity import require_emulator
        from harness.transport.pcsc import connect_when_ready

        try:
            return connect_when_ready(
                self.name,
                timeout,
                check=lambda t: require_emulator(t, self.server.instance_id, self._record_row),
            )
        except TransportTimeout as exc:
            from harness.lab.pcscd import port_sockets

            # rare and not yet explained: the emulator is connected and vpcd shows no card;
            # what the sockets of its port and the daemon's log say goes with the lab fault
            link = "connected" if self.server.connected.is_set() else "not connected"
            raise TransportTimeout(
                f"{exc}; the emulator is {link} to {self.server.url}\n"
                f"{port_sockets(self.port)}\npcscd log, last 20 lines:\n"
                f"{self.lab.log_tail(20)}"
            ) from None

    def reinsert(self) -> None:
        """Pull the card out (the link closes: the reader sees it leave) and put it back."""
        self.transport.close()
        self.server.drop()
        self.transport = self._connect()

    def recover(self) -> None:
        """After a power cut the server closed the link; it reconnects by itself."""
        with contextlib.suppress(TransportError):
            self.transport.close()
        self.transport = self._connect()

    def log_tail(self) -> str:
        return self.lab.log_tail()

    def apdus_received(self) -> int | None:
        """What came over the link: the card's APDUs and the identification, which the
        server answers itself."""
        return self.server.apdus

    def path_threads(self) -> list[str]:
        """pcscd's threads and the thread of this process that serves the emulated card."""
        from harness.transport.pcsc import daemon_threads

        return [*daemon_threads(), f"/proc/self/task/{self.thread.native_id}/schedstat"]

    def power_switch(self) -> PowerSwitch:
        """A simulated relay on a pty, channel 1 wired to the emulated card's supply: the
        same protocol, pyserial path and deadlines as a relay in a real lab."""
        from harness.lab.relay_sim import SimulatedRelay

        if self.relay is None:
            self.relay = SimulatedRelay()
            self.relay.wire(1, EmulatedPower(self.card, on_change=self.server.power).set)
        return SerialRelay(self.relay.path, 1)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.close()
        if self.relay is not None:
            self.relay.close()
        self.server.stop()
        self.thread.join(2)
        self.lab.stop()
        if self.workdir is not None and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def keep_log(self) -> Path | None:
        """After a lab fault: the folder with pcscd's whole log stays, and is named."""
        self.keep_workdir = True
        return self.workdir


#: the base of every target whose card is pinloop's emulator (``emulator``): a lab's own
#: emulator target subclasses it (:func:`harness.safety.check_target`)
EmulatedTarget = _Emulated


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
        spend: Mapping[str, int] | None = None,
        destructive_ok: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """Every PIN the scenario uses back to its maximum with the lab's PIN (checked), the
        status query checked to be free, then a power cycle: see :meth:`RealCardGuard.begin`.
        A blocked PIN cannot be restored from here: that is a lab fault, not a test result."""
        self.guard.log = log or (lambda text: None)
        self.guard.record = self._record_row  # type: ignore[attr-defined]
        self.guard.begin(pins, spend or {}, destructive_ok=destructive_ok)

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


class RealReaderTarget(GuardedCard, Target):
    """A real card in a real reader: nothing but what the reader's profile gives."""

    def __init__(
        self,
        pattern: str,
        readers_dir: Path | None = None,
        *,
        card: CardProfile,
        guard: RealCardGuard | None = None,
        card_wait_s: float = 5.0,
    ) -> None:
        """``card``: the kind of card in the reader (its profile). ``guard``: the guard of this
        reader's earlier target in the session (set up again after a lab fault): what it learnt
        about the card (a stopped card, a refused PIN, a PIN whose value is lost) carries over.
        ``card_wait_s``: how long to wait for a card (a card or emulator coming back after a
        fault)."""
        from harness.transport.pcsc import PcscTransport, list_readers, wait_for_card

        readers = reader_pattern(pattern, "--pinloop-target reader:").matching(list_readers())
        if len(readers) != 1:
            raise TargetError(
                f"reader:{pattern} matches {len(readers)} readers "
                f"({', '.join(readers) or 'none'}); it must match exactly one"
            )
        self.name = readers[0]
        self.card_profile = card
        self.profile = select_profile(
            self.name, load_profiles(readers_dir) if readers_dir else load_profiles()
        )
        wait_for_card(self.name, card_wait_s)
        if guard is not None and guard.name == self.name:
            guard.attach(PcscTransport(self.name))
            guard.forget_counters()  # the card was out of sight: read every counter again
            self.guard = guard
            self.transport = guard
        else:
            self.transport = self._guard(PcscTransport(self.name))

    def path_threads(self) -> list[str]:
        """The local pcscd's threads (the reader's own time is not a thread's)."""
        from harness.transport.pcsc import daemon_threads

        return daemon_threads()

    def recover(self) -> None:
        """After a cut the card may have left the reader: wait for it, then connect anew."""
        from harness.transport.pcsc import PcscTransport, wait_for_card

        with contextlib.suppress(TransportError):
            self.transport.close()
        wait_for_card(self.name, 10.0)
        self.guard.attach(PcscTransport(self.name))

    def close(self) -> None:
        """What is still short (a scenario cut off by a lost connection) is put back first."""
        try:
            self.guard.finish()
        except Exception as exc:  # at the end of a session there is no test left to fail
            print(
                f"pinloop: {self.name}: what was spent could not be put back at close: {exc}",
                file=sys.stderr,
            )
        finally:
            self.transport.close()


def _profile_for(name: str) -> ReaderProfile | None:
    """The profile of an emulated target's reader, if one matches; a broken profile file is
    the ConfigError (file:line) it is, not a silently missing profile."""
    try:
        return select_profile(name, load_profiles())
    except UnknownReader:
        return None


@dataclass(frozen=True)
class TargetSetup:
    """What a target kind is given to build a target of ``--pinloop-target KIND[:ARG]``."""

    #: the whole spec, as the run names the target
    spec: str
    #: the card profile the run is for (None: the emulator's own card)
    card: CardProfile | None
    #: ``--pinloop-defect`` (emulated cards only)
    defect: str | None
    #: the lab's reader profiles (None: the session's folder, with the built-in ones)
    readers_dir: Path | None = None
    #: the guard of this spec's earlier target in the session (set up again after a fault)
    guard: RealCardGuard | None = None
    #: the built-in emulator's card config, or how to load it (only an emulated kind does)
    config: CardConfig | Callable[[], CardConfig] | None = None

    def card_config(self) -> CardConfig:
        """The built-in emulator's card config: the given one, else the emulator's own."""
        if callable(self.config):
            return self.config()
        if self.config is not None:
            return self.config
        from harness.emulator import load_card_config

        return load_card_config()


@dataclass(frozen=True)
class TargetKind:
    """One kind of ``--pinloop-target``: ``make(arg, setup)`` builds the target (``arg``: what
    follows ``KIND:`` in the spec, ``""`` if nothing does)."""

    make: Callable[[str, TargetSetup], Target]
    #: how a spec names it, for listings (``reader:NAME-REGEX``)
    usage: str
    #: one line for the docs
    doc: str = ""


#: builds an emulated target: the built-in emulator (card config and defects), or another
#: card's emulator (``emulation``)
_MakeEmulated = Callable[["CardConfig | None", "DefectProfile | None", "Emulation | None"], Target]


def _emulated(kind: str, make: _MakeEmulated, doc: str) -> TargetKind:
    """A kind of emulated target: the card profile's own emulator, else the built-in one
    personalised from the card config with the defect; the card must be the run's."""

    def build(arg: str, setup: TargetSetup) -> Target:
        if arg:
            raise TargetError(f"target {kind} takes no argument, got {setup.spec}")
        emulation = emulation_for(setup.card, setup.defect)
        if emulation is not None:  # the card profile names its own emulator
            target = make(None, None, emulation)
        else:
            from harness.emulator import parse_profile

            target = make(setup.card_config(), parse_profile(setup.defect or "faithful"), None)
        check_card(target, setup.card)
        return target

    return TargetKind(build, kind, doc)


def _pcscd_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="pinloop-pcscd-"))


def _real_reader(arg: str, setup: TargetSetup) -> Target:
    if setup.defect:
        raise TargetError("--pinloop-defect applies to emulated cards only")
    if setup.card is None:
        raise TargetError(f"{setup.spec}: a real card needs its card profile")
    return RealReaderTarget(arg, setup.readers_dir, card=setup.card, guard=setup.guard)


#: the kinds of ``--pinloop-target`` (entry-point group ``pinloop.targets``)
TARGETS: Registry[TargetKind] = Registry("pinloop.targets", "target", of_type(TargetKind, "target"))
TARGETS.built_in(
    "inprocess",
    _emulated(
        "inprocess",
        lambda c, d, e: InProcessTarget(c, d, emulation=e),
        "the emulated card called directly",
    ),
)
TARGETS.built_in(
    "pcscd",
    _emulated(
        "pcscd",
        lambda c, d, e: PcscdTarget(c, d, _pcscd_workdir(), emulation=e),
        "the emulated card behind a pcscd and vpcd this target starts",
    ),
)
TARGETS.built_in(
    "reader",
    TargetKind(_real_reader, "reader:NAME-REGEX", "a real card in the one reader NAME matches"),
)


def target_usages() -> list[str]:
    """How each known kind is named in ``--pinloop-target`` (``inprocess``, ``reader:NAME``…)."""
    usages = []
    for name in TARGETS.names():
        try:
            usages.append(TARGETS.get(name).usage)
        except ConfigError:
            usages.append(f"{name} (cannot be loaded)")
    return usages


def make_target(
    spec: str,
    config: CardConfig | Callable[[], CardConfig] | None,
    defect: str | None,
    readers_dir: Path | None = None,
    *,
    card: CardProfile | None = None,
    guard: RealCardGuard | None = None,
) -> Target:
    """The target ``spec`` names: ``KIND`` or ``KIND:ARG``, a kind of :data:`TARGETS`
    (``inprocess``, ``pcscd``, ``reader:NAME-REGEX`` or a lab's own; an unknown kind is an
    error listing the known ones). ``readers_dir``: the lab's reader profiles (else the lab's
    folder, with the built-in ones); ``guard``: the earlier guard of that reader.

    ``card``: the card profile the run is for. An emulated target's card is the one its
    emulator implements (``config``: its card config, or how to load it), which must be
    ``card`` when it is given; a real reader's card is ``card``, which it needs."""
    kind, _, arg = spec.partition(":")
    try:
        found = TARGETS.get(kind)
    except UnknownName:
        raise TargetError(
            f"unknown target {spec!r}; use one of: {', '.join(target_usages())}"
        ) from None
    setup = TargetSetup(spec, card, defect, readers_dir, guard, config)
    target = found.make(arg, setup)
    try:
        check_target(target, connected=False)
    except HarnessError:
        target.close()
        raise
    return target


def check_card(target: Target, card: CardProfile | None) -> None:
    """An emulated target must hold the card the run is for (its scenarios name that card's
    PINs); closed if not."""
    if card is not None and target.card_profile is not card:
        target.close()
        raise TargetError(
            f"{target.name} emulates the {target.card_profile.name} card, not the "
            f"{card.name} card this run is for (--pinloop-card-profile)"
        )
