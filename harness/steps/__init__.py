"""The step kinds of the scenario language, one module each.

A step kind is a :class:`StepKind`: its action word, its typed model (a frozen dataclass
derived from :class:`harness.scenario.model.Step`), the JSON Schema of its body for a card
profile, the parser that turns a checked body into the model, and the function that runs it
through a :class:`~harness.run.session.CardSession`. The scenario schema, the loader and the
runner take every kind from :func:`kinds`, in the order of :data:`BUILT_IN`; a new kind is one
new module here (added to :data:`BUILT_IN`) or, from outside pinloop, :func:`register`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.run.session import CardSession
    from harness.scenario.model import Scenario, Step
    from harness.scenario.parse import Parse
    from harness.scenario.schema import CardRefs


@dataclass(frozen=True)
class StepKind:
    """One action of the scenario language."""

    action: str
    model: type[Step]
    #: the body's JSON Schema, for the names the card profile admits
    schema: Callable[[CardRefs], dict[str, Any]]
    #: the model from a body the schema accepted (``common``: where, snippet, expect, id)
    parse: Callable[[Parse, Any, dict[str, Any]], Step]
    #: run the step; a broken expectation raises the session's failure
    run: Callable[[CardSession, Any], None]
    #: whether the step addresses a PIN (so ``expect.tries`` and ``expect.blocked`` apply)
    pin_step: Callable[[Step], bool] = lambda step: False
    #: one line for the scenario language's table of steps (docs/scenarios.md)
    doc: str = ""
    #: the ``expect:`` keys the step checks (the loader refuses the others, which would pass
    #: unchecked); None: any (a kind from outside that checks with ``check`` as it likes)
    expects: Callable[[Step], frozenset[str]] | None = None
    #: whether its verdict depends on measured time (a latency budget, a leak test): such a
    #: scenario's items run alone in a spread run, and its failures are timing failures
    timing: bool = False


#: the modules of the built-in kinds, in the order the docs and error messages list them
BUILT_IN = (
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

_BUILT: dict[str, StepKind] = {}
_ADDED: dict[str, StepKind] = {}
_ALL: dict[str, StepKind] = {}


def register(kind: StepKind) -> StepKind:
    """Add a step kind (one whose action is taken already, a built-in's too, is an error)."""
    if kind.action in BUILT_IN:
        raise ValueError(f"step kind {kind.action!r} is registered already (a built-in one)")
    if kind.action in _ADDED and _ADDED[kind.action] is not kind:
        raise ValueError(f"step kind {kind.action!r} is registered already")
    _ADDED[kind.action] = kind
    _ALL.clear()
    return kind


def unregister(action: str) -> None:
    """Remove a kind added by :func:`register` (tests)."""
    if action in BUILT_IN:
        raise ValueError(f"{action!r} is a built-in step kind")
    _ADDED.pop(action, None)
    _ALL.clear()


def kinds() -> dict[str, StepKind]:
    """Every step kind by action: the built-in ones first, in :data:`BUILT_IN` order, then
    those added by :func:`register`, whenever they were added."""
    if not _BUILT:
        for name in BUILT_IN:
            kind = importlib.import_module(f"harness.steps.{name}").KIND
            _BUILT[kind.action] = kind
    if not _ALL:
        _ALL.update(_BUILT)
        _ALL.update(_ADDED)
    return _ALL


#: what the built-in steps check, by what they send
ANSWER = frozenset({"sw", "length"})
PIN = frozenset({"tries", "blocked", "verified"})
NOTHING: frozenset[str] = frozenset()


def kind_of(step: Step) -> StepKind:
    return kinds()[step.action]


def timing_actions() -> frozenset[str]:
    """The actions of the kinds whose verdict depends on measured time."""
    return frozenset(action for action, kind in kinds().items() if kind.timing)


def is_timing(scenario: Scenario) -> bool:
    """A scenario whose verdict depends on measured time (a latency budget, a leak test)."""
    return any(kind_of(s).timing for s in scenario.steps)
