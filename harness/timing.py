"""Timing statistics for the VERIFY path: is the time a function of the secret?

Method: two classes of inputs, measured interleaved in random order; Welch's t on the raw
samples and on dudect-style cropped samples (the fastest p-fraction for 100 thresholds
p_i = 1 - 0.5^(10(i+1)/100)). The statistic is the largest |t| of those 101.

Looking at 101 statistics and calling any |t| > 4.5 a leak (TVLA's threshold for *one* test) is
a multiple comparison: on a constant-time card it gave false leaks. Instead the largest |t| is
judged by a **permutation test**: the class labels are shuffled ``PERMUTATIONS`` times and the
same largest |t| is computed each time. Because the two classes were measured in a random
order, under "time does not depend on the class" every labelling is as likely as the one
observed, drift and outliers included; the p-value is the share of labellings whose largest |t|
reaches the observed one, and a leak is p < ``ALPHA``. The family of 101 statistics has a
false-positive rate of ALPHA, whatever their correlation (``bench/bench_leak.py`` measures it).

An A/A control (class A split at random into halves) is judged the same way; if it comes out
significant the bench is not behaving, and the verdict is *inconclusive*. A pass is only
claimed together with the minimum detectable effect: δ_min = (t_crit + 1.645)·σ·√(2/n), with
t_crit the permutation threshold (about 4 on the data seen so far), i.e.
n ≈ 2·((t_crit + 1.645)·σ/δ)² samples per class to see a leak δ with 95 % power.

A significant difference is a leak only when it is at least ``MIN_LEAK_US`` where |t| is largest
(the raw samples or the deciding crop); below that it is a pass, noted as observed.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from harness.apdu.model import CommandAPDU, ResponseAPDU
    from harness.transport.base import Transport


#: why an APDU was sent, as the record says (every APDU a run sends has a row):
#: ``step`` a scenario step's own (status queries it reads, latency and leak samples: what
#: latency figures and checks use, as before), ``warm-up`` a leak test's discarded warm-ups,
#: ``restore`` a counter put back with the right PIN between timing samples, ``cut`` a command
#: a power cut was aimed at, ``identify`` the check that the card is this run's emulator,
#: ``guard`` the real-card guard's own (counter reads, SELECTs, restores)
KINDS = ("step", "warm-up", "restore", "cut", "identify", "guard")


class ApduTime(NamedTuple):
    """The time of one APDU: ``wire_us`` at the transport (the call to the card itself, on
    the monotonic ns clock) and ``total_us`` the harness's whole path to its response: for the
    runner's APDUs from the previous response (or the end of the last lab operation: a power
    cycle, a cut, a reconnection) to this one, so step logic, checks, traces and reports between
    two APDUs count; the difference is what the harness adds. A named tuple: one is made for
    every APDU, and a frozen dataclass costs several times as much to make."""

    ins: str  # "20", "A4", ...
    query: bool  # a VERIFY without data (the status query)
    wire_us: float
    total_us: float
    kind: str = "step"  # one of KINDS
    answered: bool = True  # False: the transport raised (a cut, a lost connection)

    @property
    def overhead_us(self) -> float:
        return self.total_us - self.wire_us

    @property
    def verify(self) -> bool:
        """A VERIFY that presents a value (what the VERIFY latency figures are about)."""
        return self.ins == "20" and not self.query

    @property
    def step(self) -> bool:
        """One of the scenario's own APDUs (the only ones latency figures are taken from)."""
        return self.kind == "step" and self.answered


_INS = [f"{i:02X}" for i in range(256)]


def timed_transmit(
    transport: Transport, cmd: CommandAPDU, kind: str, record: Callable[[ApduTime], object]
) -> ResponseAPDU:
    """``transport.transmit(cmd)``, recorded as one row of ``kind`` (answered or not): for
    APDUs sent outside the runner's own path (identification, the guard's own)."""
    t = time.perf_counter_ns()
    answered = False
    try:
        resp = transport.transmit(cmd)
        answered = True
        return resp
    finally:
        total = time.perf_counter_ns() - t - getattr(transport, "last_extra_ns", 0)
        if answered or getattr(transport, "last_sent", True):  # not refused before it went
            record(
                ApduTime(
                    _INS[cmd.ins],
                    cmd.ins == 0x20 and not cmd.data,
                    transport.last_wire_ns / 1e3,
                    total / 1e3,
                    kind,
                    answered,
                )
            )


class CpuWait:
    """How long the threads an APDU's answer waits on have waited for a CPU, in ns (Linux: the
    run delay in ``schedstat``, the time a thread was runnable and not running).

    A loaded host keeps a thread off the CPU for whole time slices (4-16 ms with a few busy
    processes per core): a sample that spans one is that long, whatever the reader did. A
    latency figure is taken less those waits, so host load is not reported as a slow reader.
    The threads: the measuring one (opened here, in the thread that measures: the file names
    the thread that opened it) and ``others`` (schedstat paths of e.g. the PC/SC daemon's
    threads and an emulator's, from the target), of which :meth:`keep_on_path` keeps those
    that carry each answer. Waits of threads that waited at the same time are added, so the
    sum can exceed what the path lost: a sample is taken down to zero at most."""

    def __init__(self, others: Sequence[str] = ()) -> None:
        self._fds: list[int] = []
        self.available = self._open("/proc/thread-self/schedstat")
        self.others = sum(self._open(path) for path in others) if self.available else 0

    def _open(self, path: str) -> bool:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        if _schedstat(fd)[0] < 0:
            os.close(fd)
            return False
        self._fds.append(fd)
        return True

    def mark(self) -> list[int]:
        return [_schedstat(fd)[0] for fd in self._fds]

    def runs(self) -> list[int]:
        """How often each thread has been put on a CPU so far."""
        return [_schedstat(fd)[1] for fd in self._fds]

    def keep_on_path(self, before: list[int], apdus: int) -> None:
        """Keep the measuring thread and the others that were put on a CPU at least once per
        APDU since ``before`` (``apdus`` were sent): the threads that carry an answer. A
        daemon's other threads (pcscd polls each reader every 400 ms) are not on the path,
        and their waits are not the answer's."""
        now = self.runs()
        keep = [
            fd
            for i, (fd, a, b) in enumerate(zip(self._fds, before, now, strict=True))
            if (i == 0 and self.available) or (a >= 0 and b - a >= apdus)
        ]
        for fd in self._fds:
            if fd not in keep:
                os.close(fd)
        self._fds = keep
        self.others = len(keep) - (1 if self.available else 0)

    def since(self, mark: list[int]) -> int:
        """ns the threads waited for a CPU since ``mark`` (a thread gone since counts 0)."""
        now = self.mark()
        return sum(b - a for a, b in zip(mark, now, strict=True) if a >= 0 and b >= a)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self) -> CpuWait:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _schedstat(fd: int) -> tuple[int, int]:
    """(ns waited for a CPU, times put on a CPU); (-1, -1) when it cannot be read."""
    try:
        fields = os.pread(fd, 128, 0).split()
        return int(fields[1]), int(fields[2])
    except (OSError, ValueError, IndexError):
        return -1, -1


THRESHOLD = 4.5  # TVLA critical |t| of one test (for sample-size estimates)
Z_POWER = 1.645  # 95 % power
CROP_PERCENTILES = [1 - 0.5 ** (10 * (i + 1) / 100) for i in range(100)]
#: false-positive rate of one leak test (the family of 101 statistics together)
ALPHA = 0.001
#: label shuffles per test; the smallest p-value it can give is 1/(PERMUTATIONS + 1)
PERMUTATIONS = 2999
#: the smallest difference (µs, in the samples the verdict rests on) that is reported as a leak.
#: With 300 samples a class and the fastest crops, a few tens of nanoseconds come out
#: significant: the in-process emulator, constant-time by construction, showed p = 0.0003 and
#: then 0.0007 (same sign) for a difference of -0.0 / -0.1 µs raw - the interpreter's own
#: variation with the bytes compared, not the card's. A leak has to be a difference a reader's
#: path could carry (a USB frame is 125 µs); below this it is noted as observed.
MIN_LEAK_US = 1.0


def welch_t(a: Sequence[float], b: Sequence[float]) -> float:
    """Welch's t statistic (0 when either class has no spread)."""
    if len(a) < 2 or len(b) < 2:
        return 0.0
    va, vb = statistics.variance(a), statistics.variance(b)
    se = math.sqrt(va / len(a) + vb / len(b))
    return 0.0 if se == 0 else (statistics.fmean(a) - statistics.fmean(b)) / se


def max_t_permutation(
    a: Sequence[float], b: Sequence[float], *, permutations: int = PERMUTATIONS, seed: int = 0
) -> tuple[float, float, float, float]:
    """The largest |t| over raw and cropped samples (with its sign), its permutation p-value,
    the permutation threshold for ``ALPHA`` (the critical |t|), and the difference of the
    class means (B - A, µs) in the samples that gave that |t| (the raw ones or a crop).

    Vectorised: the pooled samples are sorted once, so a crop is always the k fastest, and
    every labelling's 101 Welch t come from cumulative sums.
    """
    x = np.asarray([*a, *b], dtype=np.float64)
    n = len(x)
    if len(a) < 2 or len(b) < 2:
        return 0.0, 1.0, math.inf, 0.0
    rng = np.random.default_rng(seed)
    # ties in random order: a coarse clock gives many equal times, and a crop that ends inside
    # a run of them must not take class A's first
    shuffle = rng.permutation(n)
    order = shuffle[np.argsort(x[shuffle], kind="stable")]
    x = x[order] - np.median(x)  # centred: the sums of squares keep their precision
    is_b = (np.arange(n) >= len(a))[order]
    labels = np.empty((permutations + 1, n), dtype=np.float64)
    labels[0] = is_b
    labels[1:] = rng.permuted(np.tile(is_b.astype(np.float64), (permutations, 1)), axis=1)
    ks = sorted({min(n, int(p * n) + 1) for p in CROP_PERCENTILES} | {n})
    idx = np.asarray(ks) - 1
    cx, cx2 = np.cumsum(x)[idx], np.cumsum(x * x)[idx]
    nb = np.cumsum(labels, axis=1)[:, idx]
    sb = np.cumsum(labels * x, axis=1)[:, idx]
    qb = np.cumsum(labels * (x * x), axis=1)[:, idx]
    na = np.asarray(ks, dtype=np.float64) - nb
    sa, qa = cx - sb, cx2 - qb
    with np.errstate(divide="ignore", invalid="ignore"):
        ma, mb = sa / na, sb / nb
        va = (qa - na * ma * ma) / (na - 1)
        vb = (qb - nb * mb * mb) / (nb - 1)
        se = np.sqrt(va / na + vb / nb)
        t = (ma - mb) / se
    t = np.where((na >= 2) & (nb >= 2) & (se > 0) & np.isfinite(t), t, 0.0)
    best = np.abs(t).max(axis=1)
    observed = float(best[0])
    at = int(np.abs(t[0]).argmax())
    signed = float(t[0][at])
    effect = float(mb[0][at] - ma[0][at]) if signed else 0.0
    p = (1 + int((best[1:] >= observed - 1e-12).sum())) / (permutations + 1)
    t_crit = float(np.quantile(best[1:], 1 - ALPHA))
    return signed, p, t_crit, effect


@dataclass(frozen=True)
class LeakResult:
    verdict: str  # "pass", "leak", "inconclusive"
    n_per_class: int
    t_raw: float
    t_max: float  # max |t| over raw and cropped
    t_aa: float  # A/A control
    sigma_us: float
    mean_difference_us: float  # mean(B) - mean(A)
    mde_us: float  # smallest leak this run would have detected (95 % power)
    p: float = 1.0  # permutation p-value of t_max
    p_aa: float = 1.0  # permutation p-value of the A/A control
    t_crit: float = THRESHOLD  # the permutation threshold of |t_max| for ALPHA
    #: mean(B) - mean(A) in the samples that gave t_max (the raw ones or a crop), µs
    effect_us: float = 0.0

    @property
    def below_floor(self) -> bool:
        """Significant, but the difference is smaller than :data:`MIN_LEAK_US`."""
        return self.p < ALPHA and abs(self.effect_us) < MIN_LEAK_US

    @property
    def tau(self) -> float:
        """dudect's effect size t/√N, independent of the sample size."""
        return self.t_max / math.sqrt(2 * self.n_per_class)

    def samples_needed(self, delta_us: float) -> int:
        """Samples per class to detect a leak of ``delta_us`` at this run's noise."""
        return math.ceil(2 * (THRESHOLD + Z_POWER) ** 2 * (self.sigma_us / delta_us) ** 2)

    @property
    def samples_needed_observed(self) -> int:
        """Samples per class that would have seen this run's effect at 95 % power.

        From the deciding t (raw or cropped), n·((4.5 + 1.645)/|t|)², so that it agrees with the
        test that made the verdict; a σ from raw data can be swollen by outliers that the
        cropped tests cut away.
        """
        if not self.t_max:
            return 0
        return math.ceil(self.n_per_class * ((THRESHOLD + Z_POWER) / abs(self.t_max)) ** 2)

    def describe(self) -> str:
        detected = self.samples_needed_observed
        return (
            f"{self.verdict.upper()}: n={self.n_per_class} per class, max|t|={abs(self.t_max):.1f} "
            f"(raw {abs(self.t_raw):.1f}; permutation p={self.p:.4f}, threshold "
            f"{self.t_crit:.1f} for a {ALPHA:g} false-positive rate), A/A |t|="
            f"{abs(self.t_aa):.1f} (p={self.p_aa:.3f}), σ={self.sigma_us:.1f} µs, "
            f"difference {self.mean_difference_us:+.1f} µs, minimum detectable effect "
            f"{self.mde_us:.1f} µs; samples needed for this difference ≈ {detected}"
            + (
                f"; the difference where |t| is largest, {self.effect_us:+.3f} µs, is below "
                f"the smallest leak reported ({MIN_LEAK_US:g} µs): observed, not a leak"
                if self.below_floor and self.verdict == "pass"
                else ""
            )
        )


def leak_test(
    a: Sequence[float], b: Sequence[float], *, seed: int = 0, permutations: int = PERMUTATIONS
) -> LeakResult:
    """Compare class A and class B latencies (µs): a leak is a permutation p-value of the
    largest |t| (raw and 100 crops) below ``ALPHA``."""
    n = min(len(a), len(b))
    t_raw = welch_t(a, b)
    t_max, p, t_crit, effect = max_t_permutation(a, b, seed=seed, permutations=permutations)
    shuffled = list(a)
    random.Random(seed).shuffle(shuffled)  # noqa: S311 - a reproducible split, no secret
    half = len(shuffled) // 2
    t_aa, p_aa, _, _ = max_t_permutation(
        shuffled[:half], shuffled[half:], seed=seed + 1, permutations=permutations
    )
    # within-class spread: pooling the classes would let the leak itself inflate the noise
    sigma = math.sqrt((statistics.variance(a) + statistics.variance(b)) / 2) if n > 1 else 0.0
    mde = (t_crit + Z_POWER) * sigma * math.sqrt(2 / n) if n and math.isfinite(t_crit) else math.inf
    if p_aa < ALPHA:
        verdict = "inconclusive"
    elif p < ALPHA and abs(effect) >= MIN_LEAK_US:
        verdict = "leak"
    else:  # not significant, or significant but smaller than the smallest leak reported
        verdict = "pass"
    return LeakResult(
        verdict,
        n,
        t_raw,
        t_max,
        t_aa,
        sigma,
        statistics.fmean(b) - statistics.fmean(a),
        mde,
        p,
        p_aa,
        t_crit,
        effect,
    )
