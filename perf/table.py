"""The before/after table of docs/performance.md: wall time, CPU time and peak RSS of ``pytest-ipw report``,
``pytest-ipw compare`` and the in-process aggregate, each in a fresh process, at each size. Run from the
repository root:

    python perf/table.py --sizes 10000,100000,1000000
    python perf/table.py --sizes 100000 --tree before=/path/to/old/checkout --tree after=.

Steps:

- ``report``: ``python -m pytest_ipw report FILE -o DIR`` (the whole command: start-up, reading, analyses,
  figures, HTML and Markdown);
- ``compare``: ``python -m pytest_ipw compare FILE FILE2`` (two runs of the same study, the second 2% less
  efficient: perf/synthetic.py);
- ``report-parquet``, ``compare-parquet`` (opt-in): the same on runs that also wrote their records as
  Parquet (``--ipw-parquet``), which the loader reads in place of the JSON records;
- ``aggregate``: in one process, the records made one at a time and kept as a run keeps them (a list of
  dicts), then what the end of a run computes from them (perf/steps.py ``aggregate``). Time and CPU are the
  aggregate's alone; peak RSS is the process's (the records included); "kept" is the memory the records
  added, per record.

Each (step, size) runs once per ``--rounds`` for every tree in turn (interleaved, so that background load
falls on them alike); the table gives the median time and the largest peak RSS. The synthetic results files
are made by perf/synthetic.py in a process of their own, once, and cached (``IPW_PERF_CACHE``); at a
million records that takes minutes and about 2 GB of disk per file.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STEPS = ("report", "compare", "aggregate")
#: opt-in: the same commands on runs that also wrote their records as Parquet (--ipw-parquet)
PARQUET_STEPS = ("report-parquet", "compare-parquet")

#: the aggregate step's process: argv[1] is the number of records; prints its figures as one JSON line
AGGREGATE = r"""
import gc, json, sys, time
import psutil
from perf.steps import aggregate
from perf.synthetic import iter_records
from pytest_ipw.analysis.table import RecordTable

n = int(sys.argv[1])
process = psutil.Process()
gc.collect()
before = process.memory_info().rss
kept = RecordTable(capture=True)  # as IPWSession.add_record keeps them: each record's fields read as it arrives
keeping = 0.0
for record in iter_records(n):
    started = time.perf_counter()
    kept.append(record)
    keeping += time.perf_counter() - started
gc.collect()
kept_bytes = process.memory_info().rss - before
started, cpu = time.perf_counter(), time.process_time()
result = aggregate(kept)
seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
assert sum(s.queries for s in result["summary"]) == len(kept)
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "kept_bytes": kept_bytes, "records": len(kept),
                  "keep_us_per_record": keeping / max(1, len(kept)) * 1e6}))
"""

MAKE_FILES = "import sys; from perf import synthetic; n, pq = int(sys.argv[1]), sys.argv[2] == 'parquet'; " \
             "print(synthetic.results_file(n, parquet=pq)); print(synthetic.second_results_file(n, parquet=pq))"


def measured(command: list[str], env: dict[str, str], cwd: str) -> dict[str, Any]:
    """Run ``command`` to its end: wall seconds, CPU seconds and peak RSS (MiB) of that process (and of any
    process it waited for), and its standard output. A failure stops the table with the command's error."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)  # this child's own resource usage, not the table's
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed ({process.returncode}):\n{stderr[-3000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024,
            "stdout": stdout}


def tree_env(tree: Path) -> dict[str, str]:
    """The environment of a tree's processes: its pytest_ipw first, then this checkout's perf/."""
    paths = [str(tree), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "MPLBACKEND": "Agg"}


def run_step(step: str, size: int, tree: Path, files: tuple[str, str]) -> dict[str, Any]:
    env = tree_env(tree)
    with tempfile.TemporaryDirectory() as work:
        if step.startswith("report"):
            figures = measured([sys.executable, "-m", "pytest_ipw", "report", files[0], "-o", os.path.join(work, "r")],
                               env, work)
        elif step.startswith("compare"):
            figures = measured([sys.executable, "-m", "pytest_ipw", "compare", files[0], files[1]], env, work)
        else:
            figures = measured([sys.executable, "-c", AGGREGATE, str(size)], env, work)
            inner = json.loads(figures["stdout"].strip().splitlines()[-1])
            figures.update(wall_s=inner["seconds"], cpu_s=inner["cpu_seconds"],
                           kept_bytes_per_record=inner["kept_bytes"] / inner["records"],
                           kept_mib=inner["kept_bytes"] / 2**20,
                           # an older tree's step kept a plain list: no per-record reading to time
                           keep_us_per_record=inner.get("keep_us_per_record"))
    return figures


def git_label(tree: Path) -> str:
    """Which code is measured: the tree's commit and branch, and the last commit that changed pytest_ipw/
    (what the figures depend on), or ``not a git checkout``."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        commit, branch = git("rev-parse", "--short", "HEAD"), git("rev-parse", "--abbrev-ref", "HEAD")
        package = git("log", "-1", "--format=%h", "--", "pytest_ipw")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "pytest_ipw"))
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    state = "with uncommitted changes" if dirty else "clean"
    return f"{commit} ({branch}); pytest_ipw/ last changed in {package}, {state}"


def machine_line() -> str:
    import psutil

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (f"{cpu}, {os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.1f} GiB; "
            f"Python {platform.python_version()}{load}")


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.replace(" ", ",").split(",") if part]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give record counts separated by commas, e.g. 10000,100000")
    return sizes


def cell(row: dict[str, Any]) -> str:
    return f"{row['wall_s']:.2f} s | {row['cpu_s']:.2f} s | {row['peak_rss_mib']:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[10_000, 100_000],
                        help="records per run, comma-separated (default 10000,100000)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated, of {', '.join(STEPS + PARQUET_STEPS)} "
                        f"(default {','.join(STEPS)})")
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=PATH",
                        help="a checkout whose pytest_ipw to measure (repeatable; default: this one)")
    parser.add_argument("--rounds", type=int, default=1, help="processes per step, size and tree (default 1)")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the figures to FILE")
    args = parser.parse_args()
    steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(steps) - set(STEPS + PARQUET_STEPS))
    if unknown:
        parser.error(f"--steps: unknown {', '.join(unknown)}; choose from {', '.join(STEPS + PARQUET_STEPS)}")
    trees = []
    for text in args.tree or [f"this checkout={ROOT}"]:
        label, _, path = text.rpartition("=")
        if not label or not (Path(path) / "pytest_ipw").is_dir():
            parser.error(f"--tree {text!r}: give LABEL=PATH, PATH a checkout holding pytest_ipw/")
        trees.append((label, Path(path).resolve()))

    print(f"measured {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z} on {machine_line()}", flush=True)
    for label, tree in trees:
        print(f"- {label}: {git_label(tree)}", flush=True)
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        files: dict[str, tuple[str, str]] = {}
        for kind in ("json", "parquet"):
            if any(step.split("-")[0] in ("report", "compare") and step.endswith("-parquet") == (kind == "parquet")
                   for step in steps):
                made = measured([sys.executable, "-c", MAKE_FILES, str(size), kind], tree_env(ROOT), str(ROOT))
                files[kind] = tuple(made["stdout"].split())  # type: ignore[assignment]
                extra = (f" + {os.path.getsize(Path(files[kind][0]).with_suffix('.parquet')) / 2**20:,.0f} MiB of "
                         "Parquet" if kind == "parquet" else "")
                print(f"- {size:,} records: {os.path.getsize(files[kind][0]) / 2**20:,.0f} MiB of JSON{extra} "
                      f"({Path(files[kind][0]).name})", flush=True)
        for step in steps:
            results: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in trees}
            for _ in range(args.rounds):
                for label, tree in trees:
                    pair = files.get("parquet" if step.endswith("-parquet") else "json", ("", ""))
                    results[label].append(run_step(step, size, tree, pair))
            for label, _ in trees:
                runs = results[label]
                row = {"step": step, "records": size, "tree": label, "rounds": len(runs),
                       "wall_s": statistics.median(r["wall_s"] for r in runs),
                       "cpu_s": statistics.median(r["cpu_s"] for r in runs),
                       "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}
                if step == "aggregate":
                    row["kept_bytes_per_record"] = statistics.median(r["kept_bytes_per_record"] for r in runs)
                    row["kept_mib"] = statistics.median(r["kept_mib"] for r in runs)
                    keeps = [r["keep_us_per_record"] for r in runs if r.get("keep_us_per_record") is not None]
                    row["keep_us_per_record"] = statistics.median(keeps) if keeps else None
                rows.append(row)
                print(f"  {step:9s} {size:>9,} {label}: {cell(row).replace(' | ', ', ')}", file=sys.stderr, flush=True)

    print()
    print("| step | records | tree | wall time | CPU time | peak RSS | |")
    print("|---|---:|---|---:|---:|---:|---|")
    for row in rows:
        note = (f"records kept: {row['kept_mib']:,.0f} MiB, {row['kept_bytes_per_record']:,.0f} B/record"
                + (f"; keeping {row['keep_us_per_record']:.1f} µs/record during the run"
                   if row.get("keep_us_per_record") is not None else "")
                if "kept_bytes_per_record" in row else "")
        print(f"| {row['step']} | {row['records']:,} | {row['tree']} | {cell(row)} | {note} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_line(), "trees": {label: git_label(tree) for label, tree in trees},
                                               "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
