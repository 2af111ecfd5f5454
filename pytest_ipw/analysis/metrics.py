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
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from pytest_ipw.core.systems import record_system, system_label

if TYPE_CHECKING:
    from pytest_ipw.analysis.table import RecordTable

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
    if len(values) == 0:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must lie in [0, 100], got {q}")
    import numpy as np

    ordered = np.sort(np.asarray(values, dtype=np.float64))
    position = (len(ordered) - 1) * q / 100
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    low, high = float(ordered[lower]), float(ordered[upper])
    return low + (high - low) * (position - lower)


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


def energy_columns(records: "Sequence[Mapping[str, Any]] | RecordTable") -> tuple[Any, Any]:
    """Per record, (joules, watts) on its ``energy_basis`` as arrays: total, or active (the idle baseline
    subtracted; watts = active joules over the window's seconds, 0 for an empty window)."""
    import numpy as np

    from pytest_ipw.analysis.table import as_table

    table = as_table(records)
    active = _on_active_basis(table)
    joules, watts = table.numbers("joules"), table.numbers("watts")
    if not active.any():
        return joules, watts
    joules_active, seconds = table.numbers("joules_active"), np.nan_to_num(table.numbers("seconds"))
    lacking = active & np.isnan(joules_active)
    if lacking.any():
        query_id = table.records[int(np.flatnonzero(lacking)[0])].get("query_id")
        raise ValueError(f"record {query_id!r} asks for active energy but has no idle baseline")
    active_watts = np.divide(joules_active, seconds, out=np.zeros(len(table)), where=seconds > 0)
    return np.where(active, joules_active, joules), np.where(active, active_watts, watts)


def _on_active_basis(table: "RecordTable") -> Any:
    """Per record, whether its ``energy_basis`` is active (idle-subtracted); absent means total."""
    import numpy as np

    codes, labels = table.codes("energy_basis", "total")
    return np.array([label == "active" for label in labels], dtype=np.bool_)[codes] if labels else \
        np.zeros(len(table), dtype=np.bool_)


def record_energy(record: Mapping[str, Any]) -> tuple[float, float]:
    """(joules, watts) of one record on its ``energy_basis`` (the rule: :func:`energy_columns`)."""
    joules, watts = energy_columns([record])
    return float(joules[0]), float(watts[0])


def excluded_windows(records: "Sequence[Mapping[str, Any]] | RecordTable") -> Any:
    """Per record, whether its window's energy is unknown (``meters.base.EXCLUDED_FLAGS``), as a bool array."""
    import numpy as np

    from pytest_ipw.analysis.table import as_table
    from pytest_ipw.meters.base import energy_exclusions

    def make(t: "RecordTable") -> Any:
        codes, labels = t.codes("meter_flags")  # each distinct set of flags once
        unknown = np.array([bool(energy_exclusions(flags)) for flags in labels], dtype=np.bool_)
        return unknown[codes] if len(labels) else np.zeros(len(t), dtype=np.bool_)

    return as_table(records).derived("excluded", make)


def system_codes(records: "Sequence[Mapping[str, Any]] | RecordTable") -> tuple[Any, list[str]]:
    """Per record, the code of its system (:func:`~pytest_ipw.core.systems.record_system`), and the systems
    in first-seen order."""
    from pytest_ipw.analysis.table import as_table, encode

    table = as_table(records)
    def make(t: "RecordTable") -> tuple[Any, list[str]]:
        codes, labels = t.codes("system")
        if all(labels):  # every record carries its label (a finished run's records do)
            return codes, [str(label) for label in labels]
        return encode(list(map(record_system, t.records)))

    return table.derived("system", make)


def summarize_systems(records: "Sequence[Mapping[str, Any]] | RecordTable") -> list[Summary]:
    """One :class:`Summary` per system (model × accelerator, and benchmark where several ran), first-seen order."""
    from pytest_ipw.analysis.table import as_table, group_positions

    table = as_table(records)
    if not len(table):
        return []
    codes, systems = system_codes(table)
    return [_summary(table, rows, system) for rows, system in zip(group_positions(codes, len(systems)), systems)]


def phase_columns(records: "Sequence[Mapping[str, Any]] | RecordTable") -> tuple[Any, Any]:
    """Per record, (prefill, decode) joules on its ``energy_basis`` (active: each phase less the idle baseline
    over its time, not below 0); NaN where the window was not split at the first token."""
    import numpy as np

    from pytest_ipw.analysis.table import as_table

    table = as_table(records)
    prefill, decode = table.numbers("prefill_joules"), table.numbers("decode_joules")
    split = ~(np.isnan(prefill) | np.isnan(decode))
    prefill, decode = np.where(split, prefill, np.nan), np.where(split, decode, np.nan)
    idle = table.numbers("idle_watts")
    active = _on_active_basis(table) & ~np.isnan(idle)
    if active.any():
        prefill = np.where(active, np.maximum(0.0, prefill - idle * np.nan_to_num(table.numbers("prefill_s"))), prefill)
        decode = np.where(active, np.maximum(0.0, decode - idle * np.nan_to_num(table.numbers("decode_s"))), decode)
    return prefill, decode


def phase_energy(record: Mapping[str, Any]) -> tuple[float, float] | None:
    """(prefill, decode) joules of one record on its ``energy_basis``, or None when its window was not split
    at the first token (the rule: :func:`phase_columns`)."""
    prefill, decode = phase_columns([record])
    return None if math.isnan(prefill[0]) else (float(prefill[0]), float(decode[0]))


def _fsum(values: Any) -> float:
    # math.fsum: correctly rounded whatever the order, so a summary does not depend on how records were grouped
    return math.fsum(values.tolist())


def _phase_summary(table: "RecordTable", rows: Any) -> dict[str, Any]:
    import numpy as np

    prefill, decode = (column[rows] for column in phase_columns(table))
    split = ~np.isnan(prefill)
    n = int(split.sum())
    if not n:
        return {}

    def split_numbers(name: str) -> Any:
        return np.nan_to_num(table.numbers(name)[rows][split])  # absent or null counts as 0

    tokens_in = split_numbers("tokens_in")
    with_prompt = tokens_in != 0
    return {
        "phase_queries": n,
        "prefill_joules": _fsum(table.numbers("prefill_joules")[rows][split]) / n,
        "prefill_s": _fsum(split_numbers("prefill_s")) / n,
        "decode_joules": _fsum(table.numbers("decode_joules")[rows][split]) / n,
        "decode_s": _fsum(split_numbers("decode_s")) / n,
        "joules_per_input_token": safe_ratio(_fsum(prefill[split][with_prompt]), _fsum(tokens_in[with_prompt])),
        "joules_per_output_token": safe_ratio(_fsum(decode[split]), _fsum(split_numbers("decode_tokens"))),
    }


#: numeric record fields averaged over the rounds of one query (``--ipw-repeat``)
ROUND_MEANS = ("joules", "watts", "seconds", "latency_s", "ttft_s", "tokens_in", "tokens_out", "joules_active",
               "prefill_joules", "prefill_s", "decode_joules", "decode_s", "decode_tokens", "joules_per_input_token",
               "joules_per_output_token")


def _round_key(record: Mapping[str, Any]) -> tuple[Any, ...]:
    return (record["model"], record["accelerator"], record.get("benchmark"), record["query_id"])


def has_rounds(records: "Iterable[Mapping[str, Any]] | RecordTable") -> bool:
    """Whether any record is a second or later round of ``--ipw-repeat``."""
    from pytest_ipw.analysis.table import RecordTable

    if isinstance(records, RecordTable):
        return bool((records.numbers("round") > 1).any())
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


def query_rounds(records: "Sequence[Mapping[str, Any]] | RecordTable") -> list[dict[str, Any]]:
    """Per query with several rounds: its mean energy and latency and their coefficients of variation."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for record in _records_of(records):
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


def _records_of(records: "Sequence[Mapping[str, Any]] | RecordTable") -> Sequence[Mapping[str, Any]]:
    from pytest_ipw.analysis.table import RecordTable

    return records.records if isinstance(records, RecordTable) else records


def round_noise(records: "Sequence[Mapping[str, Any]] | RecordTable") -> list[dict[str, Any]]:
    """Run-to-run noise per model × accelerator, from the queries' rounds: the median, 90th percentile and
    largest coefficient of variation of per-query energy (and of latency), and whether every round started
    from an empty prompt cache. Empty without repeats."""
    if not has_rounds(records):
        return []
    records = _records_of(records)
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


def summarize(records: "Sequence[Mapping[str, Any]] | RecordTable") -> Summary:
    """Aggregate the records of one model × accelerator (all records must share them).

    With ``--ipw-repeat`` the rounds of each query are averaged first (:func:`collapse_rounds`), so that a
    query counts once in accuracy and its interval, and the spread over rounds is reported beside.
    """
    from pytest_ipw.analysis.table import as_table

    table = as_table(records)
    if not len(table):
        raise ValueError("cannot summarise an empty set of records")
    summaries = summarize_systems(table)
    models, accelerators = table.codes("model")[1], table.codes("accelerator")[1]
    if len(summaries) != 1 or len(models) != 1 or len(accelerators) != 1:
        raise ValueError("summarize() takes the records of one model × accelerator (× benchmark); group them first")
    return summaries[0]


def _distinct(table: "RecordTable", rows: Any, name: str, default: Any) -> list[Any]:
    import numpy as np

    codes, labels = table.codes(name, default)
    return [labels[c] for c in np.unique(codes[rows]).tolist()]


def _summary(table: "RecordTable", rows: Any, system: str) -> Summary:
    """The summary of one system's records (``rows`` of ``table``)."""
    import numpy as np

    from pytest_ipw.analysis.table import RecordTable

    noise = round_noise([table.records[i] for i in rows.tolist()]) if has_rounds(table) else []
    if noise:  # --ipw-repeat: one record per query, the mean of its rounds
        table = RecordTable(collapse_rounds([table.records[i] for i in rows.tolist()]))
        rows = np.arange(len(table))
    n = len(rows)
    correct = int(table.flags("correct")[rows].sum())
    unscorable = int(table.flags("unscorable")[rows].sum())
    accuracy = correct / n
    low, high = wilson_interval(correct, n)
    counted = rows[~excluded_windows(table)[rows]]
    joules, watts = (column[counted] for column in energy_columns(table)) if len(counted) else ([], [])
    mean_joules: float | None = _fsum(np.asarray(joules)) / len(counted) if len(counted) else None
    mean_watts: float | None = _fsum(np.asarray(watts)) / len(counted) if len(counted) else None
    idle = table.numbers("idle_watts")[rows]
    idle = idle[~np.isnan(idle)]
    latencies = table.numbers("latency_s")[rows]
    generation_seconds = _fsum(latencies)
    tokens_out = _fsum(table.numbers("tokens_out")[rows])
    benchmark = system.rsplit("[", 1)[1].rstrip("]") if system.endswith("]") else None
    first = int(rows[0])
    return Summary(
        model=str(table.records[first]["model"]),
        accelerator=str(table.records[first]["accelerator"]),
        benchmark=benchmark,
        queries=n,
        correct=correct,
        unscorable=unscorable,
        accuracy=accuracy,
        accuracy_low=low,
        accuracy_high=high,
        mean_joules=mean_joules,  # type: ignore[arg-type]
        mean_watts=mean_watts,  # type: ignore[arg-type]
        ipw=safe_ratio(accuracy, mean_watts),  # type: ignore[arg-type]
        ipj=safe_ratio(accuracy, mean_joules),  # type: ignore[arg-type]
        joules_per_correct=None if mean_joules is None else safe_ratio(mean_joules * n, correct),
        latency_p50_s=percentile(latencies, 50),
        latency_p95_s=percentile(latencies, 95),
        tokens_per_s=safe_ratio(tokens_out, generation_seconds),
        mean_tokens_out=tokens_out / n,
        provenance=combine_provenance(_distinct(table, rows, "provenance", None)),
        meter=" + ".join(sorted(_distinct(table, rows, "meter", None))),
        domain=" + ".join(sorted(_distinct(table, rows, "energy_domain", "?"))),
        energy_basis=combine_provenance(_distinct(table, rows, "energy_basis", "total")),
        idle_watts=_fsum(idle) / len(idle) if len(idle) else None,
        energy_excluded=n - len(counted),
        **_phase_summary(table, rows),
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


def accuracy_by(records: "Iterable[Mapping[str, Any]] | RecordTable",
                key: str) -> dict[tuple[str, str, str, str], tuple[int, int]]:
    """(system, model, accelerator, key value) -> (correct, total), e.g. accuracy per domain; first-seen order."""
    import numpy as np

    from pytest_ipw.analysis.table import as_table, combine

    table = as_table(records)
    if not len(table):
        return {}
    fields = [system_codes(table), table.codes("model"), table.codes("accelerator"), table.codes(key)]
    cells, size, first = combine(*((codes, len(labels)) for codes, labels in fields))
    totals = np.bincount(cells, minlength=size)
    hits = np.bincount(cells, weights=table.flags("correct"), minlength=size)
    out = {}
    for cell, position in enumerate(first.tolist()):
        out[tuple(labels[codes[position]] for codes, labels in fields)] = (int(hits[cell]), int(totals[cell]))
    return out  # type: ignore[return-value]


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


def solved_by_any(records: "Iterable[Mapping[str, Any]] | RecordTable") -> dict[str, bool]:
    """Query id -> whether at least one of the records of that query is correct (first-seen order)."""
    import numpy as np

    from pytest_ipw.analysis.table import as_table

    table = as_table(records)
    codes, query_ids = table.codes("query_id")
    hits = np.bincount(codes, weights=table.flags("correct"), minlength=len(query_ids)) > 0
    return dict(zip(query_ids, hits.tolist()))


def coverage(records: "Iterable[Mapping[str, Any]] | RecordTable") -> Coverage:
    """Coverage over every query that appears in ``records`` (keyed by query id; a query's domain is that of
    its last record)."""
    import numpy as np

    from pytest_ipw.analysis.table import as_table, last_positions

    table = as_table(records)
    codes, query_ids = table.codes("query_id")
    solved = np.bincount(codes, weights=table.flags("correct"), minlength=len(query_ids)) > 0
    domain_codes, domains = table.codes("domain")
    query_domain = domain_codes[last_positions(codes, len(query_ids))]  # of each query's last record
    covered_by = np.bincount(query_domain, weights=solved, minlength=len(domains))
    total_by = np.bincount(query_domain, minlength=len(domains))
    by_domain = {domains[d]: (int(covered_by[d]), int(total_by[d])) for d in range(len(domains)) if total_by[d]}
    systems = system_codes(table)[1]
    return Coverage(
        systems=tuple(sorted(systems)),
        queries=len(query_ids),
        covered=int(solved.sum()),
        by_domain=by_domain,
    )
