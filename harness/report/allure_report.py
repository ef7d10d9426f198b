"""What pinloop puts into Allure results.

allure-pytest writes the results when pytest runs with ``--alluredir``; without it every call
here is a no-op. Labels are markers added at collection (custom items have no decorators);
parameters, steps and attachments are added at run time. The reader and the card are
non-excluded parameters, so runs on two readers stay two tests in history.
"""

from __future__ import annotations

import contextlib
import json
import platform
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import allure
import allure_commons
import pytest

from harness import __version__
from harness.cards.profile import CardProfile
from harness.run.expect import FactObserved
from harness.run.record import ObservationRecord, StepRecord
from harness.scenario import Scenario
from harness.steps import timing_actions
from harness.timing import ApduTime

TIMING_FAILURES = "Timing failures (device)"
DEVICE_DEFECTS = "Device defects"
LAB_FAULTS = "Lab faults (reader, daemon, emulator, configuration)"


def categories(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Allure's categories of a run, from its result records (first match wins). Only a
    device defect fails an item and only a lab fault breaks one, so the statuses decide,
    with one exception: a failed item of a rule whose scenarios measure time (a step kind
    with ``timing``: latency, leak) is a timing failure, matched on the rule its failure
    names (``rule 'verify-latency-budget' broken``)."""
    timing = timing_actions()
    rules = sorted(
        {
            str(r["rule"])
            for r in records
            if any(s.get("action") in timing for s in r.get("steps", ()))
        }
    )
    out: list[dict[str, Any]] = []
    if rules:
        names = "|".join(re.escape(rule) for rule in rules)
        out.append(
            {
                "name": TIMING_FAILURES,
                "matchedStatuses": ["failed"],
                "messageRegex": f"(?s).*rule '({names})' broken.*",
            }
        )
    out.append({"name": DEVICE_DEFECTS, "matchedStatuses": ["failed"]})
    out.append({"name": LAB_FAULTS, "matchedStatuses": ["broken"]})
    return out


def scenario_apps(scenario: Scenario, card: CardProfile) -> set[str]:
    apps = {card.pins_by_id[p].app for p in scenario.pins}
    apps |= {
        app for s in scenario.steps if s.action == "select" and (app := getattr(s, "app", None))
    }
    return apps


def collection_markers(scenario: Scenario, card: CardProfile) -> list[pytest.MarkDecorator]:
    """Allure's labels of a scenario loaded for ``card``: the application (epic) and the PIN
    (feature) as the card profile names them."""
    apps = scenario_apps(scenario, card)
    epic = (
        card.apps_by_id[next(iter(apps))].label
        if len(apps) == 1
        else card.labels.several_applications
    )
    pins = sorted(scenario.pins)
    feature = (
        f"{pins[0]} ({card.pins_by_id[pins[0]].label})"
        if len(pins) == 1
        else "several PINs"
        if pins
        else "no PIN"
    )
    label = pytest.mark.allure_label
    marks = [
        label(epic, label_type="epic"),
        label(feature, label_type="feature"),
        label(scenario.name, label_type="story"),
        label(scenario.severity, label_type="severity"),
        label(scenario.rule, label_type="tag"),
    ]
    marks += [label(t, label_type="tag") for t in sorted(scenario.tags)]
    return marks


def runtime_metadata(scenario: Scenario, reader: str, card: str) -> None:
    allure.dynamic.title(scenario.name + (f" [{scenario.id}]" if scenario.id else ""))
    allure.dynamic.description(scenario.description or scenario.name)
    allure.dynamic.parameter("reader", reader)
    allure.dynamic.parameter("card", card)
    for key, value in scenario.params.items():
        allure.dynamic.parameter(key, value)


def step_context(trace: Callable[[], list[str]]) -> Callable[[StepRecord], Any]:
    """A context manager factory: one Allure step per scenario step, named by its record
    (``3. verify: pin=jpki-auth, value=wrong, repeat=2``), its trace attached."""

    @contextlib.contextmanager
    def ctx(step: StepRecord) -> Iterator[None]:
        observed: FactObserved | None = None
        with allure.step(f"{step.index}. {step.title}"):
            try:
                yield
            except FactObserved as seen:
                # not a defect: the step stays passed, with the observation as a step of its own
                observed = seen
                with allure.step(
                    f"observed: {', '.join(f.id for f in seen.facts)}: {seen.what}: "
                    f"{seen.actual} (the model says {seen.expected})"
                ):
                    pass
            finally:
                lines = trace()
                if lines:
                    allure.attach(
                        "\n".join(lines),
                        name="APDU trace (PINs masked)",
                        attachment_type=allure.attachment_type.TEXT,
                    )
        if observed is not None:
            raise observed

    return ctx


def mark_observed(observations: list[ObservationRecord]) -> None:
    """Card facts that are not established, as the card showed them: tagged, and attached
    (a step of its own for each, named ``observed: …``)."""
    allure.dynamic.tag("card-fact-observed")
    for o in observations:
        if o.kind == "differs":
            continue  # its step has it already
        with allure.step(f"observed: {o.fact} ({o.confidence}): {o.observed}"):
            pass
    allure.attach(
        json.dumps([asdict(o) for o in observations], indent=1, ensure_ascii=False),
        name="card facts observed",
        attachment_type=allure.attachment_type.JSON,
    )


def attach_log(name: str, text: str) -> None:
    allure.attach(text, name=name, attachment_type=allure.attachment_type.TEXT)


def mark_marginal(scenario: Scenario, marks: list[str]) -> None:
    """A pass that met a latency budget only marginally: tagged, and said in the description."""
    allure.dynamic.tag("marginal")
    allure.dynamic.description(
        (scenario.description or scenario.name) + "\n\nMarginal: " + "; ".join(marks)
    )


def attach_timing(
    latencies: list[ApduTime],
    title: str,
    *,
    plot: bool,
    classes: dict[str, list[float]] | None = None,
) -> None:
    """The latency of every APDU as CSV; with ``plot``, a histogram too (timing scenarios:
    the summary already has one per reader). Histograms are attached as plot requests, drawn
    at the end of the session (:mod:`harness.report.plots`)."""
    if not latencies:
        return
    csv = "ins,status_query,wire_us,harness_overhead_us,kind,answered\n" + "\n".join(
        f"{a.ins},{int(a.query)},{a.wire_us:.1f},{a.overhead_us:.1f},{a.kind},{int(a.answered)}"
        for a in latencies
    )
    allure.attach(csv, name="latency samples (CSV)", attachment_type=allure.attachment_type.CSV)
    if not plot:
        return
    from harness.report.plots import plot_request

    if classes:
        allure.attach(
            plot_request(classes, "leak test: " + title),
            name="leak test classes",
            attachment_type=allure.attachment_type.PNG,
        )
    series: dict[str, list[float]] = {}
    for a in latencies:
        if not a.step:  # the scenario's own APDUs, as the checks use them
            continue
        kind = "status query" if a.query else {"20": "VERIFY", "A4": "SELECT"}.get(a.ins, "other")
        series.setdefault(kind, []).append(a.wire_us)
    allure.attach(
        plot_request(series, title),
        name="latency histogram",
        attachment_type=allure.attachment_type.PNG,
    )


def draw_plots(alluredir: Path) -> int:
    """The session's histograms, drawn from the plot requests its items attached."""
    from harness.report.plots import draw_requests

    return draw_requests(alluredir)


def _dpkg_version(package: str) -> str:
    try:
        out = subprocess.run(  # noqa: S603 - fixed program, a package name of ours
            ["dpkg-query", "-W", "-f=${Version}", package],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        return out.stdout.strip() or "not installed"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_environment(
    alluredir: Path, readers: list[dict[str, str]], records: Iterable[Mapping[str, Any]] = ()
) -> None:
    """``environment.properties`` and ``categories.json`` (:func:`categories` of the run's
    result ``records``) into the results directory."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    props = {
        "pinloop": __version__,
        "host": platform.node(),
        "python": platform.python_version(),
        "pyscard": installed("pyscard"),
        "allure-pytest": installed("allure-pytest"),
        "pcscd": _dpkg_version("pcscd"),
        "vsmartcard-vpcd": _dpkg_version("vsmartcard-vpcd"),
    }
    for i, r in enumerate(readers):
        for key, value in r.items():
            props[f"reader.{i}.{key}"] = value
    alluredir.mkdir(parents=True, exist_ok=True)
    (alluredir / "environment.properties").write_text(
        "".join(f"{k}={str(v).replace(chr(10), ' ')}\n" for k, v in props.items())
    )
    (alluredir / "categories.json").write_text(json.dumps(categories(records), indent=1))


class SafeFileLogger:
    """allure-pytest's file logger, with a full or failing disk reported instead of fatal.

    allure-pytest writes each result from inside pytest's hooks; an OSError there (ENOSPC,
    EROFS) ends the whole session with INTERNALERROR, before JUnit and the summary are
    written. Here a failed write is counted and reported once; the run and its other reports
    go on; what was lost is said at the end of the run (not when it happens: during a test
    pytest captures the terminal).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.failed = 0
        self.first = ""

    def describe(self) -> str:
        """What was lost, for the end of the run ("" when nothing was)."""
        if not self.failed:
            return ""
        return (
            f"Allure results could not be written ({self.failed} writes failed, the first: "
            f"{self.first}); the run went on, JUnit and the summary are complete"
        )

    def _guarded(self, what: str, call: Callable[[], None]) -> None:
        try:
            call()
        except OSError as exc:
            self.failed += 1
            if self.failed == 1:
                self.first = f"{what}: {exc.strerror or exc}"

    @allure_commons.hookimpl
    def report_result(self, result: Any) -> None:
        self._guarded("a result", lambda: self.inner.report_result(result))

    @allure_commons.hookimpl
    def report_container(self, container: Any) -> None:
        self._guarded("a container", lambda: self.inner.report_container(container))

    @allure_commons.hookimpl
    def report_attached_file(self, source: Any, file_name: Any) -> None:
        self._guarded("an attachment", lambda: self.inner.report_attached_file(source, file_name))

    @allure_commons.hookimpl
    def report_attached_data(self, body: Any, file_name: Any) -> None:
        self._guarded("an attachment", lambda: self.inner.report_attached_data(body, file_name))

    @allure_commons.hookimpl
    def report_globals(self, globals_item: Any) -> None:
        self._guarded("globals", lambda: self.inner.report_globals(globals_item))


def protect_file_logger(
    add_cleanup: Callable[[Callable[[], None]], None],
) -> SafeFileLogger | None:
    """Put :class:`SafeFileLogger` in place of allure-pytest's file logger, if it runs.

    At the end the original goes back in (allure-pytest's own clean-up unregisters it by
    name, after ours: clean-ups run last in, first out)."""
    from allure_commons.logger import AllureFileLogger

    manager = allure_commons.plugin_manager
    for plugin in list(manager.get_plugins()):
        if isinstance(plugin, AllureFileLogger):
            safe = SafeFileLogger(plugin)
            manager.unregister(plugin)
            manager.register(safe)

            def restore(plugin: Any = plugin, safe: SafeFileLogger = safe) -> None:
                manager.unregister(safe)
                manager.register(plugin)

            add_cleanup(restore)
            return safe
    return None
