"""pytest plugin: every ``*.pin.yaml`` scenario becomes a test item, once per target.

Options (group ``pinloop``):

- ``--pinloop-target T`` (repeatable): ``inprocess`` (default), ``pcscd``, ``reader:NAME``
- ``--pinloop-defect PROFILE``: give the emulated card a deliberate defect
- ``--pinloop-card CONFIG``: card config of the emulated card
- ``--pinloop-card-profile NAME``: the kind of card the run is for (default ``jpki``; or
  ``module:ATTRIBUTE``): scenario files are loaded for it, and every target must hold it
- ``--pinloop-destructive-reader NAME`` (repeatable): allow destructive scenarios and steps
  that could block a PIN on that real reader (exact reader name)
- ``--pinloop-reveal``: UNSAFE, show PINs in traces
- ``--pinloop-readers DIR``: the lab's reader profiles, added to the built-in ones
  (default: ``readers/`` in the working directory, if there is one)

Markers from scenario tags: ``destructive``, ``emulator_only``, ``needs_reinit``; each item
also carries ``pinloop_target(name)``. An item whose target lacks a capability the scenario
needs is skipped in set-up, naming it (the rules: :mod:`harness.safety`). A device defect fails
the item; a lab fault is an error (raised in setup) or a broken test; a target that broke turns
its remaining items into errors at once while other targets go on.

Fixtures for a lab's Python tests: ``pinloop_target`` (the run's first target, from the pool
the scenario items share) and ``pinloop_session`` (a card session on it, begun and ended as a
scenario is). pinloop's own hooks: :mod:`harness.hookspecs`.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Generator, Iterator
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest

from harness import safety
from harness.cards import CardProfile, card_profile
from harness.errors import (
    ConfigError,
    DeviceDefect,
    HarnessError,
    SharingViolation,
)
from harness.guard import RealCardGuard, Refused
from harness.report.records import write_records
from harness.report.summary import Row, Summary
from harness.run.expect import ExpectationFailed
from harness.run.record import ScenarioRecord, first_line
from harness.scenario import Scenario, load_scenarios
from harness.target import Target, TargetError, make_target
from harness.timing import ApduTime

if TYPE_CHECKING:
    from harness.report.allure_report import SafeFileLogger
    from harness.run.session import CardSession

DEFAULT_PATTERN = r".+\.pin\.ya?ml$"
MARKERS = {
    "destructive": "may block or change a PIN of the card",
    "emulator_only": "runs on the emulated card only",
    "needs_reinit": "uses the emulator's re-initialisation test mechanism",
    "pinloop_target(name)": "the target a scenario item runs against",
}


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from harness import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("pinloop", "pinloop: My Number card reader scenarios")
    g.addoption(
        "--pinloop-target",
        action="append",
        default=[],
        metavar="T",
        help="inprocess (default), pcscd, reader:NAME-REGEX, or a kind a lab package "
        "registers (entry points pinloop.targets); repeatable",
    )
    g.addoption("--pinloop-defect", metavar="PROFILE", help="defect profile of the emulated card")
    g.addoption(
        "--pinloop-card",
        default=None,
        metavar="CONFIG",
        help="card config (YAML) of the emulated card (default: the emulator's own)",
    )
    g.addoption(
        "--pinloop-card-profile",
        default="jpki",
        metavar="NAME",
        help="the kind of card the run is for: jpki (default) or module:ATTRIBUTE",
    )
    g.addoption(
        "--pinloop-destructive-reader",
        action="append",
        default=[],
        metavar="NAME",
        help="allow destructive scenarios on this real reader (exact name)",
    )
    g.addoption("--pinloop-reveal", action="store_true", help="UNSAFE: show PINs in traces")
    g.addoption(
        "--pinloop-readers",
        metavar="DIR",
        help="the lab's reader profiles, added to the built-in ones (default: ./readers)",
    )
    g.addoption(
        "--pinloop-reports",
        metavar="DIR",
        help="write the per-reader summary (summary.json, summary.html) and the JSON record "
        "per reader (records/) here",
    )
    parser.addini("pinloop_file_pattern", "regex of scenario file names", default=DEFAULT_PATTERN)


def _allure(config: pytest.Config) -> ModuleType | None:
    """The Allure output when this run writes Allure results (``--alluredir``); otherwise
    None, and allure is not even imported."""
    if not config.getoption("allure_report_dir", None):
        return None
    from harness.report import allure_report

    return allure_report


@pytest.hookimpl(trylast=True)  # after allure-pytest has registered its file logger
def pytest_configure(config: pytest.Config) -> None:
    out = _allure(config)
    config.stash[_ALLURE] = out.protect_file_logger(config.add_cleanup) if out else None
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    config.stash[_POOL] = TargetPool(config)
    config.stash[_SUMMARY] = Summary()
    config.stash[_LAB_FAULTS] = set()
    config.stash[_READERS] = {}
    config.stash[_RECORDS] = []
    if config.getoption("--pinloop-readers"):
        from harness import readerprofile

        folder = Path(config.getoption("--pinloop-readers")).resolve()
        previous = readerprofile.use_lab_folder(folder)  # every target's, emulated ones too

        def restore() -> None:
            readerprofile.use_lab_folder(previous)

        config.add_cleanup(restore)
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(SummaryCollector(config), "pinloop-summary")
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        from harness.stations import Stations

        if config.getoption("numprocesses", None) and config.getoption("--pinloop-target"):
            config.pluginmanager.register(Stations(config), "pinloop-stations")
    station = getattr(config, "workerinput", {}).get("pinloop_station") or {}
    if station.get("quiet"):  # a worker of a spread run: timing items run alone
        from harness.stations import QuietTiming

        config.pluginmanager.register(QuietTiming(Path(station["quiet"])), "pinloop-quiet-timing")


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
            card=item.config.stash[_POOL].card.name,
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
            self.config.stash[_LAB_FAULTS].add(report.nodeid)
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
                self.config.stash[_SUMMARY].add(Row(reader, scenario, "", "error"))
            return
        self.config.stash[_SUMMARY].add(Row(**row))
        record = getattr(report, "pinloop_record", None)
        if record is not None:
            self.config.stash[_RECORDS].append(record)
        reader = dict(report.pinloop_reader)
        known = self.config.stash[_READERS].setdefault(
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
    faults = config.stash.get(_LAB_FAULTS, set())
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
            config.stash[_SUMMARY].write(Path(reports))
            write_records(Path(reports) / "records", config.stash[_RECORDS], config.stash[_READERS])
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

        readers = sorted(config.stash[_READERS].values(), key=lambda r: (r["name"], r["target"]))
        try:
            write_environment(Path(alluredir), readers)
        except OSError as exc:
            if reporter is not None:
                reporter.write_line(f"pinloop: Allure environment not written: {exc}", yellow=True)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    safe = config.stash.get(_ALLURE, None)
    if safe is not None and safe.describe():
        terminalreporter.write_line(f"pinloop: {safe.describe()}", yellow=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.pluginmanager.get_plugin("pinloop-quiet-timing") is not None:
        # a worker of a spread run: its card stays in its slot, idle, until the process ends
        # with the run, so that pcscd sees nothing change while another worker measures
        return
    pool = config.stash.get(_POOL, None)
    if pool is not None:
        pool.close()


@pytest.fixture
def pinloop_target(request: pytest.FixtureRequest) -> Target:
    """For Python tests: the run's first target (``--pinloop-target``), from the pool the
    scenario items share (started once; a target that broke is an error here too)."""
    pool = request.config.stash[_POOL]
    return pool.get(pool.specs()[0])


@pytest.fixture
def pinloop_session(
    pinloop_target: Target, request: pytest.FixtureRequest
) -> Iterator[CardSession]:
    """For Python tests: a card session on :func:`pinloop_target`, begun and ended as a
    scenario is. The card is brought to its start (a real card: its PINs restored; the test
    declares no tries, so the real-card guard refuses any that could cost one), every APDU
    passes the target's transport (on a real card, the guard), and the card is put back at
    the end. A lab fault while putting it back sets the target up afresh for what follows."""
    from harness.run.session import CardSession

    node = request.node
    scenario = Scenario(
        name=node.name,
        rule="python-test",
        path=str(getattr(node, "path", "")),
        line=(node.location[1] or 0) + 1,
        steps=(),
        card=pinloop_target.card_profile.name,
    )
    session = CardSession(pinloop_target, scenario)
    safety.begin(pinloop_target, scenario, destructive_ok=False, log=session.note)
    session.lab_done()
    try:
        yield session
    finally:
        try:
            pinloop_target.end()
        except HarnessError as exc:
            pool = request.config.stash[_POOL]
            pool.mark_faulted(pool.specs()[0], str(exc).splitlines()[0])
            raise
        finally:
            pinloop_target.end_record()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    pattern = parent.config.getini("pinloop_file_pattern")
    if re.match(pattern, file_path.name):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class TargetPool:
    """Targets shared by all items of a session, started on first use.

    After a lab fault in the middle of a scenario the target is closed; the next scenario sets
    it up afresh (pcscd and emulator restarted, or the real reader reconnected). If that
    fails too, the target is broken for the rest of the session and its items error at once.
    Nothing is retried inside a scenario: the APDU in flight is never sent again.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._card: CardProfile | None = None
        self.targets: dict[str, Target] = {}
        self.broken: dict[str, str] = {}
        self.faulted: dict[str, str] = {}  # faulted mid-scenario; one fresh set-up allowed
        #: real readers' guards, kept across a fresh set-up: what they learnt stays
        self.guards: dict[str, RealCardGuard] = {}

    @property
    def station(self) -> dict[str, Any] | None:
        """The station an xdist controller handed this worker (None outside xdist)."""
        station: dict[str, Any] | None = getattr(self.config, "workerinput", {}).get(
            "pinloop_station"
        )
        return station

    @property
    def card(self) -> CardProfile:
        """The card profile of the run (``--pinloop-card-profile``): scenario files are loaded
        for it, and every target holds it."""
        if self._card is None:
            self._card = card_profile(self.config.getoption("--pinloop-card-profile"))
        return self._card

    def specs(self) -> list[str]:
        station = self.station
        if station is not None:  # an xdist worker: the controller handed it one reader
            return [station["spec"]]
        return list(self.config.getoption("--pinloop-target") or ["inprocess"])

    def get(self, spec: str) -> Target:
        if spec in self.broken:
            raise HarnessError(f"target {spec} broke earlier: {self.broken[spec]}")
        if spec not in self.targets:
            try:
                defect = self.config.getoption("--pinloop-defect")
                station = self.station
                if station is not None and station.get("slot"):
                    from harness.stations import slot_target

                    config = None if self.card.emulator else self.card_config()
                    self.targets[spec] = slot_target(station, config, defect, self.card)
                else:
                    readers = self.config.getoption("--pinloop-readers")
                    self.targets[spec] = make_target(
                        spec,
                        None if self.card.emulator else self.card_config,  # loaded if needed
                        defect,
                        Path(readers) if readers else None,
                        card=self.card,
                        guard=self.guards.get(spec),
                    )
            except HarnessError as exc:
                why = str(exc).splitlines()[0]
                if spec not in self.faulted:
                    self.broken[spec] = why
                    raise
                # the cause is the fault that came first; what the fresh set-up met follows
                # from it (e.g. a sharing violation with a command that never returned)
                why = f"{self.faulted[spec]}; setting it up again failed: {why}"
                if isinstance(exc, SharingViolation):
                    why += " (the reader is still busy with the command that did not return)"
                self.broken[spec] = why
                raise TargetError(why) from None
            self.faulted.pop(spec, None)
        return self.targets[spec]

    def card_config(self) -> Any:
        """The emulated card's config (``--pinloop-card``, else the emulator's own); the
        emulator is loaded only for an emulated target."""
        from harness.emulator.config import DEFAULT_CONFIG_PATH, load_card_config

        return load_card_config(self.config.getoption("--pinloop-card") or DEFAULT_CONFIG_PATH)

    def mark_faulted(self, spec: str, why: str) -> None:
        """A lab fault mid-scenario: close the target; the next item sets it up again."""
        self.faulted[spec] = why
        target = self.targets.pop(spec, None)
        guard = getattr(target, "guard", None)
        if isinstance(guard, RealCardGuard):
            self.guards[spec] = guard
        if target is not None:
            with contextlib.suppress(Exception):  # closing a broken target: best effort
                target.close()

    def close(self) -> None:
        for spec in list(self.targets):
            self.targets.pop(spec).close()


def describe_target(spec: str, target: Target) -> dict[str, str]:
    """One reader of the session, for environment.properties."""
    try:
        atr = target.transport.atr.hex(" ").upper()
    except HarnessError:
        atr = "unknown"
    reader = {
        "target": spec,
        "name": target.report_name,
        "atr": atr,
        "profile": target.profile.name if target.profile else "none",
        "card": "emulated" if target.emulated else "real",
        "capabilities": ", ".join(sorted(target.capabilities)),
    }
    if target.report_name != target.name:  # one of the slots of a spread run
        reader["slots"] = target.name
    return reader


_POOL = pytest.StashKey[TargetPool]()
_ALLURE: pytest.StashKey[SafeFileLogger | None] = pytest.StashKey()
_LAB_FAULTS = pytest.StashKey[set[str]]()
_SUMMARY = pytest.StashKey[Summary]()
_READERS = pytest.StashKey[dict[str, dict[str, str]]]()
_RECORDS = pytest.StashKey[list[dict[str, Any]]]()


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        pool = self.config.stash[_POOL]
        scenarios = load_scenarios(self.path, pool.card)
        out = _allure(self.config)
        for scenario in scenarios:
            for spec in pool.specs():
                name = scenario.name + (f"[{scenario.id}]" if scenario.id else "") + f"@{spec}"
                item = ScenarioItem.from_parent(self, name=name, scenario=scenario, spec=spec)
                for tag in sorted(scenario.tags):
                    item.add_marker(tag.replace("-", "_"))
                for mark in out.collection_markers(scenario, pool.card) if out else ():
                    item.add_marker(mark)
                item.add_marker(pytest.mark.pinloop_target(spec))
                yield item

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str:
        if isinstance(excinfo.value, ConfigError):
            return excinfo.value.render()
        return str(super().repr_failure(excinfo))


class ScenarioItem(pytest.Item):
    def __init__(self, *, scenario: Scenario, spec: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.spec = spec
        self.target: Target | None = None
        #: the result record (set when the scenario runs, or by the report if it never did)
        self.record: ScenarioRecord | None = None

    def setup(self) -> None:
        pool = self.config.stash[_POOL]
        target = pool.get(self.spec)
        self.target = target  # skipped or not, the item's row is this reader's
        allowed = self.config.getoption("--pinloop-destructive-reader")
        why = safety.skip_reason(self.scenario, target, allowed)
        if why is not None:
            pytest.skip(why)
        for pin in sorted(self.scenario.pins):
            target.secret(pin)  # a missing PIN is an error before anything is sent

    def runtest(self) -> None:
        from harness.run.runner import Runner

        assert self.target is not None
        allowed = self.config.getoption("--pinloop-destructive-reader")
        runner = Runner(
            self.target,
            self.scenario,
            destructive_ok=safety.destructive_ok(self.target, allowed),
            reveal=self.config.getoption("--pinloop-reveal"),
        )
        session = runner.session
        session.record.target = self.spec
        hook = self.config.hook
        session.on_apdu = lambda cmd: hook.pytest_pinloop_apdu(session=session, command=cmd)
        runner.on_step = lambda step, rec: hook.pytest_pinloop_step(
            session=session, step=step, record=rec
        )
        self.record = session.record
        self.user_properties.append(("reader", session.record.reader))
        self.user_properties.append(("rule", session.record.rule))
        out = _allure(self.config)
        if out is not None:
            out.runtime_metadata(
                self.scenario, self.target.report_name, self.target.card_description
            )
            runner.step_context = out.step_context(lambda: runner.session.trace)
        try:
            runner.run()
        except Refused as exc:
            # what the real-card guard would not send: neither a defect nor a lab fault
            pytest.skip(f"refused on {self.target.name}: {exc}")
        except HarnessError as exc:
            if isinstance(exc, ConfigError):
                raise  # the scenario's own mistake: the target is as good as before
            # a lab fault mid-scenario (any family: the path to the card, pcscd, the card
            # state, a power switch or relay, the target): the target is set up afresh for
            # the next scenario; other targets go on
            tail = getattr(self.target, "log_tail", None)
            if callable(tail) and out is not None:
                out.attach_log("pcscd log (last lines)", tail())
            keep = getattr(self.target, "keep_log", None)
            if callable(keep) and (kept := keep()) is not None:
                self.user_properties.append(("pcscd log kept", str(kept)))
                self.kept_log = str(kept)
            self.config.stash[_POOL].mark_faulted(self.spec, str(exc).splitlines()[0])
            raise
        finally:
            self.latencies = runner.session.latencies
            received = self.target.apdus_received()
            if received is not None:  # what the card received since the previous item's end
                seen = getattr(self.target, "_pinloop_apdus_seen", 0)
                self.card_apdus = received - seen
                self.target._pinloop_apdus_seen = received  # type: ignore[attr-defined]
            marks = runner.session.record.marginal
            if marks:
                self.user_properties.append(("marginal", "; ".join(marks)))
            if out is not None:
                if marks:
                    out.mark_marginal(self.scenario, marks)
                timing = any(s.action in ("latency", "leak") for s in self.scenario.steps)
                out.attach_timing(
                    runner.session.latencies,
                    f"{self.scenario.name} on {self.target.report_name}",
                    plot=timing,
                    classes=runner.session.timing_series,
                )

    def _pinloop_repr(self, exc: BaseException) -> str | None:
        """Our own one-screen text for the failures pinloop raises; None for anything else."""
        if isinstance(exc, ExpectationFailed | ConfigError):
            return exc.render()
        if isinstance(exc, DeviceDefect):  # e.g. the real-card guard found the card breaking a rule
            return f"device defect on {self.spec} ({type(exc).__name__}): {exc}"
        if isinstance(exc, HarnessError):
            text = f"lab fault on {self.spec} ({type(exc).__name__}): {exc}"
            tail = getattr(self.target, "log_tail", None)
            if callable(tail):
                text += "\n  pcscd log (last lines):\n" + "\n".join(
                    "    " + line for line in tail().splitlines()[-15:]
                )
            if getattr(self, "kept_log", None):
                text += f"\n  pcscd's whole log is kept in {self.kept_log}"
            return text
        return None

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return self._pinloop_repr(excinfo.value) or str(super().repr_failure(excinfo))

    def _repr_failure_py(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> Any:
        # pytest renders setup and teardown errors through this, not through repr_failure
        own = self._pinloop_repr(excinfo.value)
        if own is not None:
            return own
        # anything else (a bug, a crash): its traceback, but never the frames' locals or
        # arguments, whatever --showlocals, --tb or -vv say: they may hold PINs
        if style is None:
            style = "short" if self.config.getoption("tbstyle", "auto") == "short" else "long"
        repr_ = excinfo.getrepr(
            funcargs=False,
            showlocals=False,
            style="long" if style == "auto" else style,
            tbfilter=self._traceback_filter,
        )
        if hasattr(repr_, "addsection"):
            repr_.addsection(
                "pinloop",
                "locals and arguments of scenario frames are not shown: they may hold PINs",
            )
        return repr_

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, self.scenario.line - 1, f"{self.scenario.rule}: {self.name}"
