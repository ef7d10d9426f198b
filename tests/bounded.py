"""Malformed inputs run in a child process whose memory and time are bounded, each measured.

A malformed-input test must show that the input is refused quickly and cheaply, and a
regression (an alias bomb expanded again, a format spec of a billion characters) must fail the
test rather than eat the machine. So the cases run in a child process with a ceiling on its
address space, each case in a process forked from it and killed after a deadline; each
case's time and peak resident memory (above what it started with) are measured there and
compared with :data:`LIMIT_SECONDS` and :data:`LIMIT_MB` here. The time is the case's CPU
time: the work an input costs, not how long a busy host kept the case waiting for a CPU (a
1,500-item YAML list took 0.7 s alone and 2.7 s of wall time beside a soak); a case that
waits instead of working is caught by the deadline.

A case is a tuple: ``("scenario", path)``, ``("card", path)``, ``("reader", path)`` (loaded,
then matched against :data:`FAKE_READERS`), ``("defect", spec)``, ``("target",
"reader:REGEX")`` (against :data:`FAKE_READERS`: no pcscd is asked) or ``("cli", *argv)``
(pcscd cannot start in the child).

    python -m tests.bounded < cases.json     # one JSON outcome a line
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LIMIT_SECONDS = 2.0
LIMIT_MB = 200.0
#: the child's whole address space; a case that needs more fails with MemoryError
ADDRESS_SPACE = 1 << 30
#: a case still running after this long is stopped and recorded as a hang
CASE_DEADLINE_S = 20
#: the PC/SC reader names of the "target" cases, and the names each "reader" case's profile
#: is matched against (the last one takes a backtracking matcher 2^40 steps on ^(a+)+$)
FAKE_READERS = ["ACS ACR39U ICC Reader 00 00", "Virtual PCD 00 00", "a" * 40 + "!"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Outcome:
    """What one case raised (or ``exit N`` for the CLI), where, and what it cost."""

    raised: str
    text: str
    path: str | None
    line: int | None
    seconds: float
    peak_mb: float

    def check(self, raised: str = "ConfigError", *, lines: int = 14) -> None:
        """The common checks of a malformed-input test."""
        assert self.raised == raised, self
        assert "Traceback" not in self.text, self.text
        assert len(self.text.splitlines()) <= lines, self.text
        assert self.seconds <= LIMIT_SECONDS, f"took {self.seconds:.2f} s: {self.text}"
        assert self.peak_mb <= LIMIT_MB, f"peak {self.peak_mb:.0f} MB: {self.text}"

    def check_at(self, path: object, line: int, words: str) -> None:
        """:meth:`check`, and the error names ``path:line`` and says ``words``."""
        self.check()
        assert self.path == str(path) and self.line == line, self.text
        assert f"{path}:{line}" in self.text and words in self.text, self.text


def measure(cases: Sequence[tuple[str, ...]], timeout: float = 300) -> list[Outcome]:
    """Run ``cases`` in one bounded child process; one outcome per case, in order."""
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bounded"],
        input=json.dumps([list(c) for c in cases]),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    outcomes = [Outcome(**json.loads(line)) for line in proc.stdout.splitlines() if line]
    assert len(outcomes) == len(cases), (
        f"the child died (status {proc.returncode}):\n{proc.stderr[-3000:]}"
    )
    return outcomes


def laughs(first: str = "a") -> str:
    """A "billion laughs": 9 levels of 9 aliases of the level above, 10^9 strings expanded."""
    names = [chr(ord(first) + i) for i in range(9)]
    out = f"x-{names[0]}: &{names[0]} [{', '.join(['lol'] * 9)}]\n"
    for above, name in itertools.pairwise(names):
        out += f"x-{name}: &{name} [{', '.join([f'*{above}'] * 9)}]\n"
    return out


# -- the child ---------------------------------------------------------------------------------
def _run(case: list[str]) -> tuple[str, str, str | None, int | None]:
    import contextlib
    import io

    from harness.cards.jpki import PROFILE as JPKI
    from harness.errors import ConfigError

    kind, *args = case
    try:
        if kind == "scenario":
            from harness.scenario import load_scenarios

            load_scenarios(args[0], JPKI)
        elif kind == "card":
            from harness.emulator.config import load_card_config

            load_card_config(args[0])
        elif kind == "reader":
            from harness.targets.reader_profile import load_profile

            profile = load_profile(Path(args[0]))
            for name in FAKE_READERS:
                profile.matches(name)
        elif kind == "defect":
            from harness.emulator.defects import parse_profile

            parse_profile(args[0])
        elif kind == "target":
            from harness.targets import make_target
            from harness.transport import pcsc

            pcsc.list_readers = lambda: list(FAKE_READERS)  # type: ignore[assignment]
            make_target(args[0], None, None, card=JPKI)  # type: ignore[arg-type]
        elif kind == "cli":
            from harness.cli import main

            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                status = main(args)
            return f"exit {status}", err.getvalue(), None, None
        else:
            raise SystemExit(f"unknown case kind {kind!r}")
    except ConfigError as exc:
        loc = exc.location
        return "ConfigError", exc.render(), loc.path if loc else None, loc.line if loc else None
    except SystemExit:
        raise
    except BaseException as exc:  # every other outcome is recorded as such
        return type(exc).__name__, str(exc)[:3000], None, None
    return "returned", "", None, None


def _kb(field: str) -> int:
    """A ``/proc/self/status`` figure (VmRSS, VmHWM), in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _one(case: list[str]) -> dict[str, object]:
    """Run ``case`` in a forked process: its time, and its peak resident memory above what it
    started with (VmHWM, the kernel's high-water mark, starts at the fork's RSS)."""
    import select
    import signal
    import time

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the case; what it prints must not mix with the outcomes on stdout
        os.close(r)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        before = _kb("VmRSS")
        start = time.process_time()
        try:
            raised, text, path, line = _run(case)
        except MemoryError:
            raised, text, path, line = "MemoryError", "", None, None
        seconds = time.process_time() - start
        peak = (_kb("VmHWM") - before) / 1024
        report = {"raised": raised, "text": text[:20000], "path": path, "line": line}
        report |= {"seconds": round(seconds, 3), "peak_mb": round(peak, 1)}
        os.write(w, json.dumps(report).encode())
        os._exit(0)
    os.close(w)
    data = b""
    deadline = time.monotonic() + CASE_DEADLINE_S
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([r], [], [], left)[0]:
            continue
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    else:
        os.kill(pid, signal.SIGKILL)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if data:
        return dict(json.loads(data))
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    why = f"still running after {CASE_DEADLINE_S} s" if killed else f"wait status {status}"
    return {"raised": "died", "text": f"the case died: {why}", "path": None, "line": None} | {
        "seconds": float(CASE_DEADLINE_S),
        "peak_mb": 0.0,
    }


def _child() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    import harness.cli
    import harness.lab.pcscd
    import harness.scenario
    import harness.targets
    import harness.transport.pcsc

    def no_pcscd(*_: object, **__: object) -> None:
        raise RuntimeError("pcscd must not start in a malformed-input test")

    harness.lab.pcscd.Pcscd.start = no_pcscd  # type: ignore[method-assign]
    harness.transport.pcsc.PcscTransport.__init__ = no_pcscd  # type: ignore[method-assign]
    for case in json.loads(sys.stdin.read()):
        print(json.dumps(_one(case)), flush=True)


if __name__ == "__main__":
    _child()
