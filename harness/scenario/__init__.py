"""Scenario files: schema, typed model, loader."""

from harness.scenario.loader import load_scenarios
from harness.scenario.model import Scenario

__all__ = ["Scenario", "load_scenarios"]
