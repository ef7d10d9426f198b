"""Targets and power switches come from registries a lab extends without editing pinloop.

A lab package declares its own kinds under the entry-point groups ``pinloop.targets`` and
``pinloop.power_switches``. Here such a package is written to a temporary folder (its module
and the ``*.dist-info`` an installer would write), put on the path, and a pytest run names its
target and its switch: the scenarios run on it, skip with the capabilities it does not declare,
and its switch cuts the power. Unknown names, clashes with built-in names and entry points of
the wrong kind are clear errors.
"""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.cards.jpki import PROFILE as JPKI
from harness.emulator import load_card_config
from harness.errors import ConfigError
from harness.lab.power import SWITCHES, SwitchKind, SwitchSpec
from harness.run.runner import Runner
from harness.scenario import load_scenarios
from harness.targets import TARGETS, TargetError, TargetKind, make_target
from harness.targets.reader_profile import load_profile
from tests.support import ROOT, run_pytest

LIB = ROOT / "scenarios"

#: the lab's package: a bench target (an emulated card that declares only some capabilities
#: and takes its power switch from its reader profile) and a switch kind of its own
MODULE = """
from pathlib import Path

from harness.capabilities import Capability as C
from harness.lab.power import SwitchKind
from harness.targets.reader_profile import UnknownReader, load_profiles, select_profile
from harness.targets import InProcessTarget, Target, TargetKind


class BenchTarget(InProcessTarget):
    declared = frozenset({C.EMULATOR, C.OBSERVE_VERIFIED, C.BLOCK_PINS})

    def __init__(self, arg, setup):
        from harness.emulator import parse_profile

        super().__init__(setup.card_config(), parse_profile(setup.defect or "faithful"))
        self.name = f"bench {arg}"
        try:
            self.profile = select_profile(self.name, load_profiles(setup.readers_dir))
        except UnknownReader:
            self.profile = None

    power_switch = Target.power_switch  # the profile's switch, as a real reader's

    def recover(self):
        self.transport.power_cycle()


BENCH = TargetKind(BenchTarget, "bench:NAME", "the lab's bench card")


class Clicker:
    mid_command = False

    def __init__(self, spec, target):
        self.log = Path(spec.options["log"])
        self.target = target

    def describe(self):
        return "the bench clicker"

    def _say(self, what):
        with self.log.open("a") as f:
            f.write(f"{what} {self.target.name}\\n")

    def cut(self):
        self._say("OFF")
        self.target.card.power_off()

    def restore(self):
        self._say("ON")

    def close(self):
        pass


CLICKER = SwitchKind(Clicker, mid_command=False, needs={"options": "options: {log: FILE}"})
NOT_A_KIND = "a string"
"""

POWER = """name: the bench's switch cuts the power
rule: bench-power
steps:
  - select: {pin: jpki-auth}
  - verify: {value: wrong}
  - power: cut
  - status: {}
    expect: {tries: max-1}
"""


def lab_package(folder: Path, entry_points: str) -> Path:
    """``lab_bench`` with ``entry_points`` (an ``entry_points.txt``), as installed in
    ``folder``: what a lab's ``pip install`` leaves in site-packages."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lab_bench.py").write_text(MODULE)
    info = folder / "lab_bench-0.1.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-bench\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return folder


ENTRY_POINTS = """\
[pinloop.targets]
bench = lab_bench:BENCH

[pinloop.power_switches]
clicker = lab_bench:CLICKER
"""


@pytest.fixture
def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The lab package on this process's path, the registries reading it."""
    folder = lab_package(tmp_path / "site", ENTRY_POINTS)
    monkeypatch.syspath_prepend(str(folder))
    TARGETS.refresh()
    SWITCHES.refresh()
    yield folder
    sys.modules.pop("lab_bench", None)
    TARGETS.refresh()
    SWITCHES.refresh()


def test_a_lab_target_and_switch_from_entry_points_run_scenarios(tmp_path: Path) -> None:
    site = lab_package(tmp_path / "site", ENTRY_POINTS)
    readers = tmp_path / "readers"
    readers.mkdir()
    log = tmp_path / "clicks.log"
    (readers / "bench.yaml").write_text(
        f"name: bench\nmatch: '^bench '\ninterface: contact\n"
        f"power_switch: {{kind: clicker, off_ms: 1, options: {{log: '{log}'}}}}\n"
    )
    (tmp_path / "power.pin.yaml").write_text(POWER)
    files = [
        str(LIB / "correct-restores-max.pin.yaml"),  # verified: observed on the bench
        str(LIB / "lock-at-exactly-n.pin.yaml"),  # destructive: the bench declares block-pins
        str(LIB / "reinit-window.pin.yaml"),  # needs-reinit: the bench has no reset codes
        str(tmp_path / "power.pin.yaml"),
    ]
    env = {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    args = ["-rs", "-k", "jpki-auth or power", "--pinloop-target", "bench:one"]
    proc = run_pytest(*args, "--pinloop-readers", str(readers), *files, env=env, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:]
    assert "3 passed, 1 skipped" in out, out[-3000:]
    assert "needs test-reinit (tag needs-reinit), fresh-pins (reinit step, line 13), which " in out
    assert "bench one does not have" in out
    assert log.read_text() == "OFF bench one\nON bench one\n"
    # an unknown kind: the error lists the lab's kind with the built-in ones
    wrong = run_pytest(
        "--pinloop-target", "benhc:one", str(tmp_path / "power.pin.yaml"), env=env, timeout=300
    )
    assert wrong.returncode != 0
    assert (
        "unknown target 'benhc:one'; use one of: inprocess, pcscd, reader:NAME-REGEX, bench:NAME"
        in wrong.stdout
    ), wrong.stdout[-2000:]


def test_an_entry_point_kind_is_made_through_the_registry(installed: Path) -> None:
    assert TARGETS.names() == ["inprocess", "pcscd", "reader", "bench"]
    target = make_target("bench:two", load_card_config(), None, card=JPKI)
    try:
        assert type(target).__name__ == "BenchTarget" and target.name == "bench two"
        assert "clicker" in SWITCHES.names()
    finally:
        target.close()


def test_a_switch_kind_registered_in_process_cuts_the_power(tmp_path: Path) -> None:
    """register() without a package: a profile names the kind, a power: cut step uses it."""
    cuts: list[str] = []

    class Recorder:
        mid_command = True

        def __init__(self, spec: SwitchSpec, target: object) -> None:
            self.what = str(spec.options["channel-name"])
            self.target = target

        def describe(self) -> str:
            return f"recorder {self.what}"

        def cut(self) -> None:
            cuts.append(f"cut {self.what}")
            self.target.card.power_off()  # type: ignore[attr-defined]

        def restore(self) -> None:
            cuts.append(f"restore {self.what}")

        def close(self) -> None:
            cuts.append("closed")

    SWITCHES.register("recorder", SwitchKind(Recorder, mid_command=True))
    try:
        path = tmp_path / "bench.yaml"
        path.write_text(
            "name: bench\nmatch: '^bench$'\ninterface: contact\n"
            "power_switch: {kind: recorder, off_ms: 1, options: {channel-name: left}}\n"
        )
        profile = load_profile(path)
        from harness.capabilities import Capability
        from harness.emulator import parse_profile
        from harness.targets import InProcessTarget, Target

        class Bench(InProcessTarget):
            power_switch = Target.power_switch

        bench = Bench(load_card_config(), parse_profile("faithful"))
        bench.profile = profile
        assert Capability.MID_COMMAND_CUT in profile.capabilities  # the kind says so
        (tmp_path / "p.pin.yaml").write_text(POWER)
        runner = Runner(bench, load_scenarios(tmp_path / "p.pin.yaml", JPKI)[0])
        runner.run()
        assert cuts == ["cut left", "restore left", "closed"]
    finally:
        SWITCHES.unregister("recorder")


def test_an_unknown_switch_kind_lists_the_known_ones(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("name: x\nmatch: '^X'\ninterface: contact\npower_switch: {kind: relais}\n")
    with pytest.raises(ConfigError) as exc:
        load_profile(path)
    text = str(exc.value)
    assert "x.yaml:4" in text
    assert "unknown power switch 'relais'; known: pcsc-unpower, operator, relay" in text


def test_an_unknown_target_lists_the_known_ones() -> None:
    with pytest.raises(TargetError, match=r"use one of: inprocess, pcscd, reader:NAME-REGEX$"):
        make_target("telepathy", None, None, card=JPKI)
    with pytest.raises(TargetError, match="inprocess takes no argument"):
        make_target("inprocess:x", None, None, card=JPKI)


def test_built_in_names_cannot_be_taken(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither in process nor by a package: ``reader`` (and with it the guard) stays pinloop's."""
    with pytest.raises(ValueError, match="registered already"):
        TARGETS.register("reader", TargetKind(lambda arg, setup: None, "reader:X"))  # type: ignore[arg-type, return-value]
    folder = lab_package(tmp_path / "site", "[pinloop.targets]\nreader = lab_bench:BENCH\n")
    monkeypatch.syspath_prepend(str(folder))
    TARGETS.refresh()
    try:
        with pytest.raises(ConfigError, match="'reader' is pinloop's built-in target"):
            make_target("bench:x", None, None, card=JPKI)
    finally:
        TARGETS.refresh()


def test_an_entry_point_of_the_wrong_kind_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = lab_package(
        tmp_path / "site",
        "[pinloop.targets]\nodd = lab_bench:NOT_A_KIND\nbroken = lab_bench_missing:X\n",
    )
    monkeypatch.syspath_prepend(str(folder))
    TARGETS.refresh()
    try:
        with pytest.raises(
            ConfigError, match=r"gives a str, not a harness\.targets\.kinds\.TargetKind"
        ):
            make_target("odd", None, None, card=JPKI)
        with pytest.raises(ConfigError, match="cannot be loaded: ModuleNotFoundError"):
            make_target("broken", None, None, card=JPKI)
    finally:
        sys.modules.pop("lab_bench", None)
        TARGETS.refresh()
