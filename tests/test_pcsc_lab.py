"""The lab as a user runs it: several cards on several slots, emulate and lab commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.apdu import commands as C
from harness.cli import main
from harness.emulator import CardState
from harness.lab.pcscd import Pcscd
from harness.transport.identity import require_emulator
from harness.transport.pcsc import PcscTransport, reader_states, wait_for_card
from tests.pcsc_lab import EmulatorProcess


def test_two_cards_on_two_slots_each_its_own(
    pcscd: Pcscd,
    template_state: CardState,
    tmp_path: Path,
) -> None:
    emus = [
        EmulatorProcess(template_state, tmp_path, slot.url, name=f"e{slot.index}")
        for slot in pcscd.slots
    ]
    try:
        for slot in pcscd.slots:
            wait_for_card(slot.reader, 15)
        with PcscTransport(pcscd.slots[0].reader) as a, PcscTransport(pcscd.slots[1].reader) as b:
            require_emulator(a, emus[0].instance_id)
            require_emulator(b, emus[1].instance_id)
            a.transmit(C.select_df(bytes.fromhex("D392F000260100000001")))
            a.transmit(C.select_ef(0x0018))
            assert a.transmit(C.verify(b"0000")).sw == 0x63C2
            b.transmit(C.select_df(bytes.fromhex("D392F000260100000001")))
            b.transmit(C.select_ef(0x0018))
            assert b.transmit(C.pin_status()).sw == 0x63C3  # independent cards
        states = {r: (present, atr) for r, present, atr in reader_states()}
        assert all(states[s.reader][0] for s in pcscd.slots)
    finally:
        for emu in emus:
            emu.stop()
            assert emu.proc.returncode == 0, emu.log_path.read_text()  # clean shutdown
            assert "stopped" in emu.log_path.read_text()


def test_readers_command(
    pcscd: Pcscd,
    template_state: CardState,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # an emulator of an earlier test may still be leaving slot 1: wait until vpcd saw it go
    wait_for_card(pcscd.slots[1].reader, 5, present=False)
    emu = EmulatorProcess(template_state, tmp_path, pcscd.slots[0].url)
    try:
        wait_for_card(pcscd.slots[0].reader, 15)
        assert main(["readers"]) == 0
        out = capsys.readouterr().out
        assert "Virtual PCD 00 00\n    card:    3B E0 00 FF 81 31 FE 45 14 (jpki-contact)" in out
        assert "Virtual PCD 00 01\n    card:    no card" in out
        assert out.count("profile: virtual-pcd") == 2
        assert out.count("can:     extended-apdu\n") == 2  # what the profile gives
    finally:
        emu.stop()


def test_the_vpcd_ports_move_with_pinloop_vpcd_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.errors import ConfigError
    from harness.lab.pcscd import write_reader_config
    from harness.links.vpcd import DEFAULT_PORT, PORT_VARIABLE

    monkeypatch.delenv(PORT_VARIABLE, raising=False)
    assert [s.port for s in write_reader_config(tmp_path / "a", 2)] == [DEFAULT_PORT, 35964]
    monkeypatch.setenv(PORT_VARIABLE, "40100")
    slots = write_reader_config(tmp_path / "b", 2)
    assert [(s.port, s.url) for s in slots] == [
        (40100, "socket://127.0.0.1:40100"),
        (40101, "socket://127.0.0.1:40101"),
    ]
    conf = (tmp_path / "b" / "vpcd-0").read_text()
    assert "DEVICENAME /dev/null:40100\n" in conf and "CHANNELID 40100\n" in conf
    for bad in ("abc", "80", "65530", "-1", "4e4"):
        monkeypatch.setenv(PORT_VARIABLE, bad)
        with pytest.raises(ConfigError, match=PORT_VARIABLE):
            write_reader_config(tmp_path / "c", 2)


def test_a_parallel_worker_has_a_pcscd_place_and_ports_of_its_own(
    request: pytest.FixtureRequest,
) -> None:
    """`./run test` runs in parallel: each worker as root must see its own /run/pcscd."""
    import os

    from harness.links.vpcd import DEFAULT_PORT, PORT_VARIABLE

    workerinput = getattr(request.config, "workerinput", None)
    if workerinput is None or os.geteuid() != 0:
        pytest.skip("only a parallel run as root keeps its workers apart")
    port = int(os.environ[PORT_VARIABLE])
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert port != DEFAULT_PORT and 10000 <= port < ephemeral - 16, port  # never ephemeral
    mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    assert any(m.split()[4] == "/run/pcscd" and "pinloop-tests" in m for m in mounts), mounts
