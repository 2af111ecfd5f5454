"""Comparing a run with a baseline run, and regression gates with each metric's direction built in.

Queries are paired by id (only queries present in both runs count), so the statistics are paired:
McNemar for accuracy and coverage, a paired bootstrap for energy, power, IPW, IPJ and latency.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from .errors import IPWUsageError
from .metrics import group_by
from .stats import (
    Interval,
    mcnemar_exact_p,
    mean_statistic,
    paired_bootstrap,
    percentile_statistic,
    ratio_statistic,
    relative_change,
)

HIGHER, LOWER = "higher", "lower"

#: metric -> (direction that is better, units allowed in a gate)
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "accuracy": (HIGHER, ("pt", "%")),
    "coverage": (HIGHER, ("pt", "%")),
    "ipw": (HIGHER, ("%",)),
    "ipj": (HIGHER, ("%",)),
    "joules": (LOWER, ("%",)),
    "watts": (LOWER, ("%",)),
    "latency_p50": (LOWER, ("%",)),
    "latency_p95": (LOWER, ("%",)),
    "tokens_per_s": (HIGHER, ("%",)),
}


@dataclass(frozen=True)
class Gate:
    """``metric:N%`` or ``metric:Npt`` — fail when the metric gets worse by more than N (and significantly)."""

    metric: str
    amount: float
    unit: str  # "%" or "pt"
    text: str

    @classmethod
    def parse(cls, text: str) -> "Gate":
        match = re.fullmatch(r"\s*([a-z_0-9]+)\s*:\s*([0-9]*\.?[0-9]+)\s*(%|pt)\s*", text)
        if not match:
            raise IPWUsageError(
                f"--ipw-compare-fail={text!r} is not METRIC:N% or METRIC:Npt (e.g. ipw:5%, accuracy:2pt, joules:10%)"
            )
        metric, amount, unit = match.group(1), float(match.group(2)), match.group(3)
        if metric not in METRICS:
            raise IPWUsageError(f"--ipw-compare-fail={text!r}: unknown metric {metric!r}; known: {', '.join(METRICS)}")
        if unit not in METRICS[metric][1]:
            raise IPWUsageError(f"--ipw-compare-fail={text!r}: {metric} takes a change in {' or '.join(METRICS[metric][1])}")
        return cls(metric, amount, unit, text.strip())


@dataclass(frozen=True)
class Change:
    scope: str  # "model@accelerator", "model@accelerator/domain" or "run"
    metric: str
    baseline: float | None
    current: float | None
    queries: int
    relative: float | None  # (current - baseline) / |baseline|
    interval: tuple[float, float] | None  # interval of ``relative`` (bootstrap) when computed
    p_value: float | None  # McNemar, for accuracy and coverage
    significant: bool

    @property
    def points(self) -> float | None:
        """Change in percentage points, for proportions."""
        if self.baseline is None or self.current is None:
            return None
        return (self.current - self.baseline) * 100

    @property
    def direction(self) -> str:
        return METRICS[self.metric][0]

    def worse_by(self, unit: str) -> float:
        """How much worse (positive) or better (negative) the metric got, in ``unit``."""
        change = self.points if unit == "pt" else (None if self.relative is None else self.relative * 100)
        if change is None or math.isnan(change):
            return 0.0
        return -change if self.direction == HIGHER else change

    @property
    def verdict(self) -> str:
        if not self.significant:
            return "within noise"
        return "worse" if self.worse_by("%" if self.relative is not None else "pt") > 0 else "better"

    def to_dict(self) -> dict[str, Any]:
        return {"scope": self.scope, "metric": self.metric, "baseline": self.baseline, "current": self.current,
                "queries": self.queries, "relative_change": self.relative,
                "interval": list(self.interval) if self.interval else None, "p_value": self.p_value,
                "significant": self.significant, "verdict": self.verdict, "better": self.direction}


@dataclass(frozen=True)
class GateFailure:
    gate: Gate
    change: Change

    def line(self) -> str:
        c = self.change
        if self.gate.unit == "pt":
            moved = f"{c.points:+.1f} points"
        else:
            moved = f"{c.relative * 100:+.1f}%"
        evidence = (f"p={c.p_value:.3g}" if c.p_value is not None
                    else f"95% interval {c.interval[0] * 100:+.1f}%..{c.interval[1] * 100:+.1f}%" if c.interval else "")
        return (f"{c.scope}: {c.metric} {_num(c.baseline)} -> {_num(c.current)} ({moved}, {evidence}) "
                f"breaks --ipw-compare-fail={self.gate.text}")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _paired(baseline: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]]):
    by_id = {r["query_id"]: r for r in baseline}
    pairs = [(by_id[r["query_id"]], r) for r in current if r["query_id"] in by_id]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _proportion_change(scope: str, metric: str, before: list[bool], after: list[bool], alpha: float) -> Change:
    n = len(before)
    only_before = sum(1 for b, a in zip(before, after) if b and not a)
    only_after = sum(1 for b, a in zip(before, after) if a and not b)
    p_value = mcnemar_exact_p(only_before, only_after)
    base, cur = sum(before) / n, sum(after) / n
    return Change(scope, metric, base, cur, n, relative_change(base, cur), None, p_value, p_value < alpha)


def _bootstrap_change(scope: str, metric: str, statistic, n: int, alpha: float, resamples: int, seed: int) -> Change:
    interval: Interval = paired_bootstrap(n, statistic, confidence=1 - alpha, resamples=resamples, seed=seed)
    base, cur = statistic(range(n))
    return Change(scope, metric, base, cur, n, interval.estimate, (interval.low, interval.high), None,
                  interval.excludes_zero())


def compare_records(scope: str, baseline: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]], *,
                    alpha: float = 0.05, resamples: int = 1000, seed: int = 0, metrics: Iterable[str] | None = None) -> list[Change]:
    """Changes of one model × accelerator (or one domain of it) between two runs, on the shared queries."""
    before, after = _paired(baseline, current)
    n = len(before)
    if n == 0:
        return []
    wanted = set(metrics) if metrics is not None else set(METRICS) - {"coverage"}
    col = lambda rows, key: [float(r[key] or 0.0) for r in rows]  # noqa: E731
    correct_b, correct_a = col(before, "correct"), col(after, "correct")
    changes: list[Change] = []
    if "accuracy" in wanted:
        changes.append(_proportion_change(scope, "accuracy", [bool(x) for x in correct_b], [bool(x) for x in correct_a], alpha))
    builders = {
        "joules": lambda: mean_statistic(col(before, "joules"), col(after, "joules")),
        "watts": lambda: mean_statistic(col(before, "watts"), col(after, "watts")),
        "ipw": lambda: ratio_statistic(correct_b, col(before, "watts"), correct_a, col(after, "watts")),
        "ipj": lambda: ratio_statistic(correct_b, col(before, "joules"), correct_a, col(after, "joules")),
        "latency_p50": lambda: percentile_statistic(col(before, "latency_s"), col(after, "latency_s"), 50),
        "latency_p95": lambda: percentile_statistic(col(before, "latency_s"), col(after, "latency_s"), 95),
        "tokens_per_s": lambda: ratio_statistic(col(before, "tokens_out"), col(before, "latency_s"),
                                                col(after, "tokens_out"), col(after, "latency_s")),
    }
    for metric, build in builders.items():
        if metric in wanted:
            changes.append(_bootstrap_change(scope, metric, build(), n, alpha, resamples, seed))
    return changes


def coverage_change(baseline: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]], alpha: float) -> Change | None:
    def covered(records: Sequence[Mapping[str, Any]]) -> dict[str, bool]:
        solved: dict[str, bool] = {}
        for r in records:
            solved[r["query_id"]] = solved.get(r["query_id"], False) or bool(r["correct"])
        return solved

    before, after = covered(baseline), covered(current)
    shared = [q for q in after if q in before]
    if not shared:
        return None
    return _proportion_change("run", "coverage", [before[q] for q in shared], [after[q] for q in shared], alpha)


def compare_runs(baseline: Mapping[str, Any], current: Mapping[str, Any], *, alpha: float = 0.05,
                 resamples: int = 1000, seed: int = 0, by_domain: bool = True) -> list[Change]:
    """Every change between two results documents: per model × accelerator, per domain, and coverage."""
    changes: list[Change] = []
    old_groups = group_by(baseline["records"], "model", "accelerator")
    for key, records in group_by(current["records"], "model", "accelerator").items():
        if key not in old_groups:
            continue
        scope = f"{key[0]}@{key[1]}"
        changes.extend(compare_records(scope, old_groups[key], records, alpha=alpha, resamples=resamples, seed=seed))
        if by_domain:
            old_domains = group_by(old_groups[key], "domain")
            for (domain,), domain_records in group_by(records, "domain").items():
                if (domain,) in old_domains:
                    changes.extend(compare_records(f"{scope}/{domain}", old_domains[(domain,)], domain_records,
                                                   alpha=alpha, resamples=resamples, seed=seed,
                                                   metrics=("accuracy", "joules")))
    cov = coverage_change(baseline["records"], current["records"], alpha)
    if cov is not None:
        changes.append(cov)
    return changes


def failed_gates(changes: Sequence[Change], gates: Sequence[Gate]) -> list[GateFailure]:
    """Gates broken by a significant change in the bad direction beyond the gate's amount.

    Gates judge whole model × accelerator scopes and the run's coverage, not single domains (too few
    queries per domain to gate on by default).
    """
    failures = []
    for gate in gates:
        for change in changes:
            if change.metric != gate.metric or "/" in change.scope:
                continue
            if change.significant and change.worse_by(gate.unit) > gate.amount:
                failures.append(GateFailure(gate, change))
    return failures


def changes_table(changes: Sequence[Change], fmt: str = "simple") -> str:
    """A table of changes; ``fmt`` is a tabulate format ("simple", "github" for Markdown...)."""
    from tabulate import tabulate

    rows = []
    for c in changes:
        if c.metric in ("accuracy", "coverage"):
            moved = f"{c.points:+.1f} pt" if c.points is not None else "n/a"
            evidence = f"p={c.p_value:.3g}"
        else:
            moved = f"{c.relative * 100:+.1f}%" if c.relative is not None and math.isfinite(c.relative) else "n/a"
            evidence = f"[{c.interval[0] * 100:+.1f}%, {c.interval[1] * 100:+.1f}%]" if c.interval else ""
        rows.append([c.scope, c.metric, _num(c.baseline), _num(c.current), moved, evidence, c.verdict, c.queries])
    return tabulate(rows, headers=["scope", "metric", "baseline", "now", "change", "interval / p", "verdict", "queries"],
                    tablefmt=fmt, disable_numparse=True)
