"""A lab's own card profile (``*.card.yaml``): its test card as it is, on top of a known kind.

A real test card may lack PIN objects, the lab may not know every PIN, and the lab may have
established facts that are disputed publicly (a maximum of tries it read from the card, a
behaviour it observed). It says so in a file named with ``--pinloop-card-profile FILE``::

    name: lab-card-7                # the lab's name for the card (reports show it)
    base: jpki                      # the kind of card: a built-in profile or module:ATTRIBUTE
    absent: [kenkaku-birth]         # PIN objects this card does not have
    unknown: [juki-pin, common-pin] # PINs the lab has no value for
    facts:                          # facts the lab established for this card
      max-tries.kenhojo-a: {value: 3, source: "status query on card 7, 2026-11-30"}
      wrong-length-free: {source: "observed by pinloop on card 7 with the opt-in"}

What it changes: scenarios on an absent or unknown PIN are skipped with the reason, sweeps
(``others_unchanged``) cover the objects the card has, and each promoted fact becomes an
expectation (confidence ``lab``, its source the lab's) that checks assert on this card. It
cannot change a fact's statement, take a fact away, or add a PIN object: the kind of card
stays the base profile's (scenarios are loaded for it; the emulator implements it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.cards.facts import Confidence, max_tries_fact_id
from harness.cards.profile import CardProfile, ReportLabels
from harness.config import load_validated
from harness.config.yamlfile import location_of
from harness.errors import HarnessError

#: the suffix that makes ``--pinloop-card-profile`` a file
SUFFIXES = (".card.yaml", ".card.yml")

SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "base"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"},
        "base": {"type": "string", "minLength": 1, "description": "jpki or module:ATTRIBUTE"},
        "absent": {"type": "array", "uniqueItems": True, "items": {"type": "string"}},
        "unknown": {"type": "array", "uniqueItems": True, "items": {"type": "string"}},
        "facts": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "additionalProperties": False,
                "required": ["source"],
                "properties": {
                    "value": {"type": "integer", "minimum": 1, "maximum": 15},
                    "source": {"type": "string", "minLength": 3, "maxLength": 300},
                },
            },
        },
        "notes": {"type": "string"},
    },
}


def is_lab_file(name: str) -> bool:
    return name.endswith(SUFFIXES)


def load_lab_card(path: str | Path, base_of: Callable[[str], CardProfile]) -> CardProfile:
    """The card profile ``path`` declares: its base (``base_of`` finds it by name) with the
    lab's changes. Every mistake is a :class:`~harness.errors.ConfigError` at its
    ``file:line``."""
    doc = load_validated(path, SCHEMA)
    data = doc.data
    base_name = str(data["base"])
    if is_lab_file(base_name):
        raise doc.error(
            "a lab's card profile is based on a kind of card, not another file",
            ["base"],
            expected="jpki or module:ATTRIBUTE",
        )
    try:
        base = base_of(base_name)
    except HarnessError as exc:
        raise doc.error(str(exc), ["base"]) from None
    pins = {p.id: p for p in base.pins}
    sets: dict[str, frozenset[str]] = {}
    for key in ("absent", "unknown"):
        for i, pin in enumerate(data.get(key, [])):
            if pin not in pins:
                raise doc.error(
                    f"{key}: {pin!r} is no PIN object of the {base.name} card",
                    [key, i],
                    expected="one of " + ", ".join(pins),
                )
        sets[key] = frozenset(data.get(key, []))
    if len(sets["absent"]) == len(pins):
        raise doc.error("absent: every PIN object of the card", ["absent"])
    facts = {f.id: f for f in base.facts}
    for fact_id, body in (data.get("facts") or {}).items():
        source = "lab: " + str(body["source"])
        pin = next((p for p in pins if max_tries_fact_id(p) == fact_id), None)
        if pin is not None:
            if "value" not in body:
                raise doc.error(
                    f"{fact_id}: a maximum of tries needs its value",
                    ["facts", fact_id],
                    expected="{value: N, source: ...}",
                )
            pins[pin] = dataclasses.replace(
                pins[pin],
                max_tries=int(body["value"]),
                tries_source=source,
                tries_confidence=Confidence.LAB,
            )
        elif fact_id in facts:
            if "value" in body:
                raise doc.error(
                    f"{fact_id} is a behaviour, not a figure: it has no value",
                    ["facts", fact_id, "value"],
                    expected="{source: ...}",
                )
            facts[fact_id] = dataclasses.replace(
                facts[fact_id], confidence=Confidence.LAB, source=source
            )
        else:
            known = [f.id for f in base.all_facts]
            raise doc.error(
                f"unknown fact {fact_id!r} of the {base.name} card",
                ["facts", fact_id],
                expected="one of " + ", ".join(known),
            )
    where = location_of(data, [], doc.path)
    name = str(data["name"])
    try:
        return dataclasses.replace(
            base,
            pins=tuple(pins.values()),
            facts=tuple(facts.values()),
            absent=sets["absent"],
            unknown_pins=sets["unknown"],
            labels=ReportLabels(
                card=f"{base.labels.card}: {name}",
                several_applications=base.labels.several_applications,
            ),
            declared_in=f"{doc.path}:{where.line or 1}",
            variant=name,
        )
    except ValueError as exc:  # what the profile itself refuses
        raise doc.error(str(exc)) from None


__all__ = ["SCHEMA", "SUFFIXES", "is_lab_file", "load_lab_card"]
