"""Load ``*.pin.yaml`` files: schema, parameter expansion, and meaning checks, all reported
as ``file:line`` with the offending lines and what was expected."""

from __future__ import annotations

import string
from collections.abc import Mapping
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


def _build(doc: LoadedYAML, params: dict[str, str], card: CardProfile) -> M.Scenario:
    data = doc.data
    tags = frozenset(data.get("tags", []))
    steps: list[M.Step] = []
    current: str | None = None  # the PIN the last select made current
    uses_literal = uses_reinit = False
    for i, raw in enumerate(data["steps"]):
        action = next(k for k in raw if k in ACTIONS)
        body = raw[action]
        path: list[str | int] = ["steps", i, action]
        loc = location_of(doc.data, ["steps", i], doc.path)
        common = {
            "where": loc,
            "snippet": doc.snippet(loc.line) or "",
            "expect": M.Expect(**raw["expect"]) if "expect" in raw else None,
            "id": raw.get("id"),
        }

        step: M.Step
        if action == "select":
            pin = _pin_of(card, doc, body, params, path, current, action) if "pin" in body else None
            if pin is None and "ef" in body and "app" not in body:
                raise doc.error("select: ef needs app", path, expected="{app: ID, ef: FID}")
            step = M.Select(
                **common,
                pin=pin,
                app=body.get("app"),
                ef=int(body["ef"], 16) if "ef" in body else None,
                aid=bytes.fromhex(body["aid"]) if "aid" in body else None,
            )
            current = (
                pin
                if pin is not None
                else (card.pin_at.get((body["app"], step.ef)) if step.ef is not None else None)
            )
        elif action in ("verify", "status"):
            pin = _pin_of(card, doc, body, params, path, current, action)
            spec = card.pins_by_id[pin]
            repeat = _repeat(body.get("repeat"), spec.default_max_tries)
            if repeat < 1:
                raise doc.error(f"repeat resolves to {repeat} for {pin}", [*path, "repeat"])
            if action == "verify":
                values = body["value"] if isinstance(body["value"], list) else [body["value"]]
                vals = tuple(_value(v) for v in values)
                for v in vals:
                    uses_literal |= isinstance(v, M.Literal)
                    if v == "lower" and not spec.format.letters:
                        with_letters = [p.id for p in card.pins if p.format.letters]
                        raise doc.error(
                            f"value lower needs a PIN with letters, not {pin}",
                            [*path, "value"],
                            expected=" or ".join(f"pin: {p}" for p in with_letters)
                            or f"a PIN with letters (the {card.name} card has none)",
                        )
                if common["expect"] and common["expect"].identical and len(vals) < 2:
                    raise doc.error("expect.identical needs a list of values", [*path, "value"])
                step = M.Verify(
                    **common, pin=pin, values=vals, sfi=bool(body.get("sfi")), repeat=repeat
                )
            else:
                step = M.Status(**common, pin=pin, sfi=bool(body.get("sfi")), repeat=repeat)
        elif action == "change":
            pin = _pin_of(card, doc, body, params, path, current, action)
            if card.pins_by_id[pin].change is None:
                raise doc.error(
                    f"change: {pin} cannot be changed (a card-face number)",
                    path,
                    expected="a PIN of for_each: changeable",
                )
            new = _value(body["new"])
            uses_literal |= isinstance(new, M.Literal)
            step = M.Change(**common, pin=pin, new=new)
        elif action == "reinit":
            pin = _pin_of(card, doc, body, params, path, current, action)
            uses_reinit = True
            new = _value(body.get("new", "fresh"))
            uses_literal |= isinstance(new, M.Literal)
            step = M.Reinit(**common, pin=pin, route=body["route"], new=new)
        elif action == "power":
            step = M.Power(**common, how=body)
        elif action == "read":
            step = M.Read(
                **common,
                ef=int(body["ef"], 16),
                sfi=bool(body.get("sfi")),
                offset=int(body.get("offset", 0)),
                length=int(body.get("length", 256)),
            )
        elif action == "sign":
            step = M.Sign(**common, key=body["key"])
        elif action == "apdu":
            try:
                from harness.apdu.model import from_hex

                step = M.Apdu(**common, raw=from_hex(body["hex"]))
            except ValueError as exc:
                raise doc.error(f"apdu: {exc}", [*path, "hex"]) from None
        elif action == "others_unchanged":
            step = M.OthersUnchanged(
                **common, pin=_pin_of(card, doc, {}, params, path, current, action)
            )
        elif action == "latency":
            step = M.Latency(
                **common,
                pin=_pin_of(card, doc, {}, params, path, current, action),
                samples=int(body["samples"]),
                of=body.get("of", "status"),
            )
        elif action == "tear" and "delays_us" in (body or {}):
            if body.get("command", "verify") != "verify":
                raise doc.error(
                    "tear: timed cuts (delays_us) are for VERIFY only",
                    [*path, "command"],
                    expected="command: verify",
                )
            _need_tag(doc, tags, "destructive", "tear with delays_us sends wrong PINs", path)
            step = M.Tear(
                **common,
                pin=_pin_of(card, doc, {}, params, path, current, action),
                delays_us=tuple(float(d) for d in body["delays_us"]),
            )
        elif action == "tear":
            _need_tag(
                doc,
                tags,
                "emulator-only",
                "tear cuts the emulated card's power",
                path,
                expected="tags: [emulator-only, destructive]",
            )
            pin = _pin_of(card, doc, {}, params, path, current, action)
            command = str((body or {}).get("command", "verify"))
            if command == "change" and card.pins_by_id[pin].change is None:
                raise doc.error(
                    f"tear: {pin} cannot be changed (a card-face number)",
                    [*path, "command"],
                    expected="a PIN of for_each: changeable",
                )
            uses_reinit |= command == "reinit"
            step = M.Tear(**common, pin=pin, command=command)
        else:  # leak
            if body.get("classes") == "blocked":
                why = "leak with classes blocked blocks the PIN"
                _need_tag(doc, tags, "destructive", why, path)
            step = M.Leak(
                **common,
                pin=_pin_of(card, doc, {}, params, path, current, action),
                samples=int(body["samples"]),
                classes=str(body.get("classes", "first-vs-last")),
            )
        pin_step = action in ("verify", "status", "change", "reinit") or (
            isinstance(step, M.Select) and step.pin is not None
        )
        wants_pin = step.expect is not None and (
            step.expect.tries is not None or step.expect.blocked is not None
        )
        if wants_pin and not pin_step:
            raise doc.error(
                f"{action}: expect.tries and expect.blocked need a PIN step",
                [*path],
                expected="verify, status, change, reinit or select: {pin: ...}",
            )
        steps.append(step)
    if uses_literal and "emulator-only" not in tags:
        raise doc.error(
            "literal PIN values are for emulated cards: add tag emulator-only",
            ["tags"] if "tags" in data else [],
            expected="tags: [emulator-only]",
        )
    if uses_reinit and "needs-reinit" not in tags:
        raise doc.error(
            "reinit uses the emulator's test mechanism: add tag needs-reinit",
            ["tags"] if "tags" in data else [],
            expected="tags: [needs-reinit]",
        )
    name = _sub(doc, str(data["name"]), params, ["name"])
    top = location_of(doc.data, [], doc.path)
    return M.Scenario(
        name=name,
        rule=str(data["rule"]),
        path=doc.path,
        line=top.line or 1,
        steps=tuple(steps),
        params=params,
        description=str(data.get("description", "")),
        severity=str(data.get("severity", "normal")),
        tags=tags,
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
