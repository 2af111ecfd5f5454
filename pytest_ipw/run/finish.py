"""The end of a run: aggregate, check thresholds, build the results document, compare with the baseline and
save, write the JSON / Parquet / HTML outputs. Called once, by the process that holds every record (the
xdist controller, or the only process).

A failure to write one output never loses the others: it is noted in the document (``write_error``) or in
the report line, and the run's figures are still printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.core.files import write_json_atomic
from pytest_ipw.core.systems import record_system

if TYPE_CHECKING:
    from pytest_ipw.run.session import IPWSession


@dataclass
class FinishOutcome:
    failed: bool  # a threshold missed or a gate failed: the run must not pass
    report_line: str | None  # where the HTML report went, or why it could not be written
    warnings: list[tuple[type[Warning], str]]  # to issue through pytest's warnings (categories users can filter)


def _estimated_systems(ipw: IPWSession) -> list[str]:
    """The systems with any record whose energy is not measured, sorted."""
    import numpy as np

    from pytest_ipw.analysis.metrics import system_codes

    codes, systems = system_codes(ipw.table)
    provenance_codes, provenances = ipw.table.codes("provenance")
    not_measured = np.array([p != "measured" for p in provenances], dtype=np.bool_)[provenance_codes] \
        if provenances else np.zeros(len(ipw.table), dtype=np.bool_)
    return sorted(systems[c] for c in np.unique(codes[not_measured]).tolist())


def run_warnings(ipw: IPWSession) -> list[tuple[type[Warning], str]]:
    """The conditions a project may want to fail on, each with its category (the report says them too)."""
    from pytest_ipw.analysis.quality import quality_summary
    from pytest_ipw.core import warnings as w

    found: list[tuple[type[Warning], str]] = []
    estimated = _estimated_systems(ipw)
    if estimated:
        found.append((w.EstimatedEnergyWarning, f"energy of {', '.join(estimated)} is ESTIMATED by a power model, "
                                                "not measured; run where a power sensor is readable to measure"))
    for target, info in sorted(ipw.meter_info.items()):
        if info.get("fallback_reason"):
            found.append((w.MeterFallbackWarning, f"{target}: measured by {info.get('meter')}, not the accelerator's "
                                                  f"natural meter: {info['fallback_reason']}"))
    from pytest_ipw.analysis.table import label_counts

    shared = sum(n for flags, n in label_counts(ipw.table, "meter_flags")
                 if any(flag.startswith("energy-shared") for flag in flags))
    if shared:
        found.append((w.SharedEnergyWarning, f"{shared} query window(s) overlapped on one sensor; their energy was "
                                             "shared out among them (joules_window keeps the raw figure)"))
    for row in quality_summary(ipw.table, ipw.options.max_tokens):
        if row["truncation_flag"]:
            found.append((w.TruncatedAnswersWarning,
                          f"{record_system(row)}: {row['truncated']} of {row['queries']} answers hit "
                          f"--ipw-max-tokens={ipw.options.max_tokens}; raise it"))
    for row in (ipw.results or {}).get("query_errors") or ():
        how = "left out of accuracy" if row["counted"] == "skipped" else "counted as wrong"
        queries = f"{row['queries']} quer{'y' if row['queries'] == 1 else 'ies'}"
        message = f"{row['system']}: {queries} failed with {row['kind']}, {how} (QUERY ERRORS in the report)"
        found.append((w.QueryErrorsWarning, message))
    history = ipw.history
    if history is not None and ipw.options.compare is not None and history.baseline is None:
        found.append((w.NoBaselineWarning, f"--ipw-compare={ipw.options.compare} found no baseline for machine id "
                                           f"{history.machine}; no gate was judged"))
    if history is not None:  # a gate with nothing to compare, a partial baseline (history/comparison.py)
        found.extend(history.warnings)
    return found


def finish_run(ipw: IPWSession) -> FinishOutcome:
    from pytest_ipw.hardware.machine import machine_info
    from pytest_ipw.history.baseline import process_history

    ipw.finish()
    ipw.results = ipw.results_document(machine_info(ipw.devices))
    ipw.history = process_history(ipw.options, ipw.results)
    if ipw.history is not None:
        ipw.results["comparison"] = ipw.history.to_dict()
    options = ipw.options
    if options.json_path:
        try:
            write_json_atomic(options.json_path, ipw.results)
        except IPWUsageError as exc:
            ipw.results["write_error"] = str(exc)
    if options.parquet_path:
        from pytest_ipw.core.files import results_stamp, write_parquet

        try:
            write_parquet(options.parquet_path, ipw.records, stamp=results_stamp(ipw.results))
        except IPWUsageError as exc:
            ipw.results["write_error"] = str(exc)
    report_line = write_html_report(ipw) if options.report_dir else None
    failed = bool(ipw.misses) or bool(ipw.history is not None and ipw.history.failed)
    return FinishOutcome(failed=failed, report_line=report_line, warnings=run_warnings(ipw))


def write_html_report(ipw: IPWSession) -> str:
    """Write ``--ipw-report``; returns the line for the terminal summary (the report's path, or why not)."""
    from pytest_ipw.report.html import write_run_report

    try:
        files, _ = write_run_report(ipw.results, ipw.options.report_dir, storage_root=ipw.options.storage,
                                    model_info_file=ipw.options.model_info)
    except IPWUsageError as exc:
        return f"IPW REPORT FAILED: {exc}"
    return f"report: {files.html} (Markdown: {files.markdown}; {files.seconds:.1f} s)"
