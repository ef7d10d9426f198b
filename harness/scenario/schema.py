"""JSON Schema of a scenario file (``*.pin.yaml``): the file's top level, and the pieces the
step kinds (:mod:`harness.steps`) build their bodies from (values, repeat counts, ``expect:``).

What a file may name of the card (PIN ids and sets, applications, sign keys, re-initialisation
routes) comes from the card profile it is loaded for: :func:`schema` and :func:`step_schema`
are made once per profile, when the first file is loaded for it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from harness.capabilities import TAG_REQUIRES, Capability
from harness.cards.profile import CardProfile
from harness.steps import kinds

VALUE_WORDS = [
    "right",
    "wrong",
    "wrong-first",
    "wrong-last",
    "lower",
    "short",
    "long",
    "new",
    "bad-charset",
    "fresh",
]
#: values that are the PIN the card holds at that point of a scenario (everything else, and a
#: literal, may cost a try on a real card)
RIGHT_VALUES = frozenset({"right", "new"})
SW_PATTERN = "^([0-9A-Fa-f]{4}|63C[xX]|ok|blocked|wrong-length|denied|not-found|refused)$"
TRIES_PATTERN = "^(max|max-[0-9]+|unchanged|one-less|[0-9]+)$"

LITERAL = {
    "type": "object",
    "additionalProperties": False,
    "required": ["literal"],
    "properties": {"literal": {"type": "string", "minLength": 1, "maxLength": 64}},
    "description": "{literal: '...'} (emulated cards only)",
}
VALUE = {
    "oneOf": [{"enum": VALUE_WORDS}, LITERAL],
    "description": "one of " + ", ".join(VALUE_WORDS) + ", or {literal: '...'}",
}

EXPECT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "sw": {
            "type": "string",
            "pattern": SW_PATTERN,
            "description": "a quoted string: '9000', '63Cx', or ok, blocked, wrong-length, "
            "denied, not-found, refused (any answer but a success)",
        },
        "tries": {
            "oneOf": [
                {"type": "integer", "minimum": 0, "maximum": 15},
                {"type": "string", "pattern": TRIES_PATTERN},
            ],
            "description": "0-15, max, max-N, unchanged or one-less",
        },
        "blocked": {"type": "boolean"},
        "verified": {"type": "boolean"},
        "identical": {"const": True, "description": "true: every response of the step is the same"},
        "length": {"type": "integer", "minimum": 0, "maximum": 65536},
        "signature": {"const": "valid"},
    },
}

_COMMON = {"id": {"type": "string"}, "note": {"type": "string"}, "expect": EXPECT}


def step_schema(card: CardProfile, action: str) -> dict[str, Any]:
    """The schema of one step whose action is ``action`` (checked after the action is known).
    One object per profile, action and set of step kinds, so that its validator is made once."""
    return _step_schema(card, action, tuple(kinds().values()))


@functools.cache
def _step_schema(card: CardProfile, action: str, _kinds: tuple[object, ...]) -> dict[str, Any]:
    return _step(action, steps(card)[action], rests_on(card))


def _step(action: str, body: dict[str, Any], facts: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [action],
        "properties": {action: body, **_COMMON, "rests_on": facts},
    }


def rests_on(card: CardProfile) -> dict[str, Any]:
    """``rests_on:``: card facts a scenario's (or a step's) checks rest on, by id."""
    ids = sorted(f.id for f in card.all_facts)
    return {
        "type": "array",
        "uniqueItems": True,
        "minItems": 1,
        "items": one_of(ids, "facts"),
        "description": "ids of the card profile's facts the checks rest on (docs/cards/); on "
        "a card that is not the emulator a check that rests on one below one-source is "
        "observed, not asserted",
    }


REPEAT = {
    "oneOf": [
        {"type": "integer", "minimum": 1, "maximum": 64},
        {"type": "string", "pattern": "^max(-[0-9]+)?$"},
    ],
    "description": "a count (1-64), max, or max-N",
}


@dataclass(frozen=True)
class CardRefs:
    """What a step body may name of the card a file is loaded for."""

    #: a PIN id or a ``{placeholder}`` (checked by the parser, after expansion)
    pin: dict[str, Any]
    apps: list[str]
    routes: list[str]
    keys: list[str]


def actions() -> tuple[str, ...]:
    """The actions a step may have (exactly one), in the order the docs list them."""
    return tuple(kinds())


def steps(card: CardProfile) -> dict[str, dict[str, Any]]:
    """The body of each action's step, for a file loaded for ``card``."""
    return _steps(card, tuple(kinds().values()))


@functools.cache
def _steps(card: CardProfile, _kinds: tuple[object, ...]) -> dict[str, dict[str, Any]]:
    refs = CardRefs(
        pin={
            "type": "string",
            "description": "a PIN id (" + ", ".join(card.pin_ids) + ") or {placeholder}",
        },
        apps=[a.id for a in card.applications],
        routes=list(card.reinit_routes),
        keys=list(card.sign_keys),
    )
    return {action: kind.schema(refs) for action, kind in kinds().items()}


def one_of(names: list[str], what: str) -> dict[str, Any]:
    """An enum of ``names``; a card without any admits no value at all."""
    if names:
        return {"enum": names}
    return {"not": {}, "description": f"this card has no {what}"}


def schema(card: CardProfile) -> dict[str, Any]:
    """The schema of a whole file loaded for ``card`` (its steps checked one by one after)."""
    return _schema(card, tuple(kinds().values()))


@functools.cache
def _schema(card: CardProfile, _kinds: tuple[object, ...]) -> dict[str, Any]:
    pin_ids = list(card.pin_ids)
    pin_sets = list(card.pin_sets)
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "rule", "steps"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "rule": {
                "type": "string",
                "pattern": "^[a-z0-9][a-z0-9-]*$",
                "description": "the rule this scenario checks, kebab-case (shown on failure)",
            },
            "description": {"type": "string"},
            "severity": {"enum": ["blocker", "critical", "normal", "minor", "trivial"]},
            "tags": {
                "type": "array",
                "uniqueItems": True,
                "maxItems": 3,
                "items": {"enum": sorted(TAG_REQUIRES)},
            },
            "requires": {
                "type": "array",
                "uniqueItems": True,
                "maxItems": len(Capability),
                "items": {"enum": [c.value for c in Capability]},
                "description": "capabilities a target needs to run the scenario, beyond what "
                "its tags and steps need (a target without one skips it)",
            },
            "rests_on": rests_on(card),
            "for_each": {
                "type": "object",
                "additionalProperties": False,
                "required": ["pin"],
                "properties": {
                    "pin": {
                        "oneOf": [
                            {"enum": pin_sets},
                            {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": len(pin_ids),
                                "uniqueItems": True,
                                "items": {"enum": pin_ids},
                            },
                        ],
                        "description": "a PIN set ("
                        + ", ".join(pin_sets)
                        + ") or a list of PIN ids",
                    }
                },
            },
            "steps": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "description": "a step with exactly one action: " + ", ".join(actions()),
                },
            },
        },
    }
