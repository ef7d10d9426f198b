"""Load ``*.pin.yaml`` files: schema, parameter expansion, and meaning checks, all reported
as ``file:line`` with the offending lines and what was expected."""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.cards.profile import CardProfile
from harness.config import LoadedYAML, load_yaml, validate, validate_at
from harness.config.yamlfile import location_of
from harness.scenario import model as M
from harness.scenario.schema import ACTIONS, schema, step_schema


def load_scenarios(path: str | Path, card: CardProfile) -> list[M.Scenario]:
    """Every scenario a file defines (one per ``for_each`` value), for the card ``card``: the
    PINs, PIN sets, applications and keys it may name are that card's."""
    doc = load_yaml(path)
    top = schema(card)
    if not isinstance(doc.data, Mapping):
        validate(doc, top)  # reports "is not of type 'object'" at line 1
    validate(doc, top)
    for i, step in enumerate(doc.data["steps"]):
        actions = [k for k in step if k in ACTIONS]
        unknown = [k for k in step if k not in ACTIONS and k not in ("id", "note", "expect")]
        if len(actions) != 1 or unknown:
            what = (
                f"unknown key {unknown[0]!r}"
                if unknown
                else "no action"
                if not actions
                else f"two actions {actions}"
            )
            raise doc.error(
                f"steps.{i}: {what}",
                ["steps", i, *unknown[:1]],
                expected="exactly one action: " + ", ".join(ACTIONS),
            )
        validate_at(doc, ["steps", i], step_schema(card, actions[0]))
    data = doc.data
    pins = data.get("for_each", {}).get("pin")
    if pins is None:
        params_list: list[dict[str, str]] = [{}]
    else:
        ids = card.pin_sets[pins] if isinstance(pins, str) else list(pins)
        params_list = [{"pin": p} for p in ids]
    return [_build(doc, params, card) for params in params_list]


_FIELDS = string.Formatter()


def _sub(doc: LoadedYAML, text: str, params: Mapping[str, str], where: list[str | int]) -> str:
    """``text`` with each ``{placeholder}`` replaced by its ``for_each`` value.

    A field is a bare placeholder name and nothing else: ``str.format`` would take
    ``{pin:>1000000000}`` (a string of a gigabyte), ``{pin!r}`` or ``{pin.__len__}``.
    ``{{`` and ``}}`` are braces."""
    expected = "placeholders from for_each: " + (", ".join("{" + k + "}" for k in params) or "none")
    out: list[str] = []
    try:
        fields = list(_FIELDS.parse(text))
    except ValueError as exc:  # a lone { or }
        raise doc.error(f"bad placeholder in {text!r}: {exc}", where, expected=expected) from None
    for literal, name, spec, conversion in fields:
        out.append(literal)
        if name is None:
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "")
        shown += "}"
        if name in params and not spec and conversion is None:
            out.append(params[name])
        elif name.split(".")[0].split("[")[0] in params:
            raise doc.error(
                f"placeholder {shown} in {text!r}: only the bare name is allowed "
                "(no format spec, conversion, attribute or index)",
                where,
                expected=expected,
            )
        else:
            raise doc.error(f"unknown placeholder {shown} in {text!r}", where, expected=expected)
    return "".join(out)


def _value(raw: Any) -> M.Value:
    return M.Literal(str(raw["literal"])) if isinstance(raw, Mapping) else str(raw)


def _repeat(raw: Any, max_tries: int) -> int:
    if raw is None:
        return 1
    if isinstance(raw, int):
        return raw
    return max_tries - (int(raw[4:]) if raw.startswith("max-") else 0)


def _pin_of(
    card: CardProfile,
    doc: LoadedYAML,
    body: Any,
    params: Mapping[str, str],
    path: list[str | int],
    current: str | None,
    action: str,
) -> str:
    """The PIN a step names (``pin:``, placeholders filled in) or else the selected one."""
    if isinstance(body, Mapping) and "pin" in body:
        pin = _sub(doc, str(body["pin"]), params, [*path, "pin"])
        if pin not in card.pins_by_id:
            raise doc.error(
                f"unknown PIN {pin!r}",
                [*path, "pin"],
                expected="one of " + ", ".join(card.pin_ids),
            )
        return pin
    if current is None:
        raise doc.error(
            f"{action}: no PIN selected before this step",
            path,
            expected="a select: {pin: ...} step earlier, or pin: here",
        )
    return current


@dataclass
class _Parse:
    """What the parser of one step sees: the file, its parameters, the card, the step's path,
    the PIN the last select made current, and what the scenario turned out to use."""

    doc: LoadedYAML
    params: dict[str, str]
    card: CardProfile
    tags: frozenset[str]
    current: str | None = None
    uses_literal: bool = False
    uses_reinit: bool = False
    path: list[str | int] = field(default_factory=list)
    action: str = ""

    def pin(self, body: Any = None) -> str:
        """The PIN the step names (``pin:``) or else the current one."""
        return _pin_of(
            self.card, self.doc, body or {}, self.params, self.path, self.current, self.action
        )

    def value(self, raw: Any) -> M.Value:
        v = _value(raw)
        self.uses_literal |= isinstance(v, M.Literal)
        return v

    def changeable(self, pin: str, where: list[str | int], what: str) -> None:
        if self.card.pins_by_id[pin].change is None:
            raise self.doc.error(
                f"{what}: {pin} cannot be changed (a card-face number)",
                where,
                expected="a PIN of for_each: changeable",
            )


def _select(c: _Parse, body: Any, common: dict[str, Any]) -> M.Step:
    pin = c.pin(body) if "pin" in body else None
    if pin is None and "ef" in body and "app" not in body:
        raise c.doc.error("select: ef needs app", c.path, expected="{app: ID, ef: FID}")
    step = M.Select(
        **common,
        pin=pin,
        app=body.get("app"),
        ef=int(body["ef"], 16) if "ef" in body else None,
        aid=bytes.fromhex(body["aid"]) if "aid" in body else None,
    )
    at = c.card.pin_at.get((body["app"], step.ef)) if step.ef is not None else None
    c.current = pin if pin is not None else at
    return step


def _counted(c: _Parse, body: Any) -> tuple[str, int]:
    pin = c.pin(body)
    repeat = _repeat(body.get("repeat"), c.card.pins_by_id[pin].default_max_tries)
    if repeat < 1:
        raise c.doc.error(f"repeat resolves to {repeat} for {pin}", [*c.path, "repeat"])
    return pin, repeat


def _verify(c: _Parse, body: Any, common: dict[str, Any]) -> M.Step:
    pin, repeat = _counted(c, body)
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
    return M.Verify(**common, pin=pin, values=vals, sfi=bool(body.get("sfi")), repeat=repeat)


def _status(c: _Parse, body: Any, common: dict[str, Any]) -> M.Step:
    pin, repeat = _counted(c, body)
    return M.Status(**common, pin=pin, sfi=bool(body.get("sfi")), repeat=repeat)


def _change(c: _Parse, body: Any, common: dict[str, Any]) -> M.Step:
    pin = c.pin(body)
    c.changeable(pin, c.path, "change")
    return M.Change(**common, pin=pin, new=c.value(body["new"]))


def _reinit(c: _Parse, body: Any, common: dict[str, Any]) -> M.Step:
    pin = c.pin(body)
    c.uses_reinit = True
    return M.Reinit(**common, pin=pin, route=body["route"], new=c.value(body.get("new", "fresh")))


def _power(c: _Parse, body: Any, common: dict[str, Any]) -> M.Step:
    return M.Power(**common, how=body)


def _read(c: _Parse, body: Any, common: dict[str, Any]) -> M.Step:
    return M.Read(
        **common,
        ef=int(body["ef"], 16),
        sfi=bool(body.get("sfi")),
        offset=int(body.get("offset", 0)),
        length=int(body.get("length", 256)),
    )


def _sign(c: _Parse, body: Any, common: dict[str, Any]) -> M.Step:
    return M.Sign(**common, key=body["key"])


def _apdu(c: _Parse, body: Any, common: dict[str, Any]) -> M.Step:
    from harness.apdu.model import from_hex

    try:
        return M.Apdu(**common, raw=from_hex(body["hex"]))
    except ValueError as exc:
        raise c.doc.error(f"apdu: {exc}", [*c.path, "hex"]) from None


def _others_unchanged(c: _Parse, body: Any, common: dict[str, Any]) -> M.Step:
    return M.OthersUnchanged(**common, pin=c.pin())


def _latency(c: _Parse, body: Any, common: dict[str, Any]) -> M.Step:
    return M.Latency(
        **common, pin=c.pin(), samples=int(body["samples"]), of=body.get("of", "status")
    )


def _tear(c: _Parse, body: Any, common: dict[str, Any]) -> M.Step:
    body = body or {}
    command = str(body.get("command", "verify"))
    if "delays_us" in body:
        if command != "verify":
            raise c.doc.error(
                "tear: timed cuts (delays_us) are for VERIFY only",
                [*c.path, "command"],
                expected="command: verify",
            )
        _need_tag(c.doc, c.tags, "destructive", "tear with delays_us sends wrong PINs", c.path)
        delays = tuple(float(d) for d in body["delays_us"])
        return M.Tear(**common, pin=c.pin(), delays_us=delays)
    _need_tag(
        c.doc,
        c.tags,
        "emulator-only",
        "tear cuts the emulated card's power",
        c.path,
        expected="tags: [emulator-only, destructive]",
    )
    pin = c.pin()
    if command == "change":
        c.changeable(pin, [*c.path, "command"], "tear")
    c.uses_reinit |= command == "reinit"
    return M.Tear(**common, pin=pin, command=command)


def _leak(c: _Parse, body: Any, common: dict[str, Any]) -> M.Step:
    if body.get("classes") == "blocked":
        _need_tag(c.doc, c.tags, "destructive", "leak with classes blocked blocks the PIN", c.path)
    return M.Leak(
        **common,
        pin=c.pin(),
        samples=int(body["samples"]),
        classes=str(body.get("classes", "first-vs-last")),
    )


#: the parser of each action's step (the schema has checked its body's shape)
_PARSERS: dict[str, Callable[[_Parse, Any, dict[str, Any]], M.Step]] = {
    "select": _select,
    "verify": _verify,
    "status": _status,
    "change": _change,
    "reinit": _reinit,
    "power": _power,
    "read": _read,
    "sign": _sign,
    "apdu": _apdu,
    "others_unchanged": _others_unchanged,
    "latency": _latency,
    "tear": _tear,
    "leak": _leak,
}
assert set(_PARSERS) == set(ACTIONS)

_PIN_ACTIONS = ("verify", "status", "change", "reinit")


def _build(doc: LoadedYAML, params: dict[str, str], card: CardProfile) -> M.Scenario:
    data = doc.data
    c = _Parse(doc, params, card, frozenset(data.get("tags", [])))
    steps: list[M.Step] = []
    for i, raw in enumerate(data["steps"]):
        c.action = next(k for k in raw if k in ACTIONS)
        c.path = ["steps", i, c.action]
        loc = location_of(doc.data, ["steps", i], doc.path)
        common = {
            "where": loc,
            "snippet": doc.snippet(loc.line) or "",
            "expect": M.Expect(**raw["expect"]) if "expect" in raw else None,
            "id": raw.get("id"),
        }
        step = _PARSERS[c.action](c, raw[c.action], common)
        pin_step = c.action in _PIN_ACTIONS or (isinstance(step, M.Select) and step.pin is not None)
        e = step.expect
        if e is not None and (e.tries is not None or e.blocked is not None) and not pin_step:
            raise doc.error(
                f"{c.action}: expect.tries and expect.blocked need a PIN step",
                [*c.path],
                expected="verify, status, change, reinit or select: {pin: ...}",
            )
        steps.append(step)
    where = ["tags"] if "tags" in data else []
    if c.uses_literal and "emulator-only" not in c.tags:
        raise doc.error(
            "literal PIN values are for emulated cards: add tag emulator-only",
            where,
            expected="tags: [emulator-only]",
        )
    if c.uses_reinit and "needs-reinit" not in c.tags:
        raise doc.error(
            "reinit uses the emulator's test mechanism: add tag needs-reinit",
            where,
            expected="tags: [needs-reinit]",
        )
    top = location_of(doc.data, [], doc.path)
    return M.Scenario(
        name=_sub(doc, str(data["name"]), params, ["name"]),
        rule=str(data["rule"]),
        path=doc.path,
        line=top.line or 1,
        steps=tuple(steps),
        params=params,
        description=str(data.get("description", "")),
        severity=str(data.get("severity", "normal")),
        tags=c.tags,
        card=card.name,
    )


def _need_tag(
    doc: LoadedYAML,
    tags: frozenset[str],
    tag: str,
    why: str,
    path: list[str | int],
    *,
    expected: str | None = None,
) -> None:
    """A step that needs the scenario to declare ``tag`` (what it may do to a card)."""
    if tag not in tags:
        raise doc.error(f"{why}: add tag {tag}", path, expected=expected or f"tags: [{tag}]")
