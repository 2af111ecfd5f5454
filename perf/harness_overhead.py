"""Harness overhead: `pytest benchmarks/` against a bare llama-cpp-python loop over the same prompts.

Both run the embedded SmolLM2 model on the same queries with the plugin's default generation settings
(temperature, seed, max_tokens and context size from pytest_ipw/core/defaults.py; CPU; llama.cpp's default
thread count, half the cores) and the plugin's one streamed warm-up generation. Measured in one run:

- per query: each test's call time minus its record's generation time (``latency_s``, timed around the same
  llama.cpp streaming call the bare loop makes), plus the test's setup and teardown: what the harness adds
  to a query (meter window, scoring, record, journal, report properties), against the bare loop's median
  time per query. Taking the difference inside one run keeps background load out of it, which a comparison
  of two runs' totals cannot on a shared machine (the totals are printed too);
- fixed: the pytest run's wall time minus every test's setup, call and teardown (start-up, collection, the
  end-of-session aggregate, JSON, terminal summary), plus the first test's setup less the model load, the
  warm-up and the idle baseline (the session fixtures' own work). The phases come from perf/_phases_plugin.py.

Run from the repository root:

    python perf/harness_overhead.py [--limit N] [--pytest-args "--ipw-idle-seconds=0"] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def bare_loop(limit: int | None) -> dict[str, Any]:
    """The same prompts through llama-cpp-python directly: load, one warm-up, then each query streamed."""
    import llama_cpp

    from pytest_ipw.backends.models import embedded_gguf_path
    from pytest_ipw.core import defaults
    from pytest_ipw.plugin import WARMUP_PROMPT
    from pytest_ipw.queries.schema import load_queries, select_queries

    def answer(prompt: str) -> None:
        for _ in llm.create_chat_completion(messages=[{"role": "user", "content": prompt}],
                                            temperature=defaults.TEMPERATURE, seed=defaults.SEED,
                                            max_tokens=defaults.MAX_TOKENS, stream=True):
            pass

    queries = select_queries(load_queries(), limit=limit)
    started = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(embedded_gguf_path()), n_ctx=defaults.CONTEXT_SIZE, n_gpu_layers=0,
                          seed=defaults.SEED, verbose=False)
    loaded = time.perf_counter()
    answer(WARMUP_PROMPT)  # the plugin's --ipw-warmup default: one generation
    warmed = time.perf_counter()
    per_query = []
    for query in queries:
        began = time.perf_counter()
        answer(query.prompt)
        per_query.append(time.perf_counter() - began)
    finished = time.perf_counter()
    threads = llm.n_threads
    llm.close()
    return {"queries": len(queries), "load_s": loaded - started, "warmup_s": warmed - loaded, "per_query_s": per_query,
            "total_s": finished - started, "threads": threads}


DURATION = re.compile(r"^([0-9.]+)s (setup|call|teardown)\s+(\S+)")


def startup_s() -> float:
    """What the bare loop's process pays before its first line: Python started and llama_cpp imported."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import llama_cpp"], check=True)
    return time.perf_counter() - started


def plain_pytest_s() -> float:
    """A pytest run of one empty test (the same plugins installed): pytest's own start-up and end."""
    with tempfile.TemporaryDirectory() as work:
        (Path(work) / "test_one.py").write_text("def test_one():\n    pass\n")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_one.py"], cwd=work,
                       check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started


def pytest_run(limit: int | None, extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work:
        results, timings = Path(work) / "run.json", Path(work) / "phases.json"
        command = [sys.executable, "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider", "-p",
                   "perf._phases_plugin", f"--ipw-json={results}", "--durations=0", "--durations-min=0", *extra]
        if limit:
            command.append(f"--ipw-limit={limit}")
        env = {**os.environ, "IPW_PHASES_FILE": str(timings),
               "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
        started = time.perf_counter()
        output = subprocess.run(command, check=True, capture_output=True, text=True, env=env, cwd=ROOT).stdout
        wall = time.perf_counter() - started
        document = json.loads(results.read_text())
        marks = json.loads(timings.read_text())
    phases: dict[str, dict[str, float]] = {}
    for line in output.splitlines():
        match = DURATION.match(line.strip())
        if match:
            phases.setdefault(match.group(3), {})[match.group(2)] = float(match.group(1))
    return {"wall_s": wall, "phases": phases, "document": document, "marks": marks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="queries per run (default: the whole shipped set)")
    parser.add_argument("--pytest-args", default="", help="extra options for the pytest run, e.g. '--ipw-idle-seconds=0'")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args()
    bare = bare_loop(args.limit)
    bare_startup = startup_s()
    plain = plain_pytest_s()
    run = pytest_run(args.limit, args.pytest_args.split())
    document, phases, marks = run["document"], run["phases"], run["marks"]
    records = {r["query_id"]: r for r in document["records"]}
    per_query: list[tuple[str, float, float, float]] = []
    for node, times in phases.items():
        query_id = next((q for q in records if node.endswith(f"-{q}]")), None)
        if query_id is not None:
            per_query.append((node, times.get("call", 0.0) - records[query_id]["latency_s"], times.get("setup", 0.0),
                              times.get("teardown", 0.0)))
    if not per_query:
        raise SystemExit("no test of the run could be matched with its record: did the item ids change?")
    # the longest setup holds the session fixtures (model load, warm-up, idle baseline): counted as fixed
    first_node, first_setup = max(((node, setup) for node, _, setup, _ in per_query), key=lambda item: item[1])
    cost = [harness + (setup if node != first_node else 0.0) + teardown for node, harness, setup, teardown in per_query]
    bare_median, cost_median = statistics.median(bare["per_query_s"]), statistics.median(cost)
    tests_total = sum(sum(t.values()) for t in phases.values())
    idle = float(document["settings"]["energy"].get("idle_seconds") or 0.0)
    # the process's life outside the tests, less what the bare loop's process pays too (Python, llama_cpp)
    outside_tests = run["wall_s"] - tests_total - bare_startup
    fixture_fixed = first_setup - marks.get("model_load_s", 0.0) - marks.get("warmup_s", 0.0) - idle
    model_threads = [m.get("threads") for m in document["settings"]["models"].values()]
    figures = {
        "queries": bare["queries"], "threads_bare": bare["threads"], "threads_pytest": model_threads,
        "bare_load_s": bare["load_s"], "bare_warmup_s": bare["warmup_s"], "bare_per_query_median_s": bare_median,
        "bare_total_s": bare["total_s"] + bare_startup, "bare_queries_s": sum(bare["per_query_s"]),
        "pytest_generation_total_s": sum(r["latency_s"] for r in document["records"]),
        "harness_per_query_median_s": cost_median, "harness_per_query_mean_s": statistics.fmean(cost),
        "harness_per_query_share": cost_median / bare_median,
        "pytest_wall_s": run["wall_s"], "bare_startup_s": bare_startup, "outside_tests_s": outside_tests,
        "first_setup_s": first_setup, "phases": marks, "plain_pytest_s": plain, "idle_baseline_s": idle,
        "fixture_fixed_s": fixture_fixed, "fixed_cost_s": outside_tests + fixture_fixed,
        "pytest_ipw_fixed_s": outside_tests + bare_startup - plain + fixture_fixed,
    }
    print(f"queries: {figures['queries']}; llama.cpp threads: bare loop {bare['threads']}, pytest {model_threads}")
    print(f"bare loop: load {bare['load_s']:.2f} s, warm-up {bare['warmup_s']:.2f} s, median {bare_median * 1000:.1f} ms "
          f"per query ({figures['bare_queries_s']:.1f} s for all; pytest's generations: "
          f"{figures['pytest_generation_total_s']:.1f} s)")
    print(f"harness per query: median {cost_median * 1000:.2f} ms = {figures['harness_per_query_share']:.2%} of a bare "
          f"query (mean {figures['harness_per_query_mean_s'] * 1000:.2f} ms)  [issue 19 goal: <= 1%]")
    print(f"fixed: {figures['fixed_cost_s']:.2f} s = start-up, collection and session end beyond the bare loop's "
          f"start-up ({bare_startup:.2f} s) {outside_tests:.2f} s + session fixtures beyond model load "
          f"({marks.get('model_load_s', 0):.2f} s), warm-up ({marks.get('warmup_s', 0):.2f} s) and the {idle:g} s idle "
          f"baseline {fixture_fixed:.2f} s  [issue 19 goal: <= 1 s]")
    print(f"of which pytest itself (an empty test, the same plugins: {plain:.2f} s, less the bare loop's start-up): "
          f"{plain - bare_startup:.2f} s; pytest-ipw's own: {figures['pytest_ipw_fixed_s']:.2f} s")
    print(f"totals: pytest benchmarks/ {run['wall_s']:.1f} s; bare loop process {figures['bare_total_s']:.1f} s "
          f"({run['wall_s'] / figures['bare_total_s'] - 1:+.1%}; includes background load on a shared machine)")
    print(f"pytest phases: collection {marks.get('collection_end', 0) - marks.get('collection_start', 0):.2f} s; "
          f"session end {marks.get('unconfigure_end', 0) - marks.get('sessionfinish_start', 0):.2f} s; "
          f"first test's setup {first_setup:.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
