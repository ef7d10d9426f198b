"""The installed package works outside the checkout.

The wheel is built from a copy of the package's sources (what the wheel is made of, nothing
else of the checkout) with this environment's setuptools, and installed with ``--no-deps``
into a fresh venv. Its dependencies come from this environment's site-packages, linked one by
one into a folder the venv adds to its path, without pinloop itself (no editable finder, no
``.pth`` of this environment): so every file pinloop reads must be in the wheel, and every
lookup must work from a folder that is not the checkout. No network: nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parents[1]
#: this environment's entries that are pinloop itself, never linked into the fresh venv
_OURS = ("pinloop-", "__editable__", "harness", "__pycache__")
_OPTS: dict[str, object] = {"capture_output": True, "text": True, "timeout": 300, "check": False}


@dataclass
class Installed:
    venv: Path
    work: Path  # the working folder of every command: outside the checkout
    env: dict[str, str]
    times: dict[str, float]

    def run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def python(self) -> str:
        return str(self.venv / "bin" / "python")

    @property
    def pinloop(self) -> str:
        return str(self.venv / "bin" / "pinloop")


def _check(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"{proc.args}: exit {proc.returncode}\n{proc.stdout}{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    tmp = tmp_path_factory.mktemp("wheel")
    assert not tmp.resolve().is_relative_to(ROOT)
    times: dict[str, float] = {}
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_CONSTRAINT")
    }
    env.update(PIP_NO_INDEX="1", PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")

    # the sources a wheel is built from, copied: the build writes nothing into the checkout
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "harness", src / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    start = time.monotonic()
    dist = tmp / "dist"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    _check(subprocess.run([*build, "-w", str(dist), str(src)], cwd=tmp, env=env, **_OPTS))
    (wheel,) = dist.glob("pinloop-*.whl")
    times["build"] = time.monotonic() - start

    start = time.monotonic()
    venv = tmp / "venv"
    _check(subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], **_OPTS))
    install = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    _check(subprocess.run([*install, "--no-deps", "-q", str(wheel)], env=env, **_OPTS))
    deps = tmp / "deps"
    deps.mkdir()
    here = {Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
    for site in here:
        for entry in site.iterdir():
            if entry.name.startswith(_OURS) or entry.suffix == ".pth":
                continue
            if not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    (site_packages,) = (venv / "lib").glob("python3*/site-packages")
    (site_packages / "_pinloop_test_deps.pth").write_text(f"{deps}\n")
    times["install"] = time.monotonic() - start

    work = tmp / "work"
    work.mkdir()
    yield Installed(venv, work, env, times)
    print(f"\nwheel {wheel.name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))


def test_the_package_is_the_installed_one(installed: Installed) -> None:
    out = _check(
        installed.run(
            installed.python,
            "-c",
            "import harness, importlib.metadata as m; print(harness.__file__); "
            "print(m.distribution('pinloop').metadata['License-Expression']); "
            "print([e.value for e in m.entry_points(group='pytest11', name='pinloop')])",
        )
    )
    where, license_, plugins = out.splitlines()
    assert Path(where).is_relative_to(installed.venv), where
    assert license_ == "Apache-2.0"
    assert plugins == "['harness.plugin']"  # the entry point, once


def test_pinloop_smoke(installed: Installed) -> None:
    start = time.monotonic()
    out = _check(installed.run(installed.pinloop, "smoke"))
    installed.times["smoke"] = time.monotonic() - start
    assert "smoke: 24 passed, 0 failed" in out


def test_a_scenario_in_process(installed: Installed) -> None:
    """The installed plugin (entry point, no conftest) runs a library scenario; the latency
    scenario needs the built-in in-process profile's budgets."""
    shutil.copy2(ROOT / "scenarios" / "verify-latency.pin.yaml", installed.work)
    start = time.monotonic()
    out = _check(
        installed.run(
            installed.python,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "verify-latency.pin.yaml",
            "--pinloop-target",
            "inprocess",
            "-v",
        )
    )
    installed.times["scenario"] = time.monotonic() - start
    assert "2 passed" in out, out
    assert "[pin=jpki-auth]@inprocess PASSED" in out, out


def test_pinloop_readers(installed: Installed) -> None:
    """Built-in profiles from the package, the lab's from ./readers; without a pcscd, one
    clear line (a pcscd of its own would need root; the PC/SC tests run it)."""
    env = {**installed.env, "PCSCLITE_CSOCK_NAME": str(installed.work / "no-pcscd.comm")}
    argv = [installed.pinloop, "readers"]
    proc = subprocess.run(argv, cwd=installed.work, env=env, **_OPTS)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("pinloop: pcscd: establish context: "), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    builtin = installed.venv.glob("lib/python3*/site-packages/harness/readers")
    assert f"profiles: built-in {next(builtin)}; lab none" in proc.stdout, proc.stdout

    lab = installed.work / "readers"
    lab.mkdir()
    (lab / "acr39u.yaml").write_text("name: acr39u\nmatch: '^ACS ACR39U'\ninterface: contact\n")
    try:
        proc = subprocess.run(argv, cwd=installed.work, env=env, **_OPTS)
        assert f"; lab {lab}\n" in proc.stdout, proc.stdout
        out = _check(
            installed.run(
                installed.python,
                "-c",
                "from harness.targets.reader_profile import load_profiles as l, "
                "select_profile as s; "
                "p = l(); print(s('Virtual PCD 00 01', p).source); "
                "print(s('ACS ACR39U ICC Reader 00 00', p).source)",
            )
        )
        virtual, acr = out.splitlines()
        assert Path(virtual).is_relative_to(installed.venv) and acr == str(lab / "acr39u.yaml")
    finally:
        shutil.rmtree(lab)
