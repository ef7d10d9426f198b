"""The kinds of ``--pinloop-target`` and how a spec becomes a target.

``inprocess``, ``pcscd`` and ``reader:NAME`` are built in; a lab package adds its own under the
entry-point group ``pinloop.targets`` (a :class:`TargetKind`; :data:`TARGETS`,
:mod:`harness.registry`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from harness.cards.emulated import Emulation, emulation_for
from harness.cards.profile import CardProfile
from harness.errors import ConfigError, HarnessError
from harness.registry import Registry, UnknownName, of_type
from harness.safety import check_target
from harness.safety.guard import RealCardGuard
from harness.targets.base import Target, TargetError
from harness.targets.emulated import InProcessTarget, PcscdTarget
from harness.targets.real import RealReaderTarget

if TYPE_CHECKING:
    from harness.emulator import DefectProfile
    from harness.emulator.config import CardConfig


@dataclass(frozen=True)
class TargetSetup:
    """What a target kind is given to build a target of ``--pinloop-target KIND[:ARG]``."""

    #: the whole spec, as the run names the target
    spec: str
    #: the card profile the run is for (None: the emulator's own card)
    card: CardProfile | None
    #: ``--pinloop-defect`` (emulated cards only)
    defect: str | None
    #: the lab's reader profiles (None: the session's folder, with the built-in ones)
    readers_dir: Path | None = None
    #: the guard of this spec's earlier target in the session (set up again after a fault)
    guard: RealCardGuard | None = None
    #: the built-in emulator's card config, or how to load it (only an emulated kind does)
    config: CardConfig | Callable[[], CardConfig] | None = None

    def card_config(self) -> CardConfig:
        """The built-in emulator's card config: the given one, else the emulator's own."""
        if callable(self.config):
            return self.config()
        if self.config is not None:
            return self.config
        from harness.emulator import load_card_config

        return load_card_config()


@dataclass(frozen=True)
class TargetKind:
    """One kind of ``--pinloop-target``: ``make(arg, setup)`` builds the target (``arg``: what
    follows ``KIND:`` in the spec, ``""`` if nothing does)."""

    make: Callable[[str, TargetSetup], Target]
    #: how a spec names it, for listings (``reader:NAME-REGEX``)
    usage: str
    #: one line for the docs
    doc: str = ""


#: builds an emulated target: the built-in emulator (card config and defects), or another
#: card's emulator (``emulation``)
_MakeEmulated = Callable[["CardConfig | None", "DefectProfile | None", "Emulation | None"], Target]


def _emulated(kind: str, make: _MakeEmulated, doc: str) -> TargetKind:
    """A kind of emulated target: the card profile's own emulator, else the built-in one
    personalised from the card config with the defect; the card must be the run's."""

    def build(arg: str, setup: TargetSetup) -> Target:
        if arg:
            raise TargetError(f"target {kind} takes no argument, got {setup.spec}")
        emulation = emulation_for(setup.card, setup.defect)
        if emulation is not None:  # the card profile names its own emulator
            target = make(None, None, emulation)
        else:
            from harness.emulator import parse_profile

            target = make(setup.card_config(), parse_profile(setup.defect or "faithful"), None)
        check_card(target, setup.card)
        return target

    return TargetKind(build, kind, doc)


def _pcscd_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="pinloop-pcscd-"))


def _real_reader(arg: str, setup: TargetSetup) -> Target:
    if setup.defect:
        raise TargetError("--pinloop-defect applies to emulated cards only")
    if setup.card is None:
        raise TargetError(f"{setup.spec}: a real card needs its card profile")
    return RealReaderTarget(arg, setup.readers_dir, card=setup.card, guard=setup.guard)


#: the kinds of ``--pinloop-target`` (entry-point group ``pinloop.targets``)
TARGETS: Registry[TargetKind] = Registry("pinloop.targets", "target", of_type(TargetKind, "target"))
TARGETS.built_in(
    "inprocess",
    _emulated(
        "inprocess",
        lambda c, d, e: InProcessTarget(c, d, emulation=e),
        "the emulated card called directly",
    ),
)
TARGETS.built_in(
    "pcscd",
    _emulated(
        "pcscd",
        lambda c, d, e: PcscdTarget(c, d, _pcscd_workdir(), emulation=e),
        "the emulated card behind a pcscd and vpcd this target starts",
    ),
)
TARGETS.built_in(
    "reader",
    TargetKind(_real_reader, "reader:NAME-REGEX", "a real card in the one reader NAME matches"),
)


def target_usages() -> list[str]:
    """How each known kind is named in ``--pinloop-target`` (``inprocess``, ``reader:NAME``…)."""
    usages = []
    for name in TARGETS.names():
        try:
            usages.append(TARGETS.get(name).usage)
        except ConfigError:
            usages.append(f"{name} (cannot be loaded)")
    return usages


def make_target(
    spec: str,
    config: CardConfig | Callable[[], CardConfig] | None,
    defect: str | None,
    readers_dir: Path | None = None,
    *,
    card: CardProfile | None = None,
    guard: RealCardGuard | None = None,
) -> Target:
    """The target ``spec`` names: ``KIND`` or ``KIND:ARG``, a kind of :data:`TARGETS`
    (``inprocess``, ``pcscd``, ``reader:NAME-REGEX`` or a lab's own; an unknown kind is an
    error listing the known ones). ``readers_dir``: the lab's reader profiles (else the lab's
    folder, with the built-in ones); ``guard``: the earlier guard of that reader.

    ``card``: the card profile the run is for. An emulated target's card is the one its
    emulator implements (``config``: its card config, or how to load it), which must be
    ``card`` when it is given; a real reader's card is ``card``, which it needs."""
    kind, _, arg = spec.partition(":")
    try:
        found = TARGETS.get(kind)
    except UnknownName:
        raise TargetError(
            f"unknown target {spec!r}; use one of: {', '.join(target_usages())}"
        ) from None
    setup = TargetSetup(spec, card, defect, readers_dir, guard, config)
    target = found.make(arg, setup)
    try:
        check_target(target, connected=False)
    except HarnessError:
        target.close()
        raise
    return target


def check_card(target: Target, card: CardProfile | None) -> None:
    """An emulated target must hold the card the run is for (its scenarios name that card's
    PINs); closed if not."""
    if card is not None and target.card_profile is not card:
        target.close()
        raise TargetError(
            f"{target.name} emulates the {target.card_profile.name} card, not the "
            f"{card.name} card this run is for (--pinloop-card-profile)"
        )
