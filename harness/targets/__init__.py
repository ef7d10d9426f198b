"""Targets: a card a scenario runs against, with what the runner needs to know about it.

- :mod:`~harness.targets.base`: what every target is (:class:`Target`), and the real-card
  part a target of a card that is not the emulator mixes in (:class:`GuardedCard`).
- :mod:`~harness.targets.emulated`: pinloop's emulator, ``inprocess`` and ``pcscd``.
- :mod:`~harness.targets.real`: ``reader:NAME``, a real card in a real reader.
- :mod:`~harness.targets.kinds`: the kinds of ``--pinloop-target`` (a lab adds its own under
  the entry-point group ``pinloop.targets``) and :func:`make_target`.
- :mod:`~harness.targets.reader_profile`: reader profiles (``readers/*.yaml``): which reader a
  name is, and what it can do.
"""

from harness.targets.base import GuardedCard, ResetCodes, Target, TargetError, env_name, env_secret
from harness.targets.emulated import (
    EMULATED_CARD_WAIT_S,
    EmulatedTarget,
    InProcessTarget,
    PcscdTarget,
)
from harness.targets.kinds import (
    TARGETS,
    TargetKind,
    TargetSetup,
    check_card,
    make_target,
    target_usages,
)
from harness.targets.real import RealReaderTarget

__all__ = [
    "EMULATED_CARD_WAIT_S",
    "TARGETS",
    "EmulatedTarget",
    "GuardedCard",
    "InProcessTarget",
    "PcscdTarget",
    "RealReaderTarget",
    "ResetCodes",
    "Target",
    "TargetError",
    "TargetKind",
    "TargetSetup",
    "check_card",
    "env_name",
    "env_secret",
    "make_target",
    "target_usages",
]
