"""pytest plugin for tests/test_stations.py: each xdist worker notes at its end whether it
imported matplotlib (a spread run's workers must not: the controller draws)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


def pytest_sessionfinish(session: pytest.Session) -> None:
    # the worker's own id, not $PYTEST_XDIST_WORKER: that is inherited from the run that
    # started this one when the harness's tests themselves run in parallel
    worker = getattr(session.config, "workerinput", {}).get("workerid")
    if worker:
        folder = Path(os.environ["PINLOOP_SPREAD_PROBE"])
        folder.mkdir(parents=True, exist_ok=True)
        seen = "matplotlib" if "matplotlib" in sys.modules else "no matplotlib"
        (folder / worker).write_text(seen)
