"""The scenario library against the emulated card: it passes on the faithful card, and every
defect profile makes it fail, naming the rule that broke."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness.cards.jpki import PROFILE as JPKI
from harness.emulator.defects import PROFILES
from harness.scenario import load_scenarios
from tests.pcsc_lab import require_pcsc
from tests.support import run_pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "scenarios"

#: the rules each defect must break (at least these; others may break too)
CAUGHT_BY = {
    "no-decrement": {"lock-at-exactly-n", "decrement-matches-query"},
    "ok-when-blocked": {"lock-at-exactly-n", "blocked-answers-alike"},
    "power-cycle-resets-counter": {"block-survives-power-loss", "tearing-timed-never-refills"},
    "query-costs-try": {"status-query-is-free"},
    "early-exit-compare": {"verify-constant-time"},
    "fixed-delay:fixed_delay_ms=2": {"verify-latency-budget"},
    "decrement-after-compare": {"tearing-never-loses-a-try"},
    "non-atomic-pin-write": {"tearing-change-is-atomic", "tearing-reinit-is-atomic"},
    "no-restore": {"correct-restores-max"},
    "double-decrement": {"decrement-matches-query", "lock-at-exactly-n"},
    "wrong-length-costs-try": {"malformed-length-costs-nothing"},
}


def run_library(*args: str) -> tuple[int, str]:
    proc = run_pytest(str(LIBRARY), *args)
    return proc.returncode, proc.stdout + proc.stderr


def summary(out: str) -> str:
    return out.strip().splitlines()[-1]


def test_every_defect_profile_is_covered() -> None:
    assert {k.split(":")[0] for k in CAUGHT_BY} == set(PROFILES) - {"faithful"}


def test_the_library_covers_every_pin_object() -> None:
    from harness.cards.jpki.layout import PINS

    scenarios = [s for f in LIBRARY.glob("*.pin.yaml") for s in load_scenarios(f, JPKI)]
    rules = {s.rule for s in scenarios}
    for pin in (p.id for p in PINS):
        covered = {s.rule for s in scenarios if pin in s.pins}
        assert {
            "lock-at-exactly-n",
            "decrement-matches-query",
            "correct-restores-max",
            "status-query-is-free",
            "counters-independent",
            "block-survives-power-loss",
            "blocked-answers-alike",
            "reinit-window-unblocks",
            "malformed-length-costs-nothing",
        } <= covered, pin
    assert {
        "change-needs-old-pin",
        "locked-cannot-change",
        "lowercase-costs-a-try",
        "reinit-kiosk-needs-the-other-pin",
        "reinit-kiosk-jpki-only",
        "guarded-files-need-the-pin",
        "signing-needs-the-pin",
    } <= rules


def test_the_library_passes_on_the_faithful_card_in_process() -> None:
    code, out = run_library("--pinloop-target", "inprocess")
    assert code == 0, out[-3000:]
    assert re.match(r"\d+ passed in", summary(out)), summary(out)


@pytest.mark.parametrize("profile", sorted(CAUGHT_BY))
def test_each_defect_fails_the_library_naming_its_rule(profile: str) -> None:
    code, out = run_library("--pinloop-target", "inprocess", "--pinloop-defect", profile)
    assert code == 1, out[-3000:]  # failed tests, not errors: defects of the device
    broken = set(re.findall(r"^rule '([a-z0-9-]+)' broken on ", out, re.M))
    assert CAUGHT_BY[profile] <= broken, (profile, broken)
    assert "Traceback" not in out


def test_the_library_passes_through_pcscd() -> None:
    """As the main job runs it (`./run suite`): spread over three emulated readers of one
    pcscd. One process per target is tested on parts of it (tests/test_stations.py and the
    PC/SC tests of the reports, timing and fault modules)."""
    require_pcsc()
    code, out = run_library("--pinloop-target", "pcscd", "-n", "3", "--dist", "load")
    assert code == 0, out[-3000:]
    assert re.match(r"\d+ passed in", summary(out)), summary(out)


def test_one_targets_fault_does_not_stop_the_others() -> None:
    code, out = run_library(
        "-k",
        "lowercase",
        "--pinloop-target",
        "inprocess",
        "--pinloop-target",
        "reader:^No Such Reader$",
    )
    assert code == 1 and re.match(r"1 passed, \d+ deselected, 1 error in", summary(out)), out[
        -2000:
    ]
    assert "lab fault on reader:^No Such Reader$" in out
