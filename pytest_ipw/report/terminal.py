"""The terminal report: plain text built with tabulate from summaries, records and coverage."""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

from pytest_ipw.analysis.metrics import Coverage, Summary, accuracy_by, combine_provenance, round_noise
from pytest_ipw.analysis.table import RecordTable, as_table, label_counts


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}g}"


def summary_table(summaries: Sequence[Summary]) -> str:
    from tabulate import tabulate

    by_benchmark = any(s.benchmark for s in summaries)
    headers = ["model", "accel"] + (["benchmark"] if by_benchmark else []) + ["queries", "accuracy (95% CI)", "tok out", "unscorable", "J/query", "W", "IPW (1/W)",
               "IPJ (1/J)", "J/correct", "p50 s", "p95 s", "tok/s", "energy source"]
    rows = []
    for s in summaries:
        rows.append([
            s.model, s.accelerator, *([s.benchmark or ""] if by_benchmark else []), s.queries,
            f"{s.accuracy:.3f} ({s.accuracy_low:.2f}-{s.accuracy_high:.2f})",
            f"{s.mean_tokens_out:.1f}",  # beside accuracy: a model that talks longer pays for it in energy
            s.unscorable, _fmt(s.mean_joules), _fmt(s.mean_watts), _fmt(s.ipw), _fmt(s.ipj),
            _fmt(s.joules_per_correct), _fmt(s.latency_p50_s), _fmt(s.latency_p95_s), _fmt(s.tokens_per_s),
            f"{s.provenance.upper()} {s.domain}" + (f" ({s.energy_basis})" if s.energy_basis != "total" else ""),
        ])
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def phase_table(summaries: Sequence[Summary]) -> str | None:
    """Prefill (to the first token) and decode (after it) per model × accelerator; None when no window was
    split (a backend or meter that cannot)."""
    from tabulate import tabulate

    split = [s for s in summaries if s.phase_queries]
    if not split:
        return None
    headers = ["model", "accel", "split queries", "prefill s", "prefill J", "decode s", "decode J", "J/in tok",
               "J/out tok", "energy source"]
    rows = [[s.model, s.accelerator, f"{s.phase_queries}/{s.queries}", _fmt(s.prefill_s), _fmt(s.prefill_joules),
             _fmt(s.decode_s), _fmt(s.decode_joules), _fmt(s.joules_per_input_token), _fmt(s.joules_per_output_token),
             f"{s.provenance.upper()} {s.domain}" + (f" ({s.energy_basis})" if s.energy_basis != "total" else "")]
            for s in split]
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def phase_notes(records: "Sequence[Mapping[str, Any]] | RecordTable") -> list[str]:
    """Why some windows have no prefill/decode split, and how many splits are imprecise."""
    reasons: dict[str, int] = {}
    imprecise = 0
    import numpy as np

    codes, labels = as_table(records).codes("phase_split")
    counts = [int(n) for n in np.bincount(codes, minlength=len(labels))] if labels else []
    for label, n in zip(labels, counts):
        how = str(label or "")
        if how.startswith("none: "):
            reasons[how[len("none: "):]] = reasons.get(how[len("none: "):], 0) + n
        elif "imprecise" in how:
            imprecise += n
    lines = [f"phases: {n} window(s) not split at the first token: {reason}" for reason, n in sorted(reasons.items())]
    if imprecise:
        lines.append(f"phases: {imprecise} split(s) are imprecise: prefill or decode was shorter than the sensor's "
                     "update period (see phase_split in --ipw-json)")
    return lines


def repeat_lines(records: "Sequence[Mapping[str, Any]] | RecordTable") -> list[str]:
    """What the repeats measured: per model × accelerator, the spread of each query's energy over its rounds."""
    lines = []
    for row in round_noise(records):
        cache = {True: "reset before each round", False: "NOT reset (the backend cannot)",
                 "partly": "reset in some rounds only"}[row["prefix_cache_reset"]]
        if row["energy_cv_median"] is None:
            spread = "no energy spread (zero energy)"
        else:
            spread = (f"energy CV median {row['energy_cv_median']:.1%}, p90 {row['energy_cv_p90']:.1%}, max "
                      f"{row['energy_cv_max']:.1%}")
        latency = "" if row["latency_cv_median"] is None else f"; latency CV median {row['latency_cv_median']:.1%}"
        lines.append(f"repeats: {row['model']}@{row['accelerator']}: {row['rounds']} rounds of {row['queries']} "
                     f"queries, {spread}{latency} ({row['provenance'].upper()} by {row['meter']}; prompt cache {cache})")
    if lines:
        lines.append("repeats: the IPW study cites 10-15% run-to-run noise of software energy counters; the spread "
                     "above is what this run measured (per query, over its rounds)")
    return lines


def domain_table(records: Iterable[Mapping[str, Any]], cov: Coverage) -> str:
    from tabulate import tabulate

    per_cell = {(system, value): cell for (system, _, _, value), cell in accuracy_by(records, "domain").items()}
    systems = sorted({system for system, _ in per_cell})
    domains = sorted(cov.by_domain)
    headers = ["domain", "queries"] + systems + ["coverage"]
    rows = []
    for domain in domains:
        covered, total = cov.by_domain[domain]
        row: list[Any] = [domain, total]
        for system in systems:
            hit, n = per_cell.get((system, domain), (0, 0))
            row.append(f"{hit / n:.2f}" if n else "-")
        row.append(f"{covered / total:.2f}" if total else "-")
        rows.append(row)
    rows.append(["all", cov.queries] + [""] * len(systems) + [f"{cov.share:.2f}"])
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def provenance_notes(records: "Sequence[Mapping[str, Any]] | RecordTable", meter_notes: Mapping[str, str],
                     workers: Any = 0) -> list[str]:
    """Lines that say where the energy figures come from; an estimate is never passed off as measured."""
    import numpy as np

    table = as_table(records)
    lines = []
    sensors = sorted((str(m), str(p)) for m, p in table.distinct("meter", "provenance"))
    for sensor, provenance in sensors:
        lines.append(f"energy: {provenance.upper()} by {sensor}")
    parts = sorted({part for label, _ in label_counts(table, "energy_parts") for part in label})
    for sensor, provenance, domain in parts:
        lines.append(f"energy:   part {provenance.upper()} {domain} by {sensor}")
    lines.extend(_basis_notes(table))
    overall = combine_provenance([p for _, p in sensors] + [p[1] for p in parts])
    if overall == "estimated":
        lines.append("energy: every figure above is an ESTIMATE from a power model, not a measurement; "
                     "run where a power sensor is readable (NVML, RAPL, powermetrics) to measure")
    elif overall == "mixed":
        lines.append("energy: this run MIXES measured and estimated figures; compare rows only with care")
    for target, note in sorted(meter_notes.items()):
        lines.append(f"meter for {target}: {note}")
    flagged = [(flags, n) for flags, n in label_counts(table, "meter_flags") if flags]
    lines.extend(_flag_notes(flagged))
    try:
        workers = int(workers or 0)
    except (TypeError, ValueError):
        workers = 2  # xdist's "auto"/"logical" before it is resolved: several workers either way
    shared = sum(n for flags, n in flagged if any(f.startswith("energy-shared:") for f in flags))
    if shared:
        lines.append(f"energy: {shared} query window(s) overlapped others on the same sensor ({workers or 'several'} "
                     "xdist workers); each stretch of time's energy was split among the queries running then, not "
                     "charged to each (README: Concurrency); the raw window energy is joules_window in --ipw-json")
    elif workers > 1:
        lines.append(f"energy: {workers} xdist workers ran, and no two query windows overlapped on one sensor")
    # a query that could not be answered has no first token by definition (QUERY ERRORS names those)
    # null, not absent (older files lack the field)
    no_ttft = int((np.isnan(table.numbers("ttft_s")) & table.present("ttft_s") & ~table.flags("error")).sum())
    if no_ttft:
        lines.append(f"timing: {no_ttft} of {len(table)} answer(s) have no time to first token (ttft_s is null; "
                     "backend_extra.ttft_definition in --ipw-json says why, where the backend knows)")
    truncated = int(table.flags("truncated").sum())
    if truncated:
        lines.append(f"output: {truncated} answer(s) hit the token limit (--ipw-max-tokens) and were cut off")
    return lines


def _basis_notes(table: "RecordTable") -> list[str]:
    """Which energy IPW used, and the idle baseline behind "active" energy."""
    import numpy as np

    if not len(table):
        return []
    bases = set(table.codes("energy_basis", "total")[1])
    idle = table.numbers("idle_watts")
    idle = idle[~np.isnan(idle)]
    baseline = (f"idle baseline {idle.sum() / len(idle):.3g} W, measured by the same meter before the queries"
                if len(idle) else "no idle baseline (--ipw-idle-seconds=0)")
    if bases == {"active"}:
        return [f"energy: IPW, IPJ, J/query and W use ACTIVE energy = total - idle power x window ({baseline}); "
                "total energy is joules in --ipw-json"]
    return [f"energy: IPW, IPJ, J/query and W use TOTAL energy ({baseline}"
            + ("; idle-subtracted energy is joules_active in --ipw-json, --ipw-energy=active uses it)" if len(idle) else ")")]


def _flag_notes(flagged: Sequence[tuple[tuple[str, ...], int]]) -> list[str]:
    """Lines about the windows' meter flags (``flagged``: each distinct set of flags, and how many windows)."""
    from pytest_ipw.meters.base import FLAG_BELOW_IDLE, FLAG_SHORT_WINDOW, energy_exclusions

    excluded: dict[str, int] = {}
    left_out = 0
    for flags, n in flagged:
        unknown = energy_exclusions(flags)
        left_out += n if unknown else 0
        for flag in unknown:
            excluded[flag] = excluded.get(flag, 0) + n
    lines = [f"energy: {left_out} window(s) LEFT OUT of J/query, W, IPW and IPJ because their energy is unknown ("
             + ", ".join(f"{n} {flag}" for flag, n in sorted(excluded.items()))
             + "); their queries still count for accuracy"] if left_out else []
    counts: dict[str, int] = {}
    for flags, n in flagged:
        for flag in flags:
            counts[flag] = counts.get(flag, 0) + n
    for flag in excluded:
        counts.pop(flag, None)
    if counts.pop(FLAG_SHORT_WINDOW, 0):
        short = sum(n for flags, n in flagged if FLAG_SHORT_WINDOW in flags)
        lines.append(f"energy: {short} window(s) were shorter than their sensor's update period; "
                     "their figures are imprecise (see meter_flags in --ipw-json)")
    below = counts.pop(FLAG_BELOW_IDLE, 0)
    if below:
        lines.append(f"energy: {below} window(s) used less than the idle baseline predicts; their active energy is 0")
    for flag, n in sorted(counts.items()):
        lines.append(f"energy: {n} window(s) flagged {flag} (see meter_flags in --ipw-json)")
    return lines


#: what each kind of query failure means, and the fix; the report line reads "<model>: N queries <this>"
_ERROR_TEXT = {
    "context-overflow": "exceeded the context window{window}{longest}; raise --ipw-context (or the server's "
                        "context size) or drop them",
    "rejected": "{were} rejected by the server ({example})",
    "timeout": "got no answer within --ipw-timeout; raise it for slow models",
    "backend-error": "made the runtime fail ({example})",
}
_SHOWN_IDS = 10


def error_lines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per system and kind of queries that could not be answered (the results' ``query_errors``),
    saying how accuracy treated them and which they were."""
    lines = []
    for row in rows:
        n = row["queries"]
        text = _ERROR_TEXT[row["kind"]].format(
            window=f" of {row['context_window']} tokens" if row.get("context_window") else "",
            longest=f" (longest prompt {row['longest_prompt_tokens']} tokens)" if row.get("longest_prompt_tokens") else "",
            example=" ".join(str(row.get("example") or "").split())[:160], were="was" if n == 1 else "were")
        ids = ", ".join(row["query_ids"][:_SHOWN_IDS]) + (f" and {n - _SHOWN_IDS} more" if n > _SHOWN_IDS else "")
        if row["counted"] == "skipped":
            head, treated = "QUERIES SKIPPED", "left out of accuracy and every figure (--ipw-on-error=skip)"
        else:
            head, treated = "QUERY ERRORS", "counted as wrong, in the denominator"
        lines.append(f"{head}: {row['system']}: {n} quer{'y' if n == 1 else 'ies'} {text}; "
                     f"{treated}: {ids}")
    return lines
