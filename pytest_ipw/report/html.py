"""The report folder (``--ipw-report=DIR``, ``pytest-ipw report``): a self-contained HTML page, a Markdown
summary, the figures as PNG files and the analyses as JSON.

- ``DIR/index.html``: tables and figures (PNG inlined as data: URIs, no script, no network); a
  Content-Security-Policy forbids scripts and remote loads as a second line of defence. Every piece of
  text that comes from a run (model answers, prompts, names) is HTML-escaped: answers are untrusted.
- ``DIR/summary.md``: the same tables in GitHub Markdown, linking ``figures/*.png``.
- ``DIR/figures/*.png``, ``DIR/analysis.json``.

Every figure and every energy table names the provenance of its energy figures (measured or estimated).
"""

from __future__ import annotations

import base64
import html
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from pytest_ipw import __version__
from pytest_ipw.analysis.study import (
    check_records,
    CoverageAnalysis,
    LocalVsReference,
    RoutingAnalysis,
    coverage_analysis,
    coverage_by_release,
    local_vs_reference,
    pareto_frontier,
    reference_models,
    release_trends,
    routing_analysis,
    summaries_of,
    model_of_systems,
    system_of,
)
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.analysis.metrics import Summary, combine_provenance, round_noise, system_codes
from pytest_ipw.analysis.table import PartialRecords, RecordTable, as_table
from pytest_ipw.hardware.card import card_differences
from pytest_ipw.analysis.model_info import ModelInfo, parse_model_info
from pytest_ipw.core.files import dump_json
from pytest_ipw.core.systems import record_system

MAX_ANSWER_ROWS = 2000
MAX_TEXT = 1200
HistoryEntry = tuple[str, Sequence[Mapping[str, Any]]]  # (run label, its summary rows)


class Safe(str):
    """HTML built here from escaped parts; every other string is escaped when written."""


def esc(value: Any) -> str:
    if isinstance(value, Safe):
        return value
    return html.escape("" if value is None else str(value), quote=True)


def _clip(text: Any, limit: int = MAX_TEXT) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


# -- provenance ------------------------------------------------------------------------------------

def energy_caption(records: "Iterable[Mapping[str, Any]] | RecordTable", basis: str = "total", rows: Any = None) -> str:
    """One line naming every sensor behind the energy figures (of ``rows`` of the records, where given), and
    whether they were measured."""
    sensors = sorted({(str(p), str(m)) for p, m in as_table(records).distinct("provenance", "meter", default="unknown",
                                                                              rows=rows)})
    overall = combine_provenance(p for p, _ in sensors)
    parts = [f"{p.upper()} by {m}" for p, m in sensors]
    head = {"measured": "energy MEASURED", "estimated": "energy ESTIMATED (a power model, not a measurement)",
            "mixed": "energy MIXED: measured and estimated figures, compare with care"}.get(overall, f"energy {overall}")
    basis_note = "; active energy (above idle)" if basis == "active" else ""
    return f"{head}{basis_note} — " + "; ".join(parts)


def provenance_lines(document: Mapping[str, Any], records: "Sequence[Mapping[str, Any]] | RecordTable") -> list[str]:
    from pytest_ipw.report.terminal import provenance_notes

    notes: dict[str, str] = {}
    for target, info in (document.get("settings", {}).get("meters") or {}).items():
        if isinstance(info, Mapping) and info.get("fallback_reason"):
            notes[str(target)] = str(info["fallback_reason"])
    for run in document.get("runs", []) or []:
        for target, info in (run.get("meters") or {}).items():
            if isinstance(info, Mapping) and info.get("fallback_reason"):
                notes[f"{target} ({run.get('host', '?')})"] = str(info["fallback_reason"])
    return provenance_notes(records, notes) + [f"merge: {note}" for note in document.get("merge_notes") or []]


# -- the analyses the report shows -----------------------------------------------------------------

@dataclass
class ReportData:
    """Everything the report shows, computed once from the records (pure)."""

    title: str
    records: Sequence[Mapping[str, Any]]
    table: RecordTable  # the records as columns, for every figure computed over all of them
    basis: str
    summaries: list[Summary]
    coverage: CoverageAnalysis
    model_coverage: CoverageAnalysis | None
    versus: LocalVsReference | None
    routing: RoutingAnalysis | None
    routing_note: str | None
    pareto: list[Any]
    trends: list[Any]
    undated: list[str]
    release_coverage: list[Any]
    history: list[HistoryEntry]
    caption: str
    notes: list[str] = field(default_factory=list)
    #: (run / target label, comparability card) of every run the report covers, and where they differ
    cards: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)
    card_warnings: list[str] = field(default_factory=list)


def analyse(document: Mapping[str, Any], model_info: Mapping[str, ModelInfo] | None = None,
            history: Sequence[HistoryEntry] = (), title: str = "pytest-ipw report") -> ReportData:
    import numpy as np

    records = document.get("records") or []
    if not len(records):
        raise IPWUsageError("the run has no records to report (no query finished)")
    if not isinstance(records, PartialRecords):  # records read as columns were checked as they were read
        records = list(records)
        check_records(records, "the report's results")
    table = as_table(records)
    infos = dict(model_info or {})
    if not infos and isinstance(document.get("model_info"), Mapping):
        infos = parse_model_info(document["model_info"], "the results file's model_info")
    basis = (document.get("settings", {}).get("energy") or {}).get("basis")
    if basis is None:  # a merged file: the runs' own basis, when they all agree
        bases = table.codes("energy_basis")[1]
        basis = bases[0] if len(bases) == 1 else None
    basis = str(basis or "total")
    if basis == "active" and np.isnan(table.numbers("joules_active")).any():
        basis = "total"  # some record has no idle-subtracted figure
    summaries = summaries_of(table)
    models = {str(m) for m in table.codes("model")[1]}
    accelerators = {str(a) for a in table.codes("accelerator")[1]}
    references = reference_models(infos, table)
    versus = None
    if references and models - set(references):
        versus = local_vs_reference(table, references)
    routing, routing_note = None, None
    local_systems = {system for system, model in model_of_systems(table).items() if model not in references}
    if len(local_systems) >= 2:
        parameters = {n: i.parameters for n, i in infos.items() if i.parameters}
        try:
            routing = routing_analysis(table, parameters=parameters, reference=references, basis=basis)
        except IPWUsageError as exc:
            routing_note = str(exc)
    else:
        routing_note = "routing needs at least two local model × accelerator systems; this run has " + \
                       (", ".join(sorted(local_systems)) or "none")
    trends, undated = release_trends(summaries, infos)
    cards = card_entries(document)
    return ReportData(
        title=title,
        records=records,
        table=table,
        basis=basis,
        summaries=summaries,
        coverage=coverage_analysis(table),
        model_coverage=coverage_analysis(table, unit="model") if len(models) > 1 and len(accelerators) > 1 else None,
        versus=versus,
        routing=routing,
        routing_note=routing_note,
        pareto=pareto_frontier(summaries),
        trends=trends,
        undated=undated if infos else [],
        release_coverage=coverage_by_release(table, infos),
        history=list(history),
        caption=energy_caption(table, basis),
        notes=provenance_lines(document, table),
        cards=cards,
        card_warnings=card_differences(cards) if len(cards) > 1 else [],
    )


def card_entries(document: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    """The comparability cards of a results document: its own (one per target), or those of each merged run."""
    entries = [(str(target), card) for target, card in (document.get("comparability") or {}).items()
               if isinstance(card, Mapping)]
    for run in document.get("runs") or []:
        for target, card in (run.get("comparability") or {}).items():
            if isinstance(card, Mapping):
                entries.append((f"{target} ({run.get('source')}, {run.get('host')})", card))
    return entries


MAX_POWER_STEPS = 2000


def _power_series(table: RecordTable) -> dict[str, tuple[list[float], list[float], str]]:
    """Per system: cumulative window time and each query's mean power (step plot, last value repeated).

    Beyond ``MAX_POWER_STEPS`` queries, consecutive queries are pooled (their joules over their seconds),
    which keeps the figure readable and its area (energy) unchanged.
    """
    import numpy as np

    from pytest_ipw.analysis.table import group_positions

    codes, systems = system_codes(table)
    seconds = table.numbers("seconds")
    seconds = np.where(np.nan_to_num(seconds) != 0, seconds, np.nan_to_num(table.numbers("latency_s")))
    joules, watts = np.nan_to_num(table.numbers("joules")), np.nan_to_num(table.numbers("watts"))
    series = {}
    for name, rows in zip(systems, group_positions(codes, len(systems))):
        pool = -(-len(rows) // MAX_POWER_STEPS)
        starts = np.arange(0, len(rows), pool)
        spans = np.add.reduceat(seconds[rows], starts)
        if pool == 1:
            steps = watts[rows]
        else:
            energy = np.add.reduceat(joules[rows], starts)
            steps = np.divide(energy, spans, out=np.zeros(len(spans)), where=spans > 0)
        times = [0.0] + np.cumsum(spans).tolist()
        values = steps.tolist()
        values.append(values[-1])
        series[name] = (times, values, combine_provenance(str(p) for (p,) in table.distinct(
            "provenance", default="unknown", rows=rows)))
    return series


def _history_series(history: Sequence[HistoryEntry], metric: str) -> tuple[list[str], dict[str, list[tuple[str, float | None, str]]]]:
    labels = [label for label, _ in history]
    series: dict[str, list[tuple[str, float | None, str]]] = {}
    for label, summaries in history:
        for s in summaries:
            series.setdefault(record_system(s), []).append(
                (label, s.get(metric), str(s.get("provenance", "unknown"))))
    return labels, series


def _figures(data: ReportData) -> dict[str, tuple[str, bytes]]:
    """name -> (alt text, PNG bytes)."""
    import numpy as np

    from pytest_ipw.report import plots

    figures: dict[str, tuple[str, bytes]] = {}
    cov = data.coverage
    domains = sorted(cov.by_domain)
    columns = list(cov.members) + ["coverage (any)"]
    values = [[cov.accuracy_by_domain[(m, d)].share if (m, d) in cov.accuracy_by_domain else None for m in cov.members]
              + [cov.by_domain[d].share] for d in domains]
    figures["coverage"] = ("Per-domain accuracy and coverage heat map",
                           plots.coverage_heatmap(domains, columns, values, data.caption))
    figures["pareto"] = ("Accuracy versus energy per query, Pareto frontier", plots.pareto_plot(data.pareto, data.caption))
    figures["ipw"] = ("IPW per model and accelerator", plots.ipw_bars(data.summaries, data.caption))
    figures["power"] = ("Per-query mean power over cumulative measured time",
                        plots.power_trace(_power_series(data.table), data.caption))
    if data.routing is not None:
        codes, systems = system_codes(data.table)
        routed_systems = set(data.routing.candidates) | {data.routing.fallback}
        routed = np.isin(codes, [code for code, system in enumerate(systems) if system in routed_systems])
        figures["routing"] = ("Energy per query of routing strategies",
                              plots.routing_plot(data.routing, energy_caption(data.table, data.basis, routed)))
    if data.trends or data.release_coverage:
        figures["release"] = ("IPW and coverage by model release date",
                              plots.release_plot(data.trends, data.release_coverage, data.caption))
    if len(data.history) >= 2:
        labels, series = _history_series(data.history, "ipw")
        history_caption = "energy per saved run: " + ", ".join(
            sorted({str(s.get("provenance", "unknown")).upper() for _, rows in data.history for s in rows}))
        figures["history"] = ("IPW across saved runs (commits)", plots.history_plot(labels, series, "IPW (1/W)", history_caption))
    return figures


# -- tables (shared by HTML and Markdown) ----------------------------------------------------------

Table = tuple[list[str], list[list[Any]]]


def summary_rows(summaries: Sequence[Summary]) -> Table:
    headers = ["model", "accelerator", "queries", "accuracy (95% CI)", "unscorable", "J/query", "W", "IPW (1/W)",
               "IPJ (1/J)", "J/correct", "p50 s", "p95 s", "tok/s", "energy source"]
    rows = [[s.model, s.accelerator, s.queries, f"{s.accuracy:.3f} ({s.accuracy_low:.2f}-{s.accuracy_high:.2f})",
             s.unscorable, _fmt(s.mean_joules), _fmt(s.mean_watts), _fmt(s.ipw), _fmt(s.ipj),
             _fmt(s.joules_per_correct), _fmt(s.latency_p50_s), _fmt(s.latency_p95_s), _fmt(s.tokens_per_s),
             f"{s.provenance.upper()} {s.domain} ({s.meter})"] for s in summaries]
    return headers, rows


def _compact(value: Any, limit: int = 160) -> str:
    """A card's nested value on one line: ``k=v, ...``; None and empty parts left out."""
    if value is None or value == {} or value == []:
        return ""
    if isinstance(value, Mapping):
        text = ", ".join(f"{k}={_compact(v)}" for k, v in value.items() if v not in (None, {}, [], ""))
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_compact(v) for v in value)
    elif isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    return _clip(text, limit)


def card_rows(cards: Sequence[tuple[str, Mapping[str, Any]]]) -> Table:
    headers = ["run / target", "sensor", "energy", "scope", "read as", "update period s", "sampling Hz", "idle floor W",
               "power limit W", "clocks", "driver", "permissions", "thermal", "runtime build"]
    rows = []
    for label, card in cards:
        permissions = card.get("permissions") or {}
        rows.append([label, card.get("sensor"), str(card.get("provenance") or "").upper(), card.get("scope"),
                     card.get("reading") or "", _compact(card.get("update_period_s")), _compact(card.get("sampling_hz")),
                     _compact(card.get("idle_floor_w")), _compact(card.get("power_limit_w")), _compact(card.get("clocks")),
                     card.get("driver"), permissions.get("level", "") if isinstance(permissions, Mapping) else permissions,
                     _compact(card.get("thermal")), _compact(card.get("runtime_build"), 240)])
    return headers, rows


def phase_rows(summaries: Sequence[Summary]) -> Table | None:
    """Prefill and decode per model × accelerator, where windows were split at the first token."""
    split = [s for s in summaries if s.phase_queries]
    if not split:
        return None
    headers = ["model", "accelerator", "split queries", "prefill s", "prefill J", "decode s", "decode J", "J/input token",
               "J/output token", "energy source"]
    return headers, [[s.model, s.accelerator, f"{s.phase_queries}/{s.queries}", _fmt(s.prefill_s), _fmt(s.prefill_joules),
                      _fmt(s.decode_s), _fmt(s.decode_joules), _fmt(s.joules_per_input_token),
                      _fmt(s.joules_per_output_token), f"{s.provenance.upper()} {s.domain}"] for s in split]


def noise_rows(records: "Sequence[Mapping[str, Any]] | RecordTable") -> Table | None:
    """Run-to-run noise from ``--ipw-repeat``: the spread of each query's energy over its rounds."""
    rows = round_noise(records)
    if not rows:
        return None
    headers = ["model", "accelerator", "rounds", "queries", "energy CV median", "p90", "max", "latency CV median",
               "prompt cache reset", "energy source"]
    return headers, [[r["model"], r["accelerator"], r["rounds"], r["queries"], _pct(r["energy_cv_median"]),
                      _pct(r["energy_cv_p90"]), _pct(r["energy_cv_max"]), _pct(r["latency_cv_median"]),
                      str(r["prefix_cache_reset"]), r["provenance"].upper()] for r in rows]


def coverage_rows(cov: CoverageAnalysis) -> Table:
    headers = ["domain", "queries"] + list(cov.members) + ["coverage"]
    rows = []
    for domain in sorted(cov.by_domain):
        cell = cov.by_domain[domain]
        row: list[Any] = [domain, cell.queries]
        for member in cov.members:
            acc = cov.accuracy_by_domain.get((member, domain))
            row.append(f"{acc.share:.2f}" if acc else "-")
        rows.append(row + [f"{cell.share:.2f}"])
    rows.append(["all", cov.overall.queries] + [f"{cov.accuracy[m].share:.2f}" for m in cov.members] + [f"{cov.overall.share:.2f}"])
    return headers, rows


def split_rows(cov: CoverageAnalysis) -> Table:
    return (["split", "queries", "covered", "coverage"],
            [[s, c.queries, c.covered, f"{c.share:.2f}"] for s, c in sorted(cov.by_split.items())])


def marginal_rows(cov: CoverageAnalysis) -> Table:
    cumulative = dict(cov.cumulative)
    order = [m for m, _ in cov.cumulative]
    accuracy = "accuracy" if cov.unit == "system" else "answered on some accelerator"
    return (["step", cov.unit, accuracy, "only it answers (queries)", "coverage with it and those above"],
            [[i + 1, m, f"{cov.accuracy[m].share:.2f}", cov.marginal[m], f"{cumulative[m].share:.2f}"]
             for i, m in enumerate(order)])


def versus_rows(versus: LocalVsReference) -> Table:
    headers = ["scope", "queries", "local coverage", "reference accuracy", "both", "local only", "reference only",
               "neither", "win-or-tie rate", "local covers of reference's"]
    def row(scope: str, v: Any) -> list[Any]:
        return [scope, v.queries, f"{v.local_coverage:.2f}", f"{v.reference_accuracy:.2f}", v.both, v.local_only,
                v.reference_only, v.neither, f"{v.win_or_tie_rate:.2f}", _pct(v.share_of_reference)]
    rows = [row("all", versus.overall)]
    rows += [row(f"split {s}", v) for s, v in sorted(versus.by_split.items())]
    rows += [row(f"domain {d}", v) for d, v in sorted(versus.by_domain.items())]
    return headers, rows


def routing_rows(routing: RoutingAnalysis) -> Table:
    headers = ["strategy", "queries", "accuracy", "J/query", "energy saved", "latency/query s", "latency saved",
               "accuracy change", "energy source", "queries sent to"]
    rows = []
    for r in routing.results:
        rows.append([r.strategy, r.queries, f"{r.accuracy:.3f}", _fmt(r.mean_joules), _pct(routing.energy_saving(r)),
                     _fmt(r.mean_latency_s), _pct(routing.latency_saving(r)), f"{routing.accuracy_change(r):+.3f}",
                     r.provenance.upper(), ", ".join(f"{s}: {n}" for s, n in r.assignments.items())])
    return headers, rows


def pareto_rows(points: Sequence[Any]) -> Table:
    return (["model@accelerator", "accuracy", "J/query", "on frontier", "energy source"],
            [[p.system, f"{p.accuracy:.3f}", _fmt(p.mean_joules), "yes" if p.on_frontier else "", p.provenance.upper()]
             for p in points])


def trend_rows(points: Sequence[Any]) -> Table:
    return (["release", "model", "accelerator", "parameters", "accuracy", "IPW (1/W)", "IPJ (1/J)", "energy source"],
            [[p.release_date.isoformat(), p.model, p.accelerator, "" if p.parameters is None else f"{p.parameters / 1e9:.3g}B",
              f"{p.accuracy:.3f}", _fmt(p.ipw), _fmt(p.ipj), p.provenance.upper()] for p in points])


def history_rows(history: Sequence[HistoryEntry]) -> Table:
    labels, series = _history_series(history, "ipw")
    headers = ["run"] + list(series)
    rows = []
    for label in labels:
        row: list[Any] = [label]
        for points in series.values():
            found = [(v, p) for lab, v, p in points if lab == label]
            row.append("" if not found else f"{_fmt(found[0][0])}" + ("" if found[0][1] == "measured" else f" ({found[0][1]})"))
        rows.append(row)
    return headers, rows


def comparison_parts(document: Mapping[str, Any]) -> tuple[str, Table, Table, list[tuple[str, str]]] | None:
    """The comparison with the baseline (``--ipw-compare``), when the run made one: a heading line, the
    coverage of the pairs with what stands behind each side's name (file, SHA-256, server model), the changes,
    and the (kind, line) findings: gate failures, errors, warnings, notes."""
    from pytest_ipw.history.compare import CHANGE_HEADERS, Change, change_cells
    from pytest_ipw.history.comparison import SystemCoverage, coverage_cells

    compared = document.get("comparison")
    if not isinstance(compared, Mapping):
        return None
    baseline = compared.get("baseline")
    head = (f"Compared with saved run {baseline}, query by query ('within noise' = not significant)." if baseline
            else "No baseline was compared.")
    systems = [SystemCoverage.from_dict(s) for s in compared.get("coverage") or []]
    coverage = coverage_cells(systems, with_sources=True)
    changes = (CHANGE_HEADERS, [change_cells(Change.from_dict(c)) for c in compared.get("changes") or []])
    findings = ([("bad", f"IPW REGRESSION: {line}") for line in compared.get("gate_failures") or []]
                + [("bad", f"IPW COMPARE FAILED: {line}") for line in compared.get("errors") or []]
                + [("bad", f"IPW COMPARE WARNING: {line}") for line in compared.get("warnings") or []
                   if not any(str(e).startswith(str(line)) for e in compared.get("errors") or [])]
                + [("note", f"compare: {line}") for line in compared.get("notes") or []])
    return head, coverage, changes, findings


def runs_rows(document: Mapping[str, Any]) -> Table:
    runs = document.get("runs")
    if not runs:
        info = document.get("machine_info", {}) or {}
        table = as_table(document.get("records", []))
        runs = [{"source": "this run", "host": info.get("node"), "machine_id": document.get("machine_id"),
                 "created_at": document.get("created_at"),
                 "accelerators": sorted({str(a) for (a,) in table.distinct("accelerator")}),
                 "provenance": sorted({str(p) for (p,) in table.distinct("provenance")}),
                 "commit": (document.get("commit_info") or {}).get("id"), "records": len(document.get("records", []))}]
    headers = ["run", "host", "machine id", "created", "commit", "accelerators", "energy", "records"]
    rows = [[r.get("source"), r.get("host"), r.get("machine_id") or "", r.get("created_at") or "",
             str(r.get("commit") or "")[:12], ", ".join(map(str, r.get("accelerators") or [])),
             ", ".join(str(p).upper() for p in r.get("provenance") or []), r.get("records")] for r in runs]
    return headers, rows


# -- HTML ------------------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:1200px;color:#222;padding:0 16px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:12px;margin:8px 0}th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.prov{padding:8px 12px;border-left:4px solid #1f77b4;background:#eef5fb;font-size:13px}
.prov.estimated,.prov.mixed{border-color:#d62728;background:#fdeeee}
.note{color:#555;font-size:12px}img{max-width:100%;border:1px solid #eee}
td.text{max-width:420px;white-space:pre-wrap;word-break:break-word;font-family:ui-monospace,monospace;font-size:11px}
.ok{color:#17752c}.bad{color:#b3261e}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


def _html_table(table: Table, css: Sequence[str] = ()) -> str:
    headers, rows = table
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            klass = css[i] if i < len(css) and css[i] else ("num" if isinstance(value, (int, float)) else "")
            cells.append(f"<td class=\"{klass}\">{esc(value)}</td>" if klass else f"<td>{esc(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(name: str, figures: Mapping[str, tuple[str, bytes]]) -> str:
    if name not in figures:
        return ""
    alt, png = figures[name]
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{esc(alt)}" src="data:image/png;base64,{data}"></p>'


def _answers_html(records: Sequence[Mapping[str, Any]]) -> str:
    shown = records[:MAX_ANSWER_ROWS]
    rows = []
    for r in shown:
        verdict = Safe('<span class="ok">right</span>' if r.get("correct") else
                       '<span class="bad">unscorable</span>' if r.get("unscorable") else '<span class="bad">wrong</span>')
        rows.append([r.get("query_id"), r.get("domain"), system_of(r), verdict, _clip(r.get("prompt")),
                     _clip(r.get("response")), _clip(r.get("reference"), 200), _clip(r.get("extracted"), 200),
                     _fmt(r.get("joules")), str(r.get("provenance", "")).upper()])
    table = _html_table((["query", "domain", "model@accelerator", "verdict", "prompt", "answer", "reference",
                          "extracted", "J", "energy"], rows),
                        css=["", "", "", "", "text", "text", "text", "text", "num", ""])
    more = (f'<p class="note">first {MAX_ANSWER_ROWS} of {len(records)} answers shown; all are in the results file</p>'
            if len(records) > len(shown) else "")
    return (f"<details><summary>{len(records)} answers (model output is shown as plain text)</summary>{more}{table}"
            "</details>")


def _extra_tables_html(data: ReportData) -> str:
    parts = []
    phases = phase_rows(data.summaries)
    if phases is not None:
        parts += ["<h3>Energy by phase</h3>", '<p class="note">prefill = window start to the first token, decode = the '
                  "rest; J/output token counts the tokens after the first.</p>", _html_table(phases)]
    noise = noise_rows(data.table)
    if noise is not None:
        parts += ["<h3>Run-to-run noise (--ipw-repeat)</h3>", '<p class="note">coefficient of variation of each '
                  "query's energy over its rounds; the IPW study cites 10-15% for software energy counters.</p>",
                  _html_table(noise)]
    return "".join(parts)


def _cards_html(data: ReportData) -> str:
    if not data.cards:
        return ""
    warnings = "".join(f'<div class="prov mixed"><b>NOT LIKE FOR LIKE:</b> {esc(w)}</div>' for w in data.card_warnings)
    return ("<h2>Comparability</h2>" + warnings +
            '<p class="note">What each energy figure depends on: the sensor and its scope, how it is read and how often '
            "it updates, the idle floor, power limit, clocks, driver, permissions, thermal state and runtime build.</p>"
            + _html_table(card_rows(data.cards)))


def render_html(data: ReportData, document: Mapping[str, Any], figures: Mapping[str, tuple[str, bytes]]) -> str:
    overall = combine_provenance(str(p) for (p,) in data.table.distinct("provenance", default="unknown"))
    parts = [f"<h1>{esc(data.title)}</h1>",
             f'<p class="note">pytest-ipw {esc(__version__)}; generated {esc(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))}; '
             f"{len(data.records)} records, {data.coverage.overall.queries} queries</p>",
             f'<div class="prov {esc(overall)}" id="provenance"><b>{esc(data.caption)}</b><br>'
             + "<br>".join(esc(line) for line in data.notes) + "</div>",
             "<h2>Runs</h2>", _html_table(runs_rows(document)), _cards_html(data),
             "<h2>Summary per model × accelerator</h2>", _html_table(summary_rows(data.summaries)),
             *_failures_html(document),
             '<p class="note">IPW = accuracy / mean per-query power; IPJ = accuracy / mean joules per query; '
             "energy source: MEASURED by a sensor or ESTIMATED by a power model.</p>",
             _extra_tables_html(data),
             "<h2>Coverage</h2>",
             f"<p>{data.coverage.overall.covered} of {data.coverage.overall.queries} queries "
             f"({data.coverage.overall.share:.1%}) are answered correctly by at least one model × accelerator.</p>",
             _html_table(coverage_rows(data.coverage)), _img("coverage", figures),
             _html_table(split_rows(data.coverage)),
             "<h3>What each adds</h3>", _html_table(marginal_rows(data.coverage))]
    if data.model_coverage is not None:
        parts += ["<h3>Coverage by model (any accelerator)</h3>", _html_table(marginal_rows(data.model_coverage))]
    if data.versus is not None:
        v = data.versus.overall
        parts += ["<h2>Local models vs reference</h2>",
                  f"<p>Local ({esc(', '.join(data.versus.local))}) vs reference ({esc(', '.join(data.versus.reference))}): "
                  f"local models answer {v.local_coverage:.1%} of {v.queries} queries, the reference {v.reference_accuracy:.1%}; "
                  f"win-or-tie rate {v.win_or_tie_rate:.1%}.</p>", _html_table(versus_rows(data.versus))]
    parts += ["<h2>Accuracy vs energy</h2>", _img("pareto", figures), _html_table(pareto_rows(data.pareto)),
              "<h2>IPW per model × accelerator</h2>", _img("ipw", figures),
              "<h2>Power over the run</h2>",
              '<p class="note">Each step is one query\'s mean power over its measurement window, at the cumulative '
              "window time of its model × accelerator; this is not a sampled power trace.</p>", _img("power", figures),
              "<h2>Routing</h2>"]
    if data.routing is not None:
        r = data.routing
        parts += [f"<p>Baseline: always <b>{esc(r.baseline)}</b> ({esc(r.baseline_reason)}). Oracle: each query to the "
                  f"least-energy system that answers it correctly, else to <b>{esc(r.fallback)}</b>. Routers of a given "
                  "accuracy decide like the oracle with that probability and otherwise pick another system at random "
                  "(seeded).</p>", _html_table(routing_rows(r)), _img("routing", figures)]
        if r.skipped_queries:
            parts.append(f'<p class="note">{r.skipped_queries} queries lacked a record of the baseline or fallback and were not routed.</p>')
    else:
        parts.append(f'<p class="note">{esc(data.routing_note)}</p>')
    if data.trends or data.release_coverage or data.undated:
        parts += ["<h2>Trends by model release date</h2>", _img("release", figures), _html_table(trend_rows(data.trends))]
        if data.undated:
            parts.append(f'<p class="note">no release date for: {esc(", ".join(data.undated))} (add it to the model info file)</p>')
    if data.history:
        parts += ["<h2>Across commits (saved runs of this machine)</h2>", _img("history", figures),
                  _html_table(history_rows(data.history))]
    compared = comparison_parts(document)
    if compared is not None:
        head, coverage, changes, findings = compared
        parts += ["<h2>Comparison with the baseline</h2>", f"<p>{esc(head)}</p>"]
        if coverage[1]:
            parts += ['<p class="note">Queries per model × accelerator (paired = in both runs), and what stands '
                      "behind each side's name.</p>", _html_table(coverage)]
        if changes[1]:
            parts.append(_html_table(changes))
        parts += [f'<p class="{kind}">{esc(line)}</p>' for kind, line in findings]
    parts += ["<h2>Answers</h2>", _answers_html(data.records)]
    body = "\n".join(p for p in parts if p)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(data.title)}</title>'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")


# -- Markdown --------------------------------------------------------------------------------------

def _md_cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
            .replace("\n", " ").replace("\r", " "))


def _md_table(table: Table) -> str:
    headers, rows = table
    lines = ["| " + " | ".join(_md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _extra_tables_md(data: ReportData) -> list[str]:
    lines: list[str] = []
    for title, table in (("### Energy by phase (prefill = until the first token, decode = after it)",
                          phase_rows(data.summaries)),
                         ("### Run-to-run noise (--ipw-repeat): energy CV per query over its rounds",
                          noise_rows(data.table))):
        if table is not None:
            lines += [title, "", _md_table(table), ""]
    return lines


def failure_lines(document: Mapping[str, Any]) -> list[str]:
    """The queries that could not be answered (``query_errors``): how accuracy treated them, and which."""
    from pytest_ipw.report.terminal import error_lines

    return error_lines(document.get("query_errors") or [])


def _failures_html(document: Mapping[str, Any]) -> list[str]:
    lines = failure_lines(document)
    if not lines:
        return []
    return ["<h2>Queries that could not be answered</h2>",
            "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in lines) + "</ul>"]


def render_markdown(data: ReportData, document: Mapping[str, Any], figure_files: Mapping[str, str]) -> str:
    def fig(name: str, alt: str) -> list[str]:
        return [f"![{alt}]({figure_files[name]})", ""] if name in figure_files else []

    cov = data.coverage
    lines = [f"# {_md_cell(data.title)}", "", f"**{_md_cell(data.caption)}**", ""]
    lines += [f"- {_md_cell(line)}" for line in data.notes] + [""]
    lines += ["## Runs", "", _md_table(runs_rows(document)), ""]
    if data.cards:
        lines += ["## Comparability", "", *[f"**NOT LIKE FOR LIKE:** {_md_cell(w)}" for w in data.card_warnings],
                  "", _md_table(card_rows(data.cards)), ""]
    failures = failure_lines(document)
    lines += ["## Summary per model × accelerator", "", _md_table(summary_rows(data.summaries)), "",
              *(["## Queries that could not be answered", "", *[f"- {_md_cell(line)}" for line in failures], ""]
                if failures else []),
              *_extra_tables_md(data),
              "## Coverage", "", f"{cov.overall.covered} of {cov.overall.queries} queries ({cov.overall.share:.1%}) "
              "are answered correctly by at least one model × accelerator.", "",
              _md_table(coverage_rows(cov)), "", *fig("coverage", "coverage heat map"),
              _md_table(split_rows(cov)), "", _md_table(marginal_rows(cov)), ""]
    if data.versus is not None:
        lines += ["## Local models vs reference", "", _md_table(versus_rows(data.versus)), ""]
    lines += ["## Accuracy vs energy", "", *fig("pareto", "Pareto plot"), _md_table(pareto_rows(data.pareto)), "",
              "## IPW per model × accelerator", "", *fig("ipw", "IPW bars"),
              "## Power over the run (per-query mean power vs cumulative time; not a sampled trace)", "",
              *fig("power", "power over time"), "## Routing", ""]
    if data.routing is not None:
        lines += [f"Baseline: always `{_md_cell(data.routing.baseline)}` ({_md_cell(data.routing.baseline_reason)}); "
                  f"fallback `{_md_cell(data.routing.fallback)}`.", "", _md_table(routing_rows(data.routing)), "",
                  *fig("routing", "routing savings")]
    else:
        lines += [_md_cell(data.routing_note), ""]
    if data.trends or data.release_coverage:
        lines += ["## Trends by model release date", "", *fig("release", "release trends"), _md_table(trend_rows(data.trends)), ""]
    if data.history:
        lines += ["## Across commits", "", *fig("history", "history"), _md_table(history_rows(data.history)), ""]
    compared = comparison_parts(document)
    if compared is not None:
        head, coverage, changes, findings = compared
        lines += ["## Comparison with the baseline", "", _md_cell(head), ""]
        if coverage[1]:
            lines += [_md_table(coverage), ""]
        if changes[1]:
            lines += [_md_table(changes), ""]
        lines += [f"- {_md_cell(line)}" for _, line in findings] + ([""] if findings else [])
    return "\n".join(lines) + "\n"


# -- writing ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    analysis: Path
    figures: tuple[Path, ...]
    seconds: float


def analysis_document(data: ReportData) -> dict[str, Any]:
    return {
        "energy_basis": data.basis,
        "energy_caption": data.caption,
        "summary": [s.to_dict() for s in data.summaries],
        "coverage": data.coverage.to_dict(),
        "model_coverage": data.model_coverage.to_dict() if data.model_coverage else None,
        "local_vs_reference": data.versus.to_dict() if data.versus else None,
        "routing": data.routing.to_dict() if data.routing else None,
        "routing_note": data.routing_note,
        "pareto": [p.__dict__ for p in data.pareto],
        "release_trends": [p.to_dict() for p in data.trends],
        "coverage_by_release": [{"date": d.isoformat(), "model": m, **c.to_dict()} for d, m, c in data.release_coverage],
        "comparability_warnings": data.card_warnings,
    }


def _write_text(path: Path, text: str) -> None:
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", errors="replace") as stream:
            stream.write(text)
        os.chmod(temp, 0o644)  # mkstemp makes it private; a report is for reading
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise


def write_report(document: Mapping[str, Any], out_dir: str | os.PathLike[str], *,
                 model_info: Mapping[str, ModelInfo] | None = None, history: Sequence[HistoryEntry] = (),
                 title: str = "pytest-ipw report", clock: Callable[[], float] = time.perf_counter) -> ReportFiles:
    """Analyse ``document`` (a results file's content) and write the report folder."""
    started = clock()
    data = analyse(document, model_info, history, title)
    figures = _figures(data)
    out = Path(out_dir)
    try:
        (out / "figures").mkdir(parents=True, exist_ok=True)
        figure_paths = []
        for name, (_, png) in figures.items():
            path = out / "figures" / f"{name}.png"
            path.write_bytes(png)
            figure_paths.append(path)
        markdown = out / "summary.md"
        _write_text(markdown, render_markdown(data, document, {n: f"figures/{n}.png" for n in figures}))
        analysis = out / "analysis.json"
        with analysis.open("w", encoding="utf-8") as stream:
            dump_json(analysis_document(data), stream)
        index = out / "index.html"
        _write_text(index, render_html(data, document, figures))
    except OSError as exc:
        raise IPWUsageError(f"could not write the report to {out}: {exc.strerror or exc}; choose a writable folder") from None
    return ReportFiles(index, markdown, analysis, tuple(figure_paths), clock() - started)


def write_run_report(document: Mapping[str, Any], out_dir: str | os.PathLike[str], *, storage_root: str | None,
                     model_info_file: str | None, title: str = "pytest-ipw report") -> tuple[ReportFiles, list[str]]:
    """The report of one results document, with the IPW-across-commits history of its machine id when it
    was saved or compared (``machine_id`` set) and is not a merge of several runs. Returns the files and
    the saved runs that could not be read (the report is written without them)."""
    from pytest_ipw.analysis.model_info import load_model_info
    from pytest_ipw.history.storage import Storage, load_run

    history: list[HistoryEntry] = []
    problems: list[str] = []
    machine = document.get("machine_id")
    if machine and storage_root and not document.get("merged"):
        history, problems = history_entries(Storage(storage_root).runs(machine), load_run)
    files = write_report(document, out_dir, model_info=load_model_info(model_info_file) or None, history=history,
                         title=title)
    return files, problems


def history_entries(runs: Iterable[Any], load: Callable[[Path], Mapping[str, Any]], limit: int = 30) -> tuple[list[HistoryEntry], list[str]]:
    """Summaries of saved runs (``storage.SavedRun``), oldest first, for the across-commits figure."""
    entries, problems = [], []
    for run in list(runs)[-limit:]:
        try:
            document = load(run.path)
        except IPWUsageError as exc:
            problems.append(str(exc))
            continue
        entries.append((f"{run.number:04d} {run.commit[:8]}", list(document.get("summary") or [])))
    return entries, problems

