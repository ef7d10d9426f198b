"""``others_unchanged: {}``: every PIN but the current one has the counter it had when the
scenario's steps began (the runner reads them all first when a scenario has this step)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.scenario.model import Step
from harness.steps import NOTHING, StepKind

if TYPE_CHECKING:
    from harness.run.session import CardSession
    from harness.scenario.parse import Parse
    from harness.scenario.schema import CardRefs


@dataclass(frozen=True)
class OthersUnchanged(Step):
    action: ClassVar[str] = "others_unchanged"
    pin: str = ""


def schema(refs: CardRefs) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {},
        "description": "{} - every other PIN's counter is as at the start",
    }


def parse(c: Parse, body: Any, common: dict[str, Any]) -> OthersUnchanged:
    return OthersUnchanged(**common, pin=c.pin())


def run(session: CardSession, s: OthersUnchanged) -> None:
    for p in session.card.pins:
        if p.id == s.pin:
            continue
        now = session.tries(p.id)
        if now != session.start_counters[p.id]:
            raise session.fail(
                f"counter of {p.id} (untouched by this scenario)",
                str(session.start_counters[p.id]),
                str(now),
            )


KIND = StepKind(
    "others_unchanged",
    OthersUnchanged,
    schema,
    parse,
    run,
    doc="every other PIN's counter is as it was when the scenario began",
    expects=lambda s: NOTHING,
)
