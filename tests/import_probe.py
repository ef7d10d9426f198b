"""A pytest plugin for the import-isolation test: at the end of the session it writes the
names of every module the run imported to the file ``PINLOOP_TEST_MODULES`` names."""

from __future__ import annotations

import os
import sys

import pytest


def pytest_unconfigure(config: pytest.Config) -> None:
    path = os.environ.get("PINLOOP_TEST_MODULES")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(sorted(sys.modules)))
