"""pytest plugin: every ``*.pin.yaml`` scenario becomes a test item, once per target.

Options (group ``pinloop``):

- ``--pinloop-target T`` (repeatable): ``inprocess`` (default), ``pcscd``, ``reader:NAME``
- ``--pinloop-defect PROFILE``: give the emulated card a deliberate defect
- ``--pinloop-card CONFIG``: card config of the emulated card
- ``--pinloop-card-profile NAME``: the kind of card the run is for (default ``jpki``; or
  ``module:ATTRIBUTE``): scenario files are loaded for it, and every target must hold it
- ``--pinloop-destructive-reader NAME`` (repeatable): allow destructive scenarios and steps
  that could block a PIN on that real reader (exact reader name)
- ``--pinloop-reveal``: UNSAFE, show PINs in traces
- ``--pinloop-readers DIR``: the lab's reader profiles, added to the built-in ones
  (default: ``readers/`` in the working directory, if there is one)

Markers from scenario tags: ``destructive``, ``emulator_only``, ``needs_reinit``; each item
also carries ``pinloop_target(name)``. An item whose target lacks a capability the scenario
needs is skipped in set-up, naming it (the rules: :mod:`harness.safety`). A device defect fails
the item; a lab fault is an error (raised in setup) or a broken test; a target that broke turns
its remaining items into errors at once while other targets go on.

Fixtures for a lab's Python tests: ``pinloop_target`` (the run's first target, from the pool
the scenario items share) and ``pinloop_session`` (a card session on it, begun and ended as a
scenario is). pinloop's own hooks: :mod:`harness.plugin.hookspecs`.

The rooms: :mod:`~harness.plugin.options` (options, markers), :mod:`~harness.plugin.items`
(collection, an item's set-up, run and failure text), :mod:`~harness.plugin.pool` (the targets
the items share), :mod:`~harness.plugin.outcomes` (outcomes, result records and the files
written from them), :mod:`~harness.plugin.fixtures` (for Python tests),
:mod:`~harness.plugin.stations` (many readers at once, pytest-xdist).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.plugin.fixtures import pinloop_session, pinloop_target
from harness.plugin.items import ScenarioFile, ScenarioItem, pytest_collect_file
from harness.plugin.options import MARKERS, allure_output, pytest_addhooks, pytest_addoption
from harness.plugin.outcomes import (
    ALLURE,
    LAB_FAULTS,
    READERS,
    RECORDS,
    SUMMARY,
    SummaryCollector,
    pytest_report_teststatus,
    pytest_runtest_makereport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)
from harness.plugin.pool import POOL, TargetPool
from harness.report.summary import Summary

#: what pytest finds on this module: the hooks and fixtures of the rooms below
__all__ = [
    "ScenarioFile",
    "ScenarioItem",
    "TargetPool",
    "pinloop_session",
    "pinloop_target",
    "pytest_addhooks",
    "pytest_addoption",
    "pytest_collect_file",
    "pytest_configure",
    "pytest_report_teststatus",
    "pytest_runtest_makereport",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "pytest_unconfigure",
]


@pytest.hookimpl(trylast=True)  # after allure-pytest has registered its file logger
def pytest_configure(config: pytest.Config) -> None:
    out = allure_output(config)
    config.stash[ALLURE] = out.protect_file_logger(config.add_cleanup) if out else None
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    config.stash[POOL] = TargetPool(config)
    config.stash[SUMMARY] = Summary()
    config.stash[LAB_FAULTS] = set()
    config.stash[READERS] = {}
    config.stash[RECORDS] = []
    if config.getoption("--pinloop-readers"):
        from harness.targets import reader_profile

        folder = Path(config.getoption("--pinloop-readers")).resolve()
        previous = reader_profile.use_lab_folder(folder)  # every target's, emulated ones too

        def restore() -> None:
            reader_profile.use_lab_folder(previous)

        config.add_cleanup(restore)
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(SummaryCollector(config), "pinloop-summary")
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        from harness.plugin.stations import Stations

        if config.getoption("numprocesses", None) and config.getoption("--pinloop-target"):
            config.pluginmanager.register(Stations(config), "pinloop-stations")
    station = getattr(config, "workerinput", {}).get("pinloop_station") or {}
    if station.get("quiet"):  # a worker of a spread run: timing items run alone
        from harness.plugin.stations import QuietTiming

        config.pluginmanager.register(QuietTiming(Path(station["quiet"])), "pinloop-quiet-timing")


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.pluginmanager.get_plugin("pinloop-quiet-timing") is not None:
        # a worker of a spread run: its card stays in its slot, idle, until the process ends
        # with the run, so that pcscd sees nothing change while another worker measures
        return
    pool = config.stash.get(POOL, None)
    if pool is not None:
        pool.close()
