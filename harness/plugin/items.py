"""Collection: every scenario file a file of items, every scenario an item per target; how an
item sets up, runs and shows its failure."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import safety
from harness.errors import ConfigError, DeviceDefect, HarnessError
from harness.plugin.options import allure_output
from harness.plugin.pool import POOL
from harness.run.expect import ExpectationFailed
from harness.run.record import ScenarioRecord
from harness.safety.guard import Refused
from harness.scenario import Scenario, load_scenarios
from harness.steps import is_timing
from harness.targets import Target


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    pattern = parent.config.getini("pinloop_file_pattern")
    if re.match(pattern, file_path.name):
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        pool = self.config.stash[POOL]
        scenarios = load_scenarios(self.path, pool.card)
        out = allure_output(self.config)
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
        pool = self.config.stash[POOL]
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
        out = allure_output(self.config)
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
            self.config.stash[POOL].mark_faulted(self.spec, str(exc).splitlines()[0])
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
            seen = runner.session.record.observations
            for o in seen:
                self.user_properties.append(("card fact observed", f"{o.fact}: {o.observed}"))
            if out is not None:
                if marks:
                    out.mark_marginal(self.scenario, marks)
                if seen:
                    out.mark_observed(seen)
                out.attach_timing(
                    runner.session.latencies,
                    f"{self.scenario.name} on {self.target.report_name}",
                    plot=is_timing(self.scenario),
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
