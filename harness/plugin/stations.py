"""Many readers at once: pytest-xdist workers, each with its own reader (a *station*).

Two ways, chosen by xdist's ``--dist``:

- ``-n N --dist each``: every worker runs the whole library, each against its own reader, and
  the controller merges what they report (JUnit XML, the summary, Allure's environment; each
  worker writes its own Allure results, the reader being a parameter).
- ``-n N --dist load`` (*spread*, what ``./run suite`` does): the library is spread over N
  emulated readers, every item run once, on whichever worker is free. Only with one emulated
  target (``--pinloop-target pcscd`` or ``inprocess``): each worker serves its own copy of
  the same emulated card, and every report shows them as one reader (for pcscd:
  :data:`SPREAD_READER`). :class:`SpreadScheduling` hands out the items (the longest first,
  the timing scenarios last) and :class:`QuietTiming` runs every timing scenario alone: no
  other station runs anything (their sessions are over) while one measures latency.

The controller hands each worker its station in ``pytest_configure_node``:

- ``--pinloop-target pcscd`` alone: the controller starts one pcscd with N virtual slots and
  worker *k* serves its emulated card in slot *k* (``Virtual PCD 00 00``, ``… 00 01``,
  ``Virtual PCD A 00 00``, …). The card lives in the worker, so tearing and the other
  emulator-only steps work as in a single run.
- N targets (``reader:…``, ``inprocess``, …; ``each`` only): worker *k* gets the *k*-th.
  Their number must be the number of workers.

A worker that crashes takes only the scenario it was running with it (an error in the
report); the other stations go on, and the worker xdist starts in its place takes over its
reader and the rest of its scenarios (with ``load``, the scenarios it had been handed go
back to the others).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from xdist.scheduler import LoadScheduling

from harness.errors import HarnessError
from harness.scenario import Scenario
from harness.steps import is_timing, timing_actions
from harness.targets import PcscdTarget, Target, check_card

if TYPE_CHECKING:
    from harness.cards.profile import CardProfile
    from harness.emulator.config import CardConfig

#: what every report calls the emulated card through pcscd when the library is spread over
#: several slots: one reader (one summary row, one Allure parameter), whichever slot ran it
SPREAD_READER = "emulated (pcscd)"
#: the targets a spread run takes, and the one reader each is in the reports
SPREAD_TARGETS = {"pcscd": SPREAD_READER, "inprocess": "emulated (in-process)"}

#: rough wall time of one power cut or removal through pcscd (the emulator keeps the card out
#: 0.5 s; pcscd sees it leave and come back at its 400 ms presence polls); only used to hand
#: out the long scenarios first
CUT_S = 0.8
#: write points of each command on the emulated card (a write-point sweep cuts at each)
_TEAR_CUTS = {"verify": 3, "change": 2, "reinit": 2}
#: a scenario expected to take at least this long is *long* (handed out first)
LONG_S = 0.4


def file_profile(steps: Any) -> tuple[float, bool]:
    """A scenario file's expected wall time through pcscd (its power cuts and removals) and
    whether it is a timing one, from its parsed ``steps`` (every item of a file has the same
    steps; only the PIN differs). An ordering hint for the scheduler, nothing more: which
    items run alone is :func:`is_timing`'s decision, in the worker."""
    seconds, timing = 0.02, False
    for step in steps if isinstance(steps, list) else []:
        if not isinstance(step, dict):
            continue
        timing = timing or any(action in step for action in timing_actions())
        if step.get("power") in ("cut", "reinsert"):
            seconds += CUT_S
        tear = step.get("tear")
        if isinstance(tear, dict):
            delays = tear.get("delays_us")
            cuts = len(delays) if isinstance(delays, list) else 0
            seconds += CUT_S * (cuts or _TEAR_CUTS.get(str(tear.get("command", "verify")), 3))
    return seconds, timing


class Stations:
    """The controller's side (registered only when xdist runs workers with pinloop targets)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.specs: list[str] = list(config.getoption("--pinloop-target"))
        self.workers = int(config.getoption("numprocesses"))
        self.dist = str(config.getoption("dist"))
        self.lab: Any = None
        self.held: dict[str, int] = {}  # worker id -> station index
        self.workdir: Path | None = None
        self.preload: threading.Thread | None = None
        if self.dist not in ("each", "load"):
            raise pytest.UsageError(
                f"pinloop runs with --dist each (every worker runs the whole library on its own "
                f"reader) or --dist load (the library spread over {self.workers} emulated "
                f"readers), not --dist {self.dist}"
            )
        if self.spread and (len(self.specs) != 1 or self.specs[0] not in SPREAD_TARGETS):
            raise pytest.UsageError(
                "--dist load spreads the library over emulated readers: give "
                "--pinloop-target pcscd (or inprocess) alone, or use --dist each with one "
                "target per worker"
            )
        if not self.spread and self.specs != ["pcscd"] and len(self.specs) != self.workers:
            raise pytest.UsageError(
                f"-n {self.workers} workers but {len(self.specs)} --pinloop-target values: "
                "give one target per worker, or --pinloop-target pcscd alone for "
                f"{self.workers} emulated readers"
            )

    @property
    def spread(self) -> bool:
        """The library spread over the workers (each item once), not run by each."""
        return self.dist == "load"

    @property
    def reader(self) -> str | None:
        """The one reader name a spread run reports (None: each station is its own reader)."""
        return SPREAD_TARGETS[self.specs[0]] if self.spread else None

    def shared_cpu(self) -> str | None:
        """A warning when stations share CPUs: timing figures then measure the host too."""
        cores = len(os.sched_getaffinity(0))
        if not self.spread and self.specs == ["pcscd"] and self.workers > cores:
            return (
                f"{self.workers} emulated stations on {cores} CPU cores: latency figures "
                "include CPU contention (see the marginal results)"
            )
        return None

    def pytest_report_header(self, config: pytest.Config) -> str:
        if self.spread:
            return (
                f"pinloop: the library spread over {self.workers} emulated readers "
                f"({self.specs[0]}); timing scenarios run alone, after the others"
            )
        warning = self.shared_cpu()
        return f"pinloop stations: {self.workers}" + (f"; WARNING: {warning}" if warning else "")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        warning = self.shared_cpu()
        if warning:
            terminalreporter.write_line(f"pinloop: {warning}", yellow=True)

    def _workdir(self) -> Path:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="pinloop-stations-"))
        return self.workdir

    def _shared_lab(self) -> Any:
        if self.lab is None:
            from harness.lab.pcscd import Pcscd

            self.lab = Pcscd(self._workdir() / "pcscd.log", slots=self.workers)
            self.lab.start()
        return self.lab

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        # the lowest station no live worker holds: a worker that replaces a crashed one
        # (xdist names it gw4, gw5, …) takes over the crashed one's reader
        index = min(set(range(self.workers)) - set(self.held.values()))
        self.held[str(node.gateway.id)] = index
        station: dict[str, Any]
        if self.specs == ["pcscd"]:
            lab = self._shared_lab()
            slot = lab.slots[index]
            station = {
                "spec": "pcscd" if self.spread else f"pcscd:{slot.index}",
                "slot": [slot.index, slot.port, slot.reader],
                "log": str(lab.log_path),
            }
        else:
            station = {"spec": self.specs[0 if self.spread else index]}
        if self.spread:
            station["quiet"] = str(self._workdir() / "quiet.lock")
            if self.specs == ["pcscd"]:  # the slots' names differ; the reader is one
                station["reader"] = self.reader
        node.workerinput["pinloop_station"] = station

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        self.held.pop(str(node.gateway.id), None)

    @pytest.hookimpl
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        if not self.spread:
            return None  # xdist's own (each)
        return SpreadScheduling(
            config,
            log,
            classify=lambda ids: classify(config, ids),
            before_timing=self.quiet,
            after_all=self.draw,
        )

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """The first report of a spread run: the workers are up and mostly wait for cards,
        so the controller imports matplotlib now (~0.5 s of CPU), for the plots it draws at
        the end, and not then."""
        if self.spread and self.preload is None:
            self.preload = threading.Thread(target=_import_plots, name="pinloop-preload")
            self.preload.start()

    def quiet(self) -> None:
        """Before the timing items go out: the controller itself has stopped working."""
        if self.preload is not None:
            self.preload.join()

    def draw(self) -> None:
        """Every item has run: the Allure histograms are drawn now, while the workers exit,
        not after (the session's end finds none left to draw)."""
        alluredir = self.config.getoption("allure_report_dir", None)
        if alluredir:
            from harness.report.allure_report import draw_plots

            with contextlib.suppress(OSError, ValueError):  # the session's end says why
                draw_plots(Path(alluredir))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self.lab is not None:
            self.lab.stop()


def _import_plots() -> None:
    with contextlib.suppress(Exception):  # a missing matplotlib shows at the end, as before
        import matplotlib.backends.backend_agg
        import matplotlib.figure  # noqa: F401


def classify(config: pytest.Config, nodeids: Sequence[str]) -> tuple[list[float], set[int]]:
    """Per item of the collection: its expected seconds, and which items are timing ones.

    The controller does not collect; it reads the scenario files the nodeids name (a plain
    YAML parse, ~1 ms a file: the workers have checked them). An item it cannot place (not a
    scenario, a file that does not parse) counts as short and not timing: the order of the
    run may suffer, never its results."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="safe")
    files: dict[str, tuple[float, bool]] = {}
    seconds: list[float] = []
    timing: set[int] = set()
    for i, nodeid in enumerate(nodeids):
        path = nodeid.partition("::")[0]
        if path not in files:
            files[path] = (0.0, False)
            with contextlib.suppress(Exception):  # the workers report a broken file
                doc = yaml.load((Path(config.rootpath) / path).read_text(encoding="utf-8"))
                if isinstance(doc, dict):
                    files[path] = file_profile(doc.get("steps"))
        seconds.append(files[path][0])
        if files[path][1]:
            timing.add(i)
    return seconds, timing


class SpreadScheduling(LoadScheduling):  # type: ignore[misc]
    """Every item once, on whichever worker is free (xdist's ``load``), in a better order.

    - Long items first (the power cuts and removals: 90 % of the wall time in a quarter of the
      items), so that no worker starts a long one at the end.
    - A worker always holds one item beyond the one it runs (xdist needs the next item to run
      one); behind a long item that is a short one, so nothing waits long behind another.
    - The timing items (latency budgets, leak tests) last, all to one worker, once everything
      else is handed out; :class:`QuietTiming` then holds each until the other workers have
      finished and exited.
    """

    collection: list[str] | None
    node2collection: dict[Any, list[str]]
    node2pending: dict[Any, list[int]]

    def __init__(
        self,
        config: pytest.Config,
        log: Any,
        *,
        classify: Callable[[Sequence[str]], tuple[list[float], set[int]]],
        before_timing: Callable[[], None] = lambda: None,
        after_all: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config, log)
        self.classify = classify
        self.before_timing = before_timing
        self.after_all = after_all
        self.done = False
        self.seconds: list[float] = []
        self.timing_ids: set[int] = set()
        self.long: list[int] = []  # longest first
        self.short: list[int] = []
        self.timing: list[int] = []

    # -- the pools ---------------------------------------------------------------------------

    def _pools_empty(self) -> bool:
        return not (self.long or self.short or self.timing)

    @property
    def tests_finished(self) -> bool:
        if not self.collection_is_completed or self.collection is None:
            return False
        if not self._pools_empty():
            return False
        return all(len(p) < 2 for p in self.node2pending.values())

    @property
    def has_pending(self) -> bool:
        return not self._pools_empty() or any(self.node2pending.values())

    def _requeue(self, index: int) -> None:
        if index in self.timing_ids:
            self.timing.append(index)
            self.timing.sort()
        elif self.seconds[index] >= LONG_S:
            self.long.append(index)
            self.long.sort(key=lambda i: (-self.seconds[i], i))
        else:
            self.short.insert(0, index)

    # -- xdist's scheduler interface ---------------------------------------------------------

    def schedule(self) -> None:
        assert self.collection_is_completed
        if self.collection is not None:  # a worker that replaced a crashed one
            for node in self.nodes:
                self.check_schedule(node)
            return
        if not self._check_nodes_have_same_collection():
            self.log("**Different tests collected, aborting run**")
            return
        self.collection = next(iter(self.node2collection.values()))
        self.seconds, self.timing_ids = self.classify(self.collection)
        for index in range(len(self.collection)):
            self._requeue(index)
        self.short.reverse()  # _requeue puts each in front; keep the collection's order
        for node in self.nodes:
            self.check_schedule(node)

    def _next(self, node: Any) -> list[int]:
        pending = self.node2pending[node]
        if self.long or self.short:
            behind_long = bool(pending) and self.seconds[pending[-1]] >= LONG_S
            if self.short and (behind_long or not self.long):
                return [self.short.pop(0)]
            return [self.long.pop(0)]
        # only the timing items are left: all of them to the first worker that asks
        self.before_timing()
        taken, self.timing = self.timing, []
        return taken

    def check_schedule(self, node: Any, duration: float = 0) -> None:
        if node.shutting_down or self.collection is None:
            return
        pending = self.node2pending[node]
        while len(pending) < 2 and not self._pools_empty():
            items = self._next(node)
            pending.extend(items)
            node.send_runtest_some(items)
        if self._pools_empty():
            node.shutdown()  # it runs what it holds, then finishes

    def mark_test_complete(self, node: Any, item_index: int, duration: float = 0) -> None:
        super().mark_test_complete(node, item_index, duration)
        if not self.done and self._pools_empty() and not any(self.node2pending.values()):
            self.done = True
            self.after_all()

    def mark_test_pending(self, item: str) -> None:
        assert self.collection is not None
        self._requeue(self.collection.index(item))
        for node in self.nodes:
            self.check_schedule(node)

    def remove_node(self, node: Any) -> str | None:
        pending = self.node2pending.pop(node)
        if not pending:
            return None
        assert self.collection is not None
        crashitem: str = self.collection[pending.pop(0)]
        for index in pending:
            self._requeue(index)
        for other in self.nodes:
            self.check_schedule(other)
        return crashitem


class QuietTiming:
    """A worker's side of a spread run: timing scenarios measure with nothing else running.

    Every worker holds a shared lock on one file from its start to the end of its session. A
    timing item runs holding the lock exclusively: only once every other worker has finished
    its session (or waits for the lock itself). The scheduler gives the timing items to one
    worker once the rest of the library is handed out, and shuts the others down as they run
    dry, so the wait is for their last items only. A finished worker leaves its emulated card
    in its slot, idle, until its process ends with the run (nothing changes in pcscd while a
    timing item measures). A lock that does not come within ``deadline`` is a lab fault.
    """

    #: after waiting for other workers, this long more before measuring: the machine is busy
    #: for a moment after they finish (measured through pcscd on 2 cores: without it the
    #: first timing items' p99 was 2-4 ms instead of 0.3 ms, and once over a budget's limit)
    SETTLE_S = 1.0

    def __init__(self, path: Path, *, deadline: float = 300.0) -> None:
        self.path = path
        self.deadline = deadline
        self.settled = False
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_SH)  # waits while a timing item measures

    def exclusive(self) -> float:
        """Wait until no other worker holds the lock; returns the seconds waited."""
        start = time.monotonic()
        fcntl.flock(self.fd, fcntl.LOCK_UN)  # no upgrade in place: two upgrades would deadlock
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return time.monotonic() - start
            except BlockingIOError:
                if time.monotonic() - start > self.deadline:
                    fcntl.flock(self.fd, fcntl.LOCK_SH)
                    raise HarnessError(
                        f"the other stations did not finish within {self.deadline:.0f} s: a "
                        "timing scenario runs only alone"
                    ) from None
                time.sleep(0.005)

    def shared(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_SH)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        scenario = getattr(item, "scenario", None)
        if not isinstance(scenario, Scenario) or not is_timing(scenario):
            return (yield)
        waited = self.exclusive()
        if waited > 0.005 and not self.settled:  # the others have only just finished
            time.sleep(self.SETTLE_S)
            waited += self.SETTLE_S
        self.settled = True
        item.user_properties.append(("ran alone after waiting", f"{waited:.2f} s"))
        try:
            return (yield)
        finally:
            self.shared()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        os.close(self.fd)  # the shared lock goes with it


def slot_target(
    station: dict[str, Any],
    card: CardConfig | None,
    defect: str | None,
    profile: CardProfile | None,
) -> Target:
    """A worker's emulated card in its slot of the controller's pcscd (it must hold the card
    ``profile`` of the run, when given)."""
    from harness.cards.emulated import emulation_for
    from harness.lab.pcscd import VirtualSlot

    index, port, reader = station["slot"]
    workdir = Path(tempfile.mkdtemp(prefix="pinloop-station-"))
    shared = (VirtualSlot(int(index), int(port), str(reader)), Path(station["log"]))
    emulation = emulation_for(profile, defect)
    if emulation is not None:  # the card profile names its own emulator
        target = PcscdTarget(None, None, workdir, shared=shared, emulation=emulation)
    else:
        from harness.emulator import parse_profile

        target = PcscdTarget(card, parse_profile(defect or "faithful"), workdir, shared=shared)
    if station.get("reader"):
        target.shown_as = str(station["reader"])
    check_card(target, profile)
    return target
