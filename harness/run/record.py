"""The result record of one scenario run: what every output reads.

The session fills it while the scenario runs (a :class:`StepRecord` per step: its APDUs with
status words and times, PINs masked whatever the options; the counters it read; its verdict,
measurements and marginal notes); the pytest plugin sets the outcome. The Allure steps, the
JUnit properties, the per-reader summary and the JSON record per reader
(``records/<reader>.json`` beside the summary, which a lab can diff between two readers or two
firmware versions) are all made from it.

Outcomes: ``passed``; ``failed`` (the card or reader broke the scenario's rule: a device
defect); ``error`` (a lab fault: the path to the card, pcscd, a power switch, a missing PIN);
``skipped`` (the target may not or cannot run it: the reason says which). A step that did not
run because an earlier one ended the scenario has the verdict ``not run``; a step whose check
rested on a card fact that is not established and that the card did otherwise has the verdict
``observed`` (the scenario ends there and is ``passed``: no device defect), and the record's
``observations`` say what the card did.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.scenario.model import Scenario

#: what a scenario or step can come to
OUTCOMES = ("passed", "failed", "error", "skipped")


@dataclass
class ApduRecord:
    """One APDU a step sent: the command as shown (PINs masked), the answer, the times."""

    command: str
    sw: str  # four hex digits, "" when nothing answered (a cut, a lost connection)
    data_bytes: int
    wire_us: float  # at the transport
    overhead_us: float  # the harness's own path to it
    kind: str = "step"  # harness.timing.KINDS


@dataclass
class StepRecord:
    index: int
    action: str
    where: str  # file:line
    id: str | None = None
    #: the step as reports name it (:meth:`Step.title`: its settings, PINs masked)
    title: str = ""
    verdict: str = "not run"  # passed, failed, error, not run
    message: str = ""  # the first line of what ended it
    apdus: list[ApduRecord] = field(default_factory=list)
    #: APDUs sent for timing series (latency samples, leak classes, restores), by kind: each
    #: has its row in the timing record, not here
    sampled: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: each PIN's counter as read around the step: {"before": n, "after": m}
    tries: dict[str, dict[str, int]] = field(default_factory=dict)
    measurements: dict[str, float] = field(default_factory=dict)
    marginal: list[str] = field(default_factory=list)


@dataclass
class ObservationRecord:
    """A card fact that is not established, as a card showed it (cards that are not the
    emulator): ``as-modelled`` (the card did what the profile's model says), ``differs`` (it
    did not: what it did is ``observed``) or ``value`` (a figure read: a maximum of tries)."""

    fact: str
    confidence: str
    statement: str
    source: str
    kind: str  # as-modelled, differs, value
    observed: str
    expected: str = ""
    step: int | None = None  # the step's index, from 1
    where: str = ""  # file:line of the step


@dataclass
class ScenarioRecord:
    target: str  # the target spec (inprocess, pcscd, reader:PATTERN)
    reader: str  # the reader's name as reports show it
    card: str  # the card profile's name
    scenario: str
    rule: str
    file: str
    line: int
    params: dict[str, str] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    outcome: str = "error"  # until the run ends
    message: str = ""
    steps: list[StepRecord] = field(default_factory=list)
    #: card facts not established, as this card showed them (never on the emulator)
    observations: list[ObservationRecord] = field(default_factory=list)

    @classmethod
    def of(cls, scenario: Scenario, *, target: str, reader: str, card: str) -> ScenarioRecord:
        """The record of ``scenario`` before it runs: every step ``not run``."""
        return cls(
            target=target,
            reader=reader,
            card=card,
            scenario=scenario.name,
            rule=scenario.rule,
            file=shown_path(scenario.path),
            line=scenario.line,
            params=dict(scenario.params),
            tags=sorted(scenario.tags),
            steps=[
                StepRecord(
                    i,
                    step.action,
                    f"{shown_path(step.where.path)}:{step.where.line}",
                    step.id,
                    step.title(),
                )
                for i, step in enumerate(scenario.steps, 1)
            ],
        )

    @property
    def marginal(self) -> list[str]:
        return [m for s in self.steps for m in s.marginal]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScenarioRecord:
        steps = [
            StepRecord(**{**s, "apdus": [ApduRecord(**a) for a in s.get("apdus", [])]})
            for s in data.get("steps", [])
        ]
        seen = [ObservationRecord(**o) for o in data.get("observations", [])]
        return cls(**{**data, "steps": steps, "observations": seen})


def shown_path(path: str) -> str:
    """A scenario file as records name it: relative to the working directory when it is
    under it (two machines' records then diff), else as it is."""
    rel = os.path.relpath(path) if os.path.isabs(path) else path
    return path if rel.startswith("..") else rel


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
