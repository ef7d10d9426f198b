"""Registers pinloop's pytest plugin for runs from a checkout.

When pinloop is installed, its ``pytest11`` entry point registers the plugin already; loading
it twice would be an error, so this file only does it when the entry point is absent.
"""

from importlib.metadata import entry_points

if not any(ep.name == "pinloop" for ep in entry_points(group="pytest11")):
    pytest_plugins = ["harness.plugin"]
