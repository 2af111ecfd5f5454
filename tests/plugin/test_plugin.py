"""Plugin behaviour through pytester, with the recorded backend so that answers are known in advance."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

QUERIES = [
    {"id": "add-1", "prompt": "What is 2 + 2? Answer with just the number.", "answer": "4", "domain": "math",
     "split": "reasoning", "scorer": "numeric"},
    {"id": "add-2", "prompt": "What is 3 + 5? Answer with just the number.", "answer": "8", "domain": "math",
     "split": "reasoning", "scorer": "numeric"},
    {"id": "cap-1", "prompt": "What is the capital of France? Answer with one word.", "answer": "Paris",
     "domain": "geo", "split": "chat", "scorer": "exact"},
    {"id": "sci-1", "prompt": "Which is a gas at room temperature?\nA) iron\nB) oxygen\nAnswer with the letter only.",
     "answer": "B", "domain": "science", "split": "reasoning", "scorer": "choice", "choices": ["iron", "oxygen"]},
]

BENCHMARK = """
import pytest

def test_answer(ipw_bench):
    record = ipw_bench()
    assert record["provenance"] in ("measured", "estimated")
"""


def write_answers(pytester: pytest.Pytester, name: str, responses: dict[str, str]) -> str:
    """A recorded-answers file giving ``responses[query id]`` for each shipped test query."""
    lines = []
    for query in QUERIES:
        lines.append(json.dumps({"prompt": query["prompt"], "response": responses[query["id"]],
                                 "tokens_in": 12, "tokens_out": 3, "latency_s": 0.01}))
    path = pytester.path / f"{name}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


ALL_RIGHT = {"add-1": "4", "add-2": "The answer is 8.", "cap-1": "Paris.", "sci-1": "B"}
HALF_RIGHT = {"add-1": "4", "add-2": "7", "cap-1": "London", "sci-1": "B"}
OTHER_HALF = {"add-1": "5", "add-2": "8", "cap-1": "I do not know", "sci-1": "A"}


@pytest.fixture
def project(pytester: pytest.Pytester):
    dataset = pytester.path / "queries.jsonl"
    dataset.write_text("\n".join(json.dumps(q) for q in QUERIES) + "\n")
    pytester.makepyfile(test_bench=BENCHMARK)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # The estimate meter, named, so that these tests read the same on a host whose RAPL is readable;
    # no idle baseline, which would add 2 s per run.
    return pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-meter=estimate",
                              "--ipw-idle-seconds=0", *args)


def test_ids_follow_model_accelerator_query(project):
    half = write_answers(project, "half", HALF_RIGHT)
    other = write_answers(project, "other", OTHER_HALF)
    result = run(project, "--collect-only", "-q", f"--ipw-model=recorded:{half},recorded:{other}")
    result.stdout.fnmatch_lines([
        "test_bench.py::test_answer[half-cpu-add-1]",
        "test_bench.py::test_answer[half-cpu-add-2]",
        "test_bench.py::test_answer[half-cpu-cap-1]",
        "test_bench.py::test_answer[half-cpu-sci-1]",
        "test_bench.py::test_answer[other-cpu-add-1]",
        "*8 tests collected*",
    ])


def test_k_selects_by_query_and_model(project):
    half = write_answers(project, "half", HALF_RIGHT)
    other = write_answers(project, "other", OTHER_HALF)
    result = run(project, "-k", "other and cap", f"--ipw-model=recorded:{half},recorded:{other}")
    result.assert_outcomes(passed=1, deselected=7)


def test_wrong_answers_are_recorded_not_failed_and_reported(project):
    half = write_answers(project, "half", HALF_RIGHT)
    result = run(project, f"--ipw-model=recorded:{half}")
    result.assert_outcomes(passed=4)
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "*intelligence per watt*",
        "*model*accel*queries*accuracy (95% CI)*unscorable*J/query*W*IPW (1/W)*IPJ (1/J)*J/correct*p50 s*p95 s*tok/s*energy source*",
        "*half*cpu*4*0.500 (*",
        "*accuracy by domain*",
        "*energy: ESTIMATED by estimate: psutil CPU utilisation*",
        "*every figure above is an ESTIMATE*",
    ])


def test_min_accuracy_threshold_fails_run_with_one_line_and_no_traceback(project):
    half = write_answers(project, "half", HALF_RIGHT)
    result = run(project, f"--ipw-model=recorded:{half}", "--ipw-min-accuracy=0.75")
    assert result.ret == 1
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*IPW THRESHOLD MISSED: half@cpu: accuracy 0.5 is below 0.75 set by --ipw-min-accuracy"])
    assert "Traceback" not in result.stdout.str()


def test_min_accuracy_threshold_met_passes(project):
    right = write_answers(project, "right", ALL_RIGHT)
    result = run(project, f"--ipw-model=recorded:{right}", "--ipw-min-accuracy=1.0")
    assert result.ret == 0
    assert "THRESHOLD MISSED" not in result.stdout.str()


def test_min_ipw_threshold_says_the_energy_was_estimated(project):
    right = write_answers(project, "right", ALL_RIGHT)
    result = run(project, f"--ipw-model=recorded:{right}", "--ipw-min-ipw=1e9")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*IPW THRESHOLD MISSED: right@cpu: ipw * is below 1e+09 set by --ipw-min-ipw (energy estimated, not measured)"])


def test_marker_thresholds_and_domains(project):
    half = write_answers(project, "half", HALF_RIGHT)
    project.makepyfile(test_marked="""
        import pytest

        @pytest.mark.ipw(min_accuracy=0.9, domains=["math"])
        def test_math(ipw_bench):
            ipw_bench()
    """)
    result = run(project, "test_marked.py", f"--ipw-model=recorded:{half}")
    result.assert_outcomes(passed=2)  # only the two math queries
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*IPW THRESHOLD MISSED: half@cpu in test_marked.py::test_math: accuracy 0.5 is below 0.9 "
                                 "set by @pytest.mark.ipw(min_accuracy)"])


def test_bad_marker_keyword_is_a_usage_error(project):
    half = write_answers(project, "half", HALF_RIGHT)
    project.makepyfile(test_marked="""
        import pytest

        @pytest.mark.ipw(min_acc=0.9)
        def test_math(ipw_bench):
            ipw_bench()
    """)
    result = run(project, "test_marked.py", f"--ipw-model=recorded:{half}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-ipw: @pytest.mark.ipw takes only the keywords domains, min_accuracy, "
                                 "min_ipw; got min_acc (while collecting test_marked.py::test_math)"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_json_results_schema(project):
    half = write_answers(project, "half", HALF_RIGHT)
    other = write_answers(project, "other", OTHER_HALF)
    result = run(project, f"--ipw-model=recorded:{half},recorded:{other}", "--ipw-json=out/results.json")
    assert result.ret == 0
    document = json.loads((project.path / "out" / "results.json").read_text())
    assert document["schema_version"] == 1
    assert {"machine_info", "settings", "records", "summary", "coverage"} <= set(document)
    assert len(document["records"]) == 8
    record = document["records"][0]
    for field in ("query_id", "domain", "split", "model", "accelerator", "prompt", "response", "correct", "unscorable",
                  "tokens_in", "tokens_out", "latency_s", "ttft_s", "joules", "watts", "meter", "provenance"):
        assert field in record, field
    assert record["provenance"] == "estimated"
    summaries = {s["model"]: s for s in document["summary"]}
    assert set(summaries) == {"half", "other"}
    for field in ("model", "accelerator", "queries", "accuracy", "mean_joules", "mean_watts", "ipw", "ipj", "provenance"):
        assert field in summaries["half"], field
    assert summaries["half"]["accuracy"] == 0.5 and summaries["other"]["accuracy"] == 0.25
    # half gets add-1 and sci-1, other gets add-2: three of four queries are covered
    assert document["coverage"]["covered"] == 3 and document["coverage"]["queries"] == 4
    assert document["coverage"]["by_domain"]["geo"]["coverage"] == 0.0
    assert document["settings"]["generation"]["temperature"] == 0.0


def test_unscorable_answers_stay_in_the_denominator(project):
    answers = write_answers(project, "mute", {"add-1": "", "add-2": "no idea", "cap-1": "Paris", "sci-1": "hmm"})
    run(project, f"--ipw-model=recorded:{answers}", "--ipw-json=r.json")
    summary = json.loads((project.path / "r.json").read_text())["summary"][0]
    assert summary["queries"] == 4
    assert summary["unscorable"] == 3
    assert summary["accuracy"] == 0.25


def test_results_hook_receives_the_document(project):
    half = write_answers(project, "half", HALF_RIGHT)
    project.makeconftest("""
        import json
        def pytest_ipw_results(config, results):
            with open("hooked.json", "w") as f:
                json.dump({"n": len(results["records"])}, f)
    """)
    run(project, f"--ipw-model=recorded:{half}")
    assert json.loads((project.path / "hooked.json").read_text()) == {"n": 4}


def test_limit_and_domains_select_queries(project):
    half = write_answers(project, "half", HALF_RIGHT)
    result = run(project, "--collect-only", "-q", f"--ipw-model=recorded:{half}", "--ipw-limit=2")
    result.stdout.fnmatch_lines(["*half-cpu-add-1*", "*half-cpu-cap-1*", "*2 tests collected*"])
    result = run(project, "--collect-only", "-q", f"--ipw-model=recorded:{half}", "--ipw-domains=geo,science")
    result.stdout.fnmatch_lines(["*cap-1*", "*sci-1*", "*2 tests collected*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ipw-accelerator=tpu9"], "*unknown accelerator 'tpu9' for --ipw-accelerator; known: *a100*cpu*h100*"),
        (["--ipw-accelerator=h100"], "*--ipw-accelerator=h100: this machine has no NVIDIA H100 80GB*found here: cpu*"),
        (["--ipw-domains=poetry"], "*--ipw-domains names poetry, which query set queries.jsonl does not have*geo*"),
        (["--ipw-model=nonexistent-model"], "*unknown model short name 'nonexistent-model'; registered: smollm2-135m*"),
        (["--ipw-model=missing/model.gguf"], "*model file missing/model.gguf (model) does not exist*"),
        (["--ipw-model=foo:bar"], "*--ipw-model=foo:bar: unknown backend 'foo'; known backends:*llama-cpp*"),
        (["--ipw-meter=nvml"], "*--ipw-meter=nvml cannot measure here: NVML could not start*"),
        (["--ipw-min-accuracy=75"], "*--ipw-min-accuracy must lie in 0..1*"),
        (["--ipw-limit=0"], "*--ipw-limit must be at least 1*"),
    ],
)
def test_bad_input_is_one_clear_message(project, args, message):
    result = run(project, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-ipw: " + message.lstrip("*")])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_not_a_gguf_and_malformed_dataset_name_the_file(project):
    (project.path / "fake.gguf").write_bytes(b"PK\x03\x04 this is a zip")
    result = run(project, "--ipw-model=fake.gguf")
    result.stderr.fnmatch_lines(["*model file fake.gguf (fake) is not a GGUF file*"])
    (project.path / "bad.jsonl").write_text(json.dumps(QUERIES[0]) + "\n{not json\n")
    result = project.runpytest("-p", "no:cacheprovider", "--ipw-dataset=bad.jsonl")
    result.stderr.fnmatch_lines(["*query set bad.jsonl, line 2: invalid JSON*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_plugin_unused_changes_nothing(pytester: pytest.Pytester):
    pytester.makepyfile("def test_plain():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "intelligence per watt" not in result.stdout.str()
    assert not (pytester.path / ".ipw").exists()  # no journal, no storage: nothing written


def test_plugin_import_stays_light():
    code = ("import sys, pytest_ipw.plugin; heavy = [m for m in ('llama_cpp', 'datasets', 'pynvml', 'psutil', "
            "'tabulate', 'numpy', 'matplotlib', 'pytest_ipw.run.session') if m in sys.modules]; print(heavy)")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
