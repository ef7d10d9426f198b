"""pytest plugin for tests/test_stations.py: worker gw0 dies (os._exit) in its first scenario
item, once per run (a flag file in PINLOOP_CRASH_FLAG)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_runtest_call(item: pytest.Item) -> None:
    flag = Path(os.environ["PINLOOP_CRASH_FLAG"])
    if os.environ.get("PYTEST_XDIST_WORKER") == "gw0" and not flag.exists():
        flag.write_text("crashed")
        os._exit(3)
