"""Timing statistics for the VERIFY path: is the time a function of the secret?

Method (``shared/docs/methods.md`` §3): two classes of inputs, measured interleaved in random
order; Welch's t on the raw samples and on dudect-style cropped samples (the fastest p-fraction
for 100 thresholds p_i = 1 - 0.5^(10(i+1)/100)); |t| > 4.5 (TVLA) is a leak. An A/A control
(class A split at random into halves) must stay below the threshold, or the verdict is
*inconclusive* (the bench is too noisy to say). A pass is only claimed together with the minimum
detectable effect: δ_min = (4.5 + 1.645)·σ·√(2/n), i.e. n ≈ 75·(σ/δ)² samples per class to see a
leak δ with 95 % power.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ApduTime:
    """The time of one APDU: ``wire_us`` at the transport (the call to the card itself, on
    the monotonic ns clock) and ``total_us`` around the transport's transmit(); the difference
    is what the harness adds."""

    ins: str  # "20", "A4", ...
    query: bool  # a VERIFY without data (the status query)
    wire_us: float
    total_us: float

    @property
    def overhead_us(self) -> float:
        return self.total_us - self.wire_us

    @property
    def verify(self) -> bool:
        """A VERIFY that presents a value (what the VERIFY latency figures are about)."""
        return self.ins == "20" and not self.query


THRESHOLD = 4.5  # TVLA critical |t|
Z_POWER = 1.645  # 95 % power
CROP_PERCENTILES = [1 - 0.5 ** (10 * (i + 1) / 100) for i in range(100)]


def welch_t(a: Sequence[float], b: Sequence[float]) -> float:
    """Welch's t statistic (0 when either class has no spread)."""
    if len(a) < 2 or len(b) < 2:
        return 0.0
    va, vb = statistics.variance(a), statistics.variance(b)
    se = math.sqrt(va / len(a) + vb / len(b))
    return 0.0 if se == 0 else (statistics.fmean(a) - statistics.fmean(b)) / se


def _cropped_ts(a: Sequence[float], b: Sequence[float]) -> list[float]:
    pooled = sorted([*a, *b])
    out = []
    for p in CROP_PERCENTILES:
        cut = pooled[min(len(pooled) - 1, int(p * len(pooled)))]
        ca, cb = [x for x in a if x <= cut], [x for x in b if x <= cut]
        out.append(welch_t(ca, cb))
    return out


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
            f"(raw {abs(self.t_raw):.1f}), A/A |t|={abs(self.t_aa):.1f}, σ={self.sigma_us:.1f} µs, "
            f"difference {self.mean_difference_us:+.1f} µs, minimum detectable effect "
            f"{self.mde_us:.1f} µs; samples needed for this difference ≈ {detected}"
        )


def leak_test(a: Sequence[float], b: Sequence[float], *, seed: int = 0) -> LeakResult:
    """Compare class A and class B latencies (µs)."""
    n = min(len(a), len(b))
    ts = [welch_t(a, b), *_cropped_ts(a, b)]
    t_max = max(ts, key=abs)
    shuffled = list(a)
    random.Random(seed).shuffle(shuffled)  # noqa: S311 - a reproducible split, no secret
    half = len(shuffled) // 2
    t_aa = max(
        [welch_t(shuffled[:half], shuffled[half:]), *_cropped_ts(shuffled[:half], shuffled[half:])],
        key=abs,
    )
    # within-class spread: pooling the classes would let the leak itself inflate the noise
    sigma = math.sqrt((statistics.variance(a) + statistics.variance(b)) / 2) if n > 1 else 0.0
    mde = (THRESHOLD + Z_POWER) * sigma * math.sqrt(2 / n) if n else math.inf
    if abs(t_aa) > THRESHOLD:
        verdict = "inconclusive"
    elif abs(t_max) > THRESHOLD:
        verdict = "leak"
    else:
        verdict = "pass"
    return LeakResult(
        verdict, n, ts[0], t_max, t_aa, sigma, statistics.fmean(b) - statistics.fmean(a), mde
    )
