"""Many readers at once: one pytest-xdist worker per reader (a *station*).

Run with ``-n N --dist each``: every worker runs the whole library, each against its own
reader, and the controller merges what they report (JUnit XML, the summary, Allure's
environment; each worker writes its own Allure results, the reader being a parameter).

The controller hands each worker its station in ``pytest_configure_node``:

- ``--pinloop-target pcscd`` alone: the controller starts one pcscd with N virtual slots and
  worker *k* serves its emulated card in slot *k* (``Virtual PCD 00 00``, ``… 00 01``,
  ``Virtual PCD A 00 00``, …). The card lives in the worker, so tearing and the other
  emulator-only steps work as in a single run.
- N targets (``reader:…``, ``inprocess``, …): worker *k* gets the *k*-th. Their number must be
  the number of workers.

A worker that crashes takes only the scenario it was running with it (an error in the
report); the other stations go on, and the worker xdist starts in its place takes over its
reader and the rest of its scenarios.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from harness.emulator.config import CardConfig
from harness.target import PcscdTarget, Target


class Stations:
    """The controller's side (registered only when xdist runs workers with pinloop targets)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.specs: list[str] = list(config.getoption("--pinloop-target"))
        self.workers = int(config.getoption("numprocesses"))
        self.lab: Any = None
        self.held: dict[str, int] = {}  # worker id -> station index
        if config.getoption("dist") != "each":
            raise pytest.UsageError(
                "pinloop runs one worker per reader: use --dist each with -n "
                f"{self.workers} (each worker runs the whole library on its own reader)"
            )
        if self.specs != ["pcscd"] and len(self.specs) != self.workers:
            raise pytest.UsageError(
                f"-n {self.workers} workers but {len(self.specs)} --pinloop-target values: "
                "give one target per worker, or --pinloop-target pcscd alone for "
                f"{self.workers} emulated readers"
            )

    def shared_cpu(self) -> str | None:
        """A warning when stations share CPUs: timing figures then measure the host too."""
        cores = len(os.sched_getaffinity(0))
        if self.specs == ["pcscd"] and self.workers > cores:
            return (
                f"{self.workers} emulated stations on {cores} CPU cores: latency figures "
                "include CPU contention (see the marginal results)"
            )
        return None

    def pytest_report_header(self, config: pytest.Config) -> str:
        warning = self.shared_cpu()
        return f"pinloop stations: {self.workers}" + (f"; WARNING: {warning}" if warning else "")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        warning = self.shared_cpu()
        if warning:
            terminalreporter.write_line(f"pinloop: {warning}", yellow=True)

    def _shared_lab(self) -> Any:
        if self.lab is None:
            from harness.lab.pcscd import Pcscd

            workdir = Path(tempfile.mkdtemp(prefix="pinloop-stations-"))
            self.lab = Pcscd(workdir / "pcscd.log", slots=self.workers)
            self.lab.start()
        return self.lab

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        # the lowest station no live worker holds: a worker that replaces a crashed one
        # (xdist names it gw4, gw5, …) takes over the crashed one's reader
        index = min(set(range(self.workers)) - set(self.held.values()))
        self.held[str(node.gateway.id)] = index
        if self.specs == ["pcscd"]:
            lab = self._shared_lab()
            slot = lab.slots[index]
            station = {
                "spec": f"pcscd:{slot.index}",
                "slot": [slot.index, slot.port, slot.reader],
                "log": str(lab.log_path),
            }
        else:
            station = {"spec": self.specs[index]}
        node.workerinput["pinloop_station"] = station

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        self.held.pop(str(node.gateway.id), None)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.lab is not None:
            self.lab.stop()


def slot_target(station: dict[str, Any], card: CardConfig, defect: str | None) -> Target:
    """A worker's emulated card in its slot of the controller's pcscd."""
    from harness.emulator import parse_profile
    from harness.lab.pcscd import VirtualSlot

    index, port, reader = station["slot"]
    workdir = Path(tempfile.mkdtemp(prefix="pinloop-station-"))
    return PcscdTarget(
        card,
        parse_profile(defect or "faithful"),
        workdir,
        shared=(VirtualSlot(int(index), int(port), str(reader)), Path(station["log"])),
    )
