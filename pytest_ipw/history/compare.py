"""Comparing a run with a baseline run, and regression gates with each metric's direction built in.

Queries are paired by benchmark and query id (the same query run by two benchmark functions is two pairs;
only pairs present in both runs count), so the statistics are paired: McNemar for accuracy and coverage, a
paired bootstrap for energy, power, IPW, IPJ and latency.

Energy is read on each run's recorded basis (``--ipw-energy``: total, or active = total minus the idle
baseline), as the summaries are; two runs on different bases are not compared (their joules measure
different things). Queries whose window's energy is unknown (``meters.base.EXCLUDED_FLAGS``) are left out
of the energy metrics, as they are of the summaries.
With ``--ipw-repeat``, each query's rounds are averaged before pairing, so a query counts once and its mean
over rounds is less noisy than one round.

A query that could not be answered counts as wrong, as in the run's own figures; the share of such
queries (``errors``, McNemar) is compared when either run has any.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.analysis.failures import error_counts
from pytest_ipw.analysis.metrics import (
    collapse_rounds,
    energy_columns,
    excluded_windows,
    has_rounds,
    solved_by_any,
    system_codes,
)
from pytest_ipw.analysis.table import RecordTable, as_table, group_positions
from pytest_ipw.analysis.stats import (
    Interval,
    delta_ratio_interval,
    mcnemar_exact_p,
    mean_statistic,
    paired_bootstrap,
    percentile_statistic,
    ratio_statistic,
    relative_change,
    subsampled_bootstrap,
)

#: from this many paired queries on, intervals come from the delta method (means, ratios) and an
#: m-out-of-n bootstrap (percentiles): a full bootstrap of a million queries would take minutes
LARGE_RUN = 2000

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
    # decode energy per token generated after the first (queries whose window was split at the first token)
    "j_per_token": (LOWER, ("%",)),
    "errors": (LOWER, ("pt",)),  # share of queries that could not be answered (context overflow, rejected...)
}
#: metrics that are proportions of queries, changed in percentage points and tested with McNemar
PROPORTIONS = ("accuracy", "coverage", "errors")


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


#: metrics read from energy figures: on the runs' energy basis, without windows of unknown energy
ENERGY_METRICS = ("ipw", "ipj", "joules", "watts")


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
    basis: str | None = None  # energy metrics: the energy basis both runs used ("total" or "active")

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
                "significant": self.significant, "verdict": self.verdict, "better": self.direction,
                "energy_basis": self.basis}

    @property
    def label(self) -> str:
        """The metric's name, with its energy basis when that is not the default total."""
        return f"{self.metric} ({self.basis} energy)" if self.basis not in (None, "total") else self.metric

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Change":
        """A change as :meth:`to_dict` wrote it (the results' ``comparison``, read back by the report)."""
        interval = data.get("interval")
        return cls(str(data["scope"]), str(data["metric"]), data.get("baseline"), data.get("current"),
                   int(data.get("queries") or 0), data.get("relative_change"),
                   (float(interval[0]), float(interval[1])) if interval else None, data.get("p_value"),
                   bool(data.get("significant")), data.get("energy_basis"))


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
        return (f"{c.scope}: {c.label} {_num(c.baseline)} -> {_num(c.current)} ({moved}, {evidence}) "
                f"breaks --ipw-compare-fail={self.gate.text}")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


_FIELDS = ("correct", "joules", "watts", "latency_s", "tokens_out", "decode_joules", "decode_tokens")


@dataclass(frozen=True)
class _Pairs:
    """The shared queries of two runs of one model × accelerator, as aligned numeric columns."""

    domains: Any  # numpy array of domain names, aligned with the columns
    before: dict[str, Any]  # field -> numpy array (baseline)
    after: dict[str, Any]  # field -> numpy array (current)

    def __len__(self) -> int:
        return len(self.domains)

    def subset(self, mask: Any) -> "_Pairs":
        return _Pairs(self.domains[mask], {k: v[mask] for k, v in self.before.items()},
                      {k: v[mask] for k, v in self.after.items()})


def _columns(table: RecordTable, rows: Any) -> dict[str, Any]:
    """Numeric columns of ``rows``; ``joules``/``watts`` on each record's energy basis (as the summaries read
    them), NaN where the window's energy is unknown (left out of the energy metrics)."""
    import numpy as np

    # a missing figure (None, or a field older results lack) becomes 0, as in the summaries
    columns = {field: np.nan_to_num(table.numbers(field)[rows]) for field in _FIELDS
               if field not in ("joules", "watts", "correct")}
    columns["correct"] = table.flags("correct")[rows].astype(float)
    excluded = excluded_windows(table)[rows]
    for field, values in zip(("joules", "watts"), energy_columns(table)):
        values = np.nan_to_num(values[rows])
        values[excluded] = math.nan
        columns[field] = values
    # runs saved before failures were recorded have no "error" field: nothing failed in them
    columns["failed"] = table.flags("error")[rows]
    return columns


def pair_key(record: Mapping[str, Any]) -> tuple[Any, Any]:
    """A query is the same query in two runs when both its benchmark function and its id match (the key
    :func:`_pair` aligns on, and the one a comparison's coverage counts)."""
    return (record.get("benchmark"), record["query_id"])


def run_energy_basis(document: Mapping[str, Any]) -> str:
    """The energy basis a results document used: its recorded setting, else what its records say."""
    basis = ((document.get("settings") or {}).get("energy") or {}).get("basis")
    if basis:
        return str(basis)
    bases = set(as_table(document.get("records", ())).codes("energy_basis", "total")[1])
    return bases.pop() if len(bases) == 1 else "total" if not bases else "mixed"


class PairKeys:
    """Both runs' :func:`pair_key` of every record as integers in one numbering, so that aligning them is a
    sort and a search (:meth:`of` makes them once per pair of tables)."""

    @classmethod
    def of(cls, baseline: RecordTable, current: RecordTable) -> "PairKeys":
        """The keys of these two tables, kept with the current one (a comparison asks for them several times)."""
        made = current.derived("pair keys", lambda _: {})  # id of a baseline -> (that baseline, the keys)
        found = made.get(id(baseline))
        if found is None or found[0] is not baseline:
            found = made[id(baseline)] = (baseline, cls(baseline, current))
        return found[1]

    def __init__(self, baseline: RecordTable, current: RecordTable):
        import numpy as np

        def numbered(*tables: RecordTable, name: str) -> list[Any]:
            index: dict[Any, int] = {}
            return [np.array([index.setdefault(label, len(index)) for label in t.codes(name)[1]],
                             dtype=np.int64)[t.codes(name)[0]] if len(t) else np.zeros(0, dtype=np.int64)
                    for t in tables] + [len(index)]

        *queries, query_count = numbered(baseline, current, name="query_id")
        *benches, _ = numbered(baseline, current, name="benchmark")
        self.baseline, self.current = (b * max(1, query_count) + q for b, q in zip(benches, queries))


def _pair(baseline: RecordTable, before_rows: Any, current: RecordTable, after_rows: Any,
          keys: PairKeys | None = None) -> _Pairs:
    """Align by benchmark and query id (where a run has a query twice, its last record counts)."""
    import numpy as np

    keys = keys or PairKeys.of(baseline, current)
    old, new = keys.baseline[before_rows], keys.current[after_rows]
    order = np.argsort(old, kind="stable")
    ordered = old[order]
    at = np.searchsorted(ordered, new, side="right") - 1  # the last of equal keys: stable order keeps theirs
    found = (at >= 0) & (ordered[np.maximum(at, 0)] == new) if len(ordered) else np.zeros(len(new), dtype=bool)
    after_index = np.nonzero(found)[0]
    before_index = order[at[after_index]]
    before, after = _columns(baseline, before_rows), _columns(current, after_rows)
    domain_codes, domains = current.codes("domain")
    domain_names = np.array(domains, dtype=object)[domain_codes[after_rows]][after_index] if len(domains) else \
        np.zeros(0, dtype=object)
    return _Pairs(domain_names, {k: v[before_index] for k, v in before.items()},
                  {k: v[after_index] for k, v in after.items()})


def _one_per_query(table: RecordTable, rows: Any) -> tuple[RecordTable, Any]:
    """``--ipw-repeat``: each query's rounds as one record (:func:`collapse_rounds`)."""
    import numpy as np

    if not has_rounds(table):
        return table, rows
    collapsed = RecordTable(collapse_rounds([table.records[i] for i in rows.tolist()]))
    return collapsed, np.arange(len(collapsed))


def _system_rows(table: RecordTable) -> dict[str, Any]:
    """System label -> the positions of its records."""
    codes, systems = system_codes(table)
    return dict(zip(systems, group_positions(codes, len(systems))))


def _proportion_change(scope: str, metric: str, before: Any, after: Any, alpha: float) -> Change:
    import numpy as np

    before, after = np.asarray(before, dtype=bool), np.asarray(after, dtype=bool)
    n = len(before)
    p_value = mcnemar_exact_p(int(np.sum(before & ~after)), int(np.sum(after & ~before)))
    base, cur = float(before.mean()), float(after.mean())
    return Change(scope, metric, base, cur, n, relative_change(base, cur), None, p_value, p_value < alpha)


def _interval_change(scope: str, metric: str, values: tuple[float, float], interval: Interval, n: int,
                     basis: str | None = None) -> Change:
    base, cur = values
    return Change(scope, metric, base, cur, n, interval.estimate, (interval.low, interval.high), None,
                  interval.excludes_zero(), basis)


def _mean_ratio(run: dict[str, Any], num: str, den: str | None) -> float:
    """mean(num) / mean(den), or mean(num) without a denominator; 0 where the denominator is 0."""
    denominator = float(run[den].mean()) if den else 1.0
    return float(run[num].mean()) / denominator if denominator > 0 else 0.0


def _compare_pairs(scope: str, pairs: _Pairs, *, alpha: float, resamples: int, seed: int, wanted: set[str],
                   basis: str = "total") -> list[Change]:
    import numpy as np

    n = len(pairs)
    if n == 0:
        return []
    changes: list[Change] = []
    energy_wanted = wanted & set(ENERGY_METRICS)
    if energy_wanted:
        # pairs with a window of unknown energy on either side take no part in the energy metrics
        known = np.isfinite(pairs.before["joules"]) & np.isfinite(pairs.after["joules"])
        energy_pairs = pairs if known.all() else pairs.subset(known)
        if len(energy_pairs):
            changes.extend(_compare_columns(scope, energy_pairs, alpha=alpha, resamples=resamples, seed=seed,
                                            wanted=energy_wanted, basis=basis))
    changes.extend(_compare_columns(scope, pairs, alpha=alpha, resamples=resamples, seed=seed,
                                    wanted=wanted - set(ENERGY_METRICS), basis=basis))
    order = {metric: i for i, metric in enumerate(("accuracy", "errors", "joules", "watts", "ipw", "ipj", "tokens_per_s",
                                                   "latency_p50", "latency_p95"))}
    return sorted(changes, key=lambda c: order.get(c.metric, len(order)))


def _compare_columns(scope: str, pairs: _Pairs, *, alpha: float, resamples: int, seed: int, wanted: set[str],
                     basis: str) -> list[Change]:
    n = len(pairs)
    if n == 0:
        return []
    b, a = pairs.before, pairs.after
    changes: list[Change] = []
    if "accuracy" in wanted:
        changes.append(_proportion_change(scope, "accuracy", b["correct"], a["correct"], alpha))
    if "errors" in wanted and (b["failed"].any() or a["failed"].any()):
        changes.append(_proportion_change(scope, "errors", b["failed"], a["failed"], alpha))
    # metric -> (baseline numerator, baseline denominator, current numerator, current denominator)
    ratios = {
        "joules": ("joules", None), "watts": ("watts", None), "ipw": ("correct", "watts"), "ipj": ("correct", "joules"),
        "tokens_per_s": ("tokens_out", "latency_s"), "j_per_token": ("decode_joules", "decode_tokens"),
    }
    small = n < LARGE_RUN
    lists: dict[str, tuple[list[float], list[float]]] = {}

    def as_lists(field: str) -> tuple[list[float], list[float]]:
        if field not in lists:
            lists[field] = (b[field].tolist(), a[field].tolist())
        return lists[field]

    for metric, (num, den) in ratios.items():
        if metric not in wanted:
            continue
        if metric == "j_per_token" and not (b["decode_tokens"].sum() > 0 and a["decode_tokens"].sum() > 0):
            continue  # a run without the prefill/decode split has no J per token to compare
        values = (_mean_ratio(b, num, den), _mean_ratio(a, num, den))
        if small:
            (bn, cn), (bd, cd) = as_lists(num), (as_lists(den) if den else (None, None))
            statistic = mean_statistic(bn, cn) if den is None else ratio_statistic(bn, bd, cn, cd)
            interval = paired_bootstrap(n, statistic, confidence=1 - alpha, resamples=resamples, seed=seed)
        else:
            interval = delta_ratio_interval(b[num], b[den] if den else None, a[num], a[den] if den else None,
                                            confidence=1 - alpha)
        changes.append(_interval_change(scope, metric, values, interval, n,
                                        basis if metric in ENERGY_METRICS else None))
    for metric, q in (("latency_p50", 50), ("latency_p95", 95)):
        if metric in wanted:
            import numpy as np

            values = (float(np.percentile(b["latency_s"], q)), float(np.percentile(a["latency_s"], q)))
            statistic = percentile_statistic(*as_lists("latency_s"), q)
            interval = subsampled_bootstrap(n, statistic, confidence=1 - alpha, seed=seed, subsample=LARGE_RUN // 2,
                                            resamples=resamples if small else 200,
                                            estimate=relative_change(*values))
            changes.append(_interval_change(scope, metric, values, interval, n))
    return changes


def _same_basis(baseline: str, current: str) -> str:
    if baseline != current:
        raise IPWUsageError(
            f"the baseline's energy figures use {baseline.upper()} energy and this run's use {current.upper()} energy "
            f"(--ipw-energy): they measure different things, so they are not compared. Rerun with --ipw-energy={baseline}, "
            f"or compare with a baseline measured with --ipw-energy={current}")
    return current


def compare_records(scope: str, baseline: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]], *,
                    alpha: float = 0.05, resamples: int = 1000, seed: int = 0, metrics: Iterable[str] | None = None) -> list[Change]:
    """Changes of one model × accelerator (or one domain of it) between two runs, on the shared queries."""
    import numpy as np

    wanted = set(metrics) if metrics is not None else set(METRICS) - {"coverage"}
    basis = _same_basis(run_energy_basis({"records": baseline}), run_energy_basis({"records": current}))
    old, new = as_table(baseline), as_table(current)
    old, old_rows = _one_per_query(old, np.arange(len(old)))
    new, new_rows = _one_per_query(new, np.arange(len(new)))
    return _compare_pairs(scope, _pair(old, old_rows, new, new_rows), alpha=alpha, resamples=resamples, seed=seed,
                          wanted=wanted, basis=basis)


def coverage_change(baseline: "Sequence[Mapping[str, Any]] | RecordTable",
                    current: "Sequence[Mapping[str, Any]] | RecordTable", alpha: float) -> Change | None:
    before, after = solved_by_any(baseline), solved_by_any(current)
    shared = [q for q in after if q in before]
    if not shared:
        return None
    return _proportion_change("run", "coverage", [before[q] for q in shared], [after[q] for q in shared], alpha)


def compare_runs(baseline: Mapping[str, Any], current: Mapping[str, Any], *, alpha: float = 0.05,
                 resamples: int = 1000, seed: int = 0, by_domain: bool = True) -> list[Change]:
    """Every change between two results documents: per model × accelerator, per domain, and coverage.
    Refuses (IPWUsageError) two runs whose energy figures are on different bases."""
    changes: list[Change] = []
    basis = _same_basis(run_energy_basis(baseline), run_energy_basis(current))
    options = {"alpha": alpha, "resamples": resamples, "seed": seed, "basis": basis}
    old_table, new_table = as_table(baseline["records"]), as_table(current["records"])
    keys = PairKeys.of(old_table, new_table)
    old_groups = _system_rows(old_table)
    for scope, rows in _system_rows(new_table).items():
        if scope not in old_groups:
            continue
        if has_rounds(old_table) or has_rounds(new_table):
            old, old_rows = _one_per_query(old_table, old_groups[scope])
            new, new_rows = _one_per_query(new_table, rows)
            pairs = _pair(old, old_rows, new, new_rows)
        else:
            pairs = _pair(old_table, old_groups[scope], new_table, rows, keys)
        changes.extend(_compare_pairs(scope, pairs, wanted=set(METRICS) - {"coverage"}, **options))
        if by_domain:
            for domain in sorted(set(pairs.domains.tolist())):
                changes.extend(_compare_pairs(f"{scope}/{domain}", pairs.subset(pairs.domains == domain),
                                              wanted={"accuracy", "joules"}, **options))
    cov = coverage_change(old_table, new_table, alpha)
    if cov is not None:
        changes.append(cov)
    return changes


def _failed_by_system(records: "Sequence[Mapping[str, Any]] | RecordTable") -> dict[str, list[Mapping[str, Any]]]:
    """System label -> its records that could not be answered."""
    import numpy as np

    table = as_table(records)
    codes, systems = system_codes(table)
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for position in np.flatnonzero(table.flags("error")).tolist():
        groups.setdefault(systems[codes[position]], []).append(table.records[position])
    return groups


def error_changes(baseline: Mapping[str, Any], current: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per model × accelerator, the queries each run could not answer, by kind, counted wrong or skipped
    (``--ipw-on-error``); only scopes where either run has any. All queries, not only the shared ones: a
    skipped query is in neither run's records, so pairing alone would hide it."""
    rows = []
    old_groups = {"wrong": _failed_by_system(baseline["records"]),
                  "skipped": _failed_by_system(baseline.get("skipped_queries") or [])}
    new_groups = {"wrong": _failed_by_system(current["records"]),
                  "skipped": _failed_by_system(current.get("skipped_queries") or [])}
    scopes = {scope for groups in (*old_groups.values(), *new_groups.values()) for scope in groups}
    for scope in sorted(scopes):
        sides = {side: {how: error_counts(groups[how].get(scope, [])) for how in groups}
                 for side, groups in (("baseline", old_groups), ("current", new_groups))}
        if any(counts for side in sides.values() for counts in side.values()):
            rows.append({"scope": scope, **sides})
    return rows


def error_change_line(row: Mapping[str, Any]) -> str:
    """One line, e.g. ``query errors m@a: baseline 0, now 2 (context-overflow 2)``; skipped ones say so."""
    def side(counts: Mapping[str, Mapping[str, int]]) -> str:
        total = sum(sum(c.values()) for c in counts.values())
        parts = [f"{kind} {n}" + (" skipped" if how == "skipped" else "")
                 for how, c in counts.items() for kind, n in sorted(c.items())]
        return f"{total}" + (f" ({', '.join(parts)})" if parts else "")

    return f"query errors {row['scope']}: baseline {side(row['baseline'])}, now {side(row['current'])}"


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

    return tabulate([change_cells(c) for c in changes], headers=CHANGE_HEADERS, tablefmt=fmt, disable_numparse=True)


CHANGE_HEADERS = ["scope", "metric", "baseline", "now", "change", "interval / p", "verdict", "queries"]


def change_cells(c: Change) -> list[Any]:
    """One row of the changes table (terminal, command and report show the same cells)."""
    if c.metric in PROPORTIONS:
        moved = f"{c.points:+.1f} pt" if c.points is not None else "n/a"
        evidence = f"p={c.p_value:.3g}" if c.p_value is not None else ""
    else:
        moved = f"{c.relative * 100:+.1f}%" if c.relative is not None and math.isfinite(c.relative) else "n/a"
        evidence = f"[{c.interval[0] * 100:+.1f}%, {c.interval[1] * 100:+.1f}%]" if c.interval else ""
    return [c.scope, c.label, _num(c.baseline), _num(c.current), moved, evidence, c.verdict, c.queries]
