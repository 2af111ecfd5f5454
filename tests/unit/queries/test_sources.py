"""Data sets: hub data sets through `datasets` (from local copies laid out like the hub repositories, with
the real column names and a handful of rows written for the test), user column mappings, mixes, seeded
stratified sampling, and one clear message for each kind of bad input. Nothing here touches the network:
an autouse guard refuses any connection that is not to this machine."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.queries.schema import select_queries
from pytest_ipw.queries.sources import BUILTIN_MAPPINGS, builtin_for, load_query_set, parse_columns


# --------------------------------------------------------------------------------------------------
# local copies of the hub repositories (real layouts and column names; rows written for the test)
# --------------------------------------------------------------------------------------------------

MMLU_PRO = [  # question_id, question, options (up to 10), answer, answer_index, cot_content, category, src
    {"question_id": 70, "question": "Which gas do plants absorb for photosynthesis?",
     "options": ["Oxygen", "Nitrogen", "Carbon dioxide", "Helium", "Argon", "Neon", "Hydrogen", "Xenon", "Radon",
                 "Krypton"], "answer": "C", "answer_index": 2, "cot_content": "", "category": "biology",
     "src": "ori_mmlu-biology"},
    {"question_id": 71, "question": "What is 12 * 12?", "options": ["124", "144", "142", "154", "N/A", "N/A"],
     "answer": "B", "answer_index": 1, "cot_content": "", "category": "math", "src": "ori_mmlu-math"},
    {"question_id": 72, "question": "What is 7 + 8?", "options": ["15", "16", "14", "13"], "answer": "A",
     "answer_index": 0, "cot_content": "", "category": "math", "src": "ori_mmlu-math"},
    {"question_id": 73, "question": "Which court hears appeals first?", "options": ["Supreme", "Appellate", "Trial"],
     "answer": "B", "answer_index": 1, "cot_content": "", "category": "law", "src": "ori_mmlu-law"},
    {"question_id": 74, "question": "What is 2 ** 10?", "options": ["1024", "2048", "512"], "answer": "A",
     "answer_index": 0, "cot_content": "", "category": "math", "src": "stemez-math"},
]
SUPERGPQA = [  # uuid, question, options, answer, answer_letter, discipline, field, subfield, difficulty, is_calculation
    {"uuid": "a1", "question": "Unit of force?", "options": ["Joule", "Newton", "Watt"], "answer": "Newton",
     "answer_letter": "B", "discipline": "Science", "field": "Physics", "subfield": "Mechanics", "difficulty": "easy",
     "is_calculation": False},
    {"uuid": "a2", "question": "Bone count of an adult human?", "options": ["206", "212", "198", "201"],
     "answer": "206", "answer_letter": "A", "discipline": "Medicine", "field": "Anatomy", "subfield": "Skeleton",
     "difficulty": "middle", "is_calculation": False},
]
GPQA = [  # a subset of the CSV's columns, with their real names
    {"Question": "Which particle carries the electromagnetic force?", "Correct Answer": "Photon",
     "Incorrect Answer 1": "Gluon", "Incorrect Answer 2": "W boson", "Incorrect Answer 3": "Graviton",
     "Explanation": "QED.", "Record ID": "recA", "High-level domain": "Physics", "Subdomain": "Particle physics"},
    {"Question": "What is the pH of pure water at 25 C?", "Correct Answer": "7", "Incorrect Answer 1": "0",
     "Incorrect Answer 2": "14", "Incorrect Answer 3": "1", "Explanation": "Neutral.", "Record ID": "recB",
     "High-level domain": "Chemistry", "Subdomain": "Physical chemistry"},
]
NATURAL_REASONING = [  # question, reference_answer, responses [{response_model, response}]
    {"question": "Why is the sky blue?", "reference_answer": "Rayleigh scattering of sunlight.",
     "responses": [{"response_model": "Llama-3.3-70B-Instruct", "response": "Because of Rayleigh scattering."}]},
    {"question": "Explain entropy briefly.", "reference_answer": "",
     "responses": [{"response_model": "Llama-3.3-70B-Instruct", "response": "Disorder."}]},  # no reference: skipped
]
WILDCHAT = [  # conversation_hash, model, conversation [{content, role, language, toxic, redacted, ...}], turn, ...
    {"conversation_hash": "h1", "model": "gpt-4-0314", "turn": 1, "language": "English", "toxic": False,
     "redacted": False, "conversation": [
         {"content": "Write a haiku about rain.", "role": "user", "language": "English", "toxic": False,
          "redacted": False, "turn_identifier": 1},
         {"content": "Soft rain on the roof...", "role": "assistant", "language": "English", "toxic": False,
          "redacted": False, "turn_identifier": 1}]},
    {"conversation_hash": "h2", "model": "gpt-3.5-turbo-0613", "turn": 1, "language": "English", "toxic": True,
     "redacted": False, "conversation": [
         {"content": "something toxic", "role": "user", "language": "English", "toxic": True, "redacted": False,
          "turn_identifier": 2},
         {"content": "I can't help with that.", "role": "assistant", "language": "English", "toxic": False,
          "redacted": False, "turn_identifier": 2}]},
]
GSM8K = [  # question, answer ("... #### N")
    {"question": "Tom has 3 apples and buys 4 more. How many apples does he have?",
     "answer": "He has 3 + 4 = <<3+4=7>>7 apples.\n#### 7"},
    {"question": "A book costs $1,200 and is discounted by $200. What is the price?",
     "answer": "1200 - 200 = <<1200-200=1000>>1000\n#### 1,000"},
]


def _yaml_configs(configs: dict[str, dict[str, str]]) -> str:
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {path}" for split, path in splits.items()]
    return "\n".join(lines + ["---", ""])


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    """A directory holding one local copy per hub repository, as `hf:<dir>/<owner>/<name>` loads it."""
    root = tmp_path_factory.mktemp("hub")

    def repo(name: str) -> Path:
        path = root / name
        path.mkdir(parents=True)
        return path

    mmlu = repo("TIGER-Lab/MMLU-Pro")
    (mmlu / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(MMLU_PRO), mmlu / "data" / "test-00000-of-00001.parquet")
    pq.write_table(pa.Table.from_pylist(MMLU_PRO[:1]), mmlu / "data" / "validation-00000-of-00001.parquet")
    with (repo("m-a-p/SuperGPQA") / "SuperGPQA-all.jsonl").open("w") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in SUPERGPQA)
    gpqa = repo("Idavidrein/gpqa")
    for config in ("gpqa_diamond", "gpqa_main"):
        pacsv.write_csv(pa.Table.from_pylist(GPQA), gpqa / f"{config}.csv")
    (gpqa / "README.md").write_text(_yaml_configs({c: {"train": f"{c}.csv"} for c in ("gpqa_diamond", "gpqa_main")}))
    natural = repo("facebook/natural_reasoning")
    (natural / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(NATURAL_REASONING), natural / "data" / "train-00000-of-00001.parquet")
    wildchat = repo("allenai/WildChat-1M")
    (wildchat / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(WILDCHAT), wildchat / "data" / "train-00000-of-00014.parquet")
    gsm8k = repo("openai/gsm8k")
    for config in ("main", "socratic"):
        (gsm8k / config).mkdir()
        pq.write_table(pa.Table.from_pylist(GSM8K), gsm8k / config / "test-00000-of-00001.parquet")
        pq.write_table(pa.Table.from_pylist(GSM8K[:1]), gsm8k / config / "train-00000-of-00001.parquet")
    (gsm8k / "README.md").write_text(_yaml_configs({c: {"train": f"{c}/train-*", "test": f"{c}/test-*"}
                                                    for c in ("main", "socratic")}))
    return root


def hf(hub: Path, name: str, options: str = "") -> str:
    return f"hf:{hub / name}" + (f"?{options}" if options else "")


# --------------------------------------------------------------------------------------------------
# built-in mappings
# --------------------------------------------------------------------------------------------------


def test_mmlu_pro_maps_ten_options_letters_and_categories(hub):
    qs = load_query_set(hf(hub, "TIGER-Lab/MMLU-Pro"))
    by_id = {q.id: q for q in qs.queries}
    assert len(qs.queries) == 5  # the test split, not validation
    first = by_id["mmlu-pro-70"]
    assert first.scorer == "choice" and first.answer == "C" and first.domain == "biology"
    assert len(first.choices) == 10 and "J) Krypton" in first.prompt and first.prompt.endswith('"The answer is (X)" '
                                                                                               "where X is the letter of the correct option.")
    assert by_id["mmlu-pro-71"].choices == ("124", "144", "142", "154")  # "N/A" padding dropped
    assert {q.source for q in qs.queries} == {"mmlu-pro"}
    assert qs.sources[0]["split"] == "test" and qs.sources[0]["mapping"] == "mmlu-pro" and qs.sources[0]["rows"] == 5


def test_supergpqa_uses_answer_letter_and_discipline(hub):
    queries = load_query_set(hf(hub, "m-a-p/SuperGPQA")).queries
    assert [(q.id, q.answer, q.domain, q.difficulty, q.protocol) for q in queries] == [
        ("supergpqa-a1", "B", "Science", "easy", "supergpqa"), ("supergpqa-a2", "A", "Medicine", "middle", "supergpqa")]


def test_gpqa_shuffles_options_stably_and_keeps_the_right_letter(hub):
    first = load_query_set(hf(hub, "Idavidrein/gpqa")).queries
    again = load_query_set(hf(hub, "Idavidrein/gpqa", "config=gpqa_main")).queries
    for query, row in zip(first, GPQA):
        assert query.choices[ord(query.answer) - ord("A")] == row["Correct Answer"]
        assert sorted(query.choices) == sorted([row["Correct Answer"], row["Incorrect Answer 1"],
                                                row["Incorrect Answer 2"], row["Incorrect Answer 3"]])
    assert [(q.answer, q.choices) for q in first] == [(q.answer, q.choices) for q in again]  # seeded by Record ID
    assert {q.domain for q in first} == {"Physics", "Chemistry"} and {q.protocol for q in first} == {"gpqa"}


def test_natural_reasoning_and_wildchat_are_judged_against_their_references(hub):
    natural = load_query_set(hf(hub, "facebook/natural_reasoning"))
    assert len(natural.queries) == 1 and natural.queries[0].scorer == "judge"
    assert natural.queries[0].answer.startswith("Rayleigh") and natural.queries[0].protocol is None  # judged: no protocol
    assert natural.sources[0]["skipped"]["rows"] == [{"row": "row 2", "reason": "no reference answer"}]
    wildchat = load_query_set(hf(hub, "allenai/WildChat-1M"))
    assert [(q.id, q.prompt, q.answer, q.split, q.scorer) for q in wildchat.queries] == [
        ("wildchat-h1", "Write a haiku about rain.", "Soft rain on the roof...", "chat", "judge")]
    # the toxic opening is left out, and says so
    assert wildchat.sources[0]["skipped"]["rows"] == [{"row": "wildchat-h2 (row 2)", "reason": "opening turn flagged toxic"}]


def test_gsm8k_takes_the_number_after_hashes(hub):
    queries = load_query_set(hf(hub, "openai/gsm8k")).queries  # config main, split test by default
    assert [(q.answer, q.scorer, q.domain) for q in queries] == [("7", "numeric", "math"), ("1000", "numeric", "math")]
    # GSM8K's own answer format, the one its official extraction reads (strict = the number after ####)
    assert queries[0].prompt.endswith('a last line "#### N" where N is the final number.')
    assert {q.protocol for q in queries} == {"gsm8k"}


def test_a_hub_row_the_mapping_cannot_read_is_skipped_not_fatal(tmp_path):
    copy = tmp_path / "Idavidrein" / "gpqa"
    copy.mkdir(parents=True)
    broken = dict(GPQA[1], **{"Record ID": "recC", "Incorrect Answer 3": None})  # a missing value in one row
    pacsv.write_csv(pa.Table.from_pylist([GPQA[0], broken]), copy / "gpqa_diamond.csv")
    (copy / "README.md").write_text(_yaml_configs({"gpqa_diamond": {"train": "gpqa_diamond.csv"}}))
    qs = load_query_set(f"hf:{copy}")
    assert [q.id for q in qs.queries] == ["gpqa-recA"]
    assert qs.sources[0]["skipped"]["rows"] == [{"row": "gpqa-recC (row 2)", "reason": "an answer option is empty"}]


def test_builtin_mappings_are_found_by_repository_name():
    assert builtin_for("TIGER-Lab/MMLU-Pro").name == "mmlu-pro"
    assert builtin_for("/mirror/allenai/WildChat").name == "wildchat"
    assert builtin_for("openai/gsm8k").name == "gsm8k"
    assert builtin_for("someone/unknown") is None
    assert set(BUILTIN_MAPPINGS) == {"mmlu-pro", "supergpqa", "gpqa", "natural-reasoning", "wildchat", "gsm8k"}


# --------------------------------------------------------------------------------------------------
# sampling: limit, seed, stratification, mixes
# --------------------------------------------------------------------------------------------------


def test_seeded_sample_is_stratified_by_category_and_reproducible(hub):
    queries = load_query_set(hf(hub, "TIGER-Lab/MMLU-Pro")).queries
    one = select_queries(queries, limit=3, seed=7)
    assert {q.domain for q in one} == {"biology", "math", "law"}  # every category before any repeats
    assert [q.id for q in select_queries(queries, limit=3, seed=7)] == [q.id for q in one]
    draws = {tuple(q.id for q in select_queries(queries, limit=4, seed=s)) for s in range(12)}
    assert len(draws) > 1  # the seed changes which math questions are drawn
    # without a seed: file order within each category, as before
    assert [q.id for q in select_queries(queries, limit=4)] == ["mmlu-pro-70", "mmlu-pro-71", "mmlu-pro-73", "mmlu-pro-72"]


def test_mix_shares_the_limit_by_weight_with_unique_ids(hub, tmp_path):
    local = tmp_path / "extra.jsonl"
    local.write_text("".join(json.dumps({"id": f"x{i}", "prompt": f"{i}+1?", "answer": str(i + 1), "domain": "arith",
                                         "split": "reasoning", "scorer": "numeric"}) + "\n" for i in range(10)))
    spec = f"mix:{hf(hub, 'TIGER-Lab/MMLU-Pro')}*3,{hf(hub, 'openai/gsm8k')},{local}"
    qs = load_query_set(spec)
    assert qs.weights == {"mmlu-pro": 3.0, "gsm8k": 1.0, "extra": 1.0}
    assert len({q.id for q in qs.queries}) == len(qs.queries) == 5 + 2 + 10
    picked = select_queries(qs.queries, limit=5, seed=1, weights=qs.weights)
    assert Counter(q.source for q in picked) == {"mmlu-pro": 3, "gsm8k": 1, "extra": 1}
    # a source with too few queries passes its share on: gsm8k has 2, mmlu-pro 5
    big = select_queries(qs.queries, limit=14, seed=1, weights={"mmlu-pro": 1.0, "gsm8k": 10.0, "extra": 1.0})
    assert Counter(q.source for q in big) == {"gsm8k": 2, "mmlu-pro": 5, "extra": 7}
    assert [q.id for q in picked] == [q.id for q in select_queries(qs.queries, limit=5, seed=1, weights=qs.weights)]
    assert any(q.id.startswith("extra-") for q in qs.queries)


# --------------------------------------------------------------------------------------------------
# user column mappings on local files
# --------------------------------------------------------------------------------------------------


def test_column_mapping_on_jsonl_csv_and_parquet(tmp_path):
    rows = [{"qid": "007", "question": "Capital of France?", "label": "Paris", "subject": "geo"},
            {"qid": "008", "question": "2 + 2?", "label": "4", "subject": "math"}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pacsv.write_csv(pa.Table.from_pylist(rows), tmp_path / "d.csv")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    columns = "prompt=question,answer=label,domain=subject,id=qid"
    for name in ("d.jsonl", "d.csv", "d.parquet"):
        queries = load_query_set(str(tmp_path / name), columns).queries
        assert [(q.id, q.answer, q.scorer, q.domain, q.split) for q in queries] == [
            ("007", "Paris", "exact", "geo", "chat"), ("008", "4", "numeric", "math", "reasoning")], name
    # in a mix every id says where it came from
    (tmp_path / "e.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mixed = load_query_set(f"mix:{tmp_path / 'd.csv'},{tmp_path / 'e.jsonl'}", columns).queries
    assert [q.id for q in mixed] == ["d-007", "d-008", "e-007", "e-008"]


def test_column_mapping_with_choices_as_index_text_or_letter(tmp_path):
    rows = [{"q": "Largest planet?", "opts": ["Mars", "Jupiter", "Venus"], "gold": 1},
            {"q": "Smallest planet?", "opts": ["Mercury", "Earth"], "gold": "Mercury"},
            {"q": "Red planet?", "opts": ["Mars", "Earth"], "gold": "a"}]
    path = tmp_path / "mc.parquet"
    pq.write_table(pa.Table.from_pylist([{**r, "gold": str(r["gold"])} for r in rows]), path)
    queries = load_query_set(str(path), "prompt=q,choices=opts,answer=gold").queries
    assert [q.answer for q in queries] == ["B", "A", "A"]
    assert all(q.scorer == "choice" for q in queries)
    assert "B) Jupiter" in queries[0].prompt and "letter of the correct option" in queries[0].prompt


def test_columns_can_route_a_file_to_the_judge(tmp_path):
    path = tmp_path / "open.jsonl"
    path.write_text(json.dumps({"instruction": "Describe rain.", "output": "Water falling."}) + "\n")
    query = load_query_set(str(path), "prompt=instruction,answer=output,scorer=judge").queries[0]
    assert query.scorer == "judge" and query.split == "chat" and query.answer == "Water falling."


def test_columns_override_the_builtin_mapping_of_a_hub_data_set(hub):
    queries = load_query_set(hf(hub, "TIGER-Lab/MMLU-Pro"), "prompt=question,answer=answer,choices=options,domain=src").queries
    assert {q.domain for q in queries} >= {"ori_mmlu-math"} and queries[0].answer == "C"


# --------------------------------------------------------------------------------------------------
# bad input: one clear message each, naming the fix
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("columns", "message"), [
    ("prompt=question,answer=labl", "--ipw-columns: column 'labl' (for answer) is not in * its columns are: qid, "
                                    "question, label"),
    ("promt=question", "--ipw-columns: unknown field 'promt'; fields: id, prompt, answer*"),
    ("prompt", "--ipw-columns: 'prompt' is not FIELD=COLUMN*"),
    ("prompt=question", "* has no 'answer' column; map one with --ipw-columns=answer=COLUMN*"),
])
def test_bad_column_mappings(tmp_path, columns, message):
    import fnmatch

    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"qid": "1", "question": "q?", "label": "a"}) + "\n")
    with pytest.raises(IPWUsageError) as info:
        load_query_set(str(path), columns)
    assert fnmatch.fnmatch(str(info.value), message), str(info.value)


@pytest.mark.parametrize(("spec", "columns"), [("hf:nobody-xyz/MMLU-Pro", None),
                                                ("hf:nobody-xyz/none-such", "prompt=q,answer=a")])
def test_unknown_hub_id_offline_says_how_to_get_it(spec, columns):
    ident = spec[3:]
    with pytest.raises(IPWUsageError, match=rf"data set '{ident}' is not in the local Hugging Face "
                                            r"cache and the Hub cannot be reached.*hf download --repo-type dataset"):
        load_query_set(spec, columns)


def test_hub_data_set_without_mapping_names_the_builtins_and_the_option(hub):
    with pytest.raises(IPWUsageError, match=r"no built-in column mapping.*TIGER-Lab/MMLU-Pro.*--ipw-columns=prompt="):
        load_query_set("hf:someone/their-data")


@pytest.mark.parametrize(("spec", "message"), [
    ("hf:{hub}/openai/gsm8k?config=nope", r"BuilderConfig 'nope' not found.*main.*name one with hf:ID\?config=NAME"),
    ("hf:{hub}/TIGER-Lab/MMLU-Pro?split=dev", r"(?i)unknown split.*name one with hf:ID\?split=NAME"),
    ("hf:{hub}/TIGER-Lab/MMLU-Pro?cfg=x", r"expected hf:OWNER/NAME\[\?config=C.*unknown option\(s\) cfg"),
    ("hf:{hub}/TIGER-Lab/MMLU-Pro?mapping=mmlu", r"unknown mapping 'mmlu'; built-in: mmlu-pro"),
    ("mix:{hub}/x.jsonl", r"a mix names at least two data sets"),
    ("missing.jsonl", r"query set missing.jsonl does not exist"),
])
def test_bad_dataset_specs(hub, spec, message):
    with pytest.raises(IPWUsageError, match=message):
        load_query_set(spec.format(hub=hub))


def test_a_builtin_mapping_on_a_changed_schema_names_the_missing_columns(hub, tmp_path):
    changed = tmp_path / "TIGER-Lab" / "MMLU-Pro"
    changed.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([{"question": "q", "choices": ["a", "b"], "label": 0}]),
                   changed / "test-00000-of-00001.parquet")
    with pytest.raises(IPWUsageError, match=r"has no column\(s\) question_id, options, answer_index, category that "
                                            r"the built-in mmlu-pro mapping reads.*--ipw-columns"):
        load_query_set(f"hf:{changed}")


def test_parse_columns():
    assert parse_columns("prompt=question, answer=label,") == {"prompt": "question", "answer": "label"}
    assert parse_columns(None) == {}


# --------------------------------------------------------------------------------------------------
# through pytest
# --------------------------------------------------------------------------------------------------


def test_plugin_runs_a_hub_data_set_with_limit_and_seed(pytester, hub):
    pytester.makepyfile(test_bench="def test_answer(ipw_query):\n    assert ipw_query.prompt\n")
    args = ["-p", "no:cacheprovider", "--collect-only", "-q", f"--ipw-dataset={hf(hub, 'TIGER-Lab/MMLU-Pro')}",
            "--ipw-model=recorded:answers.jsonl", "--ipw-limit=3", "--ipw-sample-seed=3"]
    (pytester.path / "answers.jsonl").write_text(json.dumps({"prompt": "x", "response": "y"}) + "\n")
    result = pytester.runpytest(*args)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    ids = [line for line in result.stdout.lines if "test_answer[" in line]
    assert len(ids) == 3 and all("test_answer[mmlu-pro-" in i for i in ids)
    assert ids == [line for line in pytester.runpytest(*args).stdout.lines if "test_answer[" in line]


def test_plugin_reports_a_missing_column_before_any_test(pytester, tmp_path):
    (pytester.path / "d.jsonl").write_text(json.dumps({"question": "q?", "label": "a"}) + "\n")
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=d.jsonl", "--ipw-columns=prompt=question,answer=gold")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-ipw: --ipw-columns: column 'gold' (for answer) is not in d.jsonl; "
                                 "its columns are: question, label"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_plugin_reports_an_unknown_hub_id_offline_before_any_test(pytester):
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=hf:nobody-xyz/MMLU-Pro")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-ipw: data set 'nobody-xyz/MMLU-Pro' is not in the local Hugging Face "
                                 "cache and the Hub cannot be reached*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
