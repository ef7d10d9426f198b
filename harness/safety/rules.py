"""Every rule that keeps a real card safe, in one place (the APDU-level ones are the guard's).

A citizen whose My Number card locks must go to the municipal window. What pinloop does to a
card follows from two things: what the target *can* do, its capabilities
(:mod:`harness.capabilities`, declared by its class and its reader profile), and what the lab
*allows*: ``--pinloop-destructive-reader NAME`` gives that one reader ``block-pins``. The rules:

- **Which scenario runs where** (:func:`skip_reason`, the pytest plugin's set-up): a scenario
  runs on a target only if the target has every capability the scenario needs: its tags
  (``destructive`` → ``block-pins``, ``emulator-only`` → ``emulator``, ``needs-reinit`` →
  ``test-reinit``), its steps (``tear: {command}`` → ``write-points``, a ``fresh`` value →
  ``fresh-pins`` …) and its ``requires:``. Otherwise it is skipped before anything is sent,
  with each missing capability named and what needs it; a destructive scenario on a reader
  that was not opted in names the option.
- **The start of a scenario** (:func:`begin`): the target is told the tries the scenario
  declares (:func:`harness.scenario.spend.declared_spend`) and whether it may block a PIN; a
  real card's guard (:meth:`harness.safety.guard.RealCardGuard.begin`) refuses a scenario that could
  bring a counter below its floor, and restores the card's PINs first.
- **While it runs** (:func:`refuse_without`): what only a card with a capability allows is
  refused on any other, whatever the scenario's tags: literal PIN values (``literal-pins``),
  fresh PIN values (``fresh-pins``), the test re-initialisation (``test-reinit``) and cuts at
  write points (``write-points``). The session and the targets' typed methods call it; a
  refusal is an :class:`~harness.safety.guard.UnsafeStep`, reported as a skip with the reason.
- **Every APDU** to a card without ``emulator`` passes the real-card guard
  (:mod:`harness.safety.guard`), which the real-reader target puts in front of its transport.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

from harness.capabilities import HOW_TO_GET, READER, Capability, names
from harness.errors import HarnessError
from harness.safety.guard import RealCardGuard, UnsafeStep

if TYPE_CHECKING:
    from harness.scenario.model import Scenario
    from harness.targets import Target

#: the option that opts one real reader in to destructive scenarios (``block-pins``)
DESTRUCTIVE_OPTION = "--pinloop-destructive-reader"

#: what a target without the capability refuses when a scenario run asks for it
REFUSALS: dict[Capability, str] = {
    Capability.LITERAL_PINS: "literal PIN values are for emulated cards only",
    Capability.FRESH_PINS: "a fresh PIN on a real card would be unknown to the lab",
    Capability.TEST_REINIT: "reinit is the emulator's test mechanism; a real card has none",
    Capability.WRITE_POINTS: "a cut at a write point is the emulator's; a real card has none",
}


def granted(target: Target, destructive_readers: Collection[str] = ()) -> frozenset[Capability]:
    """What ``target`` may do in this session: its capabilities, with ``block-pins`` when the
    lab named its reader with ``--pinloop-destructive-reader`` (exact name)."""
    if isinstance(destructive_readers, str):  # one name is not a collection of names
        raise TypeError("destructive_readers: a collection of exact reader names")
    capabilities = target.capabilities
    if target.name in frozenset(destructive_readers):
        capabilities |= {Capability.BLOCK_PINS}
    return capabilities


def destructive_ok(target: Target, destructive_readers: Collection[str] = ()) -> bool:
    """Whether a scenario on ``target`` may block or change a PIN (the guard's opt-in)."""
    return Capability.BLOCK_PINS in granted(target, destructive_readers)


def missing(
    scenario: Scenario, target: Target, destructive_readers: Collection[str] = ()
) -> dict[Capability, str]:
    """The capabilities ``scenario`` needs that ``target`` has not, each with what needs it
    (:func:`observing_costs` too: a try spent to observe a fact needs the opt-in)."""
    have = granted(target, destructive_readers)
    needs = dict(scenario.requires)
    cost = observing_costs(scenario, target)
    if cost:
        needs.setdefault(Capability.BLOCK_PINS, cost)
    return {c: why for c, why in needs.items() if c not in have}


def observing_costs(scenario: Scenario, target: Target) -> str | None:
    """Why ``scenario`` would spend a real try only to observe a card fact that is not
    established (on a card that is not the emulator), or None: such a scenario runs on a
    real card only with the destructive opt-in (the guard restores the counter after)."""
    from harness.scenario.spend import may_spend

    if Capability.EMULATOR in target.capabilities:
        return None
    facts = target.card_profile.facts_by_id
    for step in scenario.steps:
        unproven = [facts[f] for f in step.facts if f in facts and not facts[f].established]
        if unproven and may_spend(step):
            shown = ", ".join(f"{f.id} ({f.confidence.label})" for f in unproven)
            return f"spends a try to observe {shown}: {step.action} step, line {step.where.line}"
    return None


def skip_reason(
    scenario: Scenario, target: Target, destructive_readers: Collection[str] = ()
) -> str | None:
    """Why ``scenario`` must not run on ``target`` (the plugin skips it with this), or None.

    ``needs test-reinit (tag needs-reinit), which ACS ACR39U 00 00 does not have``; a
    destructive scenario on a reader the lab did not opt in names the option."""
    card = target.card_profile
    for what, pins in (("not on", card.absent), ("not known for", card.unknown_pins)):
        off = sorted(scenario.pins & pins)
        if off:
            return (
                f"{', '.join(off)}: {what} the card in {target.name} "
                f"(its card profile, {card.declared_in or card.name})"
            )
    lacking = missing(scenario, target, destructive_readers)
    if not lacking:
        return None
    name = target.name
    opt_in = f"enable with {DESTRUCTIVE_OPTION} '{name}'"
    if set(lacking) == {Capability.BLOCK_PINS}:
        where = f"real reader {name!r}" if not target.emulated else repr(name)
        return (
            f"destructive on {where} (needs {Capability.BLOCK_PINS}, "
            f"{lacking[Capability.BLOCK_PINS]}): {opt_in}"
        )
    parts = []
    for capability, why in lacking.items():
        if capability is Capability.BLOCK_PINS:
            continue
        how = HOW_TO_GET.get(capability)
        parts.append(f"{capability} ({why}{'; ' + how if how else ''})")
    text = f"needs {', '.join(parts)}, which {name} does not have"
    if Capability.BLOCK_PINS in lacking:
        text += f"; it is destructive too ({DESTRUCTIVE_OPTION})"
    return text


def begin(
    target: Target,
    scenario: Scenario,
    *,
    destructive_ok: bool,
    log: Callable[[str], None] | None = None,
) -> None:
    """The start of ``scenario`` on ``target``: the target brings the card to the scenario's
    starting state, told the tries the scenario declares per PIN and whether it may block one
    (a real card's guard restores its PINs and refuses a scenario that could go below its
    floor: :class:`~harness.safety.guard.Refused`)."""
    from harness.scenario.spend import declared_spend

    check_target(target)

    def spend(maxima: Mapping[str, int]) -> Mapping[str, int]:
        # each PIN's maximum as the card shows it (the guard calls this once it has restored
        # them: a real card's maximum may be known only then)
        return declared_spend(scenario, dict(maxima))

    target.begin(scenario.pins, spend=spend, destructive_ok=destructive_ok, log=log)


class UnsafeTarget(HarnessError):
    """A target that does not meet the real-card rules (:func:`check_target`): refused."""


def check_target(target: Target, *, connected: bool = True) -> None:
    """What pinloop relies on to keep a real card safe, held for every target whoever wrote
    it (a lab's own kind from the registry too); an :class:`UnsafeTarget` (a lab fault)
    otherwise, before anything is sent:

    - ``emulator`` (and with it every capability that can spend or change a PIN) only for
      pinloop's emulated targets (:data:`harness.targets.EmulatedTarget` and its subclasses);
    - any other target has its reader's capabilities only (:data:`READER`), and, once
      ``connected``, its transport is the real-card guard: every APDU passes it.
    """
    have = target.capabilities
    if Capability.EMULATOR in have:
        if not getattr(type(target), "_pinloop_emulator", False):
            raise UnsafeTarget(
                f"{target.name}: claims {Capability.EMULATOR} but is not one of pinloop's "
                "emulated targets (a lab's emulator target subclasses "
                "harness.targets.EmulatedTarget); refused before anything is sent"
            )
        return
    extra = have - READER
    if extra:
        raise UnsafeTarget(
            f"{target.name}: a card that is not pinloop's emulator may have its reader's "
            f"capabilities only, not {names(extra)}; refused before anything is sent"
        )
    if connected and not isinstance(getattr(target, "transport", None), RealCardGuard):
        raise UnsafeTarget(
            f"{target.name}: every APDU to a card that is not pinloop's emulator passes the "
            "real-card guard, and this target's transport is not one (mix in "
            "harness.targets.GuardedCard); refused before anything is sent"
        )


def refuse_without(target: Target, capability: Capability) -> None:
    """Raise :class:`~harness.safety.guard.UnsafeStep` unless ``target`` has ``capability``: what a
    scenario run asks only such a card for (:data:`REFUSALS`)."""
    if capability not in target.capabilities:
        why = REFUSALS.get(capability, f"this step needs {capability}")
        raise UnsafeStep(f"{why} (needs {capability}, which {target.name} does not have)")
