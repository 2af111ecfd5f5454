"""Through a real pytest run (pytester, recorded answers, a replayed power trace): --ipw-repeat rounds, the
prefill/decode split at the recorded first token, and the comparability card in the results file."""

from __future__ import annotations

import json

import pytest

QUERIES = [
    {"id": "add-1", "prompt": "What is 2 + 2? Answer with just the number.", "answer": "4", "domain": "math",
     "split": "reasoning", "scorer": "numeric"},
    {"id": "cap-1", "prompt": "What is the capital of France? Answer with one word.", "answer": "Paris",
     "domain": "geo", "split": "chat", "scorer": "exact"},
]
WATTS, TTFT_S, LATENCY_S = 80.0, 0.03, 0.09


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in QUERIES) + "\n")
    (pytester.path / "answers.jsonl").write_text("\n".join(
        json.dumps({"prompt": q["prompt"], "response": {"add-1": "4", "cap-1": "Paris"}[q["id"]], "tokens_in": 12,
                    "tokens_out": 5, "latency_s": LATENCY_S, "ttft_s": TTFT_S}) for q in QUERIES) + "\n")
    rows = ["# provenance: measured", "# sensor: wall meter (test)", "# domain: system", "timestamp,watts"]
    rows += [f"{k / 100:.2f},{WATTS}" for k in range(6001)]  # 80 W for 60 s, every 10 ms
    (pytester.path / "trace.csv").write_text("\n".join(rows) + "\n")
    pytester.makepyfile(test_bench="""
def test_answer(ipw_bench):
    result = ipw_bench()
    for record in result if isinstance(result, list) else [result]:
        assert record["provenance"] == "measured"
""")
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-model=recorded:answers.jsonl",
                              "--ipw-meter=replay:trace.csv", "--ipw-json=r.json", "--ipw-warmup=0",
                              "--ipw-journal=j.jsonl", *args)


def test_every_round_is_kept_and_the_noise_reported(project):
    result = run(project, "--ipw-repeat=3", "--ipw-idle-seconds=0")
    result.assert_outcomes(passed=2)
    document = json.loads((project.path / "r.json").read_text())
    records = document["records"]
    assert sorted((r["query_id"], r["round"]) for r in records) == [(q, n) for q in ("add-1", "cap-1") for n in (1, 2, 3)]
    assert all(r["prefix_cache_reset"] is True for r in records)
    (summary,) = document["summary"]
    assert summary["queries"] == 2 and summary["rounds"] == 3  # a query counts once, averaged over its rounds
    assert not document["partial"] and document["expected_records"] == 6
    (noise,) = document["repeats"]["noise"]
    assert noise["rounds"] == 3 and noise["queries"] == 2 and noise["energy_cv_median"] >= 0
    per_query = document["repeats"]["queries"]
    assert {q["query_id"] for q in per_query} == {"add-1", "cap-1"}
    for row in per_query:
        mine = [r["joules"] for r in records if r["query_id"] == row["query_id"]]
        assert row["mean_joules"] == pytest.approx(sum(mine) / 3)
    result.stdout.fnmatch_lines(["repeats: answers@cpu: 3 rounds of 2 queries, energy CV median *MEASURED*prompt "
                                 "cache reset before each round)*", "*10-15%*"])


def test_repeated_rounds_resume_from_the_journal(project):
    run(project, "--ipw-repeat=2", "--ipw-idle-seconds=0").assert_outcomes(passed=2)
    resumed = run(project, "--ipw-repeat=2", "--ipw-idle-seconds=0", "--ipw-resume")
    resumed.assert_outcomes(passed=2)
    document = json.loads((project.path / "r.json").read_text())
    assert document["settings"]["resumed_records"] == 4 and len(document["records"]) == 4


@pytest.mark.parametrize("args, message", [
    (["--ipw-repeat=0"], "*--ipw-repeat must be at least 1, got 0*"),
    (["--ipw-repeat=2", "--ipw-batch-size=4"], "*--ipw-repeat=2 repeats single queries*--ipw-batch-size=4*"),
])
def test_bad_repeat_settings_are_one_clear_error(project, args, message):
    result = run(project, *args)
    assert result.ret != 0
    result.stderr.fnmatch_lines([message])


def test_the_window_is_split_at_the_recorded_first_token(project):
    result = run(project, "--ipw-idle-seconds=0")
    result.assert_outcomes(passed=2)
    document = json.loads((project.path / "r.json").read_text())
    for record in document["records"]:
        assert record["phase_split"] == "recorded power samples split at the mark"
        assert record["prefill_joules"] + record["decode_joules"] == pytest.approx(record["joules"])
        assert record["prefill_s"] + record["decode_s"] == pytest.approx(record["seconds"])
        assert record["prefill_s"] >= TTFT_S  # the window opens before the call and the mark comes at ttft
        # a constant 80 W trace: each phase's energy is 80 W times its time, whatever the machine's speed
        assert record["prefill_joules"] == pytest.approx(WATTS * record["prefill_s"], rel=1e-6)
        assert record["decode_joules"] == pytest.approx(WATTS * record["decode_s"], rel=1e-6)
        assert record["decode_tokens"] == 4
        assert record["joules_per_input_token"] == pytest.approx(record["prefill_joules"] / 12)
        assert record["joules_per_output_token"] == pytest.approx(record["decode_joules"] / 4)
    (summary,) = document["summary"]
    assert summary["phase_queries"] == 2
    result.stdout.fnmatch_lines(["energy by phase: prefill = until the first token*",
                                 "*answers*cpu*2/2*MEASURED system"])


def test_results_carry_the_comparability_card(project):
    run(project, "--ipw-idle-seconds=0.2").assert_outcomes(passed=2)
    document = json.loads((project.path / "r.json").read_text())
    card = document["comparability"]["answers-cpu"]
    assert card["sensor"].startswith("replay: trace.csv") and card["provenance"] == "measured"
    assert (card["domain"], card["scope"], card["reading"]) == ("system", "system", "gauge")
    assert card["update_period_s"] == pytest.approx(0.01) and card["sampling_hz"] == 20.0
    assert card["idle_floor_w"] == pytest.approx(WATTS)
    assert card["permissions"]["level"] in ("root", "sudo", "none")
    assert card["runtime_build"] == {"backend": "recorded"}
    assert set(card) >= {"power_limit_w", "clocks", "driver", "thermal", "fallback_reason"}
