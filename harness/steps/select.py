"""``select: {pin: ID} | {app: ID[, ef: FID]} | {aid: HEX}``: make a PIN, an application or an
EF current (a ``pin:`` selection also makes that PIN the one later steps address)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.apdu import commands as C
from harness.run.expect import check, tries_before
from harness.scenario.model import Step
from harness.steps import ANSWER, PIN, StepKind

if TYPE_CHECKING:
    from harness.run.session import CardSession
    from harness.scenario.parse import Parse
    from harness.scenario.schema import CardRefs


@dataclass(frozen=True)
class Select(Step):
    action: ClassVar[str] = "select"
    pin: str | None = None
    app: str | None = None
    ef: int | None = None
    aid: bytes | None = None


def schema(refs: CardRefs) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            "pin": refs.pin,
            "app": {"enum": refs.apps},
            "ef": {"type": "string", "pattern": "^[0-9A-Fa-f]{4}$"},
            "aid": {"type": "string", "pattern": "^([0-9A-Fa-f]{2}){1,16}$"},
        },
        "description": "{pin: ID} or {app: ID[, ef: FID]} or {aid: HEX}",
    }


def parse(c: Parse, body: Any, common: dict[str, Any]) -> Select:
    pin = c.pin(body) if "pin" in body else None
    if pin is None and "ef" in body and "app" not in body:
        raise c.doc.error("select: ef needs app", c.path, expected="{app: ID, ef: FID}")
    step = Select(
        **common,
        pin=pin,
        app=body.get("app"),
        ef=int(body["ef"], 16) if "ef" in body else None,
        aid=bytes.fromhex(body["aid"]) if "aid" in body else None,
    )
    at = c.card.pin_at.get((body["app"], step.ef)) if step.ef is not None else None
    c.current = pin if pin is not None else at
    return step


def run(session: CardSession, s: Select) -> None:
    if s.pin is not None:
        before = tries_before(session, s, s.pin)  # expect: {tries: unchanged} reads it first
        session.select_pin(s.pin, keep_app=False)
        check(session, s, None, s.pin, before)
        return
    if s.aid is not None:
        resp = session.tx(C.select_df(s.aid))
        session.forget_selection()
        check(session, s, resp, None, None)
        return
    assert s.app is not None
    resp = session.tx(C.select_df(session.card.apps_by_id[s.app].aid))
    session.app, session.ef = (s.app, None) if resp.ok else (None, None)
    if s.ef is not None and resp.ok:
        resp = session.tx(C.select_ef(s.ef))
        session.ef = s.ef if resp.ok else None
    check(session, s, resp, None, None)


KIND = StepKind(
    "select",
    Select,
    schema,
    parse,
    run,
    pin_step=lambda s: getattr(s, "pin", None) is not None,
    doc=(
        "SELECT the PIN's application DF and EF, an application (and an EF in it), or any "
        "AID. Re-selecting an application logs out"
    ),
    expects=lambda s: PIN if getattr(s, "pin", None) is not None else ANSWER,
)
