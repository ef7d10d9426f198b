"""A browsable static report from ``reports/``, without Java: Allure 3 (npm package ``allure``).

pinloop installs its pinned Allure 3 itself on first use (npm, no global install) into the
user's cache: ``$PINLOOP_TOOLS`` if set, else ``$XDG_CACHE_HOME/pinloop`` (by default
``~/.cache/pinloop``), under ``allure-<version>/``. History for nightly trends is kept in
``reports/history.jsonl`` (Allure 3's ``historyPath``): keep that file between runs (CI cache)
and trends accumulate.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from harness.errors import HarnessError

ALLURE_VERSION = "3.18.0"


def tools_dir() -> Path:
    """Where pinloop keeps the tools it installs: ``$PINLOOP_TOOLS``, else
    ``$XDG_CACHE_HOME/pinloop``, else ``~/.cache/pinloop``."""
    if os.environ.get("PINLOOP_TOOLS"):
        return Path(os.environ["PINLOOP_TOOLS"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or ""
    base = Path(cache) if Path(cache).is_absolute() else Path.home() / ".cache"
    return base / "pinloop"


def allure_dir() -> Path:
    """The npm prefix of the pinned Allure 3."""
    return tools_dir() / f"allure-{ALLURE_VERSION}"


class ReportError(HarnessError):
    pass


#: written last into a complete install: a tree without it (an install cut off, or one
#: another process is still writing) is never used
COMPLETE = ".pinloop-complete"
#: how long to wait for another process installing the same Allure (its npm times out at 600 s)
INSTALL_WAIT_S = 660.0


def allure_cli() -> Path:
    """The pinned Allure 3 CLI, installed into :func:`allure_dir` on first use.

    The install goes into a fresh folder beside it and is moved into place only when npm has
    finished, under a lock: two runs at once (two checkouts, a CI job beside a lab run) never
    use, or write into, a half-installed tree."""
    tools = allure_dir()
    cli = tools / "node_modules" / ".bin" / "allure"
    if (tools / COMPLETE).exists() and cli.exists():
        return cli
    npm = shutil.which("npm")
    if npm is None:
        raise ReportError("npm is missing; as root: apt-get install -y nodejs npm")
    tools.parent.mkdir(parents=True, exist_ok=True)
    with _locked(tools.with_name(tools.name + ".lock")):
        if (tools / COMPLETE).exists() and cli.exists():
            return cli  # another process installed it while this one waited
        part = Path(tempfile.mkdtemp(prefix=tools.name + ".part-", dir=tools.parent))
        try:
            _npm_install(npm, part)
            (part / COMPLETE).write_text(ALLURE_VERSION + "\n")
            if tools.exists():  # an install cut off earlier: set aside, then removed
                stale = Path(tempfile.mkdtemp(prefix=tools.name + ".stale-", dir=tools.parent))
                tools.rename(stale / "tree")
                shutil.rmtree(stale, ignore_errors=True)
            part.rename(tools)
        finally:
            shutil.rmtree(part, ignore_errors=True)  # gone already when it was moved
    return cli


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl  # POSIX; the static report is built on the lab's Linux or macOS host

    with path.open("a") as f:
        deadline = time.monotonic() + INSTALL_WAIT_S
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ReportError(
                        f"another process has been installing Allure into {path.parent} "
                        f"for {INSTALL_WAIT_S:.0f} s"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _npm_install(npm: str, prefix: Path) -> None:
    proc = subprocess.run(  # noqa: S603 - npm with fixed arguments
        [
            npm,
            "install",
            "--no-audit",
            "--no-fund",
            "--fetch-timeout=60000",  # fail in minutes, not hang, if the registry is away
            "--fetch-retries=2",
            "--prefix",
            str(prefix),
            f"allure@{ALLURE_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0 or not (prefix / "node_modules" / ".bin" / "allure").exists():
        raise ReportError(f"npm install allure@{ALLURE_VERSION} failed:\n{proc.stderr[-2000:]}")


def build(
    results: Path, output: Path, *, history: Path | None = None, name: str = "pinloop"
) -> Path:
    """Generate the static report; returns its index.html."""
    if not any(results.glob("*-result.json")):
        raise ReportError(f"no Allure results in {results} (run pytest with --alluredir)")
    cli = allure_cli()
    config: dict[str, object] = {
        "name": name,
        "output": str(output.resolve()),
        # application → PIN → scenario, as a lab reads it
        "plugins": {"awesome": {"options": {"groupBy": ["epic", "feature", "story"]}}},
    }
    if history is not None:
        config["historyPath"] = str(history.resolve())
    if output.exists():
        shutil.rmtree(output)  # a stale index.html must never pass for a new report
    config_path = results.parent / "allurerc.json"
    config_path.write_text(json.dumps(config, indent=1))
    proc = subprocess.run(  # noqa: S603 - our pinned CLI, our arguments
        [
            str(cli),
            "generate",
            str(results.resolve()),
            "--config",
            str(config_path),
            "--output",
            str(output.resolve()),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=results.parent,
        env={
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "ALLURE_NO_ANALYTICS": "true",
            "HOME": str(tools_dir()),
        },
    )
    # with a plugin configured by name, Allure 3 writes that report into output/<plugin>/
    index = next(
        (p for p in (output / "index.html", output / "awesome" / "index.html") if p.exists()), None
    )
    if proc.returncode != 0 or index is None:
        raise ReportError(f"allure generate failed:\n{proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return index
