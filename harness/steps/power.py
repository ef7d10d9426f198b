"""``power: cycle | reset | reinsert | cut``: a cold or warm reset through the transport, the
card taken out and put back, or its supply cut by the reader's power switch."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.scenario.model import Step
from harness.steps import NOTHING, StepKind

if TYPE_CHECKING:
    from harness.run.session import CardSession
    from harness.scenario.parse import Parse
    from harness.scenario.schema import CardRefs


@dataclass(frozen=True)
class Power(Step):
    action: ClassVar[str] = "power"
    how: str = "cycle"


def schema(refs: CardRefs) -> dict[str, Any]:
    return {
        "enum": ["cycle", "reset", "reinsert", "cut"],
        "description": "cycle | reset | reinsert | cut (by the reader's power switch)",
    }


def parse(c: Parse, body: Any, common: dict[str, Any]) -> Power:
    return Power(**common, how=body)


def run(session: CardSession, s: Power) -> None:
    target = session.target
    if s.how == "cycle":
        session.note("power cycle (cold reset)")
        target.transport.power_cycle()
    elif s.how == "reset":
        session.note("warm reset")
        target.transport.reset()
    elif s.how == "cut":
        _power_cut(session)
    else:
        session.note("card removed and reinserted")
        target.reinsert()
    session.forget_selection()
    session.lab_done()


def _power_cut(session: CardSession) -> None:
    target = session.target
    switch = target.power_switch()
    try:
        session.note(f"power cut by {switch.describe()}, {target.power_off_ms:.0f} ms off")
        switch.cut()
        time.sleep(target.power_off_ms / 1000)
        switch.restore()
    finally:
        switch.close()
    target.recover()


KIND = StepKind(
    "power",
    Power,
    schema,
    parse,
    run,
    doc=(
        "cold reset, warm reset, card out and back in (a real reader: its operator, profile "
        "`power_switch: {kind: operator}`), supply cut by the reader's power switch"
    ),
    expects=lambda s: NOTHING,
)
