"""Deliberate defects the emulated card can be told to have.

Every profile is off by default (``faithful``). They exist so that each check the harness makes
can be shown to fail against a card that misbehaves in exactly the way the check is about.

A profile is chosen by name, optionally with parameters:
``early-exit-compare:per_byte_delay_us=20`` or ``fixed-delay:fixed_delay_ms=2.5``. A parameter
is a finite number from 0 to its maximum (:data:`TUNABLE`): 10,000 µs a compared byte, 60,000
ms a command (the transports' deadline tests need 30 s).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError


@dataclass(frozen=True, slots=True)
class DefectProfile:
    name: str = "faithful"
    #: a wrong VERIFY answers 63Cx but the counter is never written
    no_decrement: bool = False
    #: the correct PIN on a blocked PIN object answers 9000 (and verifies)
    ok_when_blocked: bool = False
    #: counters live in RAM: every power-on restores all of them to the maximum
    power_cycle_resets_counter: bool = False
    #: the empty VERIFY (status query) decrements the counter
    query_costs_try: bool = False
    #: the comparison stops at the first differing byte; each compared byte costs a delay
    early_exit_compare: bool = False
    per_byte_delay_us: float = 0.0
    #: every command takes this long before it is processed
    fixed_delay_ms: float = 0.0
    #: VERIFY compares first and writes the decremented counter afterwards (tearing-prone)
    decrement_after_compare: bool = False
    #: a correct VERIFY answers 90 00 but leaves the counter where it was before it
    no_restore: bool = False
    #: a wrong VERIFY costs two tries (what a reader that delivers each VERIFY twice does)
    double_decrement: bool = False
    #: CHANGE and RESET RETRY COUNTER write the counter, then the new value in two halves
    #: (three writes instead of one): a cut between them refills the counter of the old PIN
    #: or leaves a half-written PIN that is neither the old nor the new one
    non_atomic_pin_write: bool = False
    #: a VERIFY of the wrong length is compared like any other (a wrong try, 63 Cx) instead
    #: of refused with 67 00: a card that differs from the model only in a fact nobody has
    #: established (``wrong-length-free``): a defect on the emulator, an observation on a
    #: card served as a real reader
    wrong_length_costs_try: bool = False

    @property
    def faithful(self) -> bool:
        return self == DefectProfile(name=self.name)

    def describe(self) -> str:
        changed = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "name" and getattr(self, f.name) != f.default
        }
        args = ", ".join(f"{k}={v}" for k, v in changed.items())
        return f"{self.name} ({args})" if args else self.name


PROFILES: dict[str, DefectProfile] = {
    p.name: p
    for p in (
        DefectProfile(),
        DefectProfile("no-decrement", no_decrement=True),
        DefectProfile("ok-when-blocked", ok_when_blocked=True),
        DefectProfile("power-cycle-resets-counter", power_cycle_resets_counter=True),
        DefectProfile("query-costs-try", query_costs_try=True),
        DefectProfile("early-exit-compare", early_exit_compare=True, per_byte_delay_us=20.0),
        DefectProfile("fixed-delay", fixed_delay_ms=5.0),
        DefectProfile("decrement-after-compare", decrement_after_compare=True),
        DefectProfile("non-atomic-pin-write", non_atomic_pin_write=True),
        DefectProfile("no-restore", no_restore=True),
        DefectProfile("double-decrement", double_decrement=True),
        DefectProfile("wrong-length-costs-try", wrong_length_costs_try=True),
    )
}

#: the parameters a profile takes, each with its largest value
TUNABLE: dict[str, float] = {"per_byte_delay_us": 10_000.0, "fixed_delay_ms": 60_000.0}


class UnknownDefectError(HarnessError, ValueError):
    pass


def parse_profile(spec: str) -> DefectProfile:
    """``"name"`` or ``"name:param=value,param=value"`` → a profile."""
    name, _, params = spec.partition(":")
    name = name.strip()
    if name not in PROFILES:
        raise UnknownDefectError(f"unknown defect profile {name!r}; known: {', '.join(PROFILES)}")
    profile = PROFILES[name]
    if not params.strip():
        return profile
    changes: dict[str, Any] = {}
    for item in params.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in TUNABLE:
            raise UnknownDefectError(
                f"bad parameter {item.strip()!r} in {spec!r}; tunable: {', '.join(TUNABLE)}"
            )
        try:
            number = float(value)
        except ValueError:
            raise UnknownDefectError(f"{key} must be a number, got {value!r}") from None
        if not math.isfinite(number):  # nan passes every comparison; int(inf) raises
            raise UnknownDefectError(f"{key} must be a finite number, got {value.strip()!r}")
        if number < 0:
            raise UnknownDefectError(f"{key} must not be negative, got {number}")
        if number > TUNABLE[key]:
            raise UnknownDefectError(f"{key} is at most {TUNABLE[key]:g}, got {number:g}")
        changes[key] = number
    return dataclasses.replace(profile, **changes)
