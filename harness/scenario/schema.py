"""JSON Schema of a scenario file (``*.pin.yaml``). Kept with the model it feeds.

What a file may name of the card (PIN ids and sets, applications, sign keys, re-initialisation
routes) comes from the card profile it is loaded for: :func:`schema` and :func:`step_schema`
are made once per profile, when the first file is loaded for it.
"""

from __future__ import annotations

import functools
from typing import Any

from harness.cards.profile import CardProfile

#: the actions a step may have (exactly one)
ACTIONS = (
    "select",
    "verify",
    "status",
    "change",
    "reinit",
    "power",
    "read",
    "sign",
    "apdu",
    "others_unchanged",
    "latency",
    "tear",
    "leak",
)
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
SW_PATTERN = "^([0-9A-Fa-f]{4}|63C[xX]|ok|blocked|wrong-length|denied|not-found)$"
TRIES_PATTERN = "^(max|max-[0-9]+|unchanged|one-less|[0-9]+)$"

_LITERAL = {
    "type": "object",
    "additionalProperties": False,
    "required": ["literal"],
    "properties": {"literal": {"type": "string", "minLength": 1, "maxLength": 64}},
    "description": "{literal: '...'} (emulated cards only)",
}
_VALUE = {
    "oneOf": [{"enum": VALUE_WORDS}, _LITERAL],
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
            "denied, not-found",
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


@functools.cache
def step_schema(card: CardProfile, action: str) -> dict[str, Any]:
    """The schema of one step whose action is ``action`` (checked after the action is known).
    One object per profile and action, so that its validator is made once."""
    return _step(action, steps(card)[action])


def _step(action: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [action],
        "properties": {action: body, **_COMMON},
    }


_REPEAT = {
    "oneOf": [
        {"type": "integer", "minimum": 1, "maximum": 64},
        {"type": "string", "pattern": "^max(-[0-9]+)?$"},
    ],
    "description": "a count (1-64), max, or max-N",
}


@functools.cache
def steps(card: CardProfile) -> dict[str, dict[str, Any]]:
    """The body of each action's step, for a file loaded for ``card``."""
    pin_ref = {
        "type": "string",
        "description": "a PIN id (" + ", ".join(card.pin_ids) + ") or {placeholder}",
    }
    return _steps(
        pin_ref,
        [a.id for a in card.applications],
        list(card.reinit_routes),
        list(card.sign_keys),
    )


def _one_of(names: list[str], what: str) -> dict[str, Any]:
    """An enum of ``names``; a card without any admits no value at all."""
    if names:
        return {"enum": names}
    return {"not": {}, "description": f"this card has no {what}"}


def _steps(
    pin_ref: dict[str, Any], app_ids: list[str], routes: list[str], keys: list[str]
) -> dict[str, dict[str, Any]]:
    return {
        "select": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "pin": pin_ref,
                "app": {"enum": app_ids},
                "ef": {"type": "string", "pattern": "^[0-9A-Fa-f]{4}$"},
                "aid": {"type": "string", "pattern": "^([0-9A-Fa-f]{2}){1,16}$"},
            },
            "description": "{pin: ID} or {app: ID[, ef: FID]} or {aid: HEX}",
        },
        "verify": {
            "type": "object",
            "additionalProperties": False,
            "required": ["value"],
            "properties": {
                "value": {"oneOf": [_VALUE, {"type": "array", "minItems": 2, "items": _VALUE}]},
                "pin": pin_ref,
                "sfi": {"type": "boolean"},
                "repeat": _REPEAT,
            },
        },
        "status": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"pin": pin_ref, "sfi": {"type": "boolean"}, "repeat": _REPEAT},
        },
        "change": {
            "type": "object",
            "additionalProperties": False,
            "required": ["new"],
            "properties": {"new": _VALUE, "pin": pin_ref},
        },
        "reinit": {
            "type": "object",
            "additionalProperties": False,
            "required": ["route"],
            "properties": {
                "pin": pin_ref,
                "route": _one_of(routes, "re-initialisation routes"),
                "new": {"oneOf": [_VALUE, {"const": "none"}]},
            },
        },
        "power": {
            "enum": ["cycle", "reset", "reinsert", "cut"],
            "description": "cycle | reset | reinsert | cut (by the reader's power switch)",
        },
        "read": {
            "type": "object",
            "additionalProperties": False,
            "required": ["ef"],
            "properties": {
                "ef": {"type": "string", "pattern": "^[0-9A-Fa-f]{4}$"},
                "sfi": {"type": "boolean"},
                "offset": {"type": "integer", "minimum": 0, "maximum": 32767},
                "length": {"type": "integer", "minimum": 1, "maximum": 65536},
            },
        },
        "sign": {
            "type": "object",
            "additionalProperties": False,
            "required": ["key"],
            "properties": {"key": _one_of(keys, "signing keys")},
        },
        "apdu": {
            "type": "object",
            "additionalProperties": False,
            "required": ["hex"],
            "properties": {"hex": {"type": "string", "minLength": 8}},
        },
        "others_unchanged": {
            "type": "object",
            "additionalProperties": False,
            "properties": {},
            "description": "{} - every other PIN's counter is as at the start",
        },
        "latency": {
            "type": "object",
            "additionalProperties": False,
            "required": ["samples"],
            "properties": {
                "samples": {"type": "integer", "minimum": 5, "maximum": 5000},
                "of": {"enum": ["status", "right", "wrong"]},
            },
            "description": "VERIFY latency vs the reader profile's budgets",
        },
        "tear": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "command": {"enum": ["verify", "change", "reinit"]},
                "delays_us": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 500,
                    "items": {"type": "number", "minimum": 0, "maximum": 10000000},
                    "description": "cut a wrong VERIFY this long after it is sent, by the"
                    " reader's power switch (any card)",
                },
            },
            "description": "{command: verify|change|reinit} - cut power at every write point of"
            " that command (emulated card), or {delays_us: [...]} - timed cuts of a wrong VERIFY",
        },
        "leak": {
            "type": "object",
            "additionalProperties": False,
            "required": ["samples"],
            "properties": {
                "classes": {"enum": ["first-vs-last", "right-vs-wrong", "blocked"]},
                "samples": {"type": "integer", "minimum": 20, "maximum": 20000},
            },
            "description": "a statistical timing leak test of two input classes (permutation test)",
        },
    }


@functools.cache
def schema(card: CardProfile) -> dict[str, Any]:
    """The schema of a whole file loaded for ``card`` (its steps checked one by one after)."""
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
                "items": {"enum": ["destructive", "emulator-only", "needs-reinit"]},
            },
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
                    "description": "a step with exactly one action: " + ", ".join(ACTIONS),
                },
            },
        },
    }
