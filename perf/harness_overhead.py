"""Harness overhead: `pytest benchmarks/` versus a plain llama-cpp-python loop over the same prompts.

Both run the embedded SmolLM2 model on the same queries with the same settings (temperature 0, seed 0,
max_tokens 64, n_ctx 2048, CPU). The plain loop includes its own model load, as the pytest run does.
Prints both wall times and their ratio; run from the repository root:

    python perf/harness_overhead.py [--limit N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def plain_loop(limit: int | None) -> tuple[float, int]:
    import llama_cpp

    from pytest_ipw.backends.models import embedded_gguf_path
    from pytest_ipw.queries.schema import load_queries, select_queries

    queries = select_queries(load_queries(), limit=limit)
    started = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(embedded_gguf_path()), n_ctx=2048, n_gpu_layers=0, seed=0, verbose=False)
    llm.create_chat_completion(messages=[{"role": "user", "content": "Reply with the word OK."}], temperature=0.0,
                               seed=0, max_tokens=64)  # the same one warm-up generation the plugin does
    for query in queries:
        for _ in llm.create_chat_completion(messages=[{"role": "user", "content": query.prompt}], temperature=0.0,
                                            seed=0, max_tokens=64, stream=True):
            pass
    elapsed = time.perf_counter() - started
    llm.close()
    return elapsed, len(queries)


def pytest_run(limit: int | None, extra: list[str]) -> float:
    command = [sys.executable, "-m", "pytest", "benchmarks/", "-q", "-p", "no:cacheprovider", *extra]
    if limit:
        command.append(f"--ipw-limit={limit}")
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="queries per run (default: the whole shipped set)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds of both (default 1)")
    parser.add_argument("--pytest-args", default="", help="extra options for the pytest run, e.g. '--ipw-idle-seconds=0'")
    args = parser.parse_args()
    plain_times, harness_times = [], []
    count = 0
    for _ in range(args.rounds):
        elapsed, count = plain_loop(args.limit)
        plain_times.append(elapsed)
        harness_times.append(pytest_run(args.limit, args.pytest_args.split()))
    plain, harness = statistics.median(plain_times), statistics.median(harness_times)
    print(f"queries per run:        {count}")
    print(f"plain llama-cpp loop:   {plain:.2f} s  (median of {args.rounds})")
    print(f"pytest benchmarks/ {args.pytest_args}: {harness:.2f} s  (median of {args.rounds}, includes pytest start-up, "
          "collection and, unless disabled, the 2 s idle baseline)")
    print(f"harness overhead ratio: {harness / plain:.3f}  ({(harness / plain - 1) * 100:+.1f}% wall time)")


if __name__ == "__main__":
    main()
