"""Benchmarks that do their own thing hand their measurements to ``ipw_record`` (issue 18)."""

from __future__ import annotations

import importlib.util
import json

import pytest
from support import REPO, fixed_meter_conftest

N = 6
PIPELINE = '''
import pytest

@pytest.mark.ipw(min_accuracy=0.9)
def test_two_step(ipw_model, power_meter, ipw_query, ipw_record):
    if ipw_record.resumed:
        return
    with power_meter.window():
        draft = ipw_model.generate(ipw_query.prompt)
    with power_meter.window():
        final = ipw_model.generate(ipw_query.prompt)
    ipw_record(final.text, generations=[draft, final])
'''


def queries() -> list[dict]:
    return [{"id": f"q{i}", "prompt": f"What is {i} + {i}? Answer with just the number.", "answer": str(2 * i),
             "domain": "math", "split": "reasoning", "scorer": "numeric"} for i in range(1, N + 1)]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries()))
    with (pytester.path / "model.jsonl").open("w") as handle:
        for i, query in enumerate(queries(), start=1):
            answer = str(2 * i) if i % 3 else "0"  # every third answer wrong
            handle.write(json.dumps({"prompt": query["prompt"], "response": answer, "tokens_in": 12,
                                     "tokens_out": 3, "ttft_s": 0.01, "latency_s": 0.02}) + "\n")
    pytester.makeconftest(fixed_meter_conftest(2.0))
    pytester.makepyfile(test_pipeline=PIPELINE)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-model=recorded:model.jsonl",
                              "--ipw-idle-seconds=0", *args)


def test_a_pipeline_record_is_a_record_like_any_other(project: pytest.Pytester):
    result = run(project, "--ipw-json=run.json")
    result.assert_outcomes(passed=N)
    document = json.loads((project.path / "run.json").read_text())
    records = document["records"]
    assert len(records) == N
    for record in records:
        assert record["joules"] == 4.0 and len(record["energy_windows"]) == 2  # two windows of 2 J, summed
        assert record["tokens_out"] == 6 and record["tokens_in"] == 24  # summed over the two generations
        assert record["ttft_s"] == 0.01  # the first generation's
        assert record["verdict_source"] == "scorer" and record["benchmark"].endswith("test_two_step")
    assert document["summary"][0]["accuracy"] == pytest.approx(4 / 6)
    result.stdout.fnmatch_lines(["*intelligence per watt*", "*model*cpu*6*0.667*",
                                 "*IPW THRESHOLD MISSED: model@cpu in test_pipeline.py::test_two_step: accuracy*"])
    assert result.ret == 1  # the marker's threshold judges the pipeline's own records


def test_a_pipeline_can_give_its_own_verdict(project: pytest.Pytester):
    project.makepyfile(test_pipeline='''
def test_judged_by_the_test(ipw_model, power_meter, ipw_query, ipw_record):
    with power_meter.window():
        answer = ipw_model.generate(ipw_query.prompt)
    ipw_record(answer.text, generations=[answer], correct=True, extracted="by hand")
''')
    run(project, "--ipw-json=run.json").assert_outcomes(passed=N)
    records = json.loads((project.path / "run.json").read_text())["records"]
    assert all(r["correct"] and r["verdict_source"] == "test" and r["extracted"] == "by hand" for r in records)


@pytest.mark.parametrize("body, message", [
    ("ipw_record('4')", "*ipw_record: no energy window was measured in this test*power_meter.window()*"),
    ("with power_meter.window():\n        pass\n    ipw_record('4')\n    ipw_record('4')",
     "*ipw_record: query 'q*' was already recorded in this test*"),
])
def test_misuse_is_one_clear_failure(project: pytest.Pytester, body: str, message: str):
    project.makepyfile(test_pipeline=f'''
def test_misused(ipw_model, power_meter, ipw_query, ipw_record):
    {body}
''')
    result = run(project, "--ipw-limit=1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([message])
    assert "pytest_ipw/run/custom.py" not in result.stdout.str()  # no traceback from inside


def test_pipeline_records_resume_and_compare(project: pytest.Pytester):
    assert run(project, "--ipw-journal=j.jsonl", "--ipw-json=a.json", "--ipw-autosave").ret == 1  # threshold
    resumed = run(project, "--ipw-journal=j.jsonl", "--ipw-resume", "--ipw-json=b.json", "--ipw-compare",
                  "--ipw-compare-fail=accuracy:2pt")
    resumed.assert_outcomes(passed=N)
    a = json.loads((project.path / "a.json").read_text())
    b = json.loads((project.path / "b.json").read_text())
    assert b["settings"]["resumed_records"] == N
    assert a["summary"][0]["accuracy"] == b["summary"][0]["accuracy"]
    resumed.stdout.fnmatch_lines(["compared with *0001_*"])
    assert "IPW REGRESSION" not in resumed.stdout.str()


def test_example_pipelines_run_on_the_recorded_model(project: pytest.Pytester):
    examples = REPO / "examples" / "pipelines"
    for name in ("test_self_consistency.py", "test_answer_then_check.py"):
        (project.path / name).write_text((examples / name).read_text())
    (project.path / "test_pipeline.py").unlink()
    spec = importlib.util.spec_from_file_location("answer_then_check", examples / "test_answer_then_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    template = module.CHECK  # the example's own prompt, so the recorded model can answer it
    with (project.path / "model.jsonl").open("a") as handle:
        for i, query in enumerate(queries(), start=1):
            draft = str(2 * i) if i % 3 else "0"
            handle.write(json.dumps({"prompt": template.format(question=query["prompt"], answer=draft),
                                     "response": str(2 * i), "tokens_in": 30, "tokens_out": 3}) + "\n")
    result = run(project, "--ipw-json=run.json")
    result.assert_outcomes(passed=2 * N)
    records = json.loads((project.path / "run.json").read_text())["records"]
    by_benchmark: dict[str, list[dict]] = {}
    for record in records:
        by_benchmark.setdefault(record["benchmark"].split("::")[-1], []).append(record)
    assert {k: len(v) for k, v in by_benchmark.items()} == {"test_self_consistency": N, "test_answer_then_check": N}
    assert all(len(r["energy_windows"]) == 3 for r in by_benchmark["test_self_consistency"])
    assert all(len(r["energy_windows"]) == 2 for r in by_benchmark["test_answer_then_check"])
    # the recorded model answers every sample alike, so the vote keeps its accuracy; the check revises
    assert sum(r["correct"] for r in by_benchmark["test_self_consistency"]) == 4
    assert sum(r["correct"] for r in by_benchmark["test_answer_then_check"]) == N


SINGLE_SHOT = '''
def test_single_shot(ipw_bench):
    ipw_bench()
'''


def test_two_benchmarks_on_the_same_queries_are_two_systems(project: pytest.Pytester):
    project.makepyfile(test_single=SINGLE_SHOT)
    result = run(project, "--ipw-json=run.json", "--ipw-autosave")
    result.assert_outcomes(passed=2 * N)
    document = json.loads((project.path / "run.json").read_text())
    systems = {s["system"] for s in document["summary"]}
    assert systems == {"model@cpu[test_two_step]", "model@cpu[test_single_shot]"}
    assert {s["benchmark"] for s in document["summary"]} == {"test_two_step", "test_single_shot"}
    assert {r["system"] for r in document["records"]} == systems
    assert set(document["coverage"]["systems"]) == systems
    assert {row["system"] for row in document["accuracy_by_domain"]} == systems
    result.stdout.fnmatch_lines(["model*cpu*test_two_step*6*", "model*cpu*test_single_shot*6*"])

    from pytest_ipw.analysis import coverage_analysis, routing_analysis

    members = coverage_analysis(document["records"]).members
    assert set(members) == systems
    routing = routing_analysis(document["records"])
    assert set(routing.candidates) | {routing.fallback} >= systems

    # a later run compares each benchmark's row with its own baseline row, paired by benchmark and query
    again = run(project, "--ipw-compare", "--ipw-compare-fail=accuracy:2pt")
    assert "IPW REGRESSION" not in again.stdout.str()  # (exit 1 comes from test_two_step's own threshold)
    again.stdout.fnmatch_lines(["*model@cpu[[]test_two_step[]]*accuracy*", "*model@cpu[[]test_single_shot[]]*accuracy*"])


def test_one_benchmark_keeps_todays_rows(project: pytest.Pytester):
    run(project, "--ipw-json=run.json")
    document = json.loads((project.path / "run.json").read_text())
    assert [s["system"] for s in document["summary"]] == ["model@cpu"] and document["summary"][0]["benchmark"] is None


def test_hooks_see_every_record_and_the_results(project: pytest.Pytester):
    project.makeconftest(fixed_meter_conftest(2.0) + '''
seen = []

def pytest_ipw_record(config, record):
    seen.append(record["query_id"])

def pytest_ipw_results(config, results):
    assert sorted(seen) == sorted(r["query_id"] for r in results["records"])
    print(f"HOOKS SAW {len(seen)} RECORDS")
''')
    result = run(project, "-s")
    result.stdout.fnmatch_lines([f"*HOOKS SAW {N} RECORDS*"])
