"""``apdu: {hex}``: a raw command APDU (on a real card it passes the guard like any other)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.apdu.model import CommandAPDU, from_hex
from harness.capabilities import Capability
from harness.errors import HarnessError
from harness.run.expect import check
from harness.scenario.model import Step
from harness.steps import ANSWER, StepKind

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
        cmd = CommandAPDU.parse(raw)
    except (ValueError, HarnessError) as exc:  # it could never be sent: the file's mistake
        raise c.doc.error(f"apdu: {exc}", [*c.path, "hex"]) from None
    if cmd.is_extended:
        c.require(Capability.EXTENDED_APDU, "apdu step of an extended-length APDU")
    return Apdu(**common, raw=raw)


def run(session: CardSession, s: Apdu) -> None:
    cmd = CommandAPDU.parse(s.raw)
    resp = session.tx(cmd)
    # a raw command may change what is selected (a SELECT, a READ BINARY by SFI, a command
    # of the card's own): the session no longer knows
    session.forget_selection()
    check(session, s, resp, None, None)


KIND = StepKind(
    "apdu",
    Apdu,
    schema,
    parse,
    run,
    doc="any APDU, in hex",
    expects=lambda s: ANSWER,
)
