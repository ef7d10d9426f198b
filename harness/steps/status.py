"""``status: {pin?, sfi?, repeat?}``: the status query of a PIN (VERIFY without data)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.apdu import commands as C
from harness.run.expect import check, tries_before
from harness.scenario.model import ONCE, Count, Step
from harness.scenario.schema import REPEAT
from harness.steps import ANSWER, PIN, StepKind

if TYPE_CHECKING:
    from harness.run.session import CardSession
    from harness.scenario.parse import Parse
    from harness.scenario.schema import CardRefs


@dataclass(frozen=True)
class Status(Step):
    action: ClassVar[str] = "status"
    pin: str = ""
    sfi: bool = False
    repeat: Count = ONCE


def schema(refs: CardRefs) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {"pin": refs.pin, "sfi": {"type": "boolean"}, "repeat": REPEAT},
    }


def parse(c: Parse, body: Any, common: dict[str, Any]) -> Status:
    pin, repeat = c.counted(body)
    if body.get("sfi"):
        c.rests_on("status:sfi")
    return Status(**common, pin=pin, sfi=bool(body.get("sfi")), repeat=repeat)


def run(session: CardSession, s: Status) -> None:
    times = session.times(s.repeat, s.pin)
    for i in range(times):
        before = tries_before(session, s, s.pin, s.sfi)
        resp = session.tx(C.pin_status(sfi=session.address_pin(s.pin, sfi=s.sfi)))
        check(session, s, resp, s.pin, before, sfi=s.sfi, final=i == times - 1)


KIND = StepKind(
    "status",
    Status,
    schema,
    parse,
    run,
    pin_step=lambda s: True,
    doc="the free status query (VERIFY without data)",
    expects=lambda s: ANSWER | PIN,
)
