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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import allure
import allure_commons
import pytest

from harness import __version__
from harness.cards.profile import CardProfile
from harness.run.expect import mask_literals
from harness.scenario import Scenario
from harness.scenario import model as M
from harness.timing import ApduTime

#: first match wins: timing failures before other device defects; lab faults are "broken"
CATEGORIES = [
    {
        "name": "Timing failures (device)",
        "matchedStatuses": ["failed"],
        "messageRegex": r"(?s).*rule '(verify-latency-budget|verify-constant-time)' broken.*",
    },
    {
        "name": "Device defects",
        "matchedStatuses": ["failed"],
        "messageRegex": r"(?s).*rule '[a-z0-9-]+' broken.*",
    },
    {"name": "Lab faults (reader, daemon, emulator, configuration)", "matchedStatuses": ["broken"]},
]

_SNIPPET_LINE = re.compile(r"^>\s*\d+  (.*)$")  # the marked line of a ConfigError-style snippet


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


def step_title(index: int, step: M.Step) -> str:
    """``3. verify: {value: wrong, repeat: max-1}`` - the step's own line, literals masked."""
    marked = (_SNIPPET_LINE.match(ln) for ln in step.snippet.splitlines())
    m = next((m for m in marked if m), None)
    text = m.group(1).strip().lstrip("- ") if m else step.action
    masked = mask_literals(text)
    return f"{index}. {masked}"


def runtime_metadata(scenario: Scenario, reader: str, card: str) -> None:
    allure.dynamic.title(scenario.name + (f" [{scenario.id}]" if scenario.id else ""))
    allure.dynamic.description(scenario.description or scenario.name)
    allure.dynamic.parameter("reader", reader)
    allure.dynamic.parameter("card", card)
    for key, value in scenario.params.items():
        allure.dynamic.parameter(key, value)


def step_context(trace: Callable[[], list[str]]) -> Callable[[int, M.Step], Any]:
    """A context manager factory: one Allure step per scenario step, its trace attached."""

    @contextlib.contextmanager
    def ctx(index: int, step: M.Step) -> Iterator[None]:
        with allure.step(step_title(index, step)):
            try:
                yield
            finally:
                lines = trace()
                if lines:
                    allure.attach(
                        "\n".join(lines),
                        name="APDU trace (PINs masked)",
                        attachment_type=allure.attachment_type.TEXT,
                    )

    return ctx


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


def write_environment(alluredir: Path, readers: list[dict[str, str]]) -> None:
    """``environment.properties`` and ``categories.json`` into the results directory."""
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
    (alluredir / "categories.json").write_text(json.dumps(CATEGORIES, indent=1))


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
