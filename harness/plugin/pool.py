"""The targets a session's items and Python tests share, and the one-line description of each
for the reports."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest

from harness.cards import CardProfile, card_profile
from harness.errors import HarnessError, SharingViolation
from harness.safety.guard import RealCardGuard
from harness.targets import Target, TargetError, make_target


class TargetPool:
    """Targets shared by all items of a session, started on first use.

    After a lab fault in the middle of a scenario the target is closed; the next scenario sets
    it up afresh (pcscd and emulator restarted, or the real reader reconnected). If that
    fails too, the target is broken for the rest of the session and its items error at once.
    Nothing is retried inside a scenario: the APDU in flight is never sent again.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._card: CardProfile | None = None
        self.targets: dict[str, Target] = {}
        self.broken: dict[str, str] = {}
        self.faulted: dict[str, str] = {}  # faulted mid-scenario; one fresh set-up allowed
        #: real readers' guards, kept across a fresh set-up: what they learnt stays
        self.guards: dict[str, RealCardGuard] = {}

    @property
    def station(self) -> dict[str, Any] | None:
        """The station an xdist controller handed this worker (None outside xdist)."""
        station: dict[str, Any] | None = getattr(self.config, "workerinput", {}).get(
            "pinloop_station"
        )
        return station

    @property
    def card(self) -> CardProfile:
        """The card profile of the run (``--pinloop-card-profile``): scenario files are loaded
        for it, and every target holds it."""
        if self._card is None:
            self._card = card_profile(self.config.getoption("--pinloop-card-profile"))
        return self._card

    def specs(self) -> list[str]:
        station = self.station
        if station is not None:  # an xdist worker: the controller handed it one reader
            return [station["spec"]]
        return list(self.config.getoption("--pinloop-target") or ["inprocess"])

    def get(self, spec: str) -> Target:
        if spec in self.broken:
            raise HarnessError(f"target {spec} broke earlier: {self.broken[spec]}")
        if spec not in self.targets:
            try:
                defect = self.config.getoption("--pinloop-defect")
                station = self.station
                if station is not None and station.get("slot"):
                    from harness.plugin.stations import slot_target

                    config = None if self.card.emulator else self.card_config()
                    self.targets[spec] = slot_target(station, config, defect, self.card)
                else:
                    readers = self.config.getoption("--pinloop-readers")
                    self.targets[spec] = make_target(
                        spec,
                        None if self.card.emulator else self.card_config,  # loaded if needed
                        defect,
                        Path(readers) if readers else None,
                        card=self.card,
                        guard=self.guards.get(spec),
                    )
            except HarnessError as exc:
                why = str(exc).splitlines()[0]
                if spec not in self.faulted:
                    self.broken[spec] = why
                    raise
                # the cause is the fault that came first; what the fresh set-up met follows
                # from it (e.g. a sharing violation with a command that never returned)
                why = f"{self.faulted[spec]}; setting it up again failed: {why}"
                if isinstance(exc, SharingViolation):
                    why += " (the reader is still busy with the command that did not return)"
                self.broken[spec] = why
                raise TargetError(why) from None
            self.faulted.pop(spec, None)
        return self.targets[spec]

    def card_config(self) -> Any:
        """The emulated card's config (``--pinloop-card``, else the emulator's own); the
        emulator is loaded only for an emulated target."""
        from harness.emulator.config import DEFAULT_CONFIG_PATH, load_card_config

        return load_card_config(self.config.getoption("--pinloop-card") or DEFAULT_CONFIG_PATH)

    def mark_faulted(self, spec: str, why: str) -> None:
        """A lab fault mid-scenario: close the target; the next item sets it up again."""
        self.faulted[spec] = why
        target = self.targets.pop(spec, None)
        guard = getattr(target, "guard", None)
        if isinstance(guard, RealCardGuard):
            self.guards[spec] = guard
        if target is not None:
            with contextlib.suppress(Exception):  # closing a broken target: best effort
                target.close()

    def close(self) -> None:
        for spec in list(self.targets):
            self.targets.pop(spec).close()


def describe_target(spec: str, target: Target) -> dict[str, str]:
    """One reader of the session, for environment.properties."""
    try:
        atr = target.transport.atr.hex(" ").upper()
    except HarnessError:
        atr = "unknown"
    reader = {
        "target": spec,
        "name": target.report_name,
        "atr": atr,
        "profile": target.profile.name if target.profile else "none",
        "card": "emulated" if target.emulated else "real",
        "capabilities": ", ".join(sorted(target.capabilities)),
    }
    if target.report_name != target.name:  # one of the slots of a spread run
        reader["slots"] = target.name
    return reader


POOL = pytest.StashKey[TargetPool]()
#: on a Python test's item: the lab fault its call met on the pool's target (its first line);
#: its session's end sets the target up afresh instead of putting the card back through it
FAULTED_IN_TEST = pytest.StashKey[str]()
