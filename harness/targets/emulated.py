"""The targets whose card is pinloop's emulator: ``inprocess`` (called directly) and
``pcscd`` (behind pcscd + vpcd, reached with pyscard; pcscd and the emulator are started here,
and the emulator is checked to be ours)."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from harness.capabilities import EMULATED, Capability
from harness.cards.emulated import CardEmulator, Emulation, WriteHook
from harness.errors import TransportError, TransportTimeout
from harness.lab.power import EmulatedPower, PowerSwitch, SerialRelay
from harness.safety.guard import Spend
from harness.secret import Secret
from harness.targets.base import ResetCodes, Target, TargetError
from harness.targets.reader_profile import (
    ReaderProfile,
    UnknownReader,
    load_profiles,
    select_profile,
)
from harness.transport.base import Transport

if TYPE_CHECKING:
    from harness.emulator import DefectProfile
    from harness.emulator.config import CardConfig
    from harness.lab.pcscd import VirtualSlot
    from harness.lab.relay_sim import SimulatedRelay


#: how long an emulator's card may take to show in pcscd after it (re)connects: ~0.5 s
#: (pcscd polls every 400 ms), but more than 5 s was seen at load 10 on 2 cores
EMULATED_CARD_WAIT_S = 15.0


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
        spend: Spend | None = None,
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
    a slot of a pcscd another process runs (one station of several,
    :mod:`harness.plugin.stations`)."""

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


def _profile_for(name: str) -> ReaderProfile | None:
    """The profile of an emulated target's reader, if one matches; a broken profile file is
    the ConfigError (file:line) it is, not a silently missing profile."""
    try:
        return select_profile(name, load_profiles())
    except UnknownReader:
        return None
