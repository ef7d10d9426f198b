"""Many readers at once: one pytest-xdist worker per reader (``-n N --dist each``), the
controller handing each worker its station, results merged into one summary and one report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.pcsc_lab import require_pcsc
from tests.support import ROOT, run_pytest


def _first_error(out: str) -> str:
    """An inner run's output from its first error or failure on (where the cause is, e.g. a
    lab fault's sockets and pcscd log), up to 6000 characters, then its last 1500."""
    starts = [i for i in (out.find("= ERRORS ="), out.find("= FAILURES =")) if i >= 0]
    if not starts:
        return out[-3000:]
    first = min(starts)
    return out[first : first + 6000] + "\n[...]\n" + out[-1500:]


def _outputs(tmp_path: Path) -> list[str]:
    """The options that send the summary, JUnit XML and Allure results to ``tmp_path``."""
    return [
        "--pinloop-reports",
        str(tmp_path),
        "--junitxml",
        str(tmp_path / "junit.xml"),
        "--alluredir",
        str(tmp_path / "allure"),
    ]


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_pytest(
        str(ROOT / "scenarios" / "lock-at-exactly-n.pin.yaml"), *_outputs(tmp_path), *args
    )


def test_workers_need_dist_each_and_one_target_each(tmp_path: Path) -> None:
    proc = run(tmp_path, "-n", "2", "--dist", "loadscope", "--pinloop-target", "inprocess")
    assert proc.returncode == 4 and "--dist each" in proc.stderr, proc.stderr
    proc = run(tmp_path, "-n", "3", "--dist", "each", "--pinloop-target", "inprocess")
    assert proc.returncode == 4 and "3 workers but 1 --pinloop-target" in proc.stderr


def test_rows_from_every_worker_reach_the_summary(tmp_path: Path) -> None:
    """Two in-process stations (no root needed): the controller writes what both report."""
    proc = run(
        tmp_path,
        "-n",
        "2",
        "--dist",
        "each",
        "--pinloop-target",
        "inprocess",
        "--pinloop-target",
        "inprocess",
    )
    assert proc.returncode == 0, proc.stdout[-2000:]
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["readers"]["emulated (in-process)"]["outcomes"]["passed"] == 20
    assert data["readers"]["emulated (in-process)"]["verify_latency"]["samples"] > 0


def test_four_emulated_readers_in_parallel(tmp_path: Path) -> None:
    require_pcsc()
    proc = run(tmp_path, "-n", "4", "--dist", "each", "--pinloop-target", "pcscd")
    assert proc.returncode == 0, _first_error(proc.stdout)
    assert "40 passed" in proc.stdout
    data = json.loads((tmp_path / "summary.json").read_text())
    readers = {
        "Virtual PCD 00 00",
        "Virtual PCD 00 01",
        "Virtual PCD A 00 00",
        "Virtual PCD A 00 01",
    }
    assert set(data["readers"]) == readers
    assert all(r["outcomes"]["passed"] == 10 for r in data["readers"].values())
    junit = (tmp_path / "junit.xml").read_text()
    assert all(f"@pcscd:{k}" in junit for k in range(4))
    env = (tmp_path / "allure" / "environment.properties").read_text()
    assert all(f"name={r}" in env for r in readers)
    # each worker wrote its own Allure results; the reader is a parameter, so none overwrite
    results = [json.loads(p.read_text()) for p in (tmp_path / "allure").glob("*-result.json")]
    assert len(results) == 40
    assert len({r["historyId"] for r in results}) == 40


def _crashed_run(
    tmp_path: Path, dist: str, target: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """lock-at-exactly-n on 2 workers, gw0 crashing in its first scenario (it did)."""
    flag = tmp_path / "crashed"
    proc = run_pytest(
        str(ROOT / "scenarios" / "lock-at-exactly-n.pin.yaml"),
        "-n",
        "2",
        "--dist",
        dist,
        "--pinloop-target",
        target,
        "-p",
        "tests.crash_worker",
        "--pinloop-reports",
        str(tmp_path),
        *args,
        env={"PINLOOP_CRASH_FLAG": str(flag)},
    )
    assert flag.exists()
    return proc


def test_a_crashed_worker_is_replaced_on_its_own_reader(tmp_path: Path) -> None:
    """Worker gw0 dies in its first scenario; xdist starts another worker, which must get the
    dead one's reader (slot 0), not a slot that does not exist or one in use."""
    require_pcsc()
    proc = _crashed_run(tmp_path, "each", "pcscd")
    assert "1 failed, 19 passed" in proc.stdout, _first_error(proc.stdout)
    assert "worker 'gw0' crashed" in proc.stdout
    readers = json.loads((tmp_path / "summary.json").read_text())["readers"]
    assert readers["Virtual PCD 00 00"]["outcomes"]["passed"] == 9  # the replacement's
    assert readers["Virtual PCD 00 01"]["outcomes"]["passed"] == 10
    assert readers["pcscd:0 (worker gw0 crashed)"]["outcomes"]["error"] == 1


# -- the library spread over emulated readers (-n N --dist load) --------------------------------

SPREAD_FILES = [
    "lock-at-exactly-n.pin.yaml",  # 10 short items
    "block-survives-power.pin.yaml",  # 10 long ones (a cut, a removal)
    "verify-latency.pin.yaml",  # timing: a latency budget
    "verify-timing-leak.pin.yaml",  # timing: a leak test
]


def _spread(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_pytest(
        *(str(ROOT / "scenarios" / f) for f in SPREAD_FILES),
        *_outputs(tmp_path),
        "-p",
        "tests.spread_probe",
        *args,
        env={"PINLOOP_SPREAD_PROBE": str(tmp_path / "probe")},
    )


def _collected(*args: str) -> list[str]:
    proc = run_pytest(*(str(ROOT / "scenarios" / f) for f in SPREAD_FILES), "--collect-only", *args)
    return [ln for ln in proc.stdout.splitlines() if "::" in ln]


def _junit_cases(path: Path) -> list[str]:
    import xml.etree.ElementTree as ET

    return [c.get("name", "") for c in ET.parse(path).getroot().iter("testcase")]


def test_spread_needs_one_emulated_target_and_dist_load_or_each(tmp_path: Path) -> None:
    proc = run(tmp_path, "-n", "2", "--dist", "load", "--pinloop-target", "reader:^Nope$")
    assert proc.returncode == 4 and "--pinloop-target pcscd (or inprocess) alone" in proc.stderr
    proc = run(tmp_path, "-n", "2", "--dist", "loadfile", "--pinloop-target", "inprocess")
    assert proc.returncode == 4 and "not --dist loadfile" in proc.stderr, proc.stderr


def _check_spread(tmp_path: Path, proc: subprocess.CompletedProcess[str], reader: str) -> None:
    """Every item of a single run, each exactly once, as one reader in every report."""
    assert proc.returncode == 0, _first_error(proc.stdout)
    single = sorted(n.split("::", 1)[1] for n in _collected("--pinloop-target", "pcscd"))
    if reader != "emulated (pcscd)":
        single = [n.replace("@pcscd", "@inprocess") for n in single]
    assert len(single) == 25
    cases = _junit_cases(tmp_path / "junit.xml")
    assert sorted(cases) == single  # none lost, none twice
    data = json.loads((tmp_path / "summary.json").read_text())
    assert list(data["readers"]) == [reader]  # one row, whichever worker ran an item
    assert data["readers"][reader]["outcomes"]["passed"] == 25
    assert sorted(r["scenario"] for r in data["results"]) == sorted(
        n.rsplit("@", 1)[0] for n in single
    )
    results = [json.loads(p.read_text()) for p in (tmp_path / "allure").glob("*-result.json")]
    assert len(results) == 25 and len({r["historyId"] for r in results}) == 25
    assert {p["value"] for r in results for p in r["parameters"] if p["name"] == "reader"} == {
        repr(reader)
    }
    # the histograms: drawn by the controller, real PNGs, none left as a request
    pngs = list((tmp_path / "allure").glob("*-attachment.png"))
    assert len(pngs) == 3 * 2 + 2  # leak tests: classes + histogram; latency: histogram
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    # no worker imported matplotlib; each timing item ran alone
    probes = list((tmp_path / "probe").glob("gw*"))
    assert len(probes) >= 2 and all(p.read_text() == "no matplotlib" for p in probes)
    junit = (tmp_path / "junit.xml").read_text()
    assert junit.count('name="ran alone after waiting"') == 5


def test_spread_runs_every_item_once_as_one_reader(tmp_path: Path) -> None:
    """Three in-process copies of the card (no root needed)."""
    proc = _spread(tmp_path, "-n", "3", "--dist", "load", "--pinloop-target", "inprocess")
    _check_spread(tmp_path, proc, "emulated (in-process)")


def test_spread_over_the_slots_of_one_pcscd(tmp_path: Path) -> None:
    require_pcsc()
    proc = _spread(tmp_path, "-n", "3", "--dist", "load", "--pinloop-target", "pcscd")
    _check_spread(tmp_path, proc, "emulated (pcscd)")
    env = dict(
        line.split("=", 1)
        for line in (tmp_path / "allure" / "environment.properties").read_text().splitlines()
    )
    assert env["reader.0.name"] == "emulated (pcscd)" and "reader.1.name" not in env
    assert env["reader.0.slots"] == "Virtual PCD 00 00, Virtual PCD 00 01, Virtual PCD A 00 00"


# -- the scheduler, with workers simulated ------------------------------------------------------


SENT: list[int] = []  # every item handed out, in order, to any simulated worker


class FakeNode:
    def __init__(self, name: str) -> None:
        self.gateway = type("Gateway", (), {"id": name})()
        self.shutting_down = False
        self.sent: list[int] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(indices)
        SENT.extend(indices)

    def shutdown(self) -> None:
        self.shutting_down = True


def _scheduler(seconds: list[float], timing: set[int], nodes: list[FakeNode]) -> object:
    import pytest

    from harness.plugin.stations import SpreadScheduling

    config = pytest.Config.__new__(pytest.Config)
    config.getoption = lambda name, default=None: None  # type: ignore[method-assign]
    config.getvalue = lambda name: ["popen"] * len(nodes)  # type: ignore[method-assign]
    config.option = type("Opt", (), {"tx": ["popen"] * len(nodes), "numprocesses": len(nodes)})()
    sched = SpreadScheduling(config, None, classify=lambda ids: (seconds, timing))
    collection = [f"s.pin.yaml::item{i}@pcscd" for i in range(len(seconds))]
    for node in nodes:
        sched.add_node(node)
        sched.add_node_collection(node, collection)
    sched.schedule()
    return sched


def _drive(sched: Any, log: list[tuple[str, int]], crash: str | None = None) -> None:
    """Run the simulated workers until none can go on: a worker runs the first item it holds
    once it holds a second one (as xdist's do) or has been told to finish."""
    while True:
        for node in list(sched.node2pending):
            pending = sched.node2pending[node]
            if pending and (len(pending) >= 2 or node.shutting_down):
                if node.gateway.id == crash and len(log) > 3:
                    crash = None
                    sched.remove_node(node)  # dies in its current item
                    break
                log.append((node.gateway.id, pending[0]))
                sched.mark_test_complete(node, pending[0])
                break
        else:
            return


def test_the_scheduler_hands_out_every_item_once_long_first_timing_last_to_one() -> None:
    seconds = [0.02] * 20 + [1.6] * 6 + [8.0, 8.0] + [0.02] * 5
    timing = {28, 29, 30, 31, 32}
    nodes = [FakeNode(f"gw{i}") for i in range(4)]
    SENT.clear()
    sched = _scheduler(seconds, timing, nodes)
    first = [n.sent[0] for n in nodes]
    assert sorted(first) == [20, 21, 26, 27]  # the longest first
    assert all(seconds[n.sent[1]] < 0.4 for n in nodes)  # and a short one behind each
    log: list[tuple[str, int]] = []
    _drive(sched, log)
    assert sorted(i for _, i in log) == list(range(33))  # each once
    sent = sorted(i for n in nodes for i in n.sent)
    assert sent == list(range(33))
    timing_nodes = {w for w, i in log if i in timing}
    assert len(timing_nodes) == 1  # all to one worker
    assert set(SENT[-5:]) == timing  # handed out once everything else was
    assert sched.tests_finished and all(n.shutting_down for n in nodes)


def test_a_crashed_worker_s_items_go_to_the_others_once() -> None:
    seconds = [0.02] * 12 + [1.6] * 4 + [0.02] * 3
    timing = {16, 17, 18}
    nodes = [FakeNode(f"gw{i}") for i in range(3)]
    sched = _scheduler(seconds, timing, nodes)
    log: list[tuple[str, int]] = []
    _drive(sched, log, crash="gw1")
    ran = sorted(i for _, i in log)
    crashed = set(range(19)) - set(ran)
    assert len(crashed) == 1 and len(ran) == 18 == len(set(ran))  # one lost with the worker
    assert "gw1" not in {w for w, i in log[4:]}


def test_timing_items_wait_for_every_other_worker(tmp_path: Path) -> None:
    from harness.errors import HarnessError
    from harness.plugin.stations import QuietTiming

    lock = tmp_path / "quiet.lock"
    other, timing = QuietTiming(lock), QuietTiming(lock, deadline=0.2)
    try:
        with pytest.raises(HarnessError, match="did not finish within"):
            timing.exclusive()  # the other worker still lives
        other.pytest_unconfigure(None)  # type: ignore[arg-type]
        assert timing.exclusive() < 0.1
        late = subprocess.run(  # a worker starting now waits until the measurement is done
            [
                sys.executable,
                "-c",
                f"import fcntl,os; fcntl.flock(os.open({str(lock)!r}, "
                "os.O_RDWR), fcntl.LOCK_SH | fcntl.LOCK_NB)",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert late.returncode != 0 and "BlockingIOError" in late.stderr
        timing.shared()
    finally:
        timing.pytest_unconfigure(None)  # type: ignore[arg-type]


def test_file_profile_hints() -> None:
    from harness.plugin.stations import file_profile

    timed = [{"select": {"pin": "{pin}"}}, {"tear": {"delays_us": [0, 100, 200, 300]}}]
    assert file_profile(timed) == (pytest.approx(0.02 + 4 * 0.8), False)
    assert file_profile([{"power": "cut"}, {"power": "cycle"}])[0] == pytest.approx(0.82)
    assert file_profile([{"tear": {"command": "change"}}])[0] == pytest.approx(1.62)
    assert file_profile([{"leak": {"classes": "blocked"}}]) == (0.02, True)
    assert file_profile("not steps") == (0.02, False)


def test_a_crashed_worker_of_a_spread_run_costs_its_item_only(tmp_path: Path) -> None:
    """gw0 dies in its first scenario: that item is an error of the one reader, the items it
    held go to the other worker (or its replacement), and every other item runs once."""
    proc = _crashed_run(tmp_path, "load", "inprocess", "--junitxml", str(tmp_path / "junit.xml"))
    assert "1 failed, 9 passed" in proc.stdout, _first_error(proc.stdout)
    readers = json.loads((tmp_path / "summary.json").read_text())["readers"]
    assert list(readers) == ["emulated (in-process)"]
    assert readers["emulated (in-process)"]["outcomes"] | {"marginal": 0} == {
        "passed": 9,
        "failed": 0,
        "error": 1,
        "skipped": 0,
        "marginal": 0,
    }
    assert len(set(_junit_cases(tmp_path / "junit.xml"))) == 10
