"""Statistics for comparing two runs on the same queries: pure functions, seeded, stdlib only.

- Accuracy: exact McNemar test on the discordant pairs (a query right in one run and wrong in the other).
- Energy, power, IPW, latency: paired bootstrap over queries of the relative change of the statistic.
A regression gate fires only when the change is beyond its threshold *and* significant, so a re-run of
the same model on a noisy meter does not cry wolf.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Sequence

def mcnemar_exact_p(only_baseline_right: int, only_current_right: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts (binomial, p = 1/2)."""
    if only_baseline_right < 0 or only_current_right < 0:
        raise ValueError("discordant counts must not be negative")
    n = only_baseline_right + only_current_right
    if n == 0:
        return 1.0
    k = min(only_baseline_right, only_current_right)
    # P(X <= k) for X ~ Binomial(n, 1/2), doubled; computed in log space to stay finite for large n
    log_half_n = -n * math.log(2)
    tail = 0.0
    for i in range(k + 1):
        tail += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half_n)
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def relative_change(before: float, after: float) -> float:
    """(after - before) / |before|; 0 when both are 0, ±inf when only ``before`` is 0."""
    if before == 0:
        return 0.0 if after == 0 else math.copysign(math.inf, after)
    return (after - before) / abs(before)


def paired_bootstrap(
    n: int,
    statistic: Callable[[Sequence[int]], tuple[float, float]],
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Percentile interval of the relative change of a statistic, resampling ``n`` paired query indices.

    ``statistic(indices)`` returns (baseline value, current value) over the resampled queries, so the
    same statistic serves means, ratios (IPW) and percentiles.
    """
    if n <= 0:
        raise ValueError("paired bootstrap needs at least one query")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    rng = random.Random(seed)
    population = range(n)
    estimate = relative_change(*statistic(population))
    changes = []
    for _ in range(resamples):
        indices = rng.choices(population, k=n)
        changes.append(relative_change(*statistic(indices)))
    changes.sort()
    alpha = 1 - confidence
    low = changes[int(math.floor(alpha / 2 * (resamples - 1)))]
    high = changes[int(math.ceil((1 - alpha / 2) * (resamples - 1)))]
    return Interval(estimate, low, high)


def mean_statistic(baseline: Sequence[float], current: Sequence[float]) -> Callable[[Sequence[int]], tuple[float, float]]:
    def statistic(indices: Sequence[int]) -> tuple[float, float]:
        count = len(indices)
        return (math.fsum(baseline[i] for i in indices) / count, math.fsum(current[i] for i in indices) / count)

    return statistic


def ratio_statistic(
    baseline_num: Sequence[float], baseline_den: Sequence[float], current_num: Sequence[float], current_den: Sequence[float]
) -> Callable[[Sequence[int]], tuple[float, float]]:
    """mean(num) / mean(den) per run, e.g. IPW = mean(correct) / mean(watts)."""

    def ratio(num: Sequence[float], den: Sequence[float], indices: Sequence[int]) -> float:
        denominator = math.fsum(den[i] for i in indices)
        return math.fsum(num[i] for i in indices) / denominator if denominator > 0 else 0.0

    def statistic(indices: Sequence[int]) -> tuple[float, float]:
        return ratio(baseline_num, baseline_den, indices), ratio(current_num, current_den, indices)

    return statistic


def percentile_statistic(baseline: Sequence[float], current: Sequence[float], q: float) -> Callable[[Sequence[int]], tuple[float, float]]:
    from pytest_ipw.analysis.metrics import percentile

    def statistic(indices: Sequence[int]) -> tuple[float, float]:
        return percentile([baseline[i] for i in indices], q), percentile([current[i] for i in indices], q)

    return statistic


def delta_ratio_interval(
    baseline_num: Sequence[float],
    baseline_den: Sequence[float] | None,
    current_num: Sequence[float],
    current_den: Sequence[float] | None,
    *,
    confidence: float = 0.95,
) -> Interval:
    """Relative change of mean(num)/mean(den) between paired runs, with a delta-method interval.

    For large runs (thousands of queries) the bootstrap costs too much in Python and the normal
    approximation is accurate: log R = log c̄_num - log c̄_den - log b̄_num + log b̄_den, whose variance is
    the variance of the per-query influence values over n. ``*_den=None`` means a plain mean.
    """
    import numpy as np
    from statistics import NormalDist

    def arrays(num: Sequence[float], den: Sequence[float] | None):
        num = np.asarray(num, dtype=float)
        return num, (np.ones_like(num) if den is None else np.asarray(den, dtype=float))

    bn, bd = arrays(baseline_num, baseline_den)
    cn, cd = arrays(current_num, current_den)
    n = len(bn)
    means = [float(x.mean()) for x in (cn, cd, bn, bd)]
    if any(m <= 0 for m in means):  # a zero mean: no log-ratio; fall back to "no evidence"
        before = means[2] / means[3] if means[3] > 0 else 0.0
        after = means[0] / means[1] if means[1] > 0 else 0.0
        return Interval(relative_change(before, after), -math.inf, math.inf)
    influence = cn / means[0] - cd / means[1] - bn / means[2] + bd / means[3]
    log_ratio = math.log(means[0]) - math.log(means[1]) - math.log(means[2]) + math.log(means[3])
    se = float(influence.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return Interval(math.exp(log_ratio) - 1, math.exp(log_ratio - z * se) - 1, math.exp(log_ratio + z * se) - 1)


def subsampled_bootstrap(
    n: int,
    statistic: Callable[[Sequence[int]], tuple[float, float]],
    *,
    subsample: int = 2000,
    confidence: float = 0.95,
    resamples: int = 300,
    seed: int = 0,
    estimate: float | None = None,
) -> Interval:
    """m-out-of-n bootstrap for large runs: bootstrap a seeded subsample of ``subsample`` queries and
    scale the interval's half-widths by sqrt(m/n) around the full-data estimate (valid for root-n
    statistics such as percentiles)."""
    if n <= subsample:
        return paired_bootstrap(n, statistic, confidence=confidence, resamples=resamples, seed=seed)
    rng = random.Random(seed)
    chosen = rng.sample(range(n), subsample)
    small = paired_bootstrap(subsample, lambda idx: statistic([chosen[i] for i in idx]), confidence=confidence,
                             resamples=resamples, seed=seed)
    if estimate is None:
        estimate = relative_change(*statistic(range(n)))
    scale = math.sqrt(subsample / n)
    return Interval(estimate, estimate - (small.estimate - small.low) * scale, estimate + (small.high - small.estimate) * scale)
