"""``apdu: {hex}``: a raw command APDU (on a real card it passes the guard like any other)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.apdu.model import CommandAPDU, from_hex
from harness.capabilities import Capability
from harness.run.expect import check
from harness.scenario.model import Step
from harness.steps import StepKind

if TYPE_CHECKING:
    from harness.run.session import CardSession
    from harness.scenario.parse import Parse
    from harness.scenario.schema import CardRefs


@dataclass(frozen=True)
class Apdu(Step):
    action: ClassVar[str] = "apdu"
    raw: bytes = b""


def schema(refs: CardRefs) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["hex"],
        "properties": {"hex": {"type": "string", "minLength": 8}},
    }


def parse(c: Parse, body: Any, common: dict[str, Any]) -> Apdu:
    try:
        raw = from_hex(body["hex"])
    except ValueError as exc:
        raise c.doc.error(f"apdu: {exc}", [*c.path, "hex"]) from None
    if _extended(raw):
        c.require(Capability.EXTENDED_APDU, "apdu step of an extended-length APDU")
    return Apdu(**common, raw=raw)


def _extended(raw: bytes) -> bool:
    """Whether ``raw`` is an extended-length APDU (one that does not decode is sent as it is,
    and its step fails when it runs, as ever)."""
    try:
        return CommandAPDU.parse(raw).is_extended
    except ValueError:
        return False


def run(session: CardSession, s: Apdu) -> None:
    cmd = CommandAPDU.parse(s.raw)
    resp = session.tx(cmd)
    if cmd.ins == 0xA4:  # the session no longer knows what is selected
        session.forget_selection()
    check(session, s, resp, None, None)


KIND = StepKind(
    "apdu",
    Apdu,
    schema,
    parse,
    run,
    doc="any APDU, in hex",
)
