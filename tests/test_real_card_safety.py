"""Never lock a real card by accident.

On a card that is not the emulator the runner reads the counter before any VERIFY that may be
wrong, and refuses one that could block the PIN unless destructive runs were enabled for that
reader; destructive scenarios are skipped there unless enabled; PINs come from the
environment; literal PINs, fresh PINs and re-initialisation are refused.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import load_card_config, parse_profile
from harness.lab.pcscd import Pcscd
from harness.run.runner import Runner
from harness.safety.guard import Refused, UnsafeStep
from harness.scenario import load_scenarios
from harness.targets import env_name
from tests.pcsc_lab import EmulatorProcess
from tests.support import PretendRealCard, run_pytest

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "scenarios"


def _scenario(name: str, pin: str = "jpki-auth"):  # type: ignore[no-untyped-def]
    return next(s for s in load_scenarios(LIB / name, JPKI) if s.params.get("pin", pin) == pin)


@pytest.fixture
def real() -> PretendRealCard:
    return PretendRealCard(load_card_config(), parse_profile("faithful"))


def test_a_scenario_that_could_block_is_refused_before_it_starts(real: PretendRealCard) -> None:
    runner = Runner(real, _scenario("lock-at-exactly-n.pin.yaml"))
    with pytest.raises(
        Refused, match=r"may spend 3 tries of jpki-auth, which has 3 .* 2 must stay"
    ):
        runner.run()
    assert real.card.pin_state("jpki-auth").remaining == 3  # not one try spent


def test_with_the_opt_in_it_runs(real: PretendRealCard) -> None:
    Runner(real, _scenario("lock-at-exactly-n.pin.yaml"), destructive_ok=True).run()
    assert real.card.pin_state("jpki-auth").remaining == 0


def test_scenarios_that_stay_clear_of_the_lock_run(real: PretendRealCard) -> None:
    # down to 1 try: without the opt-in the reserve try is kept, so it is refused
    with pytest.raises(Refused, match="2 must stay"):
        Runner(real, _scenario("correct-restores-max.pin.yaml")).run()
    runner = Runner(real, _scenario("correct-restores-max.pin.yaml"), destructive_ok=True)
    runner.run()
    assert any("not observable on a real card" in t for t in runner.session.trace)
    assert real.card.pin_state("jpki-auth").remaining == 3  # put back at the end


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("reinit-window.pin.yaml", "test mechanism"),
        ("change-pin.pin.yaml", "fresh PIN on a real card"),
    ],
)
def test_emulator_mechanisms_are_refused(real: PretendRealCard, name: str, words: str) -> None:
    with pytest.raises(UnsafeStep, match=words):
        Runner(real, _scenario(name), destructive_ok=True).run()


def _pytest(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_pytest("-rs", *args, env=env, timeout=300)


def test_a_virtual_reader_addressed_as_a_real_one(
    pcscd: Pcscd, template_state: object, tmp_path: Path
) -> None:
    slot = pcscd.slots[0]
    emu = EmulatorProcess(template_state, tmp_path, slot.url)  # type: ignore[arg-type]
    target = f"reader:^{slot.reader}$"
    files = [str(LIB / "status-query-is-free.pin.yaml"), str(LIB / "lock-at-exactly-n.pin.yaml")]
    select = ["-k", "jpki-auth", "--pinloop-target", target]
    try:
        from harness.transport.pcsc import wait_for_card

        wait_for_card(slot.reader, 15)
        # no PIN in the environment: a lab fault (error), not a device failure
        proc = _pytest([*files, *select], {})
        out = proc.stdout
        assert (
            f"missing PIN for jpki-auth on {slot.reader}: set {env_name('jpki-auth', JPKI)}" in out
        )
        assert "1 error" in out and "1 skipped" in out, out[-2000:]
        # with the PIN: the safe scenario passes, the destructive one is skipped
        env = {env_name("jpki-auth", JPKI): "1234"}
        proc = _pytest([*files, *select, "--pinloop-reports", str(tmp_path / "r")], env)
        assert "1 passed, 1 skipped" in proc.stdout, proc.stdout[-2000:]
        assert "--pinloop-destructive-reader" in proc.stdout
        # one reader, one row: the item skipped at set-up is filed under the reader too
        import json

        summary = json.loads((tmp_path / "r" / "summary.json").read_text())
        assert list(summary["readers"]) == [slot.reader], summary["readers"].keys()
        # opted in for exactly this reader: the destructive one runs too
        proc = _pytest([*files, *select, "--pinloop-destructive-reader", slot.reader], env)
        assert "2 passed" in proc.stdout, proc.stdout[-2000:]
        assert "1234" not in proc.stdout + proc.stderr
    finally:
        emu.stop()
