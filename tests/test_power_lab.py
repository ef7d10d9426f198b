"""A real-reader target whose profile names a relay: the whole unattended path through pcscd.

The "real reader" is a virtual one addressed as ``reader:…`` (so the real-card rules apply:
PINs from the environment, counters restored first); its profile, in a lab's own folder,
names a relay at a pty where the simulated relay runs, wired to the emulated card's supply.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import PROFILES, CardState
from harness.lab.pcscd import Pcscd
from harness.lab.power import EmulatedPower
from harness.lab.relay_sim import SimulatedRelay
from harness.run.expect import ExpectationFailed
from harness.run.runner import Runner
from harness.scenario import load_scenarios
from harness.targets import RealReaderTarget, env_name
from tests.pcsc_lab import ServedCard

LIB = Path(__file__).resolve().parent.parent / "scenarios"


@pytest.fixture
def bench(
    pcscd: Pcscd,
    template_state: CardState,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[tuple[ServedCard, SimulatedRelay, Path]]:
    slot = pcscd.slots[0]
    defect = getattr(request, "param", "faithful")
    served = ServedCard(template_state, slot.url, slot.reader, defects=PROFILES[defect])
    relay = SimulatedRelay()
    relay.wire(2, EmulatedPower(served.card, on_change=served.server.power).set)
    readers = tmp_path / "readers"
    readers.mkdir()
    (readers / "bench.yaml").write_text(
        f"name: bench\nmatch: '^{re.escape(slot.reader)}$'\ninterface: contact\n"
        f"power_switch: {{kind: relay, url: {relay.path}, channel: 2, off_ms: 100}}\n"
    )
    for pin in ("jpki-auth", "jpki-sign"):
        monkeypatch.setenv(env_name(pin, JPKI), template_state.pins[pin].value.decode())
    try:
        yield served, relay, readers
    finally:
        relay.close()
        served.stop()


def _run(readers: Path, reader: str) -> Runner:
    target = RealReaderTarget(f"^{re.escape(reader)}$", readers, card=JPKI)
    scenario = load_scenarios(LIB / "tearing-timed-verify.pin.yaml", JPKI)[0]  # jpki-auth
    runner = Runner(target, scenario, destructive_ok=True)
    try:
        runner.run()
    finally:
        target.close()
    return runner


def test_timed_cuts_through_a_relay_on_a_real_reader_target(
    bench: tuple[ServedCard, SimulatedRelay, Path],
) -> None:
    served, relay, readers = bench
    runner = _run(readers, served.reader)
    assert relay.log.count("OFF 2") == 10 and relay.log.count("ON 2") == 10
    curve = next(line for line in runner.session.trace if line.startswith("-- cut delay"))
    assert curve.count("counted") == 10, curve  # every delay has its outcome noted
    assert "relay" in " ".join(runner.session.trace)


@pytest.mark.parametrize("bench", ["power-cycle-resets-counter"], indirect=True)
def test_a_card_that_forgets_on_power_loss_fails_the_timed_cuts(
    bench: tuple[ServedCard, SimulatedRelay, Path],
) -> None:
    served, _relay, readers = bench
    with pytest.raises(ExpectationFailed, match="tearing-timed-never-refills"):
        _run(readers, served.reader)
