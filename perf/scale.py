"""Scale figures for README's performance section. Run from the repository root:

    python perf/scale.py aggregate [--records 1000000]   # aggregate + report: time and peak RSS
    python perf/scale.py compare   [--records 1000000]   # compare two runs of that size
    python perf/scale.py collect   [--items 20000]       # pytest collection of per-query items
    python perf/scale.py import                          # plugin import cost when installed but unused
    python perf/scale.py soak      [--queries 20000]     # long run on a fast recorded backend: RSS slope

Each prints its figures; ratios and baselines are measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic_records(n: int, seed: int, shift: float = 1.0) -> list[dict]:
    rng = random.Random(seed)
    domains = ("arithmetic", "units", "knowledge", "science_mc", "logic", "strings")
    models = ("model-a", "model-b")
    records = []
    for i in range(n):
        joules = rng.lognormvariate(0, 0.4) * shift
        latency = rng.uniform(0.1, 0.5)
        records.append({
            "query_id": f"q{i // len(models):07d}", "domain": domains[i % 6], "split": "chat", "difficulty": None,
            "model": models[i % 2], "accelerator": "cpu", "benchmark": "bench.py::test_answer",
            "prompt": "What is 2 + 2?", "response": "4", "reference": "4", "extracted": "4",
            "correct": rng.random() < 0.6, "unscorable": False, "truncated": False, "tokens_in": 20, "tokens_out": 5,
            "latency_s": latency, "ttft_s": latency / 5, "joules": joules, "watts": joules / latency, "seconds": latency,
            "meter": "synthetic", "provenance": "estimated", "energy_domain": "cpu", "meter_flags": [],
        })
    return records


def cmd_aggregate(args: argparse.Namespace) -> None:
    from pytest_ipw.analysis.metrics import accuracy_by, coverage, group_by, summarize
    from pytest_ipw.report.terminal import domain_table, summary_table

    records = synthetic_records(args.records, 1)
    built_rss = peak_rss_mib()
    started = time.perf_counter()
    summaries = [summarize(group) for group in group_by(records, "model", "accelerator").values()]
    cov = coverage(records)
    accuracy_by(records, "domain")
    text = summary_table(summaries) + domain_table(records, cov)
    elapsed = time.perf_counter() - started
    print(f"records:                 {args.records:,}")
    print(f"aggregate + report:      {elapsed:.2f} s  (target <= 10 s)")
    print(f"peak RSS:                {peak_rss_mib():.0f} MiB (of which the records themselves: {built_rss:.0f} MiB; target <= 2048)")
    assert text


def cmd_compare(args: argparse.Namespace) -> None:
    from pytest_ipw.history.compare import compare_runs

    baseline = {"records": synthetic_records(args.records, 1)}
    current = {"records": synthetic_records(args.records, 2, shift=1.02)}
    started = time.perf_counter()
    changes = compare_runs(baseline, current)
    elapsed = time.perf_counter() - started
    print(f"records per run:         {args.records:,}")
    print(f"compare two runs:        {elapsed:.2f} s  ({len(changes)} changes; target <= 10 s)")
    print(f"peak RSS:                {peak_rss_mib():.0f} MiB")


def cmd_collect(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with (root / "queries.jsonl").open("w") as handle:
            for i in range(args.items):
                handle.write(json.dumps({"id": f"q-{i:06d}", "prompt": f"What is {i} + 1?", "answer": str(i + 1),
                                         "domain": f"d{i % 6}", "split": "reasoning", "scorer": "numeric"}) + "\n")
        (root / "answers.jsonl").write_text(json.dumps({"prompt": "x", "response": "y"}) + "\n")
        (root / "test_bench.py").write_text("def test_answer(ipw_bench):\n    ipw_bench()\n")
        (root / "test_plain.py").write_text(
            "import pytest\n\n@pytest.mark.parametrize('i', range(%d))\ndef test_plain(i):\n    pass\n" % args.items)
        base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--collect-only", "-q"]
        timings = {}
        for name, extra in (("plain parametrized", ["test_plain.py"]),
                            ("pytest-ipw per-query", ["test_bench.py", "--ipw-dataset=queries.jsonl",
                                                      "--ipw-model=recorded:answers.jsonl"])):
            started = time.perf_counter()
            subprocess.run(base + extra, cwd=root, check=True, stdout=subprocess.DEVNULL)
            timings[name] = time.perf_counter() - started
    for name, seconds in timings.items():
        print(f"collect {args.items:,} items, {name}: {seconds:.2f} s")
    print(f"pytest-ipw / plain: {timings['pytest-ipw per-query'] / timings['plain parametrized']:.2f}  (target <= 20 s)")


def cmd_import(args: argparse.Namespace) -> None:
    def best_of(code: str, runs: int = 15) -> float:
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - started)
        return min(times)

    bare = best_of("import pytest")
    with_plugin = best_of("import pytest, pytest_ipw.plugin")
    print(f"python -c 'import pytest':                   {bare * 1000:.0f} ms (best of 15)")
    print(f"python -c 'import pytest, pytest_ipw.plugin': {with_plugin * 1000:.0f} ms")
    print(f"plugin import cost:                          {(with_plugin - bare) * 1000:.1f} ms  (target <= 30 ms)")


def cmd_soak(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with (root / "queries.jsonl").open("w") as q, (root / "answers.jsonl").open("w") as a:
            for i in range(args.queries):
                prompt = f"What is {i} + 1?"
                q.write(json.dumps({"id": f"q-{i:06d}", "prompt": prompt, "answer": str(i + 1), "domain": f"d{i % 6}",
                                    "split": "reasoning", "scorer": "numeric"}) + "\n")
                a.write(json.dumps({"prompt": prompt, "response": str(i + 1 if i % 3 else i)}) + "\n")
        (root / "conftest.py").write_text(
            "import os, threading, psutil\n"
            "samples = []\n"
            "def pytest_runtest_teardown(item):\n"
            "    n = len(samples)\n"
            "    if n % 500 == 0:\n"
            "        p = psutil.Process()\n"
            "        samples.append((n, p.memory_info().rss, threading.active_count(), len(p.open_files())))\n"
            "    else:\n"
            "        samples.append(None)\n"
            "def pytest_sessionfinish(session):\n"
            "    import json\n"
            "    p = psutil.Process()\n"
            "    kept = [s for s in samples if s]\n"
            "    json.dump({'samples': kept, 'end_threads': threading.active_count()}, open('soak.json', 'w'))\n")
        (root / "test_bench.py").write_text("def test_answer(ipw_bench):\n    ipw_bench()\n")
        (root / "test_plain.py").write_text(
            "import pytest\n\n@pytest.mark.parametrize('i', range(%d))\ndef test_plain(i):\n    pass\n" % args.queries)
        results = {}
        for name, extra in (("plain pytest, same number of tests", ["test_plain.py"]),
                            ("pytest-ipw, recorded backend", ["test_bench.py", "--ipw-dataset=queries.jsonl",
                                                              "--ipw-model=recorded:answers.jsonl",
                                                              "--ipw-meter=estimate"])):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *extra],
                           cwd=root, check=True, stdout=subprocess.DEVNULL)
            elapsed = time.perf_counter() - started
            results[name] = (elapsed, json.loads((root / "soak.json").read_text())["samples"])
    for name, (elapsed, samples) in results.items():
        half = len(samples) // 2
        xs = [s[0] for s in samples[half:]]
        ys = [s[1] / 2**20 for s in samples[half:]]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
        print(f"{name}: {args.queries:,} tests in {elapsed:.1f} s; RSS {samples[0][1] / 2**20:.0f} -> "
              f"{samples[-1][1] / 2**20:.0f} MiB; slope over the 2nd half {slope * 1000:.2f} MiB per 1000 tests; "
              f"threads {samples[0][2]} -> {samples[-1][2]}; open files {samples[0][3]} -> {samples[-1][3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description="pytest-ipw scale figures")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, option, default in (("aggregate", cmd_aggregate, "--records", 1_000_000),
                                        ("compare", cmd_compare, "--records", 1_000_000),
                                        ("collect", cmd_collect, "--items", 20_000),
                                        ("import", cmd_import, None, None),
                                        ("soak", cmd_soak, "--queries", 20_000)):
        command = sub.add_parser(name)
        if option:
            command.add_argument(option, type=int, default=default)
        command.set_defaults(func=func)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
