"""What keeps a real card safe: every rule in this room, nowhere else.

- :mod:`~harness.safety.rules`: which scenario runs where, what a scenario's start checks,
  what is refused while it runs, and which target is taken for pinloop's emulator.
- :mod:`~harness.safety.guard`: the real-card guard, which every APDU to a card that is not
  the emulator passes.
"""

from harness.safety.guard import GuardDefect, GuardSetupError, RealCardGuard, Refused, UnsafeStep
from harness.safety.rules import (
    DESTRUCTIVE_OPTION,
    REFUSALS,
    UnsafeTarget,
    begin,
    check_target,
    destructive_ok,
    granted,
    missing,
    refuse_without,
    skip_reason,
)

__all__ = [
    "DESTRUCTIVE_OPTION",
    "REFUSALS",
    "GuardDefect",
    "GuardSetupError",
    "RealCardGuard",
    "Refused",
    "UnsafeStep",
    "UnsafeTarget",
    "begin",
    "check_target",
    "destructive_ok",
    "granted",
    "missing",
    "refuse_without",
    "skip_reason",
]
