"""``change: {new, pin?}``: CHANGE REFERENCE DATA to a new value (the profile's command)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.errors import HarnessError
from harness.run.expect import check, tries_before
from harness.scenario.model import Step, Value
from harness.scenario.schema import VALUE
from harness.steps import ANSWER, PIN, StepKind

if TYPE_CHECKING:
    from harness.run.session import CardSession
    from harness.scenario.parse import Parse
    from harness.scenario.schema import CardRefs


@dataclass(frozen=True)
class Change(Step):
    action: ClassVar[str] = "change"
    pin: str = ""
    new: Value = "fresh"


def schema(refs: CardRefs) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["new"],
        "properties": {"new": VALUE, "pin": refs.pin},
    }


def parse(c: Parse, body: Any, common: dict[str, Any]) -> Change:
    pin = c.pin(body)
    c.changeable(pin, c.path, "change")
    new = c.value(body["new"])
    if isinstance(new, str):
        c.rests_on(f"change:{new}")
    return Change(**common, pin=pin, new=new)


def run(session: CardSession, s: Change) -> None:
    spec = session.card.pins_by_id[s.pin]
    session.select_pin(s.pin)
    before = tries_before(session, s, s.pin)
    new = session.value(s.pin, s.new)
    if spec.change is None:  # the loader refuses such a step
        raise HarnessError(f"{s.pin} cannot be changed")
    resp = session.tx(spec.change.command(new))
    if resp.ok:
        session.now_holds(s.pin, new)
    check(session, s, resp, s.pin, before)


KIND = StepKind(
    "change",
    Change,
    schema,
    parse,
    run,
    pin_step=lambda s: True,
    doc=(
        "CHANGE REFERENCE DATA `00 24 01 80` or JICSAP CHANGE KEY `80 32 00 80`, whichever "
        "the PIN uses"
    ),
    expects=lambda s: ANSWER | PIN,
)
