"""The terminal report: plain text built with tabulate from summaries, records and coverage."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from .metrics import Coverage, Summary, accuracy_by, combine_provenance


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}"


def summary_table(summaries: Sequence[Summary]) -> str:
    from tabulate import tabulate

    headers = ["model", "accel", "queries", "accuracy (95% CI)", "tok out", "unscorable", "J/query", "W", "IPW (1/W)",
               "IPJ (1/J)", "J/correct", "p50 s", "p95 s", "tok/s", "energy source"]
    rows = []
    for s in summaries:
        rows.append([
            s.model, s.accelerator, s.queries,
            f"{s.accuracy:.3f} ({s.accuracy_low:.2f}-{s.accuracy_high:.2f})",
            f"{s.mean_tokens_out:.1f}",  # beside accuracy: a model that talks longer pays for it in energy
            s.unscorable, _fmt(s.mean_joules), _fmt(s.mean_watts), _fmt(s.ipw), _fmt(s.ipj),
            _fmt(s.joules_per_correct), _fmt(s.latency_p50_s), _fmt(s.latency_p95_s), _fmt(s.tokens_per_s),
            f"{s.provenance.upper()} {s.domain}",
        ])
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def domain_table(records: Iterable[Mapping[str, Any]], cov: Coverage) -> str:
    from tabulate import tabulate

    per_cell = accuracy_by(records, "domain")
    systems = sorted({(m, a) for m, a, _ in per_cell})
    domains = sorted(cov.by_domain)
    headers = ["domain", "queries"] + [f"{m}@{a}" for m, a in systems] + ["coverage"]
    rows = []
    for domain in domains:
        covered, total = cov.by_domain[domain]
        row: list[Any] = [domain, total]
        for m, a in systems:
            hit, n = per_cell.get((m, a, domain), (0, 0))
            row.append(f"{hit / n:.2f}" if n else "-")
        row.append(f"{covered / total:.2f}" if total else "-")
        rows.append(row)
    rows.append(["all", cov.queries] + [""] * len(systems) + [f"{cov.share:.2f}"])
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def provenance_notes(records: Sequence[Mapping[str, Any]], meter_notes: Mapping[str, str]) -> list[str]:
    """Lines that say where the energy figures come from; an estimate is never passed off as measured."""
    lines = []
    sensors = sorted({(r["meter"], r["provenance"]) for r in records})
    for sensor, provenance in sensors:
        lines.append(f"energy: {provenance.upper()} by {sensor}")
    overall = combine_provenance(r["provenance"] for r in records)
    if overall == "estimated":
        lines.append("energy: every figure above is an ESTIMATE from a power model, not a measurement; "
                     "run where a power sensor is readable (NVML, RAPL, powermetrics) to measure")
    elif overall == "mixed":
        lines.append("energy: this run MIXES measured and estimated figures; compare rows only with care")
    for target, note in sorted(meter_notes.items()):
        lines.append(f"meter for {target}: {note}")
    flagged = sum(1 for r in records if r.get("meter_flags"))
    if flagged:
        lines.append(f"energy: {flagged} window(s) were shorter than their sensor's update period; "
                     "their figures are imprecise (see meter_flags in --ipw-json)")
    truncated = sum(1 for r in records if r.get("truncated"))
    if truncated:
        lines.append(f"output: {truncated} answer(s) hit the token limit (--ipw-max-tokens) and were cut off")
    return lines
