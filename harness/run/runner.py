"""Run a scenario's steps on a target: begin, each step by its kind, end.

Safety on real cards is not the runner's job: the rules are :mod:`harness.safety`'s. The
runner begins a scenario through :func:`harness.safety.begin` (the target is told what the
scenario declares, :func:`harness.scenario.spend.declared_spend`, and a real card's guard
restores its PINs and refuses what could go below the floor), and lets the target restore the
card when the scenario ends. Every APDU it sends to a card that is not the emulator passes the
target's guard (:mod:`harness.safety.guard`); what only some cards allow (literal and fresh
PINs, the test re-initialisation, cuts at write points) is refused on the others
(:func:`harness.safety.refuse_without`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

from harness import safety
from harness.capabilities import Capability
from harness.errors import ConfigError, DeviceDefect, HarnessError, SourceLocation, TransportError
from harness.run.expect import FactObserved
from harness.run.record import StepRecord, first_line
from harness.run.session import CardSession
from harness.safety.guard import Refused
from harness.scenario import model as M
from harness.steps import kind_of
from harness.targets import Target


class Runner:
    """One scenario on one target; what it sent and measured is on :attr:`session`."""

    def __init__(
        self,
        target: Target,
        scenario: M.Scenario,
        *,
        destructive_ok: bool = False,
        reveal: bool = False,
    ) -> None:
        self.target = target
        self.scenario = scenario
        card = target.card_profile
        if scenario.card and scenario.card != card.name:
            raise ConfigError(
                f"{scenario.name}: loaded for the {scenario.card} card, run on {target.name}, "
                f"which holds the {card.name} card",
                SourceLocation(scenario.path, scenario.line),
            )
        self.destructive_ok = destructive_ok
        self.session = CardSession(target, scenario, reveal=reveal)
        #: wraps each step (the pytest plugin puts an Allure step around it)
        self.step_context: Callable[[StepRecord], AbstractContextManager[object]] = (
            lambda step_record: contextlib.nullcontext()
        )
        #: called after each step, with its record (``pytest_pinloop_step``)
        self.on_step: Callable[[M.Step, StepRecord], None] | None = None

    def run(self) -> None:
        """Begin (the target brings the card to the scenario's start), the steps, then the
        end (a real card's counters and values put back), unless the connection failed."""
        session = self.session
        try:
            safety.begin(
                self.target, self.scenario, destructive_ok=self.destructive_ok, log=session.note
            )
            session.lab_done()
            try:
                self._steps()
            except TransportError:
                raise  # the card's state is unknown: the next scenario sets the target up afresh
            except BaseException:
                try:
                    self.target.end()
                except Exception as exc:  # the scenario's own failure is the one reported
                    session.note(f"after the failure, putting the card back failed too: {exc}")
                raise
            self.target.end()
        finally:
            self.target.end_record()  # what the target sends from now on is the next one's

    def _steps(self) -> None:
        session = self.session
        record = session.record
        if any(s.action == "others_unchanged" for s in self.scenario.steps):
            session.begin_step(1, self.scenario.steps[0])  # a failed read is the first step's
            session.start_counters = {p.id: session.tries(p.id) for p in session.card.present_pins}
        for index, step in enumerate(self.scenario.steps, 1):
            step_record = session.begin_step(index, step)
            try:
                with self.step_context(step_record):
                    if index == 1:
                        self._maxima()
                    kind_of(step).run(session, step)
            except FactObserved as seen:
                # not a defect: the card did otherwise than a fact nobody established; what
                # follows assumed it, so the scenario ends here (the target puts back its
                # counters as after any scenario)
                step_record.verdict = "observed"
                step_record.message = first_line(seen)
                for fact in seen.facts:
                    session.observe(
                        fact,
                        "differs",
                        f"{seen.what}: {seen.actual}",
                        seen.expected,
                        (index, step),
                    )
                self._stepped(step, step_record)
                record.outcome = "passed"
                record.message = first_line(seen)
                return
            except BaseException as exc:
                step_record.verdict = record.outcome = outcome_of(exc)
                step_record.message = record.message = first_line(exc)
                try:
                    self._stepped(step, step_record)
                except HarnessError as hook_error:  # the step's own end is the one reported
                    session.note(str(hook_error))
                raise
            step_record.verdict = "passed"
            for fact in session.unproven(step):
                session.observe(fact, "as-modelled", step.title(), step=(index, step))
            self._stepped(step, step_record)
        record.outcome = "passed"

    def _maxima(self) -> None:
        """The maximum of tries of each PIN the scenario uses, on a card that is not the
        emulator: where the card profile does not establish it, the figure the card showed
        (its counter after a right VERIFY) is observed and reported; where it does, the card
        must show that figure (a device defect otherwise)."""
        session, target = self.session, self.target
        if Capability.EMULATOR in target.capabilities:
            return
        for pin in sorted(self.scenario.pins):
            spec = session.card.pins_by_id[pin]
            seen = target.observed_max(pin)
            if seen is None:
                continue
            if spec.established_max is None:
                session.observe(
                    spec.tries_fact,
                    "value",
                    f"{pin}: the status query after a right VERIFY answered 63C{seen:X}: "
                    f"max {seen} observed",
                )
            elif seen != spec.established_max:
                fact = spec.tries_fact
                raise session.fail(
                    f"maximum of tries of {pin} (its counter after a right VERIFY)",
                    f"{spec.established_max} ({fact.confidence.label}: {fact.source})",
                    str(seen),
                    established=True,
                )

    def _stepped(self, step: M.Step, step_record: StepRecord) -> None:
        """The step hook; what it raises is a lab fault, never the device's."""
        if self.on_step is None:
            return
        try:
            self.on_step(step, step_record)
        except Exception as exc:
            raise HookFailed(f"a step hook raised {type(exc).__name__}: {exc}") from exc


class HookFailed(HarnessError):
    """A lab plugin's pinloop hook raised: a lab fault, whatever it raised."""


def outcome_of(exc: BaseException) -> str:
    """What an exception that ended a step makes of it: a device defect fails it, a refusal
    of the real-card guard skips it, anything else is a lab fault (a bare ``assert`` in the
    harness too: only a :class:`~harness.errors.DeviceDefect` says the device broke a rule)."""
    if isinstance(exc, Refused):
        return "skipped"
    return "failed" if isinstance(exc, DeviceDefect) else "error"
