"""What a run's items come to: each item's outcome (a device defect fails, a lab fault is an
error) and result record, and the files written from them at the end (the per-reader
summary, the JSON records, JUnit's lab faults as errors, Allure's plots and environment)."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness.errors import ConfigError, DeviceDefect, HarnessError
from harness.plugin.items import ScenarioItem
from harness.plugin.pool import FAULTED_IN_TEST, POOL, describe_target
from harness.report.records import write_records
from harness.report.summary import Row, Summary
from harness.run.record import ScenarioRecord, first_line
from harness.timing import ApduTime

if TYPE_CHECKING:
    from harness.report.allure_report import SafeFileLogger


ALLURE: pytest.StashKey[SafeFileLogger | None] = pytest.StashKey()
LAB_FAULTS = pytest.StashKey[set[str]]()
SUMMARY = pytest.StashKey[Summary]()
READERS = pytest.StashKey[dict[str, dict[str, str]]]()
RECORDS = pytest.StashKey[list[dict[str, Any]]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if (
        isinstance(item, ScenarioItem)
        and call.when == "call"
        and report.failed
        and call.excinfo is not None
        and not isinstance(call.excinfo.value, DeviceDefect)
    ):
        # a lab fault (or a harness bug, a bare assert included: only a DeviceDefect says the
        # device broke a rule) in the middle of a scenario: an error, as in set-up; travels
        # on the report to an xdist controller
        report.pinloop_lab_fault = True  # type: ignore[attr-defined]
    elif (
        "pinloop_target" in getattr(item, "fixturenames", ())
        and call.when == "call"
        and report.failed
        and call.excinfo is not None
        and isinstance(call.excinfo.value, HarnessError)
    ):
        # a lab's Python test on a pinloop target: its own asserts are its verdicts, a lab
        # fault is an error as in a scenario, and the target is set up afresh after it
        report.pinloop_lab_fault = True  # type: ignore[attr-defined]
        if not isinstance(call.excinfo.value, ConfigError):
            item.stash[FAULTED_IN_TEST] = first_line(call.excinfo.value)
    if isinstance(item, ScenarioItem) and (
        call.when == "call" or report.failed or (report.skipped and call.when == "setup")
    ):
        _record(item, call, report)
    return report


def pytest_report_teststatus(
    report: pytest.TestReport, config: pytest.Config
) -> tuple[str, str, str] | None:
    """A device defect fails; a lab fault is an error wherever in the item it happened."""
    if report.when == "call" and report.failed and getattr(report, "pinloop_lab_fault", False):
        return "error", "E", "ERROR"
    return None


def _junit_errors(path: Path, nodeids: set[str]) -> None:
    """In the JUnit file pytest wrote, the lab faults of the call phase as ``<error>`` (pytest
    writes every call-phase exception as ``<failure>``); the suites' counts follow."""
    import xml.etree.ElementTree as ET

    from _pytest.junitxml import mangle_test_address

    wanted = set()
    for nodeid in nodeids:
        names = mangle_test_address(nodeid)
        wanted.add((".".join(names[:-1]), names[-1]))
    tree = ET.parse(path)  # noqa: S314 - the file pytest has just written
    for suite in tree.getroot().iter("testsuite"):
        moved = 0
        for case in suite.iter("testcase"):
            key = (case.get("classname", ""), case.get("name", ""))
            if not any(key[1] == n and key[0].endswith(c) for c, n in wanted):
                continue
            failure = case.find("failure")
            if failure is not None:
                failure.tag = "error"
                moved += 1
        if moved:
            suite.set("failures", str(int(suite.get("failures", "0")) - moved))
            suite.set("errors", str(int(suite.get("errors", "0")) + moved))
    tree.write(path, encoding="utf-8", xml_declaration=True)


def _record(item: ScenarioItem, call: pytest.CallInfo[None], report: pytest.TestReport) -> None:
    """The item's result record, its outcome set (failed = the device, error = the lab,
    skipped with its reason), and its row of the per-reader summary made from it."""
    if report.skipped:
        result = "skipped"
    elif report.failed:
        exc = call.excinfo.value if call.excinfo else None
        result = "failed" if isinstance(exc, DeviceDefect) else "error"
    else:
        result = "passed"
    target = item.target
    reader = target.report_name if target is not None else item.spec
    record = item.record
    if record is None:  # it never ran: skipped, or an error in its set-up
        record = ScenarioRecord.of(
            item.scenario,
            target=item.spec,
            reader=reader,
            card=item.config.stash[POOL].card.name,
        )
        item.record = record
    record.outcome = result
    if result in ("skipped", "failed", "error") and call.excinfo is not None:
        exc_value = call.excinfo.value
        record.message = (
            str(getattr(exc_value, "msg", "")) or first_line(exc_value)
            if result == "skipped"
            else first_line(exc_value)
        )
    try:
        item.config.hook.pytest_pinloop_scenario(item=item, record=record)
    except Exception as exc:  # a lab plugin's bug: said, and the outputs go on
        item.warn(
            pytest.PytestWarning(f"pinloop: a scenario hook raised {type(exc).__name__}: {exc}")
        )
    times: list[ApduTime] = getattr(item, "latencies", [])
    scenario = item.nodeid.split("::", 1)[-1].rsplit("@", 1)[0]
    row = Row(
        reader,
        scenario,
        record.rule,
        record.outcome,
        verify_us=[a.wire_us for a in times if a.verify and a.step],
        query_us=[a.wire_us for a in times if a.query and a.step],
        overhead_us=[a.overhead_us for a in times],
        marginal=record.marginal,
        apdus={
            kind: sum(a.kind == kind for a in times) for kind in sorted({a.kind for a in times})
        },
        unanswered=sum(not a.answered for a in times),
        card_apdus=getattr(item, "card_apdus", None),
        observations=[asdict(o) for o in record.observations],
    )
    # Carried on the report, which pytest-xdist ships from a worker to the controller (extra
    # attributes travel with it); pytest_runtest_logreport collects it where files are written.
    report.pinloop_row = asdict(row)  # type: ignore[attr-defined]
    report.pinloop_record = record.to_json()  # type: ignore[attr-defined]
    report.pinloop_reader = (  # type: ignore[attr-defined]
        describe_target(item.spec, target)
        if target is not None
        else {"target": item.spec, "name": "broken", "fault": _first_line(call)}
    )


def _first_line(call: pytest.CallInfo[None]) -> str:
    return first_line(call.excinfo.value) if call.excinfo else "unknown"


class SummaryCollector:
    """Collects the summary rows from test reports, in the process that writes the files
    (the only process, or the xdist controller)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if getattr(report, "pinloop_lab_fault", False):
            self.config.stash[LAB_FAULTS].add(report.nodeid)
        row = getattr(report, "pinloop_row", None)
        if row is None:
            if report.failed and ".pin.y" in report.nodeid and "@" in report.nodeid:
                # an xdist worker died in this item: the controller made the report
                scenario, _, spec = report.nodeid.split("::", 1)[-1].rpartition("@")
                worker = getattr(getattr(report, "node", None), "gateway", None)
                stations = self.config.pluginmanager.get_plugin("pinloop-stations")
                if stations is not None and stations.spread:
                    # one reader however many slots: the crash is in JUnit and the terminal
                    reader = stations.reader
                else:
                    reader = f"{spec} (worker {worker.id} crashed)" if worker else spec
                self.config.stash[SUMMARY].add(Row(reader, scenario, "", "error"))
            return
        self.config.stash[SUMMARY].add(Row(**row))
        record = getattr(report, "pinloop_record", None)
        if record is not None:
            self.config.stash[RECORDS].append(record)
        reader = dict(report.pinloop_reader)
        known = self.config.stash[READERS].setdefault(
            reader["target"] + "|" + reader["name"], reader
        )
        if "slots" in reader:  # a spread run: one reader, every slot that served it named
            slots = {*known.get("slots", "").split(", "), reader["slots"]} - {""}
            known["slots"] = ", ".join(sorted(slots))


@pytest.hookimpl(trylast=True)  # after pytest's junitxml has written its file
def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if hasattr(config, "workerinput"):
        return  # xdist workers: the controller writes the session's files
    xmlpath = getattr(config.option, "xmlpath", None)
    faults = config.stash.get(LAB_FAULTS, set())
    if xmlpath and faults and Path(xmlpath).exists():
        try:
            _junit_errors(Path(xmlpath), faults)
        except (OSError, ValueError) as exc:  # a full disk, or a file pytest did not finish
            reporter = config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.write_line(f"pinloop: JUnit lab faults not marked: {exc}", yellow=True)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    reports = config.getoption("--pinloop-reports")
    if reports:
        try:
            config.stash[SUMMARY].write(Path(reports))
            write_records(Path(reports) / "records", config.stash[RECORDS], config.stash[READERS])
        except OSError as exc:  # a full or read-only disk: said, and the other outputs go on
            session.exitstatus = pytest.ExitCode.INTERNAL_ERROR
            if reporter is not None:
                reporter.write_line(f"pinloop: the summary could not be written: {exc}", red=True)
    alluredir = config.getoption("allure_report_dir", None)
    if alluredir:
        from harness.report.allure_report import draw_plots, write_environment

        try:  # every item has run: nothing measures any more
            draw_plots(Path(alluredir))
        except (OSError, ValueError) as exc:
            if reporter is not None:
                reporter.write_line(f"pinloop: Allure plots not drawn: {exc}", yellow=True)

        records: list[dict[str, Any]] = config.stash[RECORDS]
        readers = sorted(config.stash[READERS].values(), key=lambda r: (r["name"], r["target"]))
        try:
            write_environment(Path(alluredir), readers, records)
        except OSError as exc:
            if reporter is not None:
                reporter.write_line(f"pinloop: Allure environment not written: {exc}", yellow=True)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    summary = config.stash.get(SUMMARY, None)
    for reader in summary.readers() if summary is not None else ():
        assert summary is not None
        observed = [o for o in summary.observed(reader) if o["kind"] != "as-modelled"]
        if observed:
            terminalreporter.write_sep("-", f"pinloop: card facts observed on {reader}")
            for o in observed:
                terminalreporter.write_line(f"{o['fact']} ({o['confidence']}): {o['observed']}")
    safe = config.stash.get(ALLURE, None)
    if safe is not None and safe.describe():
        terminalreporter.write_line(f"pinloop: {safe.describe()}", yellow=True)
