"""The study's hub data sets on their real rows (tests/data/hub/, see its README for sources and licences),
laid out like the hub repositories in a temporary directory, scored as their authors score them.

Real rows are here for MMLU-Pro (MIT) and GSM8K (MIT). GPQA's authors ask that its examples not be put
online in plain text, SuperGPQA and WildChat (ODC-BY) are published only on the Hub, and NaturalReasoning
is CC-BY-NC: their mappings are tested on rows written for the test, with the real column names
(tests/test_sources.py), and GPQA's and SuperGPQA's official extraction on replies written here.
Nothing here touches the network (the guard of tests/test_sources.py applies)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import TEST_DATA

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.queries.protocols import PROTOCOLS, official_answer
from pytest_ipw.analysis.quality import quality_lines, quality_summary
from pytest_ipw.queries.schema import Query, SkippedRows, select_queries
from pytest_ipw.scoring.scorers import score
from pytest_ipw.queries.sources import load_query_set, skipped_lines

DATA = TEST_DATA / "hub"


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


MMLU_PRO = rows(DATA / "mmlu-pro" / "test.jsonl")
MMLU_PRO_NA = rows(DATA / "mmlu-pro" / "test-na-layouts.jsonl")  # derived: real questions in "N/A" layouts
MMLU_PRO_OUTPUTS = rows(DATA / "mmlu-pro" / "outputs.jsonl")  # real replies, with the prediction the authors recorded
GSM8K = rows(DATA / "gsm8k" / "test.jsonl")


def _parquet(rows_: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows_), path)


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    """Local copies laid out like the hub repositories: real/ holds only real rows, with-na/ adds the derived ones."""
    root = tmp_path_factory.mktemp("hub")
    validation = rows(DATA / "mmlu-pro" / "validation.jsonl")
    replied = {o["question_id"] for o in MMLU_PRO_OUTPUTS}
    single = [r for r in MMLU_PRO_NA if r["options"].count("N/A") == 3]
    # replied/: the questions with a real reply, and the single-option ones (skipped, so no reply is needed)
    layouts = (("real", [MMLU_PRO]), ("with-na", [MMLU_PRO, MMLU_PRO_NA]),
               ("replied", [[r for r in MMLU_PRO if r["question_id"] in replied], single]))
    for name, shards in layouts:
        data = root / name / "TIGER-Lab" / "MMLU-Pro" / "data"
        for k, shard in enumerate(shards):
            _parquet(shard, data / f"test-{k:05d}-of-{len(shards):05d}.parquet")
        _parquet(validation, data / "validation-00000-of-00001.parquet")
    gsm8k = root / "real" / "openai" / "gsm8k"
    _parquet(GSM8K, gsm8k / "main" / "test-00000-of-00001.parquet")
    _parquet(GSM8K[:3], gsm8k / "main" / "train-00000-of-00001.parquet")
    (gsm8k / "README.md").write_text("---\nconfigs:\n- config_name: main\n  data_files:\n  - split: train\n    path: "
                                     "main/train-*\n  - split: test\n    path: main/test-*\n---\n")
    return root


# --------------------------------------------------------------------------------------------------
# MMLU-Pro: real rows load; rows the mapping cannot use are skipped, counted and named
# --------------------------------------------------------------------------------------------------


def test_real_mmlu_pro_rows_all_load_with_their_letters_options_and_protocol(hub):
    qs = load_query_set(f"hf:{hub}/real/TIGER-Lab/MMLU-Pro")
    by_id = {q.id: q for q in qs.queries}
    assert len(qs.queries) == len(MMLU_PRO) == 44  # the test split, not the 5 validation rows
    for row in MMLU_PRO:
        query = by_id[f"mmlu-pro-{row['question_id']}"]
        assert query.answer == row["answer"] and query.choices == tuple(row["options"])
        assert query.domain == row["category"] and query.protocol == "mmlu-pro"
        assert row["question"].strip() in query.prompt  # LaTeX and long law questions verbatim
        assert all(f"{letter}) {option.strip()}" in query.prompt for letter, option in zip("ABCDEFGHIJ", row["options"]))
    assert max(len(q.prompt) for q in qs.queries) > 4600  # the longest real question (4,671 characters)
    assert any("$0.5 \\mathrm{~kg}$" in q.prompt for q in qs.queries) and {len(q.choices) for q in qs.queries} >= {3, 10}
    assert qs.sources[0]["rows"] == 44 and qs.sources[0]["loaded"] == 44 and qs.sources[0]["skipped"]["count"] == 0
    assert qs.sources[0]["protocol"] == "mmlu-pro"
    assert skipped_lines(qs.sources) == []


def test_mmlu_pro_rows_left_with_one_option_are_skipped_counted_and_named(hub):
    qs = load_query_set(f"hf:{hub}/with-na/TIGER-Lab/MMLU-Pro")
    single = [r for r in MMLU_PRO_NA if r["options"].count("N/A") == 3]
    padded = [r for r in MMLU_PRO_NA if r["options"].count("N/A") == 6]
    assert len(qs.queries) == 44 + len(padded)  # the run goes on without the single-option rows
    for row in padded:  # trailing "N/A" padding dropped, the real options kept
        query = next(q for q in qs.queries if q.id == f"mmlu-pro-{row['question_id']}")
        assert query.choices == tuple(row["options"][:4]) and query.answer == row["answer"]
    skipped = qs.sources[0]["skipped"]
    reason = "fewer than two options once 'N/A' padding is dropped (1)"
    assert skipped["count"] == 3 and skipped["by_reason"] == {reason: 3}
    assert [r["row"] for r in skipped["rows"]] == [f"mmlu-pro-{r['question_id']} (row {45 + k})" for k, r in enumerate(single)]
    lines = skipped_lines(qs.sources)
    assert lines[0].endswith("46 of 49 rows loaded, 3 skipped (rows that cannot become a valid query):")
    assert lines[1] == f"  3 x {reason}: " + ", ".join(r["row"] for r in skipped["rows"])


def test_full_size_stratified_draw_takes_every_category(hub):
    queries = load_query_set(f"hf:{hub}/real/TIGER-Lab/MMLU-Pro").queries
    picked = select_queries(queries, limit=14, seed=1)
    assert len({q.domain for q in picked}) == 14  # one per category before any repeats


# --------------------------------------------------------------------------------------------------
# MMLU-Pro's official extraction against the predictions its authors recorded for real replies
# --------------------------------------------------------------------------------------------------

# The official second stage, applied as the authors' script applies it (fast enough on these short replies).
OFFICIAL_SECOND_STAGE = re.compile(r".*[aA]nswer:\s*([A-J])")


def _query_for(output: dict) -> Query:
    row = next(r for r in MMLU_PRO if r["question_id"] == output["question_id"])
    return Query(id=str(row["question_id"]), prompt=row["question"], answer=row["answer"], domain=row["category"],
                 split="reasoning", scorer="choice", choices=tuple(row["options"]), protocol="mmlu-pro")


@pytest.mark.parametrize("output", MMLU_PRO_OUTPUTS, ids=lambda o: f"{o['model'].split('/')[-1]}-{o['question_id']}")
def test_mmlu_pro_extraction_matches_the_authors_recorded_prediction(output):
    reply = output["generated_text"]
    extracted = PROTOCOLS["mmlu-pro"].extract(reply, _query_for(output))
    if output["model"].startswith("microsoft/Phi-3"):
        # recorded by a first-stage-only version (pred null): compare with the official second stage itself
        assert output["pred"] is None and not re.search(r"answer is \(?([A-J])\)?", reply)
        assert extracted == OFFICIAL_SECOND_STAGE.search(reply).group(1)
    elif not re.search(r"\b[A-J]\b", reply):
        assert extracted is None and output["pred"] == "G"  # no letter: the authors stored their random guess
    else:
        assert extracted == output["pred"]


def test_real_replies_that_run_on_are_read_at_their_first_answer():
    run_on = [o for o in MMLU_PRO_OUTPUTS if len(set(re.findall(r"answer is \(?([A-J])\)?", o["generated_text"]))) > 1]
    assert len(run_on) >= 8  # base models continue into the next few-shot question and answer it too
    for output in run_on:
        first = re.search(r"answer is \(?([A-J])\)?", output["generated_text"]).group(1)
        assert PROTOCOLS["mmlu-pro"].extract(output["generated_text"], _query_for(output)) == first == output["pred"]


def test_scoring_real_replies_takes_strict_from_the_protocol(hub):
    queries = {q.id: q for q in load_query_set(f"hf:{hub}/real/TIGER-Lab/MMLU-Pro").queries}
    for output in MMLU_PRO_OUTPUTS:
        query = queries[f"mmlu-pro-{output['question_id']}"]
        result = score(query, output["generated_text"])
        expected = PROTOCOLS["mmlu-pro"].extract(output["generated_text"], query)
        assert result.extracted_strict == expected
        assert result.correct_strict is (expected == output["answer"])  # no letter: wrong (no random guess here)


# --------------------------------------------------------------------------------------------------
# GSM8K: real rows, and the number after ####
# --------------------------------------------------------------------------------------------------


def test_real_gsm8k_rows_load_with_the_official_final_answer(hub):
    qs = load_query_set(f"hf:{hub}/real/openai/gsm8k")
    assert len(qs.queries) == len(GSM8K) == 26 and qs.sources[0]["skipped"]["count"] == 0
    for query, row in zip(qs.queries, GSM8K):
        official = re.search(r"#### (\-?[0-9\.\,]+)", row["answer"]).group(1).strip().replace(",", "")
        assert query.answer == official and query.protocol == "gsm8k" and query.scorer == "numeric"
        assert query.prompt.startswith(row["question"].strip()) and query.prompt.endswith('"#### N" where N is the final number.')
    assert {"2125", "-10", "1450000", "-3"} <= {q.answer for q in qs.queries}


def test_each_real_gsm8k_solution_is_correct_under_the_official_extraction(hub):
    for query, row in zip(load_query_set(f"hf:{hub}/real/openai/gsm8k").queries, GSM8K):
        result = score(query, row["answer"])  # the reference worked solution, "... #### 1,450,000"
        assert result.correct_strict is True and result.extracted_strict == query.answer


@pytest.mark.parametrize(("reply", "strict"), [
    ("She has 9 eggs left, 9 * 2 = 18.\n#### 18", True),
    ("#### 18\nQuestion: next problem ... #### 40", True),  # the first "#### N" counts
    ("The answer is 18.", False),  # not GSM8K's format
    ("#### 18.00", False),  # compared as text, as the official is_correct does
    ("#### $18", False),
])
def test_gsm8k_official_extraction(reply, strict):
    query = Query(id="g", prompt="p", answer="18", domain="math", split="reasoning", scorer="numeric", protocol="gsm8k")
    assert official_answer(query, reply)[0] is strict
    assert score(query, reply).correct_strict is strict


# --------------------------------------------------------------------------------------------------
# GPQA and SuperGPQA: their published extraction (no real rows here: see the module docstring)
# --------------------------------------------------------------------------------------------------

GPQA_Q = Query(id="gpqa-x", prompt="p", answer="C", domain="Physics", split="reasoning", scorer="choice",
               choices=("w", "x", "y", "z"), protocol="gpqa")


@pytest.mark.parametrize(("reply", "extracted"), [
    ("Reasoning... The correct answer is (C)", "C"),
    ("Answer: (C)", "C"),
    ("Option (a) fails, so the answer is (C).", "C"),  # the "answer is (X)" pattern comes first
    ("The correct answer is C", None),  # the baselines only read a letter in parentheses
    ("(a) first, then (C) second", None),  # only each pattern's first match is tried: "(a)" is not A-D
    ("(C) is right", "C"),
    ("The answer is (E)", None),  # GPQA has four options
])
def test_gpqa_official_extraction(reply, extracted):
    assert official_answer(GPQA_Q, reply) == (extracted == "C", extracted)


SUPERGPQA_Q = Query(id="sg", prompt="p", answer="B", domain="Science", split="reasoning", scorer="choice",
                    choices=("Joule", "Newton", "Watt"), protocol="supergpqa")


@pytest.mark.parametrize(("reply", "extracted"), [
    # the examples SuperGPQA's eval/eval.py documents for its three patterns (the first one its own pattern
    # does not match: "answer" must be followed by "is", one word apart at most)
    ("The final answer to this question is: B.", None),
    ("The best option is $\\boxed{B}:", "B"),
    ("The correct answer is (B).", "B"),
    ("ANSWER: B", "B"),
    ("Answer: $\\boxed{B}.", "B"),
    ("ANSWER: (B):", "B"),
    ("B", "B"),
    ("$\\boxed{B}$", "B"),
    ("(B).", "B"),
    ("[B]:", "B"),
    ("Work...\nAnswer: C\nso it is not B? No.", "C"),  # the last line names no letter: the whole text, first match
    ("Forces are measured in newtons.\nThe answer is Newton.", "B"),  # no letter: an option's text
    ("answer: b", "b"),  # read case-insensitively, compared exactly: the official scoring counts it wrong
    ("I am not sure.", "I"),  # a reply opening with a letter A-J reads as that option
    ("Not sure.", None),
    ("the answer is $\\text{D}$.", "D"),
    ("Final answer: (J)", "J"),
    ("So the answer is probably A, but B.", None),
])
def test_supergpqa_official_extraction(reply, extracted):
    assert official_answer(SUPERGPQA_Q, reply) == (extracted == "B", extracted)


def test_an_unknown_protocol_name_is_a_clear_row_error():
    from pytest_ipw.queries.schema import query_from_row

    with pytest.raises(ValueError, match=r"unknown protocol 'mmlu' \(expected one of: mmlu-pro, gsm8k, gpqa, supergpqa\)"):
        query_from_row({"id": "q", "prompt": "p", "answer": "A", "domain": "d", "split": "reasoning",
                        "scorer": "choice", "choices": ["x", "y"], "protocol": "mmlu"})


# --------------------------------------------------------------------------------------------------
# the report: which strict reading, and where strict and flexible differ
# --------------------------------------------------------------------------------------------------


def _record(correct: bool, strict: bool, protocol: str | None) -> dict:
    return {"model": "m", "accelerator": "cpu", "correct": correct, "correct_strict": strict, "truncated": False,
            "tokens_out": 5, "strict_protocol": protocol}


def test_report_names_the_protocol_and_a_gap_over_one_point():
    records = ([_record(True, True, "mmlu-pro")] * 90 + [_record(True, False, "mmlu-pro")] * 5
               + [_record(False, False, "mmlu-pro")] * 5 + [_record(True, True, "gsm8k")] * 10)
    lines = quality_lines(records)
    assert ("scoring: m@cpu: accuracy 0.955 flexible, 0.909 strict (strict = GSM8K official extraction (#### N), "
            "MMLU-Pro official extraction); mean 5.0 tokens out") in lines
    assert ("scoring: m@cpu: on 100 queries strict (MMLU-Pro official extraction) 0.900 and flexible (the project's "
            "reading) 0.950 differ by 5.0 points; set the strict figure beside published numbers") in lines
    assert not any("GSM8K official extraction (#### N) 1.000" in line for line in lines)  # no gap, no line
    # the known difference from the authors' script is said once (MMLU-Pro's random guess for no answer)
    assert sum(line.startswith("scoring: MMLU-Pro official extraction differs from the official script: a reply with "
                               "no extractable letter counts as wrong here") for line in lines) == 1
    [row] = quality_summary(records)
    assert [(o["protocol"], o["queries"]) for o in row["official_strict"]] == [("gsm8k", 10), ("mmlu-pro", 100)]


def test_report_says_which_queries_use_the_projects_own_strict_rule():
    records = [_record(True, True, "gsm8k")] * 100 + [_record(True, True, None)] * 3
    assert any("(strict = GSM8K official extraction (#### N); the project's format rule on the other 3)" in line
               for line in quality_lines(records))
    assert not any("differ by" in line for line in quality_lines(records))
    # without any protocol the line is as before
    assert any("(only answers in the requested format)" in line for line in quality_lines([_record(True, False, None)]))


# --------------------------------------------------------------------------------------------------
# a user's own file stays strict unless --ipw-skip-invalid
# --------------------------------------------------------------------------------------------------

USER_ROWS = [
    {"id": "ok-1", "prompt": "2 + 2?", "answer": "4", "domain": "math", "split": "reasoning", "scorer": "numeric"},
    {"id": "bad-1", "prompt": "Pick.", "answer": "A", "domain": "d", "split": "reasoning", "scorer": "choice",
     "choices": ["only"]},
    {"id": "ok-1", "prompt": "again", "answer": "4", "domain": "math", "split": "reasoning", "scorer": "numeric"},
    {"id": "ok-2", "prompt": "3 + 3?", "answer": "6", "domain": "math", "split": "reasoning", "scorer": "numeric"},
]


def test_a_users_file_is_strict_and_names_the_option_that_skips(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in USER_ROWS))
    with pytest.raises(IPWUsageError, match=r"mine.jsonl, line 2: scorer 'choice' needs a 'choices' list with at least "
                                            r"two options. Fix that row, or pass --ipw-skip-invalid"):
        load_query_set(str(path))
    qs = load_query_set(str(path), skip_invalid=True)
    assert [q.id for q in qs.queries] == ["ok-1", "ok-2"]
    assert qs.sources[0]["skipped"] == {
        "count": 2, "rows_named": 2,
        "by_reason": {"scorer 'choice' needs a 'choices' list with at least two options": 1,
                      "duplicate id (the first is kept)": 1},
        "rows": [{"row": "bad-1 (line 2)", "reason": "scorer 'choice' needs a 'choices' list with at least two options"},
                 {"row": "ok-1 (line 3)", "reason": "duplicate id (the first is kept)"}]}


def test_a_users_mapped_file_skips_too_and_all_bad_is_still_an_error(tmp_path):
    path = tmp_path / "mapped.jsonl"
    path.write_text(json.dumps({"q": "Pick.", "opts": ["only"], "gold": "A", "s": "choice"}) + "\n"
                    + json.dumps({"q": "2 + 2?", "opts": [], "gold": "4", "s": "numeric"}) + "\n")
    qs = load_query_set(str(path), "prompt=q,choices=opts,answer=gold,scorer=s", skip_invalid=True)
    assert len(qs.queries) == 1 and qs.sources[0]["skipped"]["rows"][0]["row"] == "row 1"
    path.write_text(json.dumps({"q": "Pick.", "opts": ["only"], "gold": "A", "s": "choice"}) + "\n")
    with pytest.raises(IPWUsageError, match=r"has no valid rows \(1 skipped: 1 scorer 'choice' needs"):
        load_query_set(str(path), "prompt=q,choices=opts,answer=gold,scorer=s", skip_invalid=True)


def test_skipped_rows_are_bounded_in_what_they_keep():
    skipped = SkippedRows()
    for k in range(SkippedRows.NAMED + 10):
        skipped.add(f"row {k + 1}", f"reason {k % (SkippedRows.REASONS + 5)}")
    data = skipped.to_dict()
    assert data["count"] == SkippedRows.NAMED + 10 and len(data["rows"]) == SkippedRows.NAMED
    assert len(data["by_reason"]) == SkippedRows.REASONS + 1 and sum(data["by_reason"].values()) == data["count"]


# --------------------------------------------------------------------------------------------------
# through pytest: real replies, real rows, the report and the results file
# --------------------------------------------------------------------------------------------------


def test_plugin_run_on_real_rows_reports_skips_protocol_and_gap(pytester, hub):
    spec = f"hf:{hub}/replied/TIGER-Lab/MMLU-Pro"
    queries = {q.id: q for q in load_query_set(spec).queries}
    answers = [{"prompt": queries[f"mmlu-pro-{o['question_id']}"].prompt, "response": o["generated_text"]}
               for o in MMLU_PRO_OUTPUTS]
    (pytester.path / "answers.jsonl").write_text("".join(json.dumps(a) + "\n" for a in answers))
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    result = pytester.runpytest("-p", "no:cacheprovider", f"--ipw-dataset={spec}", "--ipw-model=recorded:answers.jsonl",
                                "--ipw-json=r.json", "--ipw-warmup=0")
    assert result.ret == 0, result.stdout.str()[-3000:]
    out = result.stdout.str()
    assert "26 of 29 rows loaded, 3 skipped (rows that cannot become a valid query):" in out
    assert "strict = MMLU-Pro official extraction" in out
    document = json.loads((pytester.path / "r.json").read_text())
    [source] = document["settings"]["dataset_sources"]
    assert source["skipped"]["count"] == 3 and source["protocol"] == "mmlu-pro"
    records = document["records"]
    assert len(records) == len(MMLU_PRO_OUTPUTS) and {r["strict_protocol"] for r in records} == {"mmlu-pro"}
    strict = sum(r["correct_strict"] for r in records) / len(records)
    flexible = sum(r["correct"] for r in records) / len(records)
    assert bool([line for line in out.splitlines() if "differ by" in line]) is (abs(strict - flexible) * 100 > 1.0)


def test_plugin_skip_invalid_on_a_users_file(pytester):
    (pytester.path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in USER_ROWS))
    (pytester.path / "answers.jsonl").write_text(json.dumps({"prompt": "2 + 2?", "response": "4"}) + "\n"
                                                 + json.dumps({"prompt": "3 + 3?", "response": "6"}) + "\n")
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    args = ["-p", "no:cacheprovider", "--ipw-dataset=mine.jsonl", "--ipw-model=recorded:answers.jsonl", "--ipw-warmup=0"]
    strict = pytester.runpytest(*args)
    assert strict.ret == pytest.ExitCode.USAGE_ERROR
    strict.stderr.fnmatch_lines(["ERROR: pytest-ipw: query set mine.jsonl, line 2: *pass --ipw-skip-invalid*"])
    lenient = pytester.runpytest(*args, "--ipw-skip-invalid")
    lenient.assert_outcomes(passed=2)
    lenient.stdout.fnmatch_lines([
        "dataset mine.jsonl: 2 of 4 rows loaded, 2 skipped (rows that cannot become a valid query):",
        "  1 x scorer 'choice' needs a 'choices' list with at least two options: bad-1 (line 2)",
        "  1 x duplicate id (the first is kept): ok-1 (line 3)",
    ])
