"""The labelled scoring corpus: every response scored as a careful human grader scored it.

``tests/data/scoring_corpus.jsonl`` holds real answers of the embedded models (smollm2-135m and its
re-quantisations, recorded by ``tests/data/record_scoring_answers.py``) and hand-written answers in the
styles that fooled the scorers (fractions, scientific notation, self-correction, hedges, the letter A,
negation, alternatives, restated premises), each with the query, the human verdict and a one-line reason.
An item on a shipped query carries that query as it is now; where the shipped wording changed after the
answer was given (issue 14 reworded the answer instructions), ``prompt_when_answered`` keeps the wording the
model answered.

Verdicts are ``correct``, ``incorrect`` or ``no answer``. Every item must agree on correct vs not. For the
hand-written numeric and choice items the scorer must also tell a wrong answer from no answer (a hedge,
a bare rejection), because those scorers claim to extract one value; for the real answers of a 135M model
that distinction is often a matter of taste (a restated question, a run of numbers) and both count as wrong.
"""

from __future__ import annotations

import json
from collections import Counter

import pytest
from support import TEST_DATA

from pytest_ipw.queries.schema import DEFAULT_QUERY_SET, query_from_row
from pytest_ipw.scoring.scorers import score

CORPUS = TEST_DATA / "scoring_corpus.jsonl"
SHIPPED = DEFAULT_QUERY_SET
VERDICTS = ("correct", "incorrect", "no answer")


def corpus() -> list[dict]:
    return [json.loads(line) for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def disagreements(items: list[dict]) -> list[tuple[str, str, str, str]]:
    found = []
    for item in items:
        result = score(query_from_row(item["query"]), item["response"])
        said = "correct" if result.correct else "no answer" if result.unscorable else "incorrect"
        three_way = item["source"] == "hand-written" and item["query"]["scorer"] in ("numeric", "choice")
        expected = item["verdict"] if three_way else ("correct" if item["verdict"] == "correct" else "not correct")
        got = said if three_way else ("correct" if said == "correct" else "not correct")
        if got != expected:
            found.append((item["id"], expected, got, item["response"][:80]))
    return found


def test_corpus_is_well_formed_and_large_enough() -> None:
    items = corpus()
    assert len(items) >= 250
    assert len({item["id"] for item in items}) == len(items)
    assert all(item["verdict"] in VERDICTS and item["reason"].strip() for item in items)
    sources = Counter(item["source"] for item in items)
    assert {"smollm2-135m", "smollm2-135m-q8_0", "smollm2-135m-q3_k_s", "hand-written"} <= set(sources)
    assert sum(n for source, n in sources.items() if source != "hand-written") >= 150


def test_corpus_queries_match_the_shipped_set() -> None:
    """Items on shipped queries carry the shipped query as it is now (regenerate the corpus queries when it changes)."""
    shipped = {row["id"]: row for row in map(json.loads, SHIPPED.read_text(encoding="utf-8").splitlines())}
    for item in corpus():
        query = item["query"]
        if query["id"] in shipped:
            row = shipped[query["id"]]
            assert {k: row.get(k) for k in query} == query, item["id"]


def test_scorers_agree_with_the_human_verdict_on_every_item() -> None:
    assert disagreements(corpus()) == []


@pytest.mark.parametrize("scorer", ["numeric", "choice", "exact", "regex"])
def test_corpus_covers_every_deterministic_scorer(scorer: str) -> None:
    assert sum(item["query"]["scorer"] == scorer for item in corpus()) >= 20
