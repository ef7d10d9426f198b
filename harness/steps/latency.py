"""``latency: {samples, of?}``: VERIFY (or status query) latency at the transport against the
reader profile's budgets; a budget broken must be broken again in an independent run."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from harness.apdu import commands as C
from harness.apdu.model import CommandAPDU
from harness.errors import HarnessError
from harness.scenario.model import Step
from harness.steps import NOTHING, StepKind
from harness.timing import CpuWait

if TYPE_CHECKING:
    from harness.run.session import CardSession
    from harness.scenario.parse import Parse
    from harness.scenario.schema import CardRefs

#: status queries that tell which threads of the PC/SC daemon and the emulator carry an answer
PATH_PROBES = 8


@dataclass(frozen=True)
class Latency(Step):
    action: ClassVar[str] = "latency"
    pin: str = ""
    samples: int = 50
    of: str = "status"


def schema(refs: CardRefs) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["samples"],
        "properties": {
            "samples": {"type": "integer", "minimum": 5, "maximum": 5000},
            "of": {"enum": ["status", "right", "wrong"]},
        },
        "description": "VERIFY latency vs the reader profile's budgets",
    }


def parse(c: Parse, body: Any, common: dict[str, Any]) -> Latency:
    return Latency(**common, pin=c.pin(), samples=int(body["samples"]), of=body.get("of", "status"))


def run(session: CardSession, s: Latency) -> None:
    target = session.target
    profile = target.profile
    if profile is None or not profile.timing:
        raise HarnessError(f"no latency budget for {target.name} in readers/")
    session.select_pin(s.pin)
    right = session.value(s.pin, "right")
    cmd = (
        C.pin_status()
        if s.of == "status"
        else C.verify(right if s.of == "right" else session.value(s.pin, "wrong"))
    )
    restore = C.verify(right)
    got = figures(session, s, cmd, restore)
    for key, value in got.items():
        session.measured(key, value)
    over = [k for k, budget in profile.timing.items() if budget.judge(got[k]) == "over"]
    if over:
        # a budget broken must be broken again in an independent run before it is a
        # defect: one stall of the host (seen in-process under load: p99 12.7 ms, p95
        # 0.017 ms) is not the reader's, a reader that is slow is slow again
        first = got
        got = figures(session, s, cmd, restore)
        for key, value in got.items():
            session.measured(f"{key} (repeat)", value)
        again = [k for k in over if profile.timing[k].judge(got[k]) == "over"]
        if again:
            key = again[0]
            raise session.fail(
                f"VERIFY latency {key} ({profile.name} budget)",
                f"<= {profile.timing[key].limit} ms",
                f"{first[key]:.3f} ms, then {got[key]:.3f} ms in an independent run, over "
                f"{s.samples} samples each",
            )
        session.note(f"the first run's {', '.join(over)} over budget did not replicate")
    for key, budget in profile.timing.items():
        verdict = budget.judge(got[key])
        if verdict == "over":
            raise session.fail(
                f"VERIFY latency {key} ({profile.name} budget)",
                f"<= {budget.limit} ms",
                f"{got[key]:.3f} ms over {s.samples} samples",
            )
        if verdict == "marginal":
            mark = (
                f"{key} {got[key]:.3f} ms is marginal (limit {budget.limit}, "
                f"marginal above {budget.marginal} ms)"
            )
            session.mark_marginal(mark)


def figures(
    session: CardSession, s: Latency, cmd: CommandAPDU, restore: CommandAPDU
) -> dict[str, float]:
    """One run of ``s.samples`` timed commands: its p50, p95 and p99 in ms (noted).

    Each sample is taken less the time the threads on its path (this one, and those of
    the target's :meth:`~harness.targets.Target.path_threads` that carry an answer)
    waited for a CPU meanwhile (:class:`~harness.timing.CpuWait`): a busy host, not the
    reader, made that wait. The figures as measured are noted beside them."""
    samples, raw = [], []
    waited_us = 0.0
    first = len(session.latencies)
    with CpuWait(session.target.path_threads()) as cpu:
        if cpu.others:  # which of them carry an answer: a few free status queries tell
            runs = cpu.runs()
            for _ in range(PATH_PROBES):
                session.sample(C.pin_status(), "warm-up")
            cpu.keep_on_path(runs, PATH_PROBES)
        for _ in range(s.samples):
            before = cpu.mark()
            wire = session.sample(cmd)[1]
            wait = cpu.since(before) / 1e3
            raw.append(wire)
            samples.append(max(0.0, wire - wait))
            waited_us += wait
            if s.of == "wrong":
                session.sample(restore, "restore")
        known = cpu.available
    overhead = sorted(a.overhead_us for a in session.latencies[first:] if a.kind == "step")
    got, measured = percentiles_ms(samples), percentiles_ms(raw)
    host = (
        f"this thread{f' and {cpu.others} on the path' if cpu.others else ''} waited "
        f"{waited_us / 1e3:.3f} ms for a CPU in all, taken out; as "
        f"measured: " + ", ".join(f"{k} {v:.3f}" for k, v in measured.items())
        if known
        else "this host does not say how long a thread waits for a CPU: as measured"
    )
    session.note(
        f"latency of {s.of} (ms, at the transport): "
        + ", ".join(f"{k} {v:.3f}" for k, v in got.items())
        + f" ({host}); harness overhead per APDU (not included): median "
        f"{statistics.median(overhead):.1f} µs, max {overhead[-1]:.1f} µs"
    )
    return got


def percentiles_ms(samples: list[float]) -> dict[str, float]:
    """p50, p95 and p99 of samples in µs, in ms."""
    q = statistics.quantiles(samples, n=100)
    return {
        "verify_p50_ms": statistics.median(samples) / 1e3,
        "verify_p95_ms": q[94] / 1e3,
        "verify_p99_ms": q[98] / 1e3,
    }


KIND = StepKind(
    "latency",
    Latency,
    schema,
    parse,
    run,
    doc=(
        "p50/p95/p99 at the transport, each sample less the time the measuring thread waited "
        "for a CPU, against the reader profile's budgets (over the limit, and over it again "
        "in an independent run of N: failed, both figures named; over once only: passed, both"
        " runs in the trace; over `marginal`: passed, marked marginal); see "
        "[timing](timing.md)"
    ),
    expects=lambda s: NOTHING,
    timing=True,
)
