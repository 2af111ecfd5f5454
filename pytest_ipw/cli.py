"""The ``pytest-ipw`` command: saved runs outside pytest (list, compare, trend, merge, report), on the plugin's code;
``machine-id``; ``calibrate`` (a reference workload under a meter).

Exit codes: 0 fine, 1 a gate failed, 2 bad usage or unreadable input (one clear message, no traceback).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.core.systems import record_system
from pytest_ipw.history.compare import METRICS, Gate, changes_table
from pytest_ipw.history.storage import SavedRun, Storage, default_storage, load_run, partial_note

TREND_METRICS = ("accuracy", "ipw", "ipj", "mean_joules", "mean_watts", "latency_p50_s", "latency_p95_s", "tokens_per_s")


def _resolve(storage: Storage, selector: str) -> SavedRun:
    run = storage.resolve(selector, machine="", across_machines=True)
    if run is None:
        raise IPWUsageError(f"no saved run matches {selector!r} in {storage.root} (see: pytest-ipw list)")
    return run


def cmd_list(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    storage = Storage(args.storage)
    runs = storage.runs(args.machine)
    if not runs:
        print(f"no saved runs in {storage.root}")
        return 0
    rows = []
    for run in runs:
        try:
            document = load_run(run.path)
        except IPWUsageError as exc:
            rows.append([run.id, run.commit, "", run.stamp, "", f"UNREADABLE: {exc}"])
            continue
        info = document.get("commit_info", {})
        summary = ", ".join(f"{record_system(s)} acc {s['accuracy']:.3f} ({s['provenance']})"
                            for s in document.get("summary", []))
        queries = (f"PARTIAL: {partial_note(document)}" if document.get("partial")
                   else str(len(document.get("records") or [])))
        rows.append([run.id, run.commit + (" (dirty)" if run.dirty else ""), info.get("branch", ""), run.stamp,
                     queries, summary])
    print(tabulate(rows, headers=["run", "commit", "branch", "saved (UTC)", "queries", "summary"], tablefmt="simple",
                   disable_numparse=True))
    return 0


def _load_as_columns(path: Any) -> dict[str, Any]:
    """A saved run whose records are read as columns (a million of them fit in memory)."""
    from pytest_ipw.history.storage import load_run_table

    return load_run_table(path)[0]


def cmd_compare(args: argparse.Namespace) -> int:
    from pytest_ipw.history.comparison import CLI_FLAGS, compare_documents, parse_pairs

    storage = Storage(args.storage)
    pairs = parse_pairs(args.pair)
    choice = storage.select_baseline(args.baseline, machine="", across_machines=True, load=_load_as_columns)
    if choice.run is None:
        skipped = choice.skipped_line()
        raise IPWUsageError(f"no saved run matches {args.baseline!r} in {storage.root}"
                            + (f" ({skipped}; name one by its number to compare with it anyway)" if skipped else "")
                            + " (see: pytest-ipw list)")
    current_run = _resolve(storage, args.current)
    baseline, current = choice.document, _load_as_columns(current_run.path)
    assert baseline is not None
    comparison = compare_documents(
        baseline, current, baseline_label=choice.run.id, current_label=current_run.id,
        gates=[Gate.parse(text) for text in args.fail], alpha=args.alpha, pairs=pairs,
        across_machines=args.across_machines, require_baseline=bool(args.require_baseline), flags=CLI_FLAGS)
    notes = ([choice.skipped_line() + f"; the baseline is the newest complete run, {choice.run.id}"]
             if choice.skipped else []) + comparison.notes
    changes = comparison.changes
    if args.format == "json":
        print(json.dumps({"baseline": choice.run.id, "current": current_run.id, **comparison.to_dict(),
                          "notes": notes}, indent=1))
    elif args.format == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(changes[0].to_dict()) if changes else ["scope"])
        writer.writeheader()
        for change in changes:
            row = change.to_dict()
            row["interval"] = "" if row["interval"] is None else f"{row['interval'][0]}..{row['interval'][1]}"
            writer.writerow(row)
        print(buffer.getvalue(), end="")
        for note in notes:
            print(f"compare: {note}", file=sys.stderr)
    else:
        markdown = args.format == "markdown"
        print(f"baseline {choice.run.id}\nnow      {current_run.id}")
        if markdown:
            print()
        print(comparison.coverage_table("github" if markdown else "simple"))
        if changes:
            print()
            print(changes_table(changes, "github" if markdown else "simple"))
        if notes:
            print()
        for note in notes:
            print(f"{'- ' if markdown else ''}compare: {note}")
    for _, warning in comparison.warnings:
        if not any(error.startswith(warning) for error in comparison.errors):
            print(f"IPW COMPARE WARNING: {warning}", file=sys.stderr)
    for error in comparison.errors:
        print(f"IPW COMPARE FAILED: {error}", file=sys.stderr)
    for failure in comparison.failures:
        print(f"IPW REGRESSION: {failure.line()}", file=sys.stderr)
    return 1 if comparison.failures or comparison.errors else 0


def cmd_trend(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    storage = Storage(args.storage)
    series: dict[str, list[tuple[str, float | None]]] = {}
    labels: list[str] = []
    for run in storage.runs(args.machine):
        document = load_run(run.path)
        if args.branch and document.get("commit_info", {}).get("branch") != args.branch:
            continue
        label = f"{run.number:04d} {run.commit[:8]}"
        labels.append(label)
        for summary in document.get("summary", []):
            series.setdefault(record_system(summary), []).append((label, summary.get(args.metric)))
    if not labels:
        print(f"no saved runs{' on branch ' + args.branch if args.branch else ''} in {storage.root}")
        return 0
    rows = [[label] + [dict(points).get(label) for points in series.values()] for label in labels]
    print(f"{args.metric} across saved runs")
    print(tabulate(rows, headers=["run"] + list(series), tablefmt="simple", floatfmt=".4g"))
    if args.plot:
        _plot(series, labels, args.metric, args.plot)
        print(f"plot: {args.plot}")
    return 0


def _plot(series: dict[str, list[tuple[str, float | None]]], labels: list[str], metric: str, path: str) -> None:
    from pytest_ipw.core.extras import require

    require("matplotlib", "pytest-ipw trend --plot").use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(figsize=(8, 4))
    for name, points in series.items():
        xs = [labels.index(label) for label, value in points if value is not None]
        axes.plot(xs, [value for _, value in points if value is not None], marker="o", label=name)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
    axes.set_ylabel(metric)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def _load_runs(storage: Storage, selectors: Sequence[str]) -> list[tuple[str, dict[str, Any]]]:
    """Results files by path, or saved runs by selector (any machine id)."""
    from pathlib import Path

    loaded = []
    for selector in selectors:
        if Path(selector).is_file():
            loaded.append((selector, load_run(selector)))
        else:
            run = _resolve(storage, selector)
            loaded.append((run.id, load_run(run.path)))
    return loaded


def _write_report(document: dict[str, Any], args: argparse.Namespace) -> None:
    from pytest_ipw.report.html import write_run_report

    files, problems = write_run_report(document, args.report, storage_root=args.storage,
                                       model_info_file=args.model_info, title=args.title)
    for problem in problems:
        print(f"pytest-ipw: history: {problem}", file=sys.stderr)
    print(f"report: {files.html} ({files.seconds:.1f} s; also {files.markdown.name}, {files.analysis.name}, "
          f"{len(files.figures)} figures)")


def cmd_merge(args: argparse.Namespace) -> int:
    from pytest_ipw.history.merge import merge_documents
    from pytest_ipw.analysis.model_info import load_model_info
    from pytest_ipw.core.files import write_json_atomic

    storage = Storage(args.storage)
    infos = load_model_info(args.model_info)
    merged = merge_documents(_load_runs(storage, args.runs), label_by_host=args.label_by_host, model_info=infos)
    write_json_atomic(args.output, merged)
    systems = ", ".join(f"{record_system(s)} ({s['provenance']})" for s in merged["summary"])
    print(f"merged {len(merged['runs'])} runs, {len(merged['records'])} records: {systems}")
    print(f"results: {args.output}")
    for note in merged["merge_notes"]:
        print(f"merge: {note}")
    if args.report:
        _write_report(merged, args)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from pytest_ipw.history.merge import merge_documents

    storage = Storage(args.storage)
    if len(args.runs) == 1:  # one run: its records read as columns, a few megabytes at a time
        from pytest_ipw.analysis.study import ANALYSIS_FIELDS
        from pytest_ipw.history.storage import load_run_table
        from pytest_ipw.report.html import MAX_ANSWER_ROWS

        path = args.runs[0] if Path(args.runs[0]).is_file() else _resolve(storage, args.runs[0]).path
        document, _ = load_run_table(path, keep_first=MAX_ANSWER_ROWS, required=ANALYSIS_FIELDS)
    else:
        document = merge_documents(_load_runs(storage, args.runs), label_by_host=args.label_by_host)
    _write_report(document, args)
    return 0


def cmd_machine_id(args: argparse.Namespace) -> int:
    from pytest_ipw.run.identity import current_machine

    machine, identity = current_machine(args.accelerators, args.meter, args.profiles_file, args.machine_id)
    print(machine)
    if args.verbose:
        for key, value in identity.items():
            print(f"  {key}: {value}", file=sys.stderr)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pytest_ipw.run.calibrate import calibrate, summary_lines

    report = calibrate(meter=args.meter, accelerators=args.accelerators, profiles_file=args.profiles_file,
                       sample_hz=args.sample_hz, idle_seconds=args.idle_seconds, size=args.size, count=args.count,
                       probe_seconds=args.probe_seconds)
    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        for line in summary_lines(report):
            print(line)


def cmd_options_doc(args: argparse.Namespace) -> int:
    from pytest_ipw.options import options_markdown

    text = options_markdown()
    if args.output:
        from pathlib import Path

        Path(args.output).write_text(text, encoding="utf-8")
        print(f"options: {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pytest_ipw import __version__
    from pytest_ipw.options import add_cli_options

    parser = argparse.ArgumentParser(prog="pytest-ipw",
                                     description="Saved pytest-ipw runs: list, compare, trend, merge, report; "
                                                 "machine-id; options-doc.")
    parser.add_argument("--version", action="version", version=f"pytest-ipw {__version__}")
    add_cli_options(parser, only=("storage",))
    sub = parser.add_subparsers(dest="command", required=True)

    ident = sub.add_parser("machine-id", help="print the machine id a run here saves under (for CI cache keys)")
    add_cli_options(ident, only=("accelerators", "meter", "profiles_file", "machine_id"))
    ident.add_argument("-v", "--verbose", action="store_true", help="also print the facts behind the id (stderr)")
    ident.set_defaults(func=cmd_machine_id)

    calibration = sub.add_parser("calibrate", help="a fixed reference workload (seeded matrix products: numpy on a CPU, "
                                 "torch on a GPU) under a meter: J per GFLOP, idle watts, the sensor's observed "
                                 "update period, counter vs gauge (NVML), and the comparability card")
    add_cli_options(calibration, only=("accelerators", "meter", "profiles_file", "sample_hz", "idle_seconds"))
    calibration.add_argument("--size", type=int, default=None,
                             help="matrix size (default 1024 on a CPU, 8192 on a GPU)")
    calibration.add_argument("--count", type=int, default=None,
                             help="matrix products (default 64 on a CPU, 100 on a GPU)")
    calibration.add_argument("--probe-seconds", type=float, default=1.0,
                             help="how long to poll the raw sensor for its update period (default 1; 0 skips)")
    calibration.add_argument("--json", action="store_true", help="print the whole calibration as JSON")
    calibration.set_defaults(func=cmd_calibrate)

    options_doc = sub.add_parser("options-doc", help="write docs/options.md: every --ipw-* option, from its declaration")
    options_doc.add_argument("-o", "--output", default=None, metavar="FILE", help="write to FILE (default: stdout)")
    options_doc.set_defaults(func=cmd_options_doc)

    listing = sub.add_parser("list", help="list saved runs")
    listing.add_argument("--machine", default=None, help="only this machine id")
    listing.set_defaults(func=cmd_list)

    compare = sub.add_parser("compare", help="compare two saved runs (baseline first)")
    compare.add_argument("baseline", help="run: latest, a number, a save name, a commit prefix, a branch, or a path "
                                          "(latest, a commit or a branch pass over partial runs)")
    compare.add_argument("current", help="run, as for baseline")
    compare.add_argument("--fail", action="append", default=[], metavar="EXPR",
                         help=f"gate, e.g. ipw:5%% or accuracy:2pt (metrics: {', '.join(METRICS)}); repeatable")
    compare.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")
    compare.add_argument("--across-machines", action="store_true", help="allow runs of different machine ids")
    compare.add_argument("--pair", action="append", default=[], metavar="NEW=OLD",
                         help="compare model NEW of the current run with model OLD of the baseline (a model release "
                              "saved under a new name); repeatable")
    add_cli_options(compare, only=("require_baseline",))
    formats = compare.add_mutually_exclusive_group()
    for name in ("csv", "json", "markdown"):
        formats.add_argument(f"--{name}", dest="format", action="store_const", const=name, help=f"print {name}")
    compare.set_defaults(func=cmd_compare, format="table")

    trend = sub.add_parser("trend", help="a metric across the saved runs")
    trend.add_argument("--metric", default="ipw", choices=TREND_METRICS)
    trend.add_argument("--branch", default=None, help="only runs saved on this branch")
    trend.add_argument("--machine", default=None, help="only this machine id")
    trend.add_argument("--plot", default=None, metavar="PNG", help="also draw the trend to this file (matplotlib)")
    trend.set_defaults(func=cmd_trend)

    run_help = "results file (--ipw-json) or saved run (latest, a number, a save name, a commit prefix, a path)"
    merge = sub.add_parser("merge", help="combine runs from several machines into one results file (and report)")
    merge.add_argument("runs", nargs="+", metavar="RUN", help=run_help)
    merge.add_argument("-o", "--output", default="merged.json", help="merged results file (default merged.json)")
    merge.add_argument("--report", default=None, metavar="DIR", help="also write the HTML/Markdown report to DIR")
    merge.set_defaults(func=cmd_merge)

    report = sub.add_parser("report", help="write the HTML and Markdown report of one run, or of several merged")
    report.add_argument("runs", nargs="+", metavar="RUN", help=run_help)
    report.add_argument("-o", "--out", dest="report", required=True, metavar="DIR", help="report folder")
    report.set_defaults(func=cmd_report)
    for command in (merge, report):
        command.add_argument("--model-info", default=None, metavar="FILE",
                             help="JSON: model name -> release_date, parameters, role (local or reference)")
        command.add_argument("--label-by-host", action="store_true",
                             help="name accelerators ACCELERATOR:HOST, keeping the same accelerator on several hosts apart")
        command.add_argument("--title", default="pytest-ipw report", help="report title")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.storage is None:
            args.storage = default_storage()
        return args.func(args)
    except IPWUsageError as exc:
        print(f"pytest-ipw: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
