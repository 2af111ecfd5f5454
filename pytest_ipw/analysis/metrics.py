"""The maths of intelligence per watt: pure functions over per-query records.

Definitions (also in README):
- accuracy = correct / queries (an unscorable answer counts as wrong and stays in the denominator);
- mean power = mean over queries of (joules / seconds) of each query's measurement window; windows whose
  energy is unknown (``meters.base.EXCLUDED_FLAGS``: a reset, an unknown wrap, a stale or unplaceable
  counter) are left out of the energy means and counted in ``energy_excluded``;
- IPW = accuracy / mean power (per watt); IPJ = accuracy / mean joules per query (per joule);
- coverage = share of queries that at least one model × accelerator answered correctly;
- prefill = window start to the first token, decode = the rest; J per input token = prefill energy / prompt
  tokens, J per output token = decode energy / tokens generated after the first (ratios of sums over queries);
- with ``--ipw-repeat``, a query's rounds are averaged into one before aggregating (correct when at least
  half its rounds are), and each query's coefficient of variation of energy over its rounds is reported.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from pytest_ipw.core.systems import record_system, system_label

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; well behaved at 0 and at ``trials``."""
    if trials <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must lie in [0, {trials}], got {successes}")
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # Clamp to the observed rate too: rounding can leave (n, n) with an upper bound of 0.999...
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), ``q`` in [0, 100]."""
    if not values:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must lie in [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    return ordered[lower] + (ordered[upper] - ordered[lower]) * (position - lower)


def safe_ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or None where the ratio is undefined (no energy measured)."""
    if denominator is None or not math.isfinite(denominator) or denominator <= 0:
        return None
    return numerator / denominator


def combine_provenance(values: Iterable[str]) -> str:
    """``measured`` or ``estimated`` when all agree, else ``mixed`` (a report must say so)."""
    distinct = set(values)
    if not distinct:
        return "none"
    if len(distinct) == 1:
        return distinct.pop()
    return "mixed"


@dataclass(frozen=True)
class Summary:
    """Aggregate of one model × accelerator over its queries."""

    model: str
    accelerator: str
    queries: int
    correct: int
    unscorable: int
    accuracy: float
    accuracy_low: float
    accuracy_high: float
    mean_joules: float
    mean_watts: float
    ipw: float | None
    ipj: float | None
    joules_per_correct: float | None
    latency_p50_s: float
    latency_p95_s: float
    tokens_per_s: float | None
    mean_tokens_out: float
    provenance: str
    meter: str
    domain: str
    energy_basis: str = "total"  # "total" or "active" (idle-subtracted): what mean_joules/mean_watts/IPW use
    idle_watts: float | None = None  # mean idle baseline of the records, when they have one
    energy_excluded: int = 0  # queries whose window's energy is unknown: not in mean_joules/mean_watts/IPW/IPJ
    #: the benchmark (test function) of this row where several benchmarks answered the same queries, else None
    benchmark: str | None = None

    @property
    def system(self) -> str:
        """``model@accelerator``, or ``model@accelerator[benchmark]`` for one benchmark among several."""
        return system_label(self.model, self.accelerator, self.benchmark)
    # prefill (to the first token) and decode (after it), over the queries whose window was split there
    phase_queries: int = 0
    prefill_joules: float | None = None  # mean per query, total energy
    prefill_s: float | None = None
    decode_joules: float | None = None
    decode_s: float | None = None
    joules_per_input_token: float | None = None  # on energy_basis
    joules_per_output_token: float | None = None  # on energy_basis
    # --ipw-repeat: rounds per query, and the spread of each query's energy over its rounds
    rounds: int = 1
    energy_cv_median: float | None = None
    energy_cv_max: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "system": self.system}


def record_energy(record: Mapping[str, Any]) -> tuple[float, float]:
    """(joules, watts) of a record on its ``energy_basis``: total, or active (idle baseline subtracted)."""
    if record.get("energy_basis", "total") != "active":
        return record["joules"], record["watts"]
    active = record.get("joules_active")
    if active is None:
        raise ValueError(f"record {record.get('query_id')!r} asks for active energy but has no idle baseline")
    seconds = record.get("seconds") or 0.0
    return active, (active / seconds if seconds > 0 else 0.0)


def summarize_systems(records: Iterable[Mapping[str, Any]]) -> list[Summary]:
    """One :class:`Summary` per system (model × accelerator, and benchmark where several ran), first-seen order."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(record_system(record), []).append(record)
    return [summarize(group) for group in groups.values()]


def phase_energy(record: Mapping[str, Any]) -> tuple[float, float] | None:
    """(prefill, decode) joules of a record on its ``energy_basis`` (active: each phase less the idle baseline
    over its time), or None when its window was not split at the first token."""
    prefill, decode = record.get("prefill_joules"), record.get("decode_joules")
    if prefill is None or decode is None:
        return None
    idle = record.get("idle_watts")
    if record.get("energy_basis", "total") == "active" and idle is not None:
        prefill = max(0.0, prefill - idle * (record.get("prefill_s") or 0.0))
        decode = max(0.0, decode - idle * (record.get("decode_s") or 0.0))
    return prefill, decode


def _phase_summary(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    split = [(r, phase_energy(r)) for r in records]
    split = [(r, e) for r, e in split if e is not None]
    if not split:
        return {}
    n = len(split)
    with_prompt = [(r, e) for r, e in split if r.get("tokens_in")]
    decode_tokens = math.fsum(r.get("decode_tokens") or 0 for r, _ in split)
    return {
        "phase_queries": n,
        "prefill_joules": math.fsum(r["prefill_joules"] for r, _ in split) / n,
        "prefill_s": math.fsum(r.get("prefill_s") or 0.0 for r, _ in split) / n,
        "decode_joules": math.fsum(r["decode_joules"] for r, _ in split) / n,
        "decode_s": math.fsum(r.get("decode_s") or 0.0 for r, _ in split) / n,
        "joules_per_input_token": safe_ratio(math.fsum(e[0] for _, e in with_prompt),
                                             math.fsum(r["tokens_in"] for r, _ in with_prompt)),
        "joules_per_output_token": safe_ratio(math.fsum(e[1] for _, e in split), decode_tokens),
    }


#: numeric record fields averaged over the rounds of one query (``--ipw-repeat``)
ROUND_MEANS = ("joules", "watts", "seconds", "latency_s", "ttft_s", "tokens_in", "tokens_out", "joules_active",
               "prefill_joules", "prefill_s", "decode_joules", "decode_s", "decode_tokens", "joules_per_input_token",
               "joules_per_output_token")


def _round_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return (record["model"], record["accelerator"], record.get("benchmark"), record["query_id"])


def has_rounds(records: Iterable[Mapping[str, Any]]) -> bool:
    """Whether any record is a second or later round of ``--ipw-repeat``."""
    return any((r.get("round") or 1) > 1 for r in records)


def collapse_rounds(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One record per query (model × accelerator × benchmark × query id): the mean of its rounds' figures,
    correct when at least half of its rounds are, with ``rounds`` saying how many. Records of a run without
    repeats are returned as they are (no copy: a million-query run stays fast)."""
    if not has_rounds(records):
        return list(records)
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(_round_key(record), []).append(record)
    collapsed: list[Mapping[str, Any]] = []
    for items in groups.values():
        if len(items) == 1:
            collapsed.append(items[0])
            continue
        merged = dict(items[0])
        for name in ROUND_MEANS:
            values = [r.get(name) for r in items]
            merged[name] = None if any(v is None for v in values) else math.fsum(values) / len(values)
        n = len(items)
        merged["correct"] = 2 * sum(bool(r.get("correct")) for r in items) >= n
        merged["unscorable"] = not merged["correct"] and 2 * sum(bool(r.get("unscorable")) for r in items) >= n
        merged["truncated"] = any(r.get("truncated") for r in items)
        merged["rounds"] = n
        merged.pop("round", None)
        collapsed.append(merged)
    return collapsed


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    """Sample standard deviation over mean, or None for fewer than two values or a zero mean."""
    if len(values) < 2:
        return None
    mean = math.fsum(values) / len(values)
    return statistics.stdev(values) / mean if mean > 0 else None


def query_rounds(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per query with several rounds: its mean energy and latency and their coefficients of variation."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(_round_key(record), []).append(record)
    rows = []
    for (model, accelerator, benchmark, query_id), items in groups.items():
        if len(items) < 2:
            continue
        joules = [float(r["joules"]) for r in items]
        latency = [float(r["latency_s"]) for r in items]
        rows.append({"model": model, "accelerator": accelerator, "benchmark": benchmark, "query_id": query_id,
                     "rounds": len(items), "mean_joules": math.fsum(joules) / len(joules),
                     "cv_joules": coefficient_of_variation(joules), "mean_latency_s": math.fsum(latency) / len(latency),
                     "cv_latency_s": coefficient_of_variation(latency),
                     "provenance": combine_provenance(str(r.get("provenance")) for r in items)})
    return rows


def round_noise(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Run-to-run noise per model × accelerator, from the queries' rounds: the median, 90th percentile and
    largest coefficient of variation of per-query energy (and of latency), and whether every round started
    from an empty prompt cache. Empty without repeats."""
    if not has_rounds(records):
        return []
    out = []
    for (model, accelerator), rows in group_by(query_rounds(records), "model", "accelerator").items():
        energy = [r["cv_joules"] for r in rows if r["cv_joules"] is not None]
        latency = [r["cv_latency_s"] for r in rows if r["cv_latency_s"] is not None]
        mine = [r for r in records if r["model"] == model and r["accelerator"] == accelerator]
        resets = {r.get("prefix_cache_reset") for r in mine}
        out.append({
            "model": model, "accelerator": accelerator, "queries": len(rows),
            "rounds": max(r["rounds"] for r in rows),
            "energy_cv_median": percentile(energy, 50) if energy else None,
            "energy_cv_p90": percentile(energy, 90) if energy else None,
            "energy_cv_max": max(energy) if energy else None,
            "latency_cv_median": percentile(latency, 50) if latency else None,
            "prefix_cache_reset": True if resets == {True} else False if True not in resets else "partly",
            "provenance": combine_provenance(r["provenance"] for r in rows),
            "meter": " + ".join(sorted({str(r.get("meter")) for r in mine})),
        })
    return out


def summarize(records: Sequence[Mapping[str, Any]]) -> Summary:
    """Aggregate the records of one model × accelerator (all records must share them).

    With ``--ipw-repeat`` the rounds of each query are averaged first (:func:`collapse_rounds`), so that a
    query counts once in accuracy and its interval, and the spread over rounds is reported beside.
    """
    if not records:
        raise ValueError("cannot summarise an empty set of records")
    models = {r["model"] for r in records}
    accelerators = {r["accelerator"] for r in records}
    systems = {record_system(r) for r in records}
    if len(models) != 1 or len(accelerators) != 1 or len(systems) != 1:
        raise ValueError("summarize() takes the records of one model × accelerator (× benchmark); group them first")
    system = systems.pop()
    benchmark = system.rsplit("[", 1)[1].rstrip("]") if system.endswith("]") else None
    noise = round_noise(records)
    records = collapse_rounds(records)
    n = len(records)
    correct = sum(1 for r in records if r["correct"])
    unscorable = sum(1 for r in records if r["unscorable"])
    accuracy = correct / n
    low, high = wilson_interval(correct, n)
    from pytest_ipw.meters.base import energy_exclusions

    energy = [record_energy(r) for r in records if not energy_exclusions(r.get("meter_flags"))]
    mean_joules: float | None = math.fsum(j for j, _ in energy) / len(energy) if energy else None
    mean_watts: float | None = math.fsum(w for _, w in energy) / len(energy) if energy else None
    idle = [r["idle_watts"] for r in records if r.get("idle_watts") is not None]
    generation_seconds = math.fsum(r["latency_s"] for r in records)
    tokens_out = sum(r["tokens_out"] for r in records)
    latencies = [r["latency_s"] for r in records]
    return Summary(
        model=models.pop(),
        accelerator=accelerators.pop(),
        benchmark=benchmark,
        queries=n,
        correct=correct,
        unscorable=unscorable,
        accuracy=accuracy,
        accuracy_low=low,
        accuracy_high=high,
        mean_joules=mean_joules,
        mean_watts=mean_watts,
        ipw=safe_ratio(accuracy, mean_watts),  # type: ignore[arg-type]
        ipj=safe_ratio(accuracy, mean_joules),  # type: ignore[arg-type]
        joules_per_correct=None if mean_joules is None else safe_ratio(mean_joules * n, correct),
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        tokens_per_s=safe_ratio(tokens_out, generation_seconds),
        mean_tokens_out=tokens_out / n,
        provenance=combine_provenance(r["provenance"] for r in records),
        meter=" + ".join(sorted({r["meter"] for r in records})),
        domain=" + ".join(sorted({r.get("energy_domain", "?") for r in records})),
        energy_basis=combine_provenance(r.get("energy_basis", "total") for r in records),
        idle_watts=math.fsum(idle) / len(idle) if idle else None,
        energy_excluded=n - len(energy),
        **_phase_summary(records),
        **({"rounds": noise[0]["rounds"], "energy_cv_median": noise[0]["energy_cv_median"],
            "energy_cv_max": noise[0]["energy_cv_max"]} if noise else {}),
    )


def group_by(records: Iterable[Mapping[str, Any]], *keys: str) -> dict[tuple[Any, ...], list[Mapping[str, Any]]]:
    """Group records by the given keys, keeping first-seen order of groups and records."""
    from operator import itemgetter

    getter = itemgetter(*keys)
    single = len(keys) == 1  # itemgetter of one key returns the bare value, not a tuple
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for record in records:
        key = getter(record)
        groups.setdefault((key,) if single else key, []).append(record)
    return groups


def accuracy_by(records: Iterable[Mapping[str, Any]], key: str) -> dict[tuple[str, str, str, str], tuple[int, int]]:
    """(system, model, accelerator, key value) -> (correct, total), e.g. accuracy per domain."""
    table: dict[tuple[str, str, str, str], tuple[int, int]] = {}
    for record in records:
        cell = (record_system(record), record["model"], record["accelerator"], record[key])
        hits, total = table.get(cell, (0, 0))
        table[cell] = (hits + bool(record["correct"]), total + 1)
    return table


def accuracy_by_domain_rows(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The results document's ``accuracy_by_domain`` (one definition for runs and merges)."""
    return [{"system": s, "model": m, "accelerator": a, "domain": d, "correct": hit, "queries": n, "accuracy": hit / n}
            for (s, m, a, d), (hit, n) in sorted(accuracy_by(records, "domain").items())]


@dataclass(frozen=True)
class Coverage:
    """Share of queries answered correctly by at least one of ``systems``."""

    systems: tuple[str, ...]
    queries: int
    covered: int
    by_domain: dict[str, tuple[int, int]]  # domain -> (covered, queries)

    @property
    def share(self) -> float:
        return self.covered / self.queries if self.queries else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "systems": list(self.systems),
            "queries": self.queries,
            "covered": self.covered,
            "coverage": self.share,
            "by_domain": {
                domain: {"queries": total, "covered": hit, "coverage": hit / total if total else 0.0}
                for domain, (hit, total) in sorted(self.by_domain.items())
            },
        }


def solved_by_any(records: Iterable[Mapping[str, Any]]) -> dict[str, bool]:
    """Query id -> whether at least one of the records of that query is correct."""
    solved: dict[str, bool] = {}
    for record in records:
        query_id = record["query_id"]
        solved[query_id] = solved.get(query_id, False) or bool(record["correct"])
    return solved


def coverage(records: Iterable[Mapping[str, Any]]) -> Coverage:
    """Coverage over every query that appears in ``records`` (keyed by query id)."""
    records = list(records)
    solved = solved_by_any(records)
    domain_of = {record["query_id"]: record["domain"] for record in records}
    systems = {record_system(record) for record in records}
    by_domain: dict[str, tuple[int, int]] = {}
    for query_id, ok in solved.items():
        hit, total = by_domain.get(domain_of[query_id], (0, 0))
        by_domain[domain_of[query_id]] = (hit + ok, total + 1)
    return Coverage(
        systems=tuple(sorted(systems)),
        queries=len(solved),
        covered=sum(solved.values()),
        by_domain=by_domain,
    )
