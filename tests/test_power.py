"""Power switches: the relay protocol against a simulated relay on a pty, the operator prompt,
timed cuts, and the reader-profile field that picks a switch."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.errors import ConfigError, TransportTimeout
from harness.lab.power import (
    OperatorSwitch,
    PowerSwitchError,
    RelayTimeout,
    SerialRelay,
    TimedCut,
)
from harness.lab.relay_sim import SimulatedRelay
from harness.targets.reader_profile import load_profile


@pytest.fixture
def sim() -> Iterator[SimulatedRelay]:
    relay = SimulatedRelay()
    yield relay
    relay.close()


def test_relay_protocol_switches_the_wired_channel(sim: SimulatedRelay) -> None:
    changes: list[bool] = []
    sim.wire(3, changes.append)
    relay = SerialRelay(sim.path, 3)
    assert "pinloop simulated relay" in relay.describe()
    assert relay.state() is True
    relay.cut()
    assert relay.state() is False and sim.powered[3] is False and sim.powered[1] is True
    relay.restore()
    assert relay.state() is True
    assert changes == [False, True]
    assert sim.log == ["PING", "STATE 3", "OFF 3", "STATE 3", "ON 3", "STATE 3"]
    relay.close()


def test_the_simulator_refuses_what_the_protocol_does_not_define(sim: SimulatedRelay) -> None:
    assert sim.answer("OFF 17") == "ERR no channel 17"
    assert sim.answer("TOGGLE 1").startswith("ERR unknown command")
    assert sim.answer("OFF x").startswith("ERR")


def test_a_mute_relay_is_a_timeout_at_its_deadline(sim: SimulatedRelay) -> None:
    relay = SerialRelay(sim.path, 1, deadline=0.3)
    sim.mute = True
    t = time.monotonic()
    with pytest.raises(RelayTimeout, match=r"no answer to 'OFF 1' within 0\.3 s"):
        relay.cut()
    assert 0.25 < time.monotonic() - t < 1.0
    relay.close()


def test_a_relay_that_answers_nonsense_is_refused(sim: SimulatedRelay) -> None:
    sim.garble = True
    with pytest.raises(PowerSwitchError, match="'PING' answered '#%&"):
        SerialRelay(sim.path, 1, deadline=0.5)


def test_a_missing_relay_or_bad_channel_is_a_clear_error(sim: SimulatedRelay) -> None:
    with pytest.raises(PowerSwitchError, match="cannot open"):
        SerialRelay("/dev/no-such-relay")
    with pytest.raises(PowerSwitchError, match=r"1\.\.16"):
        SerialRelay(sim.path, 0)


def test_a_timed_cut_comes_after_its_delay_and_reports_errors() -> None:
    class Recorder:
        mid_command = True
        at: float = 0.0

        def describe(self) -> str:
            return "recorder"

        def cut(self) -> None:
            self.at = time.perf_counter()

        def restore(self) -> None: ...

        def close(self) -> None: ...

    rec = Recorder()
    cut = TimedCut(rec, 20_000)  # 20 ms
    t = time.perf_counter()
    cut.fire()
    cut.join()
    assert 0.020 <= rec.at - t < 0.060
    assert cut.confirmed_us is not None and cut.confirmed_us >= 20_000

    class Broken(Recorder):
        def cut(self) -> None:
            raise OSError("relay unplugged")

    broken = TimedCut(Broken(), 0)
    broken.fire()
    with pytest.raises(PowerSwitchError, match="relay unplugged"):
        broken.join()


def test_the_operator_is_told_and_the_reader_confirms() -> None:
    said: list[str] = []
    waits: list[tuple[str, float, bool]] = []
    op = OperatorSwitch(
        "Reader X",
        deadline=7,
        say=said.append,
        wait_for=lambda r, t, present: waits.append((r, t, present)),
        interactive=True,
    )
    op.cut()
    op.restore()
    assert [s.split(" (")[0] for s in said] == ["remove the card", "insert the card again"]
    assert waits == [("Reader X", 7, False), ("Reader X", 7, True)]


def test_the_operator_who_does_not_come_is_a_lab_fault() -> None:
    def never(reader: str, timeout: float, present: bool) -> None:
        raise TransportTimeout(f"{reader}: waited {timeout} s")

    op = OperatorSwitch(
        "Reader X", deadline=0.1, say=lambda s: None, wait_for=never, interactive=True
    )
    with pytest.raises(PowerSwitchError, match="did not remove the card"):
        op.cut()


def test_unattended_runs_refuse_operator_steps_at_once() -> None:
    called: list[object] = []
    op = OperatorSwitch(
        "Reader X", say=called.append, wait_for=lambda *a: called.append(a), interactive=False
    )
    t = time.monotonic()
    with pytest.raises(PowerSwitchError, match=r"needs an operator.*unattended"):
        op.cut()
    assert time.monotonic() - t < 0.1 and called == []


def test_reader_profiles_name_their_power_switch(tmp_path: Path) -> None:
    good = tmp_path / "lab.yaml"
    good.write_text(
        "name: lab\nmatch: '^Lab'\ninterface: contact\n"
        "power_switch: {kind: relay, url: /dev/ttyUSB0, channel: 2, off_ms: 300}\n"
    )
    spec = load_profile(good).power_switch
    assert spec is not None and (spec.kind, spec.url, spec.channel, spec.off_ms) == (
        "relay",
        "/dev/ttyUSB0",
        2,
        300.0,
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmatch: '^B'\ninterface: contact\npower_switch: {kind: relay}\n")
    with pytest.raises(ConfigError, match="a relay needs url") as exc:
        load_profile(bad)
    assert "bad.yaml:4" in str(exc.value)
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: t\nmatch: '^T'\ninterface: contact\npower_switch: {kind: relais}\n")
    with pytest.raises(ConfigError, match="kind") as exc:
        load_profile(typo)
    assert "typo.yaml:4" in str(exc.value)


def test_reinsert_on_a_real_reader_asks_its_operator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.lab import power
    from harness.targets import Target, TargetError

    monkeypatch.setattr(power.os, "isatty", lambda fd: False)  # unattended, even under -s

    class Bench(Target):
        name = "Reader X"
        emulated = False

    bench = Bench()
    with pytest.raises(TargetError, match="needs an operator; give the reader"):
        bench.reinsert()  # no profile: nobody to pull the card
    path = tmp_path / "x.yaml"
    path.write_text(
        "name: x\nmatch: '^Reader X$'\ninterface: contact\n"
        "power_switch: {kind: operator, deadline_s: 30}\n"
    )
    bench.profile = load_profile(path)
    with pytest.raises(PowerSwitchError, match=r"needs an operator.*unattended"):
        bench.reinsert()  # an operator profile, but this run has no terminal: refused at once
