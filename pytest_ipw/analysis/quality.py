"""What to read beside accuracy: strict vs flexible scoring, truncated answers, and the judge's cost.

Pure functions over per-query records (so they work the same after xdist, or on a saved results file):
- **strict / flexible** accuracy: flexible is the headline accuracy (the robust extractors of
  :mod:`pytest_ipw.scoring`); strict counts only answers given in the requested format
  (``The answer is (X)``, ``#### N``...), like lm-evaluation-harness's strict-match. A wide gap means the
  model knows more than it follows instructions. Queries of a data set with a published extraction protocol
  (MMLU-Pro, GSM8K, GPQA, SuperGPQA: :mod:`pytest_ipw.queries.protocols`) take their strict reading from it instead,
  so that strict accuracy can be set beside the authors' numbers; the report names the protocol and says
  where strict and flexible differ by more than :data:`GAP_POINTS`.
- **output-length guard**: the mean output length beside accuracy, and a flag for a model whose answers
  are cut off at ``--ipw-max-tokens`` often enough to understate its accuracy.
- **judge cost**: tokens and energy the judge spent, kept apart from the model's figures.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from pytest_ipw.core.systems import record_system

if TYPE_CHECKING:
    from pytest_ipw.analysis.table import RecordTable

if TYPE_CHECKING:
    from pytest_ipw.analysis.table import RecordTable

#: share of truncated answers from which a model × accelerator is flagged
TRUNCATION_FLAG_SHARE = 0.10
#: strict/flexible gap (percentage points) from which the report says the two readings differ
GAP_POINTS = 1.0


def quality_summary(records: "Sequence[Mapping[str, Any]] | RecordTable", max_tokens: int | None = None) -> list[dict[str, Any]]:
    """One entry per system: strict/flexible accuracy, output length, truncation flag."""
    import numpy as np

    from pytest_ipw.analysis.metrics import system_codes
    from pytest_ipw.analysis.table import as_table, group_positions

    table = as_table(records)
    codes, systems = system_codes(table)
    strict_codes, strict_labels = table.codes("correct_strict")
    strict_missing = np.array([label is None for label in strict_labels], dtype=bool)[strict_codes] \
        if strict_labels else np.zeros(0, dtype=bool)
    rows = []
    for system, group in zip(systems, group_positions(codes, len(systems))):
        n = len(group)
        truncated = int(table.flags("truncated")[group].sum())
        share = truncated / n
        first = table.records[int(group[0])]
        rows.append({
            "system": system,
            "model": first["model"],
            "accelerator": first["accelerator"],
            "queries": n,
            "accuracy_flexible": int(table.flags("correct")[group].sum()) / n,
            # Records written before strict scoring existed have no strict reading: None, not a guess.
            "accuracy_strict": None if strict_missing[group].any() else int(table.flags("correct_strict")[group].sum()) / n,
            "mean_tokens_out": math.fsum(table.numbers("tokens_out")[group].tolist()) / n,
            "truncated": truncated,
            "truncated_share": share,
            "truncation_flag": share >= TRUNCATION_FLAG_SHARE,
            "max_tokens": max_tokens,
            "token_sources": sorted({str(source or "runtime") for (source,) in table.distinct("token_source", rows=group)}),
            "official_strict": _official_strict(table, group),
        })
    return rows


def _official_strict(table: "RecordTable", rows: Any) -> list[dict[str, Any]]:
    """Strict vs flexible accuracy of the queries (``rows`` of ``table``) scored under each data set's
    official protocol."""
    from pytest_ipw.queries.protocols import protocol_title

    codes, protocols = table.codes("strict_protocol")
    strict, correct = table.flags("correct_strict")[rows], table.flags("correct")[rows]
    out = []
    for code, name in sorted(((c, p) for c, p in enumerate(protocols) if p), key=lambda item: str(item[1])):
        mine = codes[rows] == code
        n = int(mine.sum())
        if not n:
            continue
        strict_share, flexible = int(strict[mine].sum()) / n, int(correct[mine].sum()) / n
        out.append({"protocol": str(name), "title": protocol_title(str(name)), "queries": n,
                    "accuracy_strict": strict_share, "accuracy_flexible": flexible,
                    "gap_points": 100 * (flexible - strict_share)})
    return out


def judge_cost(records: "Iterable[Mapping[str, Any]] | RecordTable") -> dict[str, Any] | None:
    """Totals of what the judge spent this run (cached verdicts cost nothing), or None without a judge."""
    import numpy as np

    from pytest_ipw.analysis.table import as_table

    table = as_table(records)
    judged = table.flags("judge") & _is_verdict(table)
    if not judged.any():
        return None
    fresh = judged & ~table.flags("judge.cached")
    joules = table.numbers("judge.joules")[fresh]
    joules = joules[~np.isnan(joules)]
    names_codes, names = table.codes("judge.judge")
    provenance_codes, provenances = table.codes("judge.energy_provenance")
    return {
        "judge": sorted({str(names[c]) for c in np.unique(names_codes[judged]).tolist()}),
        "verdicts": int(judged.sum()),
        "cached": int((judged & ~fresh).sum()),
        "no_verdict": int((judged & table.flags("judge.unscorable")).sum()),
        "tokens_in": int(np.nan_to_num(table.numbers("judge.tokens_in")[fresh]).sum()),
        "tokens_out": int(np.nan_to_num(table.numbers("judge.tokens_out")[fresh]).sum()),
        "seconds": math.fsum(np.nan_to_num(table.numbers("judge.latency_s")[fresh]).tolist()),
        # None only when no fresh verdict could be metered (a remote judge); all cached costs 0 J
        "joules": math.fsum(joules.tolist()) if len(joules) else (0.0 if not fresh.any() else None),
        "energy_provenance": sorted({str(provenances[c]) for c in np.unique(provenance_codes[fresh]).tolist()
                                     if provenances[c]}),
    }


def _is_verdict(table: "RecordTable") -> Any:
    """Records whose ``judge`` is a verdict (an object), not another value."""
    import numpy as np

    # a verdict always names its judge (scoring.judge); a plain value (a string, a list) has no judge.judge
    codes, names = table.codes("judge.judge")
    return np.array([name is not None for name in names], dtype=np.bool_)[codes] if names else \
        np.zeros(len(table), dtype=np.bool_)


def _protocol_notes(summary: Sequence[Mapping[str, Any]]) -> list[str]:
    """Once per official protocol in use: where this reproduction knowingly differs from the authors' script."""
    from pytest_ipw.queries.protocols import PROTOCOLS

    used = sorted({o["protocol"] for row in summary for o in row.get("official_strict") or ()})
    return [f"scoring: {PROTOCOLS[name].title} differs from the official script: {PROTOCOLS[name].deviations}"
            for name in used if name in PROTOCOLS and PROTOCOLS[name].deviations]


def quality_lines(records: "Sequence[Mapping[str, Any]] | RecordTable", max_tokens: int | None = None) -> list[str]:
    """Report lines: strict vs flexible where they differ in kind, truncation flags, judge cost."""
    lines = []
    summary = quality_summary(records, max_tokens)
    for row in summary:
        system = record_system(row)
        if row["accuracy_strict"] is not None:
            official = row["official_strict"]
            if not official:
                meaning = "only answers in the requested format"
            else:
                named = ", ".join(o["title"] for o in official)
                rest = row["queries"] - sum(o["queries"] for o in official)
                meaning = f"strict = {named}" + (f"; the project's format rule on the other {rest}" if rest else "")
            lines.append(f"scoring: {system}: accuracy {row['accuracy_flexible']:.3f} flexible, "
                         f"{row['accuracy_strict']:.3f} strict ({meaning}); "
                         f"mean {row['mean_tokens_out']:.1f} tokens out")
            for part in official:
                if abs(part["gap_points"]) > GAP_POINTS:
                    lines.append(f"scoring: {system}: on {part['queries']} queries strict ({part['title']}) "
                                 f"{part['accuracy_strict']:.3f} and flexible (the project's reading) "
                                 f"{part['accuracy_flexible']:.3f} differ by {abs(part['gap_points']):.1f} points; "
                                 "set the strict figure beside published numbers")
        if row["truncation_flag"]:
            limit = f" of --ipw-max-tokens={max_tokens}" if max_tokens else ""
            lines.append(f"OUTPUT TRUNCATED: {system}: {row['truncated']} of {row['queries']} answers "
                         f"({row['truncated_share']:.0%}) hit the token limit{limit}; its accuracy is understated. "
                         "Raise --ipw-max-tokens, or compare models only at equal limits")
        if "chunks" in row["token_sources"]:
            lines.append(f"tokens: {system}: the server sent no usage counts; output tokens are streamed chunks "
                         "counted, prompt tokens unknown")
    lines.extend(_protocol_notes(summary))
    cost = judge_cost(records)
    if cost is not None:
        energy = "n/a" if cost["joules"] is None else f"{cost['joules']:.3g} J {'/'.join(cost['energy_provenance']).upper()}"
        lines.append(f"judge: {', '.join(cost['judge'])}: {cost['verdicts']} verdicts ({cost['cached']} cached, "
                     f"{cost['no_verdict']} without a verdict), {cost['tokens_in']} tokens in, "
                     f"{cost['tokens_out']} out, {energy}; not included in the figures above")
    return lines
