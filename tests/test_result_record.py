"""The result record: the runner fills one per scenario item, and the JSON record per reader,
the summary and the hooks all come from it."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import load_card_config, parse_profile
from harness.emulator.config import VERIFICATION_CODE_TRIES
from harness.report.records import file_name
from harness.run.record import ScenarioRecord
from harness.run.runner import Runner
from harness.scenario import load_scenarios
from harness.targets import InProcessTarget
from tests.support import run_pytest

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "scenarios"

HOOKS = """
import json, os

def pytest_pinloop_step(session, step, record):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(json.dumps(["step", session.scenario.rule, record.index, record.verdict]) + "\\n")

def pytest_pinloop_scenario(item, record):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(json.dumps(["scenario", record.rule, record.outcome]) + "\\n")
"""


def _run(scenario: str, defect: str = "faithful") -> ScenarioRecord:
    [first, *_] = load_scenarios(LIB / scenario, JPKI)
    runner = Runner(InProcessTarget(load_card_config(), parse_profile(defect)), first)
    with contextlib.suppress(AssertionError):
        runner.run()
    return runner.session.record


def test_a_passing_scenario_records_every_step_its_apdus_and_counters() -> None:
    record = _run("decrement-matches-query.pin.yaml")
    assert record.outcome == "passed" and record.rule == "decrement-matches-query"
    assert [s.action for s in record.steps] == ["select", "verify", "verify"]
    assert all(s.verdict == "passed" for s in record.steps)
    wrong = record.steps[1]
    assert wrong.where == "scenarios/decrement-matches-query.pin.yaml:8"  # from the checkout
    verifies = [a for a in wrong.apdus if a.command.startswith("00 20 00 80 04")]
    assert verifies and all("**" in a.command for a in verifies)  # masked, always
    assert all(a.sw.startswith("63C") and a.wire_us > 0 for a in verifies)
    pin = record.params["pin"]
    most = JPKI.pins_by_id[pin].max_tries or VERIFICATION_CODE_TRIES  # the card config default
    # one-less: read before and after each repetition; the last pair is kept
    assert wrong.tries[pin] == {"before": 2, "after": 1} if most == 3 else wrong.tries[pin]
    assert wrong.tries[pin]["after"] == wrong.tries[pin]["before"] - 1
    assert record.steps[2].tries[pin] == {"after": most}
    assert json.loads(json.dumps(record.to_json())) == record.to_json()
    assert ScenarioRecord.from_json(record.to_json()) == record


def test_a_defect_fails_its_step_and_the_rest_did_not_run() -> None:
    record = _run("decrement-matches-query.pin.yaml", "double-decrement")
    assert record.outcome == "failed"
    assert [s.verdict for s in record.steps] == ["passed", "failed", "not run"]
    assert "tries left" in record.steps[1].message and record.message == record.steps[1].message


def test_a_measuring_step_records_its_figures() -> None:
    record = _run("verify-latency.pin.yaml")
    step = next(s for s in record.steps if s.action == "latency")
    assert {"verify_p50_ms", "verify_p95_ms", "verify_p99_ms"} <= set(step.measurements)
    assert sum(step.sampled.values()) >= 50  # the samples are counted, not listed


def test_the_json_record_per_reader_and_the_hooks(tmp_path: Path) -> None:
    (tmp_path / "pinloop_hooks_probe.py").write_text(HOOKS)
    log = tmp_path / "hooks.jsonl"
    reports = tmp_path / "reports"
    proc = run_pytest(
        str(LIB / "decrement-matches-query.pin.yaml"),
        str(LIB / "status-query-is-free.pin.yaml"),
        "--pinloop-defect",
        "double-decrement",
        "--pinloop-reports",
        str(reports),
        "-p",
        "pinloop_hooks_probe",
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}", "HOOK_LOG": str(log)},
    )
    assert proc.returncode == 1, proc.stdout[-3000:]  # the defect fails items
    summary = json.loads((reports / "summary.json").read_text())
    [reader] = summary["readers"]
    data = json.loads((reports / "records" / file_name(reader)).read_text())
    assert data["reader"] == reader and data["identity"][0]["name"] == reader
    assert data["outcomes"] == {
        k: v for k, v in summary["readers"][reader]["outcomes"].items() if k != "marginal"
    }
    scenarios = data["scenarios"]
    assert len(scenarios) == len(summary["results"])
    keys = [(s["scenario"], sorted(s["params"].items())) for s in scenarios]
    assert keys == sorted(keys)  # diffable: always in the same order
    failed = [s for s in scenarios if s["outcome"] == "failed"]
    assert failed and all(s["steps"][1]["verdict"] == "failed" for s in failed)
    text = (reports / "records" / file_name(reader)).read_text()
    for secret in ("1234", "PINLOOP1"):  # the default card's PINs
        assert f" {secret} " not in text and f'"{secret}"' not in text
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    done = [s for s in seen if s[0] == "scenario"]
    assert len(done) == len(scenarios)
    assert {tuple(s[1:]) for s in done} == {(s["rule"], s["outcome"]) for s in scenarios}
    steps = [s for s in seen if s[0] == "step"]
    ran = sum(1 for s in scenarios for st in s["steps"] if st["verdict"] != "not run")
    assert len(steps) == ran


def test_each_step_is_titled_from_its_model_with_pins_masked(tmp_path: Path) -> None:
    """The title every output names a step by (Allure's step names) comes from the typed
    step: parameters resolved, every expectation set (a ``tries`` of 0 and a ``blocked`` of
    false included), a literal PIN and the PIN bytes of a raw VERIFY masked."""
    path = tmp_path / "titles.pin.yaml"
    path.write_text(
        "name: titles\nrule: titles\ntags: [emulator-only]\nfor_each: {pin: [jpki-sign]}\n"
        "steps:\n"
        '  - select: {pin: "{pin}"}\n'
        "  - verify: {value: wrong, repeat: max-1}\n"
        "    expect: {sw: 63Cx, tries: one-less, blocked: false}\n"
        "  - verify: {value: wrong}\n"
        "    expect: {tries: 0, blocked: true}\n"
        "  - verify: {value: {literal: QX7Z9WK}}\n"
        '  - apdu: {hex: "002000800473918204"}\n'
    )
    [scenario] = load_scenarios(path, JPKI)
    record = ScenarioRecord.of(scenario, target="inprocess", reader="r", card="jpki")
    titles = [s.title for s in record.steps]
    assert titles[:3] == [
        "select: pin=jpki-sign",
        "verify: pin=jpki-sign, values=[wrong], repeat=max-1; "
        "expect sw=63Cx, tries=one-less, blocked=false",
        "verify: pin=jpki-sign, values=[wrong]; expect tries=0, blocked=true",
    ]
    assert titles[3] == "verify: pin=jpki-sign, values=[literal:****]"
    assert titles[4] == "apdu: raw=00 20 00 80 04 ** ** ** **"
    assert "QX7Z9WK" not in json.dumps(record.to_json()) and "73918" not in titles[4]
