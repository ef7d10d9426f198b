"""What the parser of one step sees, and the helpers every step kind's parser shares.

The schema has checked a step's shape before its parser runs; a parser checks what the
schema cannot (a PIN that exists, a placeholder that is filled, a tag the step needs) and
reports it at the step's ``file:line``.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.capabilities import Capability
from harness.cards.profile import CardProfile
from harness.config import LoadedYAML
from harness.scenario import model as M

_FIELDS = string.Formatter()


def sub(doc: LoadedYAML, text: str, params: Mapping[str, str], where: list[str | int]) -> str:
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


def parse_value(raw: Any) -> M.Value:
    return M.Literal(str(raw["literal"])) if isinstance(raw, Mapping) else str(raw)


def repeat_count(raw: Any) -> M.Count:
    """``repeat:`` as written: a count, ``max`` or ``max-N`` (the schema checked its form)."""
    if raw is None:
        return M.Count()
    if isinstance(raw, int):
        return M.Count(raw)
    return M.Count(int(raw[4:]) if raw.startswith("max-") else 0, of_max=True)


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
        pin = sub(doc, str(body["pin"]), params, [*path, "pin"])
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
class Parse:
    """What the parser of one step sees: the file, its parameters, the card, the step's path,
    the PIN the last select made current, and what the scenario turned out to use and to need
    of a target (:meth:`require`)."""

    doc: LoadedYAML
    params: dict[str, str]
    card: CardProfile
    tags: frozenset[str]
    current: str | None = None
    uses_literal: bool = False
    uses_reinit: bool = False
    path: list[str | int] = field(default_factory=list)
    action: str = ""
    #: the line of the step being parsed (what a requirement says needs it)
    line: int | None = None
    #: the capabilities the steps need of a target, each with the first step that needs it
    needs: dict[Capability, str] = field(default_factory=dict)
    #: the card facts the step being parsed rests on (its features': :meth:`rests_on`)
    facts: dict[str, None] = field(default_factory=dict)

    def pin(self, body: Any = None) -> str:
        """The PIN the step names (``pin:``) or else the current one."""
        return _pin_of(
            self.card, self.doc, body or {}, self.params, self.path, self.current, self.action
        )

    def value(self, raw: Any) -> M.Value:
        v = parse_value(raw)
        self.uses_literal |= isinstance(v, M.Literal)
        if isinstance(v, M.Literal):
            self.require(Capability.LITERAL_PINS)
        elif v == "fresh":
            self.require(Capability.FRESH_PINS)
        return v

    def require(self, capability: Capability, what: str = "") -> None:
        """The step being parsed needs ``capability`` of a target (a target without it skips
        the scenario, naming the step: ``what``, else the step's action, and its line)."""
        where = f"{what or self.action + ' step'}" + (f", line {self.line}" if self.line else "")
        self.needs.setdefault(capability, where)

    def changeable(self, pin: str, where: list[str | int], what: str) -> None:
        if self.card.pins_by_id[pin].change is None:
            raise self.doc.error(
                f"{what}: {pin} cannot be changed (a card-face number)",
                where,
                expected="a PIN of for_each: changeable",
            )

    def need_tag(
        self,
        tag: str,
        why: str,
        *,
        expected: str | None = None,
        where: list[str | int] | None = None,
    ) -> None:
        """The step needs the scenario to declare ``tag`` (what it may do to a card)."""
        need_tag(
            self.doc, self.tags, tag, why, self.path if where is None else where, expected=expected
        )

    def counted(self, body: Any) -> tuple[str, M.Count]:
        """The PIN of a step with ``repeat:`` and how many times it repeats: ``max-N`` is
        checked here against a maximum the card profile establishes; any other maximum is
        the card's, resolved when the step runs."""
        pin = self.pin(body)
        count = repeat_count(body.get("repeat"))
        most = self.card.pins_by_id[pin].established_max
        lowest = count.times(most) if most is not None else count.times(15)
        if count.of_max and lowest < 1:
            raise self.doc.error(
                f"repeat {count} resolves to {lowest} for {pin}"
                + ("" if most is not None else " (even at the largest maximum, 15)"),
                [*self.path, "repeat"],
            )
        return pin, count

    def rests_on(self, *features: str) -> None:
        """What the step being parsed does (``verify:short`` …): the card facts the card
        profile says a check of it rests on are the step's."""
        for feature in features:
            fact = self.card.step_facts.get(feature)
            if fact is not None:
                self.facts.setdefault(fact, None)


def need_tag(
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
