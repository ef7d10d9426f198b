"""Load ``*.pin.yaml`` files: schema, parameter expansion, and meaning checks, all reported
as ``file:line`` with the offending lines and what was expected."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from harness.capabilities import Capability
from harness.cards.profile import CardProfile
from harness.config import LoadedYAML, load_yaml, validate, validate_at
from harness.config.yamlfile import location_of
from harness.scenario import model as M
from harness.scenario.parse import Parse, sub
from harness.scenario.schema import actions, schema, step_schema
from harness.steps import kinds

#: the keys every step may have beside its action
_COMMON_KEYS = ("id", "note", "expect", "rests_on")


def load_scenarios(path: str | Path, card: CardProfile) -> list[M.Scenario]:
    """Every scenario a file defines (one per ``for_each`` value), for the card ``card``: the
    PINs, PIN sets, applications and keys it may name are that card's."""
    doc = load_yaml(path)
    top = schema(card)
    if not isinstance(doc.data, Mapping):
        validate(doc, top)  # reports "is not of type 'object'" at line 1
    validate(doc, top)
    known = kinds()
    for i, step in enumerate(doc.data["steps"]):
        found = [k for k in step if k in known]
        unknown = [k for k in step if k not in known and k not in _COMMON_KEYS]
        if len(found) != 1 or unknown:
            what = (
                f"unknown key {unknown[0]!r}"
                if unknown
                else "no action"
                if not found
                else f"two actions {found}"
            )
            raise doc.error(
                f"steps.{i}: {what}",
                ["steps", i, *unknown[:1]],
                expected="exactly one action: " + ", ".join(actions()),
            )
        validate_at(doc, ["steps", i], step_schema(card, found[0]))
    data = doc.data
    pins = data.get("for_each", {}).get("pin")
    if pins is None:
        params_list: list[dict[str, str]] = [{}]
    else:
        ids = card.pin_sets[pins] if isinstance(pins, str) else list(pins)
        params_list = [{"pin": p} for p in ids]
    return [_build(doc, params, card) for params in params_list]


def _build(doc: LoadedYAML, params: dict[str, str], card: CardProfile) -> M.Scenario:
    data = doc.data
    c = Parse(doc, params, card, frozenset(data.get("tags", [])))
    known = kinds()
    steps: list[M.Step] = []
    whole = tuple(data.get("rests_on", ()))  # the scenario's: every step's checks
    for i, raw in enumerate(data["steps"]):
        c.facts = dict.fromkeys(whole + tuple(raw.get("rests_on", ())))
        c.action = next(k for k in raw if k in known)
        c.path = ["steps", i, c.action]
        loc = location_of(doc.data, ["steps", i], doc.path)
        c.line = loc.line
        common = {
            "where": loc,
            "snippet": doc.snippet(loc.line) or "",
            "expect": M.Expect(**raw["expect"]) if "expect" in raw else None,
            "id": raw.get("id"),
        }
        kind = known[c.action]
        step = kind.parse(c, raw[c.action], common)
        if c.facts:
            step = dataclasses.replace(step, facts=tuple(c.facts))
        e = step.expect
        if (
            e is not None
            and (e.tries is not None or e.blocked is not None)
            and not kind.pin_step(step)
        ):
            raise doc.error(
                f"{c.action}: expect.tries and expect.blocked need a PIN step",
                [*c.path],
                expected="verify, status, change, reinit or select: {pin: ...}",
            )
        _checked(doc, kind.expects(step) if kind.expects else None, e, c.action, i)
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
    for name in data.get("requires", []):
        c.needs.setdefault(Capability(name), "requires:")
    top = location_of(doc.data, [], doc.path)
    return M.Scenario(
        name=sub(doc, str(data["name"]), params, ["name"]),
        rule=str(data["rule"]),
        path=doc.path,
        line=top.line or 1,
        steps=tuple(steps),
        params=params,
        description=str(data.get("description", "")),
        severity=str(data.get("severity", "normal")),
        tags=c.tags,
        card=card.name,
        needs=tuple(c.needs.items()),
    )


def _checked(
    doc: LoadedYAML, checks: frozenset[str] | None, e: M.Expect | None, action: str, i: int
) -> None:
    """Every ``expect:`` key the step has is one it checks: another would pass unchecked."""
    if e is None or checks is None:
        return
    given = [k for k, v in e.__dict__.items() if v not in (None, False)]
    unchecked = [k for k in given if k not in checks]
    if unchecked:
        raise doc.error(
            f"{action}: expect.{unchecked[0]} is not something this step checks",
            ["steps", i, "expect", unchecked[0]],
            expected=f"expect keys of {action}: " + (", ".join(sorted(checks)) or "none"),
        )
