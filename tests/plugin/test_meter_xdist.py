"""pytest-xdist runs: the controller collects nothing, so it learns from its workers how many queries were due,
and a run that stops early is reported PARTIAL as in one process."""

from __future__ import annotations

import json

import pytest
from support import fixed_meter_conftest

N = 12


def write_project(root) -> None:
    queries = [{"id": f"q-{i:03d}", "prompt": f"What is {i} + 1?", "answer": str(i + 1), "domain": "d",
                "split": "reasoning", "scorer": "numeric"} for i in range(N)]
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    (root / "answers.jsonl").write_text("\n".join(json.dumps({"prompt": q["prompt"], "response": q["answer"]})
                                                  for q in queries) + "\n")
    (root / "conftest.py").write_text(fixed_meter_conftest())
    (root / "test_bench.py").write_text(
        "def test_answer(ipw_bench, ipw_query):\n"
        "    ipw_bench()\n"
        "    assert ipw_query.id != 'q-002', 'a failing benchmark'\n")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:benchmark", "--ipw-dataset=queries.jsonl",
                                         "--ipw-idle-seconds=0", "--ipw-model=recorded:answers.jsonl",
                                         "--ipw-json=run.json", "-n", "2", *args)


def test_an_xdist_run_that_stops_early_is_partial(pytester: pytest.Pytester):
    write_project(pytester.path)
    result = run(pytester, "-x")
    document = json.loads((pytester.path / "run.json").read_text())
    finished = len(document["records"])
    assert finished < N  # -x stopped the workers
    assert document["expected_records"] == N and document["partial"] is True
    result.stdout.fnmatch_lines([f"*PARTIAL RUN: {finished} of {N} queries finished*"])


def test_a_complete_xdist_run_is_not_partial(pytester: pytest.Pytester):
    write_project(pytester.path)
    result = run(pytester)
    document = json.loads((pytester.path / "run.json").read_text())
    assert len(document["records"]) == N and document["expected_records"] == N and document["partial"] is False
    assert "PARTIAL" not in result.stdout.str()
