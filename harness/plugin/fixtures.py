"""Fixtures for a lab's Python tests: they share the scenarios' target pool, begin and end,
and the real-card guard."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from harness import safety
from harness.errors import HarnessError
from harness.plugin.pool import FAULTED_IN_TEST, POOL
from harness.run.record import first_line
from harness.scenario import Scenario
from harness.targets import Target

if TYPE_CHECKING:
    from harness.run.session import CardSession


@pytest.fixture
def pinloop_target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """For Python tests: the run's first target (``--pinloop-target``), from the pool the
    scenario items share (started once; a target that broke is an error here too). A lab
    fault in the test sets it up afresh for what follows."""
    pool = request.config.stash[POOL]
    spec = pool.specs()[0]
    yield pool.get(spec)
    fault = request.node.stash.get(FAULTED_IN_TEST, None)
    if fault is not None:
        # nothing more goes through the path that failed (a real card's guard puts back
        # what was spent when the target closes)
        pool.mark_faulted(spec, fault)


@pytest.fixture
def pinloop_session(
    pinloop_target: Target, request: pytest.FixtureRequest
) -> Iterator[CardSession]:
    """For Python tests: a card session on :func:`pinloop_target`, begun and ended as a
    scenario is. The card is brought to its start (a real card: its PINs restored; the test
    declares no tries, so the real-card guard refuses any that could cost one), every APDU
    passes the target's transport (on a real card, the guard), and the card is put back at
    the end. A lab fault in the test (an error, not a failure) or while putting the card back
    sets the target up afresh for what follows."""
    from harness.run.session import CardSession

    node = request.node
    scenario = Scenario(
        name=node.name,
        rule="python-test",
        path=str(getattr(node, "path", "")),
        line=(node.location[1] or 0) + 1,
        steps=(),
        card=pinloop_target.card_profile.name,
    )
    session = CardSession(pinloop_target, scenario)
    safety.begin(pinloop_target, scenario, destructive_ok=False, log=session.note)
    session.lab_done()
    try:
        yield session
    finally:
        try:
            if FAULTED_IN_TEST not in node.stash:  # else pinloop_target sets it up afresh
                pinloop_target.end()
        except HarnessError as exc:
            pool = request.config.stash[POOL]
            pool.mark_faulted(pool.specs()[0], first_line(exc))
            raise
        finally:
            pinloop_target.end_record()
