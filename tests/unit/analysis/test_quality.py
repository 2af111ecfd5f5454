"""Strict vs flexible scoring (both reported), and the output-length guard."""

from __future__ import annotations

import json

import pytest

from pytest_ipw.analysis.quality import judge_cost, quality_lines, quality_summary
from pytest_ipw.queries.schema import Query
from pytest_ipw.scoring.scorers import extract_choice_strict, extract_number_strict, score

TEN = tuple(f"option {i}" for i in range(10))
MC = Query(id="mc", prompt="Pick one.", answer="J", domain="d", split="reasoning", scorer="choice", choices=TEN)
MATH = Query(id="m", prompt="Tom has 3 apples and buys 4.", answer="7", domain="d", split="reasoning", scorer="numeric")


@pytest.mark.parametrize(("response", "flexible", "strict"), [
    ("The answer is (J).", True, True),              # MMLU-Pro's format: both
    ("Answer: J", True, True),
    ("J", True, True),                               # only the letter, as asked
    ("I would pick J) option 9 here.", True, False),  # right, but not in the requested format
    ("**The answer is (J)**", True, True),
    ("The answer is (K).", False, False),            # no 11th option
    ("Option J, surely.", True, False),            # the flexible marker reading; strict wants "answer is"
])
def test_choice_strict_and_flexible(response, flexible, strict):
    result = score(MC, response)
    assert (result.correct, result.correct_strict) == (flexible, strict), result


@pytest.mark.parametrize(("response", "flexible", "strict"), [
    ("3 + 4 = 7\n#### 7", True, True),       # GSM8K's format
    ("The answer is 7.", True, True),
    ("\\boxed{7}", True, True),
    ("7", True, True),
    ("He ends with 7 apples.", True, False),  # flexible finds the number; strict wants the format
    ("Adding gives 3 + 4 = 7 apples in total.", True, False),
])
def test_numeric_strict_and_flexible(response, flexible, strict):
    result = score(MATH, response)
    assert (result.correct, result.correct_strict) == (flexible, strict), result


def test_strict_extractors_reject_what_is_not_in_the_format():
    assert extract_choice_strict("the answer is a plant", 4) is None
    assert extract_choice_strict("The answer is (c)", 4) == "C"
    assert extract_choice_strict("The answer is (E)", 4) is None  # only four options
    assert extract_number_strict("So 5 apples") is None
    assert extract_number_strict("#### 1,234") == 1234.0


def test_exact_and_regex_have_no_separate_strict_reading():
    query = Query(id="e", prompt="Capital of France?", answer="Paris", domain="d", split="chat", scorer="exact")
    result = score(query, "Paris.")
    assert result.correct and result.correct_strict is True and result.extracted_strict == result.extracted


def record(model: str, correct: bool, strict: bool | None, truncated: bool, tokens: int, **extra) -> dict:
    return {"model": model, "accelerator": "cpu", "correct": correct, "correct_strict": strict,
            "truncated": truncated, "tokens_out": tokens, **extra}


def test_quality_summary_flags_truncation_and_reports_both_accuracies():
    records = ([record("chatty", True, False, True, 64) for _ in range(3)]
               + [record("chatty", False, False, False, 20) for _ in range(7)]
               + [record("terse", True, True, False, 2) for _ in range(10)])
    rows = {r["model"]: r for r in quality_summary(records, max_tokens=64)}
    assert rows["chatty"]["accuracy_flexible"] == 0.3 and rows["chatty"]["accuracy_strict"] == 0.0
    assert rows["chatty"]["truncated"] == 3 and rows["chatty"]["truncation_flag"] is True
    assert rows["chatty"]["mean_tokens_out"] == pytest.approx((3 * 64 + 7 * 20) / 10)
    assert rows["terse"]["truncation_flag"] is False and rows["terse"]["accuracy_strict"] == 1.0
    lines = quality_lines(records, max_tokens=64)
    assert ("OUTPUT TRUNCATED: chatty@cpu: 3 of 10 answers (30%) hit the token limit of --ipw-max-tokens=64; its "
            "accuracy is understated. Raise --ipw-max-tokens, or compare models only at equal limits") in lines
    assert not any(line.startswith("OUTPUT TRUNCATED: terse") for line in lines)
    assert "scoring: chatty@cpu: accuracy 0.300 flexible, 0.000 strict (only answers in the requested format); " \
           "mean 33.2 tokens out" in lines


def test_one_truncated_answer_in_twenty_is_not_flagged():
    records = [record("m", True, True, i == 0, 10) for i in range(20)]
    assert quality_summary(records)[0]["truncation_flag"] is False


def test_records_without_a_strict_reading_give_none_not_a_guess():
    assert quality_summary([record("old", True, None, False, 3)])[0]["accuracy_strict"] is None


def test_judge_cost_counts_only_fresh_verdicts():
    judged = [record("m", True, True, False, 3, judge={"judge": "j", "cached": False, "tokens_in": 40, "tokens_out": 1,
                                                        "joules": 5.0, "energy_provenance": "measured"}),
              record("m", True, True, False, 3, judge={"judge": "j", "cached": True, "tokens_in": 0, "tokens_out": 0,
                                                       "joules": 0.0, "unscorable": False}),
              record("m", True, True, False, 3)]
    cost = judge_cost(judged)
    assert (cost["verdicts"], cost["cached"], cost["tokens_in"], cost["joules"]) == (2, 1, 40, 5.0)
    assert judge_cost([record("m", True, True, False, 3)]) is None


def test_report_shows_tokens_out_beside_accuracy_and_the_truncation_flag(pytester):
    queries = [{"id": f"q{i}", "prompt": f"Q{i}?", "answer": "4", "domain": "d", "split": "reasoning",
                "scorer": "numeric"} for i in range(4)]
    (pytester.path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (pytester.path / "answers.jsonl").write_text("".join(json.dumps(
        {"prompt": q["prompt"], "response": "Let me think step by step about" if i < 2 else "The answer is 4",
         "tokens_out": 64 if i < 2 else 5, "finish_reason": "length" if i < 2 else "stop"}) + "\n"
        for i, q in enumerate(queries)))
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl",
                                "--ipw-model=recorded:answers.jsonl", "--ipw-json=run.json", "--ipw-max-tokens=64")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "*model*accel*queries*accuracy (95% CI)*tok out*unscorable*",
        "*answers*cpu*4*0.500 (*34.5*",
        "scoring: answers@cpu: accuracy 0.500 flexible, 0.500 strict*",
        "OUTPUT TRUNCATED: answers@cpu: 2 of 4 answers (50%) hit the token limit of --ipw-max-tokens=64*",
    ])
    document = json.loads((pytester.path / "run.json").read_text())
    assert document["quality"][0]["truncation_flag"] is True and document["summary"][0]["mean_tokens_out"] == 34.5
    assert {r["token_source"] for r in document["records"]} == {"recorded"}
