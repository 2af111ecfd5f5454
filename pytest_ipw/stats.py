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
    estimate = relative_change(*statistic(range(n)))
    changes = []
    for _ in range(resamples):
        indices = [rng.randrange(n) for _ in range(n)]
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
    from .metrics import percentile

    def statistic(indices: Sequence[int]) -> tuple[float, float]:
        return percentile([baseline[i] for i in indices], q), percentile([current[i] for i in indices], q)

    return statistic
