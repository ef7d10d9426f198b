"""Every APDU a run sends is in its record: what the emulated card counted against the rows.

The record has a row per APDU, each with its kind (:data:`harness.timing.KINDS`), so that the
latency figures still take only the steps' own APDUs (no verdict moves) while warm-ups,
restores between timing samples, power cuts, the emulator's identification and the real-card
guard's own APDUs are counted and timed too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import load_card_config, parse_profile
from harness.emulator.config import CardConfig
from harness.run.runner import Runner
from harness.scenario import load_scenarios
from harness.targets import InProcessTarget, Target
from harness.timing import KINDS
from tests.pcsc_lab import require_pcsc
from tests.support import PretendRealCard

LIB = Path(__file__).resolve().parent.parent / "scenarios"

#: library file → the kinds besides ``step`` its first scenario must record
CASES = {
    "verify-latency.pin.yaml": {"restore"},
    "verify-timing-leak.pin.yaml": {"warm-up", "restore"},
    "tearing-verify.pin.yaml": {"cut"},
    "tearing-change.pin.yaml": {"cut"},
    "tearing-timed-verify.pin.yaml": {"cut"},
    "block-survives-power.pin.yaml": set(),
    "reinit-window.pin.yaml": set(),
}


@pytest.fixture(scope="module")
def config() -> CardConfig:
    return load_card_config()


def _run(target: Target, name: str, *, destructive_ok: bool = True) -> Runner:
    scenario = load_scenarios(LIB / name, JPKI)[0]
    runner = Runner(target, scenario, destructive_ok=destructive_ok)
    runner.run()
    return runner


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_apdu_the_card_received_has_a_row(name: str, config: CardConfig) -> None:
    target = InProcessTarget(config, parse_profile("faithful"))
    before = target.card.apdus
    runner = _run(target, name)
    rows = runner.session.latencies
    assert target.card.apdus - before == len(rows) > 0
    kinds = {a.kind for a in rows}
    assert kinds <= set(KINDS) and kinds - {"step"} == CASES[name]
    if "cut" in kinds and name != "tearing-timed-verify.pin.yaml":  # cut at a write point
        assert not any(a.answered for a in rows if a.kind == "cut")
    # the harness's path is timed for every row, and never shorter than the wire
    assert all(a.total_us >= a.wire_us >= 0 for a in rows if a.answered)


def test_the_latency_figures_take_the_same_apdus_as_before(config: CardConfig) -> None:
    """``latency: {samples: 100, of: wrong}`` puts the counter back after each sample; the
    restores are recorded, as ``restore``, and stay out of the VERIFY figures."""
    target = InProcessTarget(config, parse_profile("faithful"))
    rows = _run(target, "verify-latency.pin.yaml").session.latencies
    assert sum(a.verify and a.step for a in rows) == 100
    assert sum(a.kind == "restore" for a in rows) == 100
    assert sum(a.query and a.step for a in rows) >= 200


def test_the_guards_own_apdus_are_recorded(config: CardConfig) -> None:
    """On a real card the guard reads counters, selects and restores on its own, around and
    inside the steps; each of those APDUs has a row of kind ``guard``."""
    target = PretendRealCard(config, parse_profile("faithful"))
    before = target.card.apdus
    runner = _run(target, "status-query-is-free.pin.yaml", destructive_ok=False)
    rows = runner.session.latencies
    assert target.card.apdus - before == len(rows)
    assert sum(a.kind == "guard" for a in rows) > 0
    assert all(a.total_us >= a.wire_us for a in rows)


def test_through_pcscd_the_identification_is_recorded_too(tmp_path: Path) -> None:
    """Through pcscd the target checks, at set-up and after every reconnection, that the card
    is this run's emulator; the vicc server counts those APDUs with the card's."""
    require_pcsc()
    from harness.targets import make_target

    target = make_target("pcscd", load_card_config(), None)
    try:
        assert target.apdus_received() == 1  # the identification at set-up, pending
        total = 0
        for name in ("block-survives-power.pin.yaml", "tearing-verify.pin.yaml"):
            before = target.apdus_received() or 0
            runner = _run(target, name)
            rows = runner.session.latencies
            received = (target.apdus_received() or 0) - before
            assert received + (1 if total == 0 else 0) == len(rows)
            assert "identify" in {a.kind for a in rows}
            total += len(rows)
        assert target.apdus_received() == total
    finally:
        target.close()
