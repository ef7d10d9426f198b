"""``reinit: {route, pin?, new?}``: the emulated card's test re-initialisation (RESET RETRY
COUNTER with the route's reset code); a real card has none. The step needs ``test-reinit``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.apdu import commands as C
from harness.capabilities import Capability
from harness.run.expect import check, tries_before
from harness.scenario.model import Step, Value
from harness.scenario.schema import VALUE, one_of
from harness.steps import ANSWER, PIN, StepKind

if TYPE_CHECKING:
    from harness.run.session import CardSession
    from harness.scenario.parse import Parse
    from harness.scenario.schema import CardRefs


@dataclass(frozen=True)
class Reinit(Step):
    action: ClassVar[str] = "reinit"
    pin: str = ""
    route: str = "window"
    new: Value = "fresh"


def schema(refs: CardRefs) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["route"],
        "properties": {
            "pin": refs.pin,
            "route": one_of(refs.routes, "re-initialisation routes"),
            "new": {"oneOf": [VALUE, {"const": "none"}]},
        },
    }


def parse(c: Parse, body: Any, common: dict[str, Any]) -> Reinit:
    pin = c.pin(body)
    c.uses_reinit = True
    c.require(Capability.TEST_REINIT)
    return Reinit(**common, pin=pin, route=body["route"], new=c.value(body.get("new", "fresh")))


def reset_code(session: CardSession, route: str) -> bytes:
    """The card's reset code of ``route``: refused on a target without ``test-reinit`` (a real
    card has none; :meth:`harness.targets.Target.reset_code`)."""
    return session.target.reset_code(route)


def run(session: CardSession, s: Reinit) -> None:
    code = reset_code(session, s.route)
    session.select_pin(s.pin)
    before = tries_before(session, s, s.pin)
    new = None if s.new == "none" else session.value(s.pin, s.new)
    resp = session.tx(C.reset_retry_counter(code, new))
    if resp.ok and new is not None:
        session.now_holds(s.pin, new)
    check(session, s, resp, s.pin, before)


KIND = StepKind(
    "reinit",
    Reinit,
    schema,
    parse,
    run,
    pin_step=lambda s: True,
    doc=(
        "the emulator's labelled test re-initialisation (RESET RETRY COUNTER with the route's"
        " reset code; `new: none` unblocks only); tag `needs-reinit`"
    ),
    expects=lambda s: ANSWER | PIN,
)
