"""Tests for pytest_ipw.scoring: answer extraction from chatty model output, and each scorer."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.queries.schema import DEFAULT_QUERY_SET, Query, query_from_row
from pytest_ipw.scoring.scorers import (
    Score,
    extract_choice,
    extract_choice_strict,
    extract_number,
    extract_number_strict,
    normalize_text,
    score,
)

DATA = DEFAULT_QUERY_SET  # the packaged copy the plugin runs (benchmarks/data/generate_queries.py writes it)
OPTIONS = ("Oxygen", "Nitrogen", "Carbon dioxide", "Helium")


def numeric(answer: str, tolerance: float | None = None) -> Query:
    return Query(id="n-1", prompt="?", answer=answer, domain="arithmetic", split="reasoning", scorer="numeric",
                 tolerance=tolerance)


def choice(answer: str, choices: tuple[str, ...] = OPTIONS) -> Query:
    return Query(id="c-1", prompt="?", answer=answer, domain="science_mc", split="reasoning", scorer="choice",
                 choices=choices)


def exact(answer: str, aliases: tuple[str, ...] = ()) -> Query:
    return Query(id="e-1", prompt="?", answer=answer, domain="knowledge", split="chat", scorer="exact",
                 aliases=aliases)


def regex(pattern: str) -> Query:
    return Query(id="r-1", prompt="?", answer=pattern, domain="logic", split="reasoning", scorer="regex")


# --------------------------------------------------------------------------------------------- numeric


@pytest.mark.parametrize(
    "text, expected",
    [
        ("42", 42),
        ("The answer is 42.", 42),
        ("**42**", 42),
        ("Answer: 1,234", 1234),
        ("The result is -17.", -17),
        ("It is \u22125", -5),  # unicode minus
        ("0.75", 0.75),
        ("3/4", 0.75),
        (r"\boxed{\frac{3}{4}}", 0.75),
        (r"We get 5 + 7 = 12, so $\boxed{12}$.", 12),
        ("45%", 45),
        ("5 + 7 = 12", 12),
        ("First 3 * 4 = 12, then 12 + 5 = 17.", 17),
        ("I counted 3 apples, 4 pears and finally 9 plums", 9),
        ("The answer is 12 apples (5 + 7).", 12),
        ("The answer is: 5 + 7 = 12", 12),
        ("Final Answer: 2,500,000", 2500000),
        ("3-2", 2),  # a hyphen between operands is not a sign
        ("There are three.", 3),  # spelled-out numbers only when no digit appears
        ("", None),
        ("I don't know.", None),
    ],
)
def test_extract_number(text: str, expected: float | None) -> None:
    assert extract_number(text) == expected


def test_numeric_correct_wrong_and_unscorable() -> None:
    assert score(numeric("12"), "The answer is **12**.") == Score(correct=True, unscorable=False, extracted="12")
    assert score(numeric("12"), "13").correct is False
    assert score(numeric("12"), "13").unscorable is False
    result = score(numeric("12"), "I am not sure about that.")
    assert result == Score(correct=False, unscorable=True, extracted=None)
    assert score(numeric("1234"), "1,234").correct
    assert score(numeric("-3"), "It is -3").correct
    assert score(numeric("0.75"), "3/4").correct


def test_numeric_skips_numbers_restated_from_the_prompt() -> None:
    query = Query(id="u-1", prompt="How many grams are in 5 kilograms? Answer with just the number.", answer="5000",
                  domain="units", split="chat", scorer="numeric", tolerance=0.01)
    assert score(query, "There are 5000 grams in 5 kilograms.").correct
    assert score(query, "5000").correct
    assert not score(query, "5").correct  # the only number left is still the answer given
    assert extract_number("There are 5000 grams in 5 kilograms.") == 5  # without the prompt: last number
    assert extract_number("There are 5000 grams in 5 kilograms.", avoid=[5]) == 5000


def test_numeric_tolerance_is_absolute() -> None:
    query = numeric("14.48", tolerance=0.145)
    assert score(query, "About 14.5 km.").correct
    assert score(query, "14.6").correct
    assert not score(query, "14.7").correct
    # without a tolerance only float noise is forgiven
    assert score(numeric("0.3"), str(0.1 + 0.2)).correct
    assert not score(numeric("100"), "100.01").correct


# --------------------------------------------------------------------------------------------- choice


@pytest.mark.parametrize(
    "text",
    ["B", "b", "(B)", "B)", "B.", "**B**", "Answer: B", "The answer is B", "The correct answer is (B).",
     "Option B", r"\boxed{B}", "B) Nitrogen", "**B) Nitrogen**", "I'd go with B.", "Nitrogen",
     "The answer is B because nitrogen makes up 78% of the air."],
)
def test_extract_choice_formats(text: str) -> None:
    assert extract_choice(text, 4, OPTIONS) == "B"


@pytest.mark.parametrize("text", ["A", "A)", "A.", "A: Oxygen", "The answer is A.", "Answer: A", "(A)"])
def test_extract_choice_letter_a_when_clearly_a_choice(text: str) -> None:
    assert extract_choice(text, 4, OPTIONS) == "A"


@pytest.mark.parametrize(
    "text",
    [
        "A plant needs light to grow.",  # the article, not option A
        "I think plants are interesting.",  # the pronoun
        "A) Oxygen\nB) Nitrogen\nC) Carbon dioxide\nD) Helium",  # echoes every option
        "A or B",
        "A, B, C",
        "Both oxygen and nitrogen are gases.",  # two option texts
        "I don't know.",
        "",
    ],
)
def test_extract_choice_ambiguous_or_missing(text: str) -> None:
    assert extract_choice(text, 4, OPTIONS) is None


def test_extract_choice_ignores_letters_beyond_the_options() -> None:
    assert extract_choice("E", 4) is None
    assert extract_choice("E", 5) == "E"
    assert extract_choice("Answer: J", 10) == "J"


def test_extract_choice_option_text_with_a_letter_is_not_a_letter() -> None:
    vitamins = ("Vitamin D", "Vitamin C", "Vitamin A", "Vitamin K")
    assert extract_choice("Vitamin D", 4, vitamins) == "A"
    assert extract_choice("The skin makes vitamin D.", 4, vitamins) == "A"
    # "°C" is a unit, and "0" must not match inside "100"
    assert extract_choice("Water boils at 100 °C.", 4, ("0", "100", "50", "212")) == "B"


def test_choice_scores() -> None:
    assert score(choice("B"), "**B**") == Score(correct=True, unscorable=False, extracted="B")
    assert score(choice("B"), "C").correct is False
    assert score(choice("A"), "A plant needs oxygen.") == Score(correct=True, unscorable=False, extracted="A")
    assert score(choice("A"), "A plant needs light.") == Score(correct=False, unscorable=True, extracted=None)


# --------------------------------------------------------------------------------------------- exact


@pytest.mark.parametrize(
    "text",
    ["Paris", "paris", "**Paris**", "Paris.", "\"Paris\"", "The answer is Paris.", "Answer: Paris",
     "The capital of France is Paris.", r"\boxed{\text{Paris}}", "`Paris`", "*Paris*"],
)
def test_exact_formats(text: str) -> None:
    assert score(exact("Paris"), text).correct


def test_exact_aliases_accents_and_articles() -> None:
    assert score(exact("United States", aliases=("USA", "US")), "USA").correct
    assert score(exact("Brasilia", aliases=("Brasília",)), "Brasília").correct
    assert score(exact("blue whale"), "The blue whale.").correct
    assert score(exact("Garcia Marquez"), "Gabriel García Márquez").correct
    assert score(exact("Astana", aliases=("Nur-Sultan",)), "Nur Sultan").correct


def test_exact_negatives() -> None:
    assert not score(exact("Paris"), "Lyon").correct
    assert not score(exact("Paris"), "Parisian food is great").correct  # whole words only
    # only the first line counts for the in-a-sentence rule
    assert not score(exact("Paris"), "Lyon\nSome say Paris, though.").correct
    assert score(exact("Paris"), "   ") == Score(correct=False, unscorable=True, extracted=None)
    assert score(exact("Paris"), "").unscorable


def test_normalize_text() -> None:
    assert normalize_text("**The Answer: Brasília.**") == "brasilia"
    assert normalize_text("  'An apple' ") == "apple"


# --------------------------------------------------------------------------------------------- regex


def test_regex_scorer() -> None:
    yes = regex(r"^\W*(yes)\b")
    assert score(yes, "Yes.").correct
    assert score(yes, "**YES**, because...").correct
    assert not score(yes, "No.").correct
    assert score(yes, "") == Score(correct=False, unscorable=True, extracted=None)
    assert score(regex(r"(?-i:\bGARDEN\b)"), "GARDEN").correct
    assert not score(regex(r"(?-i:\bGARDEN\b)"), "garden").correct


# --------------------------------------------------------------------------------------------- issue 12 classes
# Each class below was scored wrong before; tests/test_scoring_corpus.py checks the same rules on 334 labelled
# responses. The rule: the last answer a response commits to is its answer; a hedge between two values is no
# answer; a value named only to reject it is not picked.


@pytest.mark.parametrize(("text", "expected"), [
    ("5/8.", 0.625),  # the full stop used to defeat the fraction: read as 8
    ("The answer is 5/8.", 0.625),  # read as the numerator 5
    ("Answer: 5 / 8.", 0.625),
    (r"It is $\dfrac{5}{8}$.", 0.625),
    ("3 1/2 hours.", 3.5),  # a mixed number
    ("45/60 = 0.75 hours.", 0.75),
])
def test_fractions(text: str, expected: float) -> None:
    assert extract_number(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("2.5e4", 25000), ("2.5E+4", 25000), ("the answer is 4e-2", 0.04), ("2.5 × 10^4", 25000),
    ("2.5 x 10^4", 25000), ("2.5·10⁴", 25000), (r"$2.5 \times 10^{4}$", 25000), ("4 × 10^-2", 0.04),
    ("250 × 100 = 2.5 × 10^4", 25000), ("2.5 million", 2500000), ("It is 10 m².", 10),
])
def test_scientific_notation_and_scale_words(text: str, expected: float) -> None:
    assert extract_number(text) == pytest.approx(expected)
    assert not score(numeric("4"), "the answer is 4e-2").correct


@pytest.mark.parametrize(("text", "expected"), [
    ("Final answer: 9. Hmm, no — 11.", 11),
    ("Final answer: 11. Hmm, no — 9.", 9),
    ("The answer is 10. Wait, I mis-added: 4 + 7 = 11.", 11),
    ("11. No wait, 12.", 12),
    ("12... sorry, I mean 11.", 11),
    ("Answer: 10\nCorrection: 11", 11),
    ("The answer is 11. Actually, no: 10.", 10),
    # a remark is not a correction
    ("The answer is 11. Actually, I used the fact that 4 + 6 is 10.", 11),
    ("4 + 7 = 11. Wait, let me double-check: yes, 11.", 11),
    ("The answer is 11. Wait, 4 more would make 15.", 11),
    ("Here is my answer:\n42", 42),  # a marker that ends its line takes the next one
])
def test_self_correction_the_last_committed_answer_counts(text: str, expected: float) -> None:
    assert extract_number(text) == expected


@pytest.mark.parametrize("text", ["It's either 10 or 11.", "The answer is 11 or 12.", "Somewhere between 10 and 12.",
                                  "About 10 to 12.", "I'd say 11, maybe 12.", "Either ten or eleven.",
                                  "11, 12, 13, 14", "The answer is not 11."])
def test_hedges_runs_of_values_and_bare_rejections_are_no_answer(text: str) -> None:
    result = score(numeric("11"), text)
    assert result.unscorable and not result.correct and not result.correct_strict


@pytest.mark.parametrize("text", ["The answer is 11 (or 11.0).", "It's not 10, it's 11.", "4 + 7 is 11, not 12.",
                                  "Not 12 but 11.", "Probably 11."])
def test_one_value_with_rejections_or_doubt_is_an_answer(text: str) -> None:
    assert score(numeric("11"), text).correct


def test_a_sequence_continued_is_its_next_term_but_a_run_of_new_values_is_not() -> None:
    sequence = Query(id="s", prompt="What is the next number in the sequence 10, 15, 20, 25, ...?", answer="30",
                     domain="logic", split="reasoning", scorer="numeric")
    assert score(sequence, "10, 15, 20, 25, 30").correct
    assert score(sequence, "30, 35, 40").unscorable


def test_strict_reading_is_never_an_answer_the_reply_took_back() -> None:
    # lm-evaluation-harness's strict match would take the formatted 9; the reply ends on 11
    assert extract_number_strict("The answer is 9. Hmm, no — 11.") is None
    assert extract_number_strict("The answer is 11 or 12.") is None
    assert extract_number_strict("3 + 4 = 7\n#### 7") == 7  # GSM8K's "####" is not a markdown heading
    assert extract_choice_strict("Answer: C. Wait, no — D.", 4) is None
    assert extract_choice_strict("The answer is B or D.", 4) is None
    result = score(numeric("9"), "The answer is 9. Hmm, no — 11.")
    assert not result.correct and not result.correct_strict


@pytest.mark.parametrize(("text", "expected"), [
    ("A is correct.", "A"), ("A would be my pick.", "A"), ("answer: a", "A"), ("The answer is a.", "A"),
    ("A is the answer", "A"), ("Option A is correct.", "A"), ("A seems right: nitrogen is 78% of the air.", "A"),
    ("C is correct.", "C"), ("A plant needs nitrogen too, but the answer is C.", "C"), ("answer: a plant", None),
])
def test_option_a_is_as_reachable_as_b_to_d(text: str, expected: str | None) -> None:
    assert extract_choice(text, 4, OPTIONS) == expected


AMPERE = ("Watt", "Ohm", "Volt", "Ampere")


@pytest.mark.parametrize(("text", "expected"), [
    ("Definitely not D.", None), ("The answer is not D.", None), ("It's not B, it's D.", "D"),
    ("It's not B, it's C", "C"), ("D, not A.", "D"), ("A, not D.", "A"), ("B is wrong; the answer is D.", "D"),
    ("Not the ohm — the ampere.", "D"), ("I'd rule out A and B; it's D.", "D"), ("Neither A nor B; D.", "D"),
    ("A would be wrong; I'd go with C.", "C"), ("(A) Watt is wrong, (D) Ampere is right", "D"),
])
def test_rejected_options_are_not_picked(text: str, expected: str | None) -> None:
    assert extract_choice(text, 4, AMPERE) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ("The answer is B or D.", None), ("Either C or D.", None), ("Volt or ampere, I'm not sure.", None),
    ("Answer: C. Wait, no — D.", "D"), ("Answer: D. Actually, it's C.", "C"), ("B) Ohm. Sorry, I mean D) Ampere.", "D"),
    ("B) Watt", None),  # letter B with option A's text: two options named
    ("A) Watt\n\nThe correct answer is A) Volt.", None),  # the final pick is contradictory
    ("A) Volt\nThe correct answer is: Ampere", "D"),  # the last commitment, by option text
    ("A) Watt", "A"),
    ("Answer: D\nActually, Volt is also a unit.", "D"),  # a remark after "Actually," is not a correction
    ("Answer: D. Actually, volt.", "C"),
])
def test_choice_hedges_self_corrections_and_contradictions(text: str, expected: str | None) -> None:
    assert extract_choice(text, 4, AMPERE) == expected


@pytest.mark.parametrize(("answer", "text", "correct", "unscorable"), [
    ("Vienna", "Berlin, not Vienna.", False, False),
    ("Vienna", "Vienna, not Berlin.", True, False),
    ("Vienna", "Not Vienna.", False, False),
    ("Vienna", "Vienna isn't it; it's Salzburg.", False, False),
    ("Berlin", "The capital of Germany is not Berlin.", False, False),
    ("Madrid", "Madrid or Lisbon", False, True),  # alternatives: no answer
    ("Lisbon", "Madrid or Lisbon", False, True),
    ("Madrid", "It's either Madrid or Barcelona.", False, True),
    ("Madrid", "Madrid/Barcelona", False, True),
    ("yen", "It is a hybrid of the Japanese yen and the US dollar.", False, True),
    ("Paris", "The capital is Paris and it is beautiful.", True, False),
    ("Berlin", "Bonn. Wait, no — Berlin.", True, False),
    ("Berlin", "Berlin. Sorry, I mean Munich.", False, False),
    ("Venus", "Venus. Actually, Mercury is hotter.", False, False),
    ("Jupiter", "The largest planet is Jupiter, but it's actually Mercury.", False, False),
    ("Jupiter", "Jupiter. Actually, it's the largest by far.", True, False),  # a remark, not a correction
    ("Paris", "Paris\nActually, Lyon.", False, False),
    ("Paris", "Sure! Here is my answer:\nParis", True, False),
    ("Garcia Marquez", 'The novel by Gabriel García Márquez is the work of the author Jorge Luis Borges.', False,
     False),
    ("Darwin", "The book by Charles Darwin is attributed to Charles Robert Darwin, a naturalist.", True, False),
])
def test_exact_negation_alternatives_and_self_correction(answer: str, text: str, correct: bool,
                                                         unscorable: bool) -> None:
    result = score(exact(answer), text)
    assert (result.correct, result.unscorable) == (correct, unscorable), result


def test_exact_alternatives_that_are_all_accepted_names_are_one_answer() -> None:
    assert score(exact("Beijing", aliases=("Peking",)), "Beijing (or Peking)").correct
    assert score(exact("yen", aliases=("Japanese yen",)), "The yen, or the Japanese yen.").correct
    assert score(exact("Leonardo da Vinci", aliases=("da Vinci", "Leonardo")),
                 "Michelangelo, not Leonardo da Vinci.").correct is False  # an alias inside a rejection


# --------------------------------------------------------------------------------------------- math (optional)


def math_query(answer: str) -> Query:
    return Query(id="m-1", prompt="?", answer=answer, domain="math", split="reasoning", scorer="math")


def test_math_scorer_compares_symbolically() -> None:
    pytest.importorskip("math_verify")
    assert score(math_query(r"\frac{1}{2}"), r"The answer is $\boxed{\frac{2}{4}}$").correct
    assert score(math_query(r"\frac{1}{2}"), "0.5").correct
    assert not score(math_query(r"\frac{1}{2}"), r"$\boxed{\frac{1}{3}}$").correct
    assert score(math_query("x^2+2x+1"), "The result is $(x+1)^2$.").correct
    assert score(math_query("x^2+2x+1"), "I give up.").unscorable


def test_math_scorer_without_math_verify_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "math_verify", None)  # as if not installed
    with pytest.raises(IPWUsageError, match=r"scorer 'math', which needs math-verify: pip install 'pytest-ipw\[math\]'"):
        score(math_query("1/2"), "0.5")


# --------------------------------------------------------------------------------------------- properties


@given(st.integers(min_value=-10**9, max_value=10**9))
def test_property_integer_answers_in_chat_formats(n: int) -> None:
    query = numeric(str(n))
    for response in (str(n), f"The answer is {n}.", f"**{n}**", f"Answer: {n:,}", f"\\boxed{{{n}}}",
                     f"Let me think.\n\nSo the result is {n}"):
        assert score(query, response).correct, response


@given(st.integers(min_value=-10**9, max_value=10**9), st.integers(min_value=-10**9, max_value=10**9))
def test_property_a_different_integer_is_wrong(n: int, m: int) -> None:
    if n != m:
        result = score(numeric(str(n)), f"The answer is {m}.")
        assert not result.correct and not result.unscorable


@given(st.sampled_from("ABCDEFGHIJ"), st.integers(min_value=2, max_value=10))
def test_property_letter_formats(letter: str, n: int) -> None:
    expected = letter if "ABCDEFGHIJ".index(letter) < n else None
    for response in (letter, f"({letter})", f"{letter})", f"**{letter}**", f"Answer: {letter}",
                     f"The answer is {letter}."):
        assert extract_choice(response, n) == expected, response


QUERIES = [numeric("7"), numeric("2.5", tolerance=0.1), choice("C"), exact("Paris", aliases=("Paree",)),
           regex(r"^\W*(no)\b")]


@settings(max_examples=300)
@given(st.text(max_size=300), st.sampled_from(QUERIES))
def test_property_any_text_never_raises(text: str, query: Query) -> None:
    result = score(query, text)
    assert isinstance(result, Score)
    assert not (result.correct and result.unscorable)
    extract_number(text)
    extract_choice(text, 10, OPTIONS)


@settings(max_examples=200)
@given(st.text(alphabet=st.sampled_from(list("ABCDabcd0123456789.,:-=/%*()[]{}\\ boxedanswerisfracn\n")),
               max_size=120))
def test_property_formatting_soup_never_raises(text: str) -> None:
    for query in QUERIES:
        score(query, text)


# --------------------------------------------------------------------------------------------- data set


def _shipped_queries() -> list[Query]:
    with DATA.open(encoding="utf-8") as handle:
        return [query_from_row(json.loads(line)) for line in handle if line.strip()]


@pytest.mark.skipif(not DATA.is_file(), reason="the shipped query set is missing")
def test_shipped_reference_answers_score_correct_in_chat_form() -> None:
    failures = []
    for query in _shipped_queries():
        if query.scorer == "regex":
            continue
        responses = (
            [f"Answer: {query.answer}", f"**{query.answer}**", f"The answer is ({query.answer})."]
            if query.scorer == "choice"
            else [f"The answer is {query.answer}.", f"**{query.answer}**", query.answer]
        )
        for response in responses:
            if not score(query, response).correct:
                failures.append((query.id, response))
    assert not failures


@pytest.mark.skipif(not DATA.is_file(), reason="the shipped query set is missing")
def test_shipped_choice_option_text_maps_to_the_answer() -> None:
    for query in _shipped_queries():
        if query.scorer == "choice":
            correct_text = query.choices["ABCDEFGHIJ".index(query.answer)]
            assert score(query, correct_text).correct, query.id


def _regex_cases(query: Query) -> tuple[list[str], list[str]]:
    """Replies that must pass / must fail for a shipped regex query, derived from its prompt."""
    import re

    prompt = query.prompt
    if "Who is the" in prompt:
        superlative = re.search(r"Who is the (.+?)\?", prompt).group(1)
        premises = prompt.split(" Who is")[0]
        names = set(re.findall(r"\b[A-Z][a-z]+\b", premises))
        name = next(n for n in names if re.search(rf"\\W\*{n}\\W\*\\Z", query.answer))
        others = names - {name}
        other = min(others)
        good = [name, f"**{name}**", f"{name} is the {superlative}.", f"The {superlative} is {name}.",
                f"Answer: {name}", f"It's {name}.", f"The answer is {other}. Wait, no — {name}.",
                f"{other} is {superlative.split()[-1][:-3]}er than... so {name} is the {superlative}."]
        bad = [*others, *(f"The {superlative} is {o}." for o in others), premises, f"{name} or {other}.",
               f"The answer is {name}. Wait, no — {other}.", f"{name}. Actually, it's {other}."]
    elif "yes or no" in prompt:
        word = "yes" if "(yes)" in query.answer else "no"
        other = "no" if word == "yes" else "yes"
        premises = prompt.split(" Based")[0]
        good = [word, f"{word.capitalize()}.", f"**{word.upper()}**", f"Answer: {word}", f"The answer is {word}.",
                f"{other.capitalize()}, wait: {word}."]
        bad = [other, f"{other.capitalize()}, because {premises}", f"{other.capitalize()}.\n{premises}", premises,
               f"{word.capitalize()}. Wait, {other}.", f"{word.capitalize()}. Actually, {other}."]
    elif "uppercase" in prompt:
        word = re.search(r'"(\w+)"', prompt).group(1)
        good = [word.upper(), f"**{word.upper()}**", f"The word in uppercase is {word.upper()}."]
        bad = [word, word.capitalize(), f'The word "{word}" in uppercase']
    else:
        words = re.search(r'"([\w ]+)"', prompt).group(1).split()
        letters = "".join(w[0] for w in words)
        good = [letters, letters.upper(), " ".join(letters.upper()), ", ".join(letters.upper()),
                f"The letters are {letters.upper()}."]
        bad = [" ".join(words), letters[:-1], letters[::-1]]
    return good, bad


@pytest.mark.skipif(not DATA.is_file(), reason="the shipped query set is missing")
def test_shipped_regex_answers_accept_canonical_replies_only() -> None:
    wrong = []
    for query in _shipped_queries():
        if query.scorer != "regex":
            continue
        good, bad = _regex_cases(query)
        wrong += [(query.id, "rejected", r) for r in good if not score(query, r).correct]
        wrong += [(query.id, "accepted", r) for r in bad if score(query, r).correct]
    assert not wrong
