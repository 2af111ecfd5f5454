"""Score one model response against a query's reference answer.

Pure functions, standard library only (the optional ``math`` scorer imports math-verify when used).
Chat models wrap answers in markdown, LaTeX, "The answer is ..." and explanations; the extractors below
look through that formatting so that a model is judged on its answer, not on its typography. A response
from which no answer can be extracted is ``unscorable``: callers count it as wrong (never drop it), and
the flag lets reports show how often a model ignored the output instruction.

One rule for what a response answers, shared by every scorer (tests/data/scoring_corpus.jsonl holds the
labelled cases it was checked against):

* the **last answer a response commits to** is its answer: "Final answer: 9. Hmm, no — 11." answers 11
  (lm-evaluation-harness's flexible extract takes the last match, too);
* a **hedge** between two different values ("either 3 or 7", "between 5 and 10", "B or D", "Madrid or
  Lisbon") or a run of new values ("4, 5, 6, 7") is no answer;
* a value named only to **reject** it ("not D", "Berlin, not Vienna", "B is wrong") is not picked.

The ``math`` scorer leaves extraction and comparison to HuggingFace's math-verify (its own rules: the last
``\\boxed{}`` or final expression, compared symbolically), an optional dependency (the ``math`` extra).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Callable, Sequence

from pytest_ipw.queries.schema import Query

# public API, re-exported: the extractors live in their own modules
from pytest_ipw.scoring.choices import _score_choice, extract_choice, extract_choice_strict  # noqa: F401
from pytest_ipw.scoring.numbers import _score_numeric, extract_number, extract_number_strict  # noqa: F401
from pytest_ipw.scoring.reading import (
    _QUOTES,
    _REJECT_AFTER,
    _REJECT_BEFORE,
    MATH_EXTRA,
    Score,
    _boxed_contents,
    _clean,
    _corrections,
    _fold,
    _marker_tail,
    _sentence,
    normalize_text,
)

__all__ = ["Score", "score", "extract_number", "extract_choice", "extract_choice_strict", "extract_number_strict",
           "normalize_text"]

# ---------------------------------------------------------------------------------------------
# exact and regex
# ---------------------------------------------------------------------------------------------

_EXACT_REJECT_BEFORE = re.compile(rf"{_REJECT_BEFORE}(?:the\s+|an?\s+)?$", re.IGNORECASE)
_EXACT_REJECT_AFTER = re.compile(_REJECT_AFTER, re.IGNORECASE)
# "<title> by <reference> is the work of <someone else>": the reference only names the title's author in a
# restated question; the reply attributes the work to whoever follows.
_ATTRIBUTION = re.compile(r"\s+(?:is|was)\s+(?:the\s+work\s+of|written\s+by|attributed\s+to|authored\s+by|painted\s+by"
                          r"|credited\s+to|by)\s+(?P<agent>[^.;!?\n]*)", re.IGNORECASE)
_ALTERNATIVE_AFTER = re.compile(r"\s*,?\s*[(\[]?\s*(?:\bor\b|/)\s*(?:maybe\s+|perhaps\s+|possibly\s+|probably\s+)?"
                                r"(?P<alt>[^.;!?\n)\]]*)", re.IGNORECASE)
_ALTERNATIVE_BEFORE = re.compile(r"(?P<alt>[\w'][\w' .-]*?)\s*,?\s*(?:\bor\b|/)\s*(?:maybe\s+|perhaps\s+)?$",
                                 re.IGNORECASE)
# "the yen and the US dollar": a second thing named beside it, ending the clause (not "Paris and it is big").
_COORDINATED_AFTER = re.compile(r"\s+and\s+(?:the\s+)?(?P<alt>(?!(?:it|its|is|was|are|has|have|he|she|they|this|that"
                                r"|there|i|we|you)\b)\w+(?:\s+\w+)?)\s*(?:[.;!?)]|$)", re.IGNORECASE)
_NOT_A_NAME = {"i", "it", "its", "this", "that", "the", "a", "an", "my", "we", "you", "he", "she", "they", "there",
               "here", "let", "so", "but", "and", "yes", "no", "ok", "okay", "well", "hmm"}


def _reference_pattern(reference: str) -> str | None:
    words = normalize_text(reference).split()
    return r"(?<!\w)" + r"[\W_]*".join(re.escape(w) for w in words) + r"(?!\w)" if words else None


def _names_an_answer(segment: str) -> bool:
    """Whether a self-correction's text puts something in the answer's place ("Berlin", "Mercury is hotter",
    "tac") rather than making a remark ("it's the largest by far")."""
    words = segment.split()
    if not words:
        return False
    if len(words) <= 2:
        return True
    if words[0][0] in _QUOTES:  # a quoted word: "'tac'"
        return True
    first = words[0].strip("*_(")
    return bool(first) and first[0].isupper() and first.lower() not in _NOT_A_NAME


def _exact_segment(response: str) -> str:
    """The part of ``response`` that holds its final answer: the last box, else the line after the last
    answer marker, else the first line; then the last self-correction after it that names an answer."""
    boxed = _boxed_contents(response)
    if boxed:
        return boxed[-1]
    cleaned = _clean(response)
    tail = _marker_tail(cleaned)
    if tail is not None:
        start, segment = tail
    else:
        first = re.search(r"\S[^\n]*", cleaned)
        if first is None:
            return ""
        start, segment = first.start(), first.group(0).strip()
    for _, answer_start, strength in reversed(_corrections(cleaned)):
        if answer_start > start:
            corrected = _sentence(cleaned, answer_start).strip()
            # "it's the largest by far" after "Actually," is a remark; "Mercury is hotter" names an answer
            if strength == "strong" or _names_an_answer(corrected):
                return corrected
    return segment


def _mentions(segment: str, references: Sequence[str]) -> str | None:
    """"correct" when ``segment`` names a reference as its answer, "hedge" when it names one only as one of
    several alternatives ("Madrid or Lisbon"), else None (not named, or named only to be rejected)."""
    text = _fold(_clean(segment))
    patterns = [p for p in (_reference_pattern(r) for r in references) if p]
    spans = sorted({(m.start(), m.end()) for p in patterns for m in re.finditer(p, text)})

    def starts_with_reference(alt: str) -> bool:
        alt = re.sub(r"^\s*(?:the|an?)\s+", "", alt)
        return any(re.match(p, alt) for p in patterns)

    def ends_with_reference(alt: str) -> bool:
        return any(re.search(p + r"\s*$", alt) for p in patterns)

    rejected = []
    for start, end in spans:
        attribution = _ATTRIBUTION.match(text, end)
        if (_EXACT_REJECT_BEFORE.search(text[max(0, start - 40):start]) or _EXACT_REJECT_AFTER.match(text, end)
                or (attribution and not any(re.search(p, attribution.group("agent")) for p in patterns))):
            rejected.append((start, end))
    named = [(s, e) for s, e in spans if not any(s < re_ and rs < e for rs, re_ in rejected)]
    hedged = False
    for start, end in named:
        after = _ALTERNATIVE_AFTER.match(text, end) or _COORDINATED_AFTER.match(text, end)
        before = _ALTERNATIVE_BEFORE.search(text[max(0, start - 60):start])
        if (after and not starts_with_reference(after.group("alt"))) or (
                before and not ends_with_reference(before.group("alt"))):
            hedged = True
            continue
        return "correct"
    return "hedge" if hedged else None


def _score_exact(query: Query, response: str) -> Score:
    if not response or not response.strip():
        return Score(correct=False, unscorable=True, extracted=None)
    references = [r for r in (query.answer, *query.aliases) if normalize_text(r)]
    normalized = {normalize_text(r) for r in references}
    whole = normalize_text(response)
    if whole in normalized:
        return Score(correct=True, unscorable=False, extracted=whole)
    segment = _exact_segment(response)
    extracted = normalize_text(segment) or whole or None
    if not extracted:
        return Score(correct=False, unscorable=True, extracted=None)
    found = _mentions(segment, references)
    if found == "correct":
        match = next((r for r in normalized if re.search(rf"(?<!\w){re.escape(r)}(?!\w)", extracted)), extracted)
        return Score(correct=True, unscorable=False, extracted=match[:200])
    # A hedge between the reference and something else is no answer.
    return Score(correct=False, unscorable=found == "hedge", extracted=extracted[:200] if found != "hedge" else None)


def _score_regex(query: Query, response: str) -> Score:
    if not response or not response.strip():
        return Score(correct=False, unscorable=True, extracted=None)
    match = re.search(query.answer, response, re.IGNORECASE | re.MULTILINE)
    if match:
        return Score(correct=True, unscorable=False, extracted=match.group(0).strip()[:200] or match.group(0))
    first = re.search(r"\S[^\n]*", response)
    return Score(correct=False, unscorable=False, extracted=first.group(0).strip()[:200] if first else None)


# ---------------------------------------------------------------------------------------------
# math (optional: HuggingFace's math-verify, for symbolic and LaTeX references)
# ---------------------------------------------------------------------------------------------


def _score_math(query: Query, response: str) -> Score:
    """Symbolic comparison (``\\frac{1}{2}`` == ``0.5``, ``x^2+2x+1`` == ``(x+1)^2``) with math-verify, which
    extracts the response's final answer (boxed first) and compares with sympy."""
    try:
        import math_verify
    except ImportError:
        from pytest_ipw.core.errors import IPWUsageError

        raise IPWUsageError(f"query {query.id!r} uses scorer 'math', which needs math-verify: {MATH_EXTRA}") from None
    import threading

    # math-verify times out with signal.alarm, which works only in the main thread.
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    reference = query.answer.strip()
    if not re.search(r"\$|\\\(|\\\[|\\boxed", reference):
        reference = f"${reference}$"
    gold = math_verify.parse(reference, parsing_timeout=timeout)
    if not gold:
        from pytest_ipw.core.errors import IPWUsageError

        raise IPWUsageError(f"query {query.id!r}: math-verify cannot parse the reference answer {query.answer!r}; "
                            "write it as LaTeX or a plain expression")
    answer = math_verify.parse(response or "", parsing_timeout=timeout)
    if not answer:
        return Score(correct=False, unscorable=True, extracted=None)
    correct = bool(math_verify.verify(gold, answer, timeout_seconds=timeout))
    return Score(correct=correct, unscorable=False, extracted=str(answer[-1])[:200])


_SCORERS = {
    "numeric": _score_numeric,
    "choice": _score_choice,
    "exact": _score_exact,
    "regex": _score_regex,
    "math": _score_math,
}


def score(query: Query, response: str, judge: Callable[[Query, str], Score] | None = None) -> Score:
    """Compare ``response`` with ``query.answer`` using ``query.scorer``.

    Scorer ``judge`` asks ``judge`` (see :mod:`pytest_ipw.judge`) to compare the response with the reference.
    """
    if query.scorer == "judge":
        if judge is None:
            from pytest_ipw.core.errors import IPWUsageError

            raise IPWUsageError(f"query {query.id!r} is scored by a judge model; name one with --ipw-judge=SPEC")
        return judge(query, response or "")
    try:
        scorer = _SCORERS[query.scorer]
    except KeyError:
        raise ValueError(f"unknown scorer {query.scorer!r} for query {query.id!r}") from None
    result = scorer(query, response or "")
    if query.protocol:  # a data set's official extraction is its strict reading (pytest_ipw.queries.protocols)
        from pytest_ipw.queries.protocols import official_answer

        correct, extracted = official_answer(query, response or "")
        result = replace(result, correct_strict=correct, extracted_strict=extracted)
    if result.correct_strict is None:  # no separate strict reading: strict == flexible
        result = replace(result, correct_strict=result.correct, extracted_strict=result.extracted)
    return result
