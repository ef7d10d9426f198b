"""``read: {ef, sfi?, offset?, length?}``: READ BINARY of an EF (selected, or by SFI)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.apdu import commands as C
from harness.apdu.model import SHORT_MAX_LE
from harness.capabilities import Capability
from harness.run.expect import check
from harness.scenario.model import Step
from harness.steps import ANSWER, StepKind

if TYPE_CHECKING:
    from harness.run.session import CardSession
    from harness.scenario.parse import Parse
    from harness.scenario.schema import CardRefs


@dataclass(frozen=True)
class Read(Step):
    action: ClassVar[str] = "read"
    ef: int = 0
    sfi: bool = False
    offset: int = 0
    length: int = 256


def schema(refs: CardRefs) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["ef"],
        "properties": {
            "ef": {"type": "string", "pattern": "^[0-9A-Fa-f]{4}$"},
            "sfi": {"type": "boolean"},
            "offset": {"type": "integer", "minimum": 0, "maximum": 32767},
            "length": {"type": "integer", "minimum": 1, "maximum": 65536},
        },
    }


def parse(c: Parse, body: Any, common: dict[str, Any]) -> Read:
    length = int(body.get("length", 256))
    if length > SHORT_MAX_LE:
        c.require(Capability.EXTENDED_APDU, f"read of {length} bytes")
    return Read(
        **common,
        ef=int(body["ef"], 16),
        sfi=bool(body.get("sfi")),
        offset=int(body.get("offset", 0)),
        length=length,
    )


def run(session: CardSession, s: Read) -> None:
    if s.sfi:
        resp = session.tx(C.read_binary(s.offset, s.length, sfi=s.ef))
        session.ef = s.ef if session.app else None
    else:
        if session.ef != s.ef:
            sel = session.tx(C.select_ef(s.ef))
            session.ef = s.ef if sel.ok else None
        resp = session.tx(C.read_binary(s.offset, s.length))
    check(session, s, resp, None, None)


KIND = StepKind(
    "read",
    Read,
    schema,
    parse,
    run,
    doc="READ BINARY (by the current EF or by SFI)",
    expects=lambda s: ANSWER,
)
