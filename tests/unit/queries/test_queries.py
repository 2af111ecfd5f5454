"""Tests of pytest_ipw.queries: loading query sets (JSONL, CSV, Parquet), validation messages and selection."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.queries.schema import (
    DEFAULT_QUERY_SET,
    SCORERS,
    SPLITS,
    Query,
    load_queries,
    query_from_row,
    select_queries,
)

SHIPPED = DEFAULT_QUERY_SET  # the one copy, inside the package


def row(i, **overrides):
    base = {"id": f"q{i}", "prompt": f"What is {i} + 1?", "answer": str(i + 1), "domain": "arith",
            "split": "reasoning", "scorer": "numeric"}
    base.update(overrides)
    return base


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the shipped set


@pytest.fixture(scope="module")
def shipped():
    return load_queries(SHIPPED)


def test_shipped_set_loads_and_is_broad(shipped):
    assert len(shipped) >= 300
    assert all(isinstance(q, Query) for q in shipped)
    assert len({q.domain for q in shipped}) >= 6
    assert {q.split for q in shipped} == set(SPLITS)
    # every deterministic scorer; 'judge' needs a judge model and 'math' an optional extra, so the default set has none
    assert {q.scorer for q in shipped} == set(SCORERS) - {"judge", "math"}
    assert len({q.id for q in shipped}) == len(shipped)
    for q in shipped:
        if q.scorer == "choice":
            assert len(q.choices) >= 2 and q.answer in "ABCDEFGH"[: len(q.choices)]


def test_default_query_set_is_the_packaged_copy(shipped):
    packaged = load_queries()
    assert DEFAULT_QUERY_SET.name == "queries.jsonl"
    assert [q.id for q in packaged] == [q.id for q in shipped]


def test_query_to_dict_round_trips(shipped):
    for q in shipped[:: max(1, len(shipped) // 20)]:
        data = q.to_dict()
        assert query_from_row(data) == q


# --------------------------------------------------------------------------- JSONL errors


def test_bad_json_line_is_named(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [row(1), row(2), '{"id": "q3", "prompt": ', row(4)])
    with pytest.raises(IPWUsageError) as info:
        load_queries(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message and "invalid JSON" in message


def test_non_object_line_is_named(tmp_path):
    path = write_jsonl(tmp_path / "list.jsonl", [row(1), "[1, 2]"])
    with pytest.raises(IPWUsageError, match="line 2") as info:
        load_queries(path)
    assert "JSON object" in str(info.value)


def test_missing_answer_is_named_with_its_line(tmp_path):
    missing = row(2)
    del missing["answer"]
    path = write_jsonl(tmp_path / "missing.jsonl", [row(1), missing, row(3)])
    with pytest.raises(IPWUsageError) as info:
        load_queries(path)
    message = str(info.value)
    assert str(path) in message and "line 2" in message and "answer" in message


def test_blank_lines_do_not_shift_line_numbers(tmp_path):
    missing = row(2)
    del missing["answer"]
    path = tmp_path / "blanks.jsonl"
    path.write_text("\n" + json.dumps(row(1)) + "\n\n   \n" + json.dumps(missing) + "\n", encoding="utf-8")
    with pytest.raises(IPWUsageError) as info:
        load_queries(path)
    assert "line 5" in str(info.value) and "answer" in str(info.value)


@pytest.mark.parametrize("overrides, needles", [
    ({"scorer": "fuzzy"}, ["fuzzy", "exact", "numeric", "choice", "regex"]),
    ({"scorer": "choice", "choices": ["red", "green"], "answer": "red"}, ["letters", "A, B"]),
    ({"scorer": "choice", "choices": ["red"], "answer": "A"}, ["at least two"]),
    ({"split": "coding"}, ["coding", "chat", "reasoning"]),
    ({"scorer": "numeric", "answer": "ten"}, ["numeric answer"]),
    ({"scorer": "regex", "answer": "(unclosed"}, ["regular expression"]),
    ({"tolerance": -0.5}, ["negative"]),
])
def test_invalid_rows_are_named(tmp_path, overrides, needles):
    path = write_jsonl(tmp_path / "invalid.jsonl", [row(1), row(2), row(3, **overrides)])
    with pytest.raises(IPWUsageError) as info:
        load_queries(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message
    for needle in needles:
        assert needle in message


def test_duplicate_id_names_both_lines(tmp_path):
    path = write_jsonl(tmp_path / "dup.jsonl", [row(1), row(2), row(1, prompt="again")])
    with pytest.raises(IPWUsageError, match="duplicate id 'q1'") as info:
        load_queries(path)
    assert "line 3" in str(info.value) and "line 1" in str(info.value)


def test_choice_answer_is_normalised_and_mixed_answer_types_load(tmp_path):
    rows = [
        row(1, scorer="choice", choices=["red", "green", "blue"], answer=" b ", domain="colours", split="chat"),
        row(2, answer=42),  # a JSON number as the answer of a numeric query
        row(3, scorer="exact", answer="Paris", domain="geo", split="chat", aliases=["paris, france"]),
    ]
    queries = load_queries(write_jsonl(tmp_path / "ok.jsonl", rows))
    assert [q.answer for q in queries] == ["B", "42", "Paris"]
    assert queries[0].choices == ("red", "green", "blue")
    assert queries[2].aliases == ("paris, france",)


def test_missing_file_and_empty_file_and_unsupported_suffix(tmp_path):
    absent = tmp_path / "absent.jsonl"
    with pytest.raises(IPWUsageError, match="does not exist") as info:
        load_queries(absent)
    assert str(absent) in str(info.value)
    text = tmp_path / "queries.txt"
    text.write_text("hello\n")
    with pytest.raises(IPWUsageError, match="unsupported file type"):
        load_queries(text)


# --------------------------------------------------------------------------- CSV and Parquet


ROWS = [
    row(1, difficulty="easy"),
    row(2, scorer="choice", choices=["red", "green", "blue"], answer="C", domain="colours", split="chat",
        difficulty="easy"),
    row(3, scorer="exact", answer="Paris", domain="geo", split="chat", difficulty="medium"),
    row(4, scorer="numeric", answer="3.14", tolerance=0.01, difficulty="hard"),
]


def _frame(rows):
    import pandas as pd

    columns = ["id", "prompt", "answer", "domain", "split", "scorer", "choices", "tolerance", "difficulty"]
    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)


def _check_rows(queries):
    assert [q.id for q in queries] == ["q1", "q2", "q3", "q4"]
    assert queries[1].choices == ("red", "green", "blue") and queries[1].answer == "C"
    assert queries[2].answer == "Paris" and queries[2].choices == ()
    assert queries[3].tolerance == pytest.approx(0.01) and queries[0].tolerance is None
    assert [q.difficulty for q in queries] == ["easy", "easy", "medium", "hard"]


def test_csv_with_json_list_choices(tmp_path):
    frame = _frame(ROWS)
    frame["choices"] = [json.dumps(c) if c else "" for c in frame["choices"]]
    path = tmp_path / "queries.csv"
    frame.to_csv(path, index=False)
    assert '"[""red"", ""green"", ""blue""]"' in path.read_text()  # the list really is JSON text in the CSV
    _check_rows(load_queries(path))


def test_csv_with_pipe_separated_choices(tmp_path):
    frame = _frame(ROWS)
    frame["choices"] = ["|".join(c) if c else "" for c in frame["choices"]]
    path = tmp_path / "pipes.csv"
    frame.to_csv(path, index=False)
    _check_rows(load_queries(path))


def test_csv_error_names_line(tmp_path):
    frame = _frame(ROWS)
    frame["choices"] = [json.dumps(c) if c else "" for c in frame["choices"]]
    frame.loc[2, "scorer"] = "fuzzy"
    path = tmp_path / "bad.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(IPWUsageError) as info:
        load_queries(path)
    assert str(path) in str(info.value) and "line 4 (row 3)" in str(info.value)


def test_parquet(tmp_path):
    frame = _frame(ROWS)
    frame["choices"] = [list(c) if c else [] for c in frame["choices"]]
    path = tmp_path / "queries.parquet"
    frame.to_parquet(path, index=False)
    _check_rows(load_queries(path))


# --------------------------------------------------------------------------- select_queries


def q(i, domain):
    return Query(id=f"{domain}-{i}", prompt="p", answer="1", domain=domain, split="chat", scorer="numeric")


POOL = [q(1, "a"), q(2, "a"), q(3, "a"), q(1, "b"), q(1, "c"), q(2, "c")]


def ids(queries):
    return [x.id for x in queries]


def test_select_everything_by_default():
    assert select_queries(POOL) == POOL


def test_limit_round_robins_across_domains():
    assert ids(select_queries(POOL, limit=4)) == ["a-1", "b-1", "c-1", "a-2"]
    assert ids(select_queries(POOL, limit=100)) == ["a-1", "b-1", "c-1", "a-2", "c-2", "a-3"]


def test_domain_filter_keeps_file_order():
    assert ids(select_queries(POOL, domains=["c", " a "])) == ["a-1", "a-2", "a-3", "c-1", "c-2"]
    assert ids(select_queries(POOL, domains=["c", "a"], limit=3)) == ["a-1", "c-1", "a-2"]


def test_unknown_domain_lists_known_domains():
    with pytest.raises(IPWUsageError) as info:
        select_queries(POOL, domains=["a", "zoology"], source="my.jsonl")
    message = str(info.value)
    assert "zoology" in message and "my.jsonl" in message and "a, b, c" in message


def test_empty_selection_and_bad_limit():
    with pytest.raises(IPWUsageError, match="empty"):
        select_queries([])
    with pytest.raises(IPWUsageError, match="empty"):
        select_queries(POOL, domains=[" "])
    with pytest.raises(IPWUsageError, match="at least 1"):
        select_queries(POOL, limit=0)


@settings(max_examples=60)
@given(st.lists(st.sampled_from("abcde"), min_size=1, max_size=40), st.integers(min_value=1, max_value=50))
def test_limit_property(domains, limit):
    pool = [q(i, d) for i, d in enumerate(domains)]
    chosen = select_queries(pool, limit=limit)
    assert len(chosen) == min(limit, len(pool))
    assert len(set(ids(chosen))) == len(chosen)
    present = list(dict.fromkeys(domains))
    if limit >= len(present):
        assert {x.domain for x in chosen} == set(present)  # every domain is sampled
    counts = {d: sum(1 for x in chosen if x.domain == d) for d in present}
    available = {d: domains.count(d) for d in present}
    # balanced: a domain only gets more than another when that other has run out
    for d1 in present:
        for d2 in present:
            if counts[d1] > counts[d2] + 1:
                assert counts[d2] == available[d2]
    for d in present:  # file order within each domain
        picked = [x for x in chosen if x.domain == d]
        assert picked == [x for x in pool if x.domain == d][: len(picked)]


# --------------------------------------------------------------------------- known bugs: type inference mangles values


def test_csv_keeps_ids_and_answers_verbatim(tmp_path):
    path = tmp_path / "verbatim.csv"
    path.write_text("id,prompt,answer,domain,split,scorer\n"
                    "001,Agent number?,007,films,chat,exact\n"
                    "002,Year?,1990,history,chat,exact\n"
                    "003,Half of 5?,2.5,arith,reasoning,numeric\n", encoding="utf-8")
    queries = load_queries(path)
    assert [x.id for x in queries] == ["001", "002", "003"]
    assert [x.answer for x in queries] == ["007", "1990", "2.5"]


def test_jsonl_integer_answer_stays_integer_next_to_a_float(tmp_path):
    rows = [row(1, answer=1990, scorer="exact", domain="history", split="chat"), row(2, answer=2.5)]
    queries = load_queries(write_jsonl(tmp_path / "numbers.jsonl", rows))
    assert [x.answer for x in queries] == ["1990", "2.5"]
