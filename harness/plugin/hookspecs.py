"""pinloop's own pytest hooks, for plugins of a lab (a fault injector, a live dashboard, an
output of its own). Registered by :mod:`harness.plugin`.

Implement them in a ``conftest.py`` or a plugin (``-p``) like any pytest hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from harness.apdu.model import CommandAPDU
    from harness.run.record import ScenarioRecord, StepRecord
    from harness.run.session import CardSession
    from harness.scenario.model import Step

hookspec = pytest.hookspec


@hookspec
def pytest_pinloop_apdu(session: CardSession, command: CommandAPDU) -> None:
    """A step is about to send ``command`` through ``session`` (timing samples excepted: a
    hook there would be in every figure). It may act on the lab first (cut a link, stop a
    daemon); what it raises ends the scenario like a fault of the path to the card."""


@hookspec
def pytest_pinloop_step(session: CardSession, step: Step, record: StepRecord) -> None:
    """A step has ended (``record.verdict``: passed, failed, error or skipped)."""


@hookspec
def pytest_pinloop_scenario(item: pytest.Item, record: ScenarioRecord) -> None:
    """A scenario item has its outcome (``record.outcome``); called where the item ran (an
    xdist worker, or the only process), before the record travels to the outputs."""
