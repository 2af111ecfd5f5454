"""Tests for pytest_ipw.scoring: answer extraction from chatty model output, and each scorer."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ipw.queries.schema import DEFAULT_QUERY_SET, Query, query_from_row
from pytest_ipw.scoring.scorers import Score, extract_choice, extract_number, normalize_text, score

DATA = DEFAULT_QUERY_SET
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
        good = [name, f"**{name}**", f"{name} is the {superlative}.", f"The {superlative} is {name}.",
                f"Answer: {name}"]
        bad = [*others, *(f"The {superlative} is {o}." for o in others), premises]
    elif "yes or no" in prompt:
        word = "yes" if "(yes)" in query.answer else "no"
        other = "no" if word == "yes" else "yes"
        premises = prompt.split(" Based")[0]
        good = [word, f"{word.capitalize()}.", f"**{word.upper()}**", f"Answer: {word}", f"The answer is {word}."]
        bad = [other, f"{other.capitalize()}, because {premises}", f"{other.capitalize()}.\n{premises}"]
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
