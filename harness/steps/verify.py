"""``verify: {value, pin?, sfi?, repeat?}``: VERIFY with one value or several in a row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.apdu import commands as C
from harness.run.expect import check, tries_before
from harness.scenario.model import ONCE, Count, Step, Value
from harness.scenario.schema import REPEAT, VALUE
from harness.steps import ANSWER, PIN, StepKind

if TYPE_CHECKING:
    from harness.run.session import CardSession
    from harness.scenario.parse import Parse
    from harness.scenario.schema import CardRefs


@dataclass(frozen=True)
class Verify(Step):
    action: ClassVar[str] = "verify"
    pin: str = ""
    values: tuple[Value, ...] = ()
    sfi: bool = False
    repeat: Count = ONCE


def schema(refs: CardRefs) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["value"],
        "properties": {
            "value": {"oneOf": [VALUE, {"type": "array", "minItems": 2, "items": VALUE}]},
            "pin": refs.pin,
            "sfi": {"type": "boolean"},
            "repeat": REPEAT,
        },
    }


def parse(c: Parse, body: Any, common: dict[str, Any]) -> Verify:
    pin, repeat = c.counted(body)
    spec = c.card.pins_by_id[pin]
    values = body["value"] if isinstance(body["value"], list) else [body["value"]]
    vals = tuple(c.value(v) for v in values)
    if "lower" in vals and not spec.format.letters:
        with_letters = [p.id for p in c.card.pins if p.format.letters]
        raise c.doc.error(
            f"value lower needs a PIN with letters, not {pin}",
            [*c.path, "value"],
            expected=" or ".join(f"pin: {p}" for p in with_letters)
            or f"a PIN with letters (the {c.card.name} card has none)",
        )
    if common["expect"] and common["expect"].identical and len(vals) < 2:
        raise c.doc.error("expect.identical needs a list of values", [*c.path, "value"])
    c.rests_on(*(f"verify:{v}" for v in vals if isinstance(v, str)))
    if body.get("sfi"):
        c.rests_on("verify:sfi")
    return Verify(**common, pin=pin, values=vals, sfi=bool(body.get("sfi")), repeat=repeat)


def run(session: CardSession, s: Verify) -> None:
    times = session.times(s.repeat, s.pin)
    for i in range(times):
        sfi = session.address_pin(s.pin, sfi=s.sfi)
        before = tries_before(session, s, s.pin, s.sfi)
        responses = []
        for v in s.values:
            value = session.value(s.pin, v)
            responses.append(session.tx(C.verify(value, sfi=sfi)))
        if s.expect is not None and s.expect.identical:
            first = responses[0]
            if any((r.data, r.sw) != (first.data, first.sw) for r in responses[1:]):
                shown = [v if isinstance(v, str) else "a literal" for v in s.values]
                raise session.fail(
                    "identical answers to " + ", ".join(shown),
                    "one and the same answer to every value",
                    ", ".join(
                        f"{v} → {r.sw:04X}" + (f" +{len(r.data)} B" if r.data else "")
                        for v, r in zip(shown, responses, strict=True)
                    ),
                )
        check(
            session,
            s,
            responses[-1],
            s.pin,
            before,
            sfi=s.sfi,
            final=i == times - 1,
            answered_tries=True,
        )


KIND = StepKind(
    "verify",
    Verify,
    schema,
    parse,
    run,
    pin_step=lambda s: True,
    doc=(
        "VERIFY; `sfi: true` addresses the PIN by `80|SFI`. A list of values sends each once "
        "(with `expect: {identical: true}`); `literal` values are for emulated cards only"
    ),
    expects=lambda s: ANSWER | PIN | {"identical"},
)
