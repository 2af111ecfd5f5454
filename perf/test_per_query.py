"""Benchmarks of what pytest-ipw adds per query, without a model: scoring answers, collecting per-query test
items, and a whole run of per-query items on a recorded backend, each against a plain parametrized test of
as many items (the ratio of the two means is the figure; the issue's goal for collection is <= 1.2x).

Runs are fresh pytest processes through the public command line, so they measure whatever implementation
is installed. Items per run: the ``--perf-sizes`` size, at most 20,000 to collect and 2,000 to run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_ipw.queries.schema import Query, load_queries
from pytest_ipw.scoring.scorers import score

COLLECT_ITEMS_MAX = 20_000
RUN_ITEMS_MAX = 2_000
SUBPROCESS_ROUNDS = 3


def synthetic_answers() -> list[tuple[Query, str]]:
    """Each shipped query that needs no judge model, answered three ways: its reference in a sentence, a
    wrong number, and a long answer that ends with the reference."""
    pairs = []
    for query in load_queries():
        if query.scorer == "judge":
            continue
        pairs += [(query, f"The answer is {query.answer}."), (query, "I think it is 42."),
                  (query, f"Let me think step by step. {'First, read the question. ' * 4}So: {query.answer}")]
    return pairs


def test_scoring(benchmark):
    """Scoring answers with the shipped queries' scorers (per answer: divide the mean by ``answers``)."""
    pairs = synthetic_answers()
    benchmark.extra_info["answers"] = len(pairs)
    scores = benchmark(lambda: [score(query, text) for query, text in pairs])
    right, wrong = sum(s.correct for s in scores[0::3]), sum(s.correct for s in scores[1::3])
    assert right > 0.75 * len(pairs) / 3 > wrong  # the reference in a sentence mostly reads as right, "42" not


@pytest.fixture(scope="session")
def project(tmp_path_factory: Any, size: int) -> Path:
    """A project of ``size`` queries (at most 20,000) with recorded answers, a per-query benchmark and a
    plain parametrized test of as many items."""
    items = min(size, COLLECT_ITEMS_MAX)
    root = tmp_path_factory.mktemp(f"project-{size}")
    with (root / "queries.jsonl").open("w") as queries, (root / "answers.jsonl").open("w") as answers:
        for i in range(items):
            prompt = f"What is {i} + 1? Reply with only the number."
            queries.write(json.dumps({"id": f"q-{i:06d}", "prompt": prompt, "answer": str(i + 1),
                                      "domain": f"d{i % 6}", "split": "reasoning", "scorer": "numeric"}) + "\n")
            answers.write(json.dumps({"prompt": prompt, "response": str(i + 1 if i % 3 else i)}) + "\n")
    (root / "test_bench.py").write_text("def test_answer(ipw_bench):\n    ipw_bench()\n")
    (root / "test_plain.py").write_text("import pytest\n\n\n@pytest.mark.parametrize('i', range(int(__import__('os')"
                                        ".environ['PERF_ITEMS'])))\ndef test_plain(i):\n    pass\n")
    return root


def pytest_process(root: Path, items: int, *args: str) -> None:
    env = {**os.environ, "PERF_ITEMS": str(items)}
    subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args], cwd=root, env=env,
                   check=True, stdout=subprocess.DEVNULL)


def per_query_args(items: int) -> list[str]:
    # no idle baseline: it is a fixed cost (--ipw-idle-seconds), not a per-query one
    return ["test_bench.py", "--ipw-dataset=queries.jsonl", "--ipw-model=recorded:answers.jsonl",
            "--ipw-meter=estimate", "--ipw-idle-seconds=0", f"--ipw-limit={items}"]


@pytest.mark.parametrize("kind", ["plain", "per-query"])
def test_collect(benchmark, project, size, kind):
    """A fresh pytest collecting the items (start-up included); compare the two kinds' means."""
    items = min(size, COLLECT_ITEMS_MAX)
    args = ["test_plain.py"] if kind == "plain" else per_query_args(items)
    benchmark.extra_info["items"] = items
    benchmark.pedantic(pytest_process, args=(project, items, "--collect-only", *args), rounds=SUBPROCESS_ROUNDS,
                       iterations=1)


@pytest.mark.parametrize("kind", ["plain", "per-query"])
def test_run(benchmark, project, size, kind):
    """A fresh pytest running the items: per-query items answer from the recorded backend and are measured
    by the estimate meter, scored, recorded and reported; the difference to the plain test is the harness."""
    items = min(size, RUN_ITEMS_MAX)
    args = ["test_plain.py"] if kind == "plain" else per_query_args(items)
    benchmark.extra_info["items"] = items
    benchmark.pedantic(pytest_process, args=(project, items, *args), rounds=SUBPROCESS_ROUNDS, iterations=1)
