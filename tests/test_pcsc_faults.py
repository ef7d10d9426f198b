"""Faults on the real PC/SC path: each is a typed error within the deadline, never a hang."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from harness.apdu import commands as C
from harness.emulator import CardState
from harness.errors import (
    CardRemoved,
    DaemonGone,
    NoCard,
    ReaderGone,
    SharingViolation,
    StaleEmulator,
    TransportTimeout,
)
from harness.lab.pcscd import LabError, Pcscd
from harness.transport.identity import require_emulator
from harness.transport.pcsc import (
    PcscTransport,
    connect_when_ready,
    list_readers,
    wait_for_card,
)
from tests.pcsc_lab import EmulatorProcess, require_pcsc

JPKI = C.select_df(bytes.fromhex("D392F000260100000001"))


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Pcscd]:
    """A pcscd of this test's own, so that a test may stop it."""
    require_pcsc()
    daemon = Pcscd(tmp_path / "pcscd.log", slots=2)
    daemon.start()
    yield daemon
    daemon.stop()


@pytest.fixture
def emulators(tmp_path: Path) -> Iterator[list[EmulatorProcess]]:
    started: list[EmulatorProcess] = []
    yield started
    for emu in started:
        emu.kill()


def _serve(
    lab: Pcscd,
    emulators: list[EmulatorProcess],
    state: CardState,
    tmp: Path,
    defect: str | None = None,
    name: str = "emu",
) -> EmulatorProcess:
    """An emulator process on slot 0, its card present in the reader."""
    emu = EmulatorProcess(state, tmp, lab.slots[0].url, defect=defect, name=name)
    emulators.append(emu)
    wait_for_card(lab.slots[0].reader, 15)
    return emu


def _later(delay: float, action: Callable[[], None]) -> threading.Thread:
    t = threading.Thread(target=lambda: (time.sleep(delay), action()), daemon=True)
    t.start()
    return t


def _timed(fn: Callable[[], object]) -> float:
    t = time.monotonic()
    fn()
    return time.monotonic() - t


def test_emulator_killed_mid_transmit(
    lab: Pcscd, emulators: list[EmulatorProcess], template_state: CardState, tmp_path: Path
) -> None:
    slot = lab.slots[0]
    emu = _serve(lab, emulators, template_state, tmp_path, defect="fixed-delay:fixed_delay_ms=1500")
    with PcscTransport(slot.reader, deadline=5) as transport:
        _later(0.3, emu.kill)
        t = time.monotonic()
        with pytest.raises(CardRemoved):
            transport.transmit(JPKI)
        assert time.monotonic() - t < 1.5  # before the 1.5 s answer, far before the deadline
    wait_for_card(slot.reader, 2, present=False)  # the reader noticed the card left


def test_pcscd_stopped_mid_transmit(
    lab: Pcscd, emulators: list[EmulatorProcess], template_state: CardState, tmp_path: Path
) -> None:
    slot = lab.slots[0]
    _serve(lab, emulators, template_state, tmp_path, defect="fixed-delay:fixed_delay_ms=1500")
    transport = PcscTransport(slot.reader, deadline=5)
    _later(0.3, lab.stop)
    t = time.monotonic()
    with pytest.raises(DaemonGone):
        transport.transmit(JPKI)
    assert time.monotonic() - t < 1.5
    transport.close()
    with pytest.raises(DaemonGone):
        list_readers()
    with pytest.raises(DaemonGone):
        PcscTransport(slot.reader)


def test_a_hung_emulator_is_a_timeout_at_the_deadline(
    lab: Pcscd, emulators: list[EmulatorProcess], template_state: CardState, tmp_path: Path
) -> None:
    slot = lab.slots[0]
    _serve(lab, emulators, template_state, tmp_path, defect="fixed-delay:fixed_delay_ms=30000")
    transport = PcscTransport(slot.reader, deadline=1.0)
    elapsed = _timed(lambda: pytest.raises(TransportTimeout, transport.transmit, JPKI))
    assert 0.95 < elapsed < 1.5
    with pytest.raises(TransportTimeout, match="broken"):  # no silent reuse after a timeout
        transport.transmit(JPKI)
    transport.close()


class _StallingEmulator(EmulatorProcess):
    """An emulator process that stalls for a second right after each TCP connect."""

    def _start(self) -> None:
        at = self.args.index("harness.cli")
        self.args[at] = "tests.slow_connect"
        super()._start()


def test_an_emulator_that_stalls_after_connecting_still_becomes_the_card(
    lab: Pcscd, emulators: list[EmulatorProcess], template_state: CardState, tmp_path: Path
) -> None:
    """vpcd asks for the ATR the moment it accepts and waits for the answer with no timeout:
    while the emulator stalls, that request is already queued on its socket. A link that drops
    early bytes (pyserial's socket:// open does) left reader and card waiting on each other for
    ever; the soak saw it about once in 100 runs as "waited 15 s for a card"."""
    emu = _StallingEmulator(template_state, tmp_path, lab.slots[0].url)
    emulators.append(emu)
    wait_for_card(lab.slots[0].reader, 8)
    with PcscTransport(lab.slots[0].reader) as transport:
        require_emulator(transport, emu.instance_id)


def test_the_emulator_reconnects_when_pcscd_restarts(
    lab: Pcscd, emulators: list[EmulatorProcess], template_state: CardState, tmp_path: Path
) -> None:
    slot = lab.slots[0]
    emu = _serve(lab, emulators, template_state, tmp_path)
    lab.stop()
    lab.start()
    wait_for_card(slot.reader, 15)
    with PcscTransport(slot.reader) as transport:
        require_emulator(transport, emu.instance_id)
        assert transport.transmit(JPKI).ok


def test_a_stale_emulator_on_the_port_is_detected(
    lab: Pcscd, emulators: list[EmulatorProcess], template_state: CardState, tmp_path: Path
) -> None:
    slot = lab.slots[0]
    ours = _serve(lab, emulators, template_state, tmp_path, name="ours")
    stale = EmulatorProcess(template_state, tmp_path, slot.url, name="stale")  # in the backlog
    emulators.append(stale)
    ours.kill()
    # the stale one silently becomes the card at vpcd's next poll; the reader may never
    # even look empty, so retry until a card answers again
    transport = connect_when_ready(slot.reader, 15, check=lambda t: t.transmit(JPKI))
    with transport:
        with pytest.raises(StaleEmulator, match="stale emulator"):
            require_emulator(transport, ours.instance_id)
        require_emulator(transport, stale.instance_id)


def test_typed_errors_for_reader_and_card(
    lab: Pcscd, emulators: list[EmulatorProcess], template_state: CardState, tmp_path: Path
) -> None:
    assert [s.reader for s in lab.slots] == list_readers()
    with pytest.raises(ReaderGone):
        PcscTransport("No Such Reader 00 00")
    with pytest.raises(NoCard):
        PcscTransport(lab.slots[1].reader)  # nobody serves slot 1
    slot = lab.slots[0]
    _serve(lab, emulators, template_state, tmp_path)
    with PcscTransport(slot.reader) as first:
        with pytest.raises(SharingViolation):
            PcscTransport(slot.reader)
        assert first.transmit(JPKI).ok
    with pytest.raises(TransportTimeout):
        wait_for_card(lab.slots[1].reader, 0.3)


def test_a_foreign_pcscd_is_never_touched(lab: Pcscd, tmp_path: Path) -> None:
    with pytest.raises(LabError, match="another pcscd"):
        Pcscd(tmp_path / "second.log").start()
    assert lab.running


def test_a_card_that_never_shows_says_what_the_sockets_and_the_daemon_saw(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The emulator of a PcscdTarget never starts serving: the lab fault names the link's
    state, the sockets of the vpcd port (pcscd listening, nobody connected) and pcscd's log."""
    require_pcsc()
    from harness import targets as T
    from harness.emulator import load_card_config, parse_profile

    monkeypatch.setattr(T.PcscdTarget._connect, "__defaults__", (1.0,))
    monkeypatch.setattr("harness.links.vicc.serve_in_thread", lambda server: None)
    with pytest.raises(TransportTimeout) as exc:
        T.PcscdTarget(load_card_config(), parse_profile("faithful"), tmp_path)
    text = str(exc.value)
    assert "waited" in text and "the emulator is not connected to socket://" in text, text
    if shutil.which("ss"):
        assert "(ss -tanpi)" in text and "LISTEN" in text and '"pcscd"' in text, text
    else:  # iproute2 is not on every Debian image
        assert "ss (iproute2) is not installed" in text, text
    assert "pcscd log, last 20 lines:" in text and "winscard" in text, text
