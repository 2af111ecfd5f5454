"""Score one model response against a query's reference answer.

Pure functions, standard library only. Chat models wrap answers in markdown, LaTeX, "The answer is ..."
and explanations; the extractors below look through that formatting so that a model is judged on
its answer, not on its typography. A response from which no answer can be extracted is
``unscorable``: callers count it as wrong (never drop it), and the flag lets reports show how often
a model ignored the output instruction.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

from pytest_ipw.queries.schema import Query

__all__ = ["Score", "score", "extract_number", "extract_choice", "extract_choice_strict", "extract_number_strict",
           "normalize_text"]

LETTERS = "ABCDEFGHIJ"  # choice scoring supports up to 10 options
DEFAULT_REL_TOL = 1e-6  # numeric answers without a tolerance must match (up to float noise)


@dataclass(frozen=True)
class Score:
    correct: bool
    unscorable: bool  # no answer could be extracted (counted as wrong by callers, never dropped)
    extracted: str | None  # what was compared with the reference, for the report/JSON
    #: the strict reading (lm-evaluation-harness style): only an answer in the requested format counts.
    #: For ``choice`` and ``numeric``; other scorers have no separate strict reading (same as ``correct``).
    #: (Secondary readings do not take part in equality: two Scores are equal when their verdicts are.)
    correct_strict: bool | None = field(default=None, compare=False)
    extracted_strict: str | None = field(default=None, compare=False)
    judge: dict[str, Any] | None = field(default=None, compare=False)  # verdict, identity, cost (scorer "judge")


# ---------------------------------------------------------------------------------------------
# shared clean-up
# ---------------------------------------------------------------------------------------------

_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}")
_LATEX_WRAPPER = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_MARKDOWN = re.compile(r"\*\*|__|\*|`+|~~")
_HEADING = re.compile(r"(?m)^\s{0,3}#{1,6}\s+")
# "The answer is", "Final answer:", "answer =" (a preceding "final"/"correct" needs no special case).
_ANSWER_MARKER = re.compile(r"\banswer\s*(?:is\b|would\s+be\b|will\s+be\b|[=:])\s*:?", re.IGNORECASE)
_LEADING_MARKER = re.compile(
    r"^\s*(?:(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is|:|=)|final\s*:|solution\s*:)\s*:?\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’«»`"


def _boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}``, with nested braces (``\\boxed{\\frac{3}{4}}``) handled."""
    found: list[str] = []
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for index in range(start, len(text)):
            char = text[index]
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    found.append(text[start:index])
                    break
    return found


def _strip_latex(text: str) -> str:
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    text = _LATEX_WRAPPER.sub(r"\1", text)
    # Inline math delimiters and spacing commands carry no content.
    return re.sub(r"\\[()\[\]]|\$|\\[,;!]|\\quad", " ", text)


def _clean(text: str) -> str:
    """Remove chat formatting that never changes the answer: markdown emphasis, headings, LaTeX wrappers."""
    text = text.replace("\u2212", "-").replace("\u00a0", " ")  # unicode minus, no-break space
    text = _HEADING.sub("", text)
    text = _MARKDOWN.sub("", text)
    return _strip_latex(text)


def normalize_text(text: str) -> str:
    """Lower-case, accent-free, punctuation- and article-free form used by the ``exact`` scorer.

    "**The Answer: Brasília.**" and "brasilia" both become "brasilia".
    """
    text = _clean(text)
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.strip().strip(_QUOTES).strip()
    text = _LEADING_MARKER.sub("", text)
    text = text.lower()
    # Punctuation (including hyphens and apostrophes) separates words: "Nur-Sultan" == "nur sultan".
    text = re.sub(r"[^\w\s]", " ", text)
    text = re.sub(r"\b(?:a|an|the)\b", " ", text)
    return " ".join(text.split())


def _marker_tail(text: str) -> str | None:
    """The text after the last "answer is" / "Answer:" marker, up to the end of that line."""
    last = None
    for last in _ANSWER_MARKER.finditer(text):
        pass
    if last is None:
        return None
    tail = text[last.end():].strip()
    line = tail.split("\n", 1)[0].strip()
    return line or None


# ---------------------------------------------------------------------------------------------
# numeric
# ---------------------------------------------------------------------------------------------

# A number: optional sign, thousands-separated or plain digits, optional decimals, optional
# "/denominator" (a simple fraction) and "%" (dropped: "45%" reads as 45).
_NUMBER = re.compile(
    r"(?:(?<![\w)])(?P<sign>-))?"  # "= -5" is negative; in "3-2" the hyphen is an operator, not a sign
    r"(?<![\w.])"  # no number inside "v2" or "CH4"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:\s*/\s*(?P<den>\d+(?:\.\d+)?)(?![\d.]))?"
    r"(?P<pct>\s*%)?"
)
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)


def _numbers(text: str) -> list[float]:
    values: list[float] = []
    for match in _NUMBER.finditer(text):
        try:
            value = float(match.group("num").replace(",", ""))
            if match.group("den") is not None:
                denominator = float(match.group("den"))
                if denominator == 0:
                    continue
                value /= denominator
        except (ValueError, OverflowError):
            continue
        if match.group("sign"):
            value = -value
        values.append(value)
    return values


def _first_number(text: str) -> float | None:
    values = _numbers(text)
    return values[0] if values else None


def extract_number(text: str, avoid: Iterable[float] = ()) -> float | None:
    """The final numeric answer in ``text``, or ``None``.

    Preference order: the last ``\\boxed{}``; the line after the last "answer is"/"Answer:" marker;
    the number after the last "="; the last number. Handles "1,234", "-5", "0.5", "3/4", "45%"
    ("45"). Spelled-out numbers up to twenty count only where no digit appears at all.

    ``avoid`` (the numbers of the prompt) only refines the last-number fallback: in "There are 5000
    grams in 5 kilograms" the restated 5 is skipped, as long as some other number is left.
    """
    if not text:
        return None
    boxed = _boxed_contents(text)
    if boxed:
        value = _from_segment(_clean(boxed[-1]))
        if value is not None:
            return value
    cleaned = _clean(text)
    tail = _marker_tail(cleaned)
    if tail is not None:
        value = _from_segment(tail)
        if value is not None:
            return value
    if "=" in cleaned:
        value = _first_number(cleaned.rsplit("=", 1)[1])
        if value is not None:
            return value
    values = _numbers(cleaned)
    if values:
        avoided = list(avoid)
        fresh = [v for v in values if not any(math.isclose(v, a, rel_tol=1e-9) for a in avoided)]
        return (fresh or values)[-1]
    words = _NUMBER_WORD.findall(cleaned)
    return float(_NUMBER_WORDS[words[-1].lower()]) if words else None


def _from_segment(segment: str) -> float | None:
    # Inside a marker line or a box, "5 + 7 = 12" means 12, and "12 apples (5 + 7)" means 12.
    if "=" in segment:
        value = _first_number(segment.rsplit("=", 1)[1])
        if value is not None:
            return value
    return _first_number(segment)


def _format_number(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


# Strict numeric formats: GSM8K's "#### N", "the answer is N", \boxed{N}, or a reply that is only a number.
_STRICT_NUMBER = re.compile(r"(?:####|\banswer\s+is\b:?)\s*\$?\s*(?P<n>-?[0-9][0-9,]*(?:\.[0-9]+)?)", re.IGNORECASE)
_ONLY_NUMBER = re.compile(r"\s*\$?\s*(?P<n>-?[0-9][0-9,]*(?:\.[0-9]+)?)\s*\.?\s*")


def extract_number_strict(text: str) -> float | None:
    """The final number only where the reply gives it in a requested format, else None.

    Like lm-evaluation-harness's "strict-match" (GSM8K: ``#### N``; CoT prompts: ``The answer is N``),
    plus ``\boxed{N}`` and a reply that is just the number. :func:`extract_number` is the flexible reading.
    """
    if not text:
        return None
    boxed = _boxed_contents(text)
    candidates = [m.group("n") for m in _STRICT_NUMBER.finditer(_MARKDOWN.sub("", text))]
    if boxed:
        only = _ONLY_NUMBER.fullmatch(_clean(boxed[-1]))
        if only:
            candidates.append(only.group("n"))
    if not candidates:
        only = _ONLY_NUMBER.fullmatch(_MARKDOWN.sub("", text))
        candidates = [only.group("n")] if only else []
    if not candidates:
        return None
    try:
        return float(candidates[-1].replace(",", ""))
    except ValueError:
        return None


def _numbers_match(query: Query, value: float) -> bool:
    text = query.answer.replace(",", "").strip()
    reference = float(text)
    if query.tolerance is not None:
        return abs(value - reference) <= query.tolerance
    if re.fullmatch(r"[-+]?\d+", text):
        # An integer reference is matched exactly: a relative tolerance would accept 972997745 for 972996775.
        return value == reference
    return math.isclose(value, reference, rel_tol=DEFAULT_REL_TOL, abs_tol=1e-12)


def _score_numeric(query: Query, response: str) -> Score:
    strict = extract_number_strict(response)
    strict_fields = {"correct_strict": strict is not None and _numbers_match(query, strict),
                     "extracted_strict": None if strict is None else _format_number(strict)}
    value = extract_number(response, avoid=_numbers(_clean(query.prompt)))
    if value is None:
        return Score(correct=False, unscorable=True, extracted=None, **strict_fields)
    return Score(correct=_numbers_match(query, value), unscorable=False, extracted=_format_number(value),
                 **strict_fields)


# ---------------------------------------------------------------------------------------------
# choice
# ---------------------------------------------------------------------------------------------

# "answer is B", "Answer: (C)", "correct option is D", "Option B", "choice: b)"
_CHOICE_MARKER = re.compile(
    r"\b(?:answer|option|choice)\s*(?:is|would\s+be|:|=|-)?\s*:?\s*(?:option\s+|choice\s+)?"
    r"(?P<open>[(\[])?(?P<letter>[A-Ja-j])(?P<close>[)\]])?(?![\w'’])",
    re.IGNORECASE,
)
# "B) Nitrogen", "(B)", "[B]" anywhere; "B." / "B:" / "B -" at the start of a line.
_BRACKETED = re.compile(r"(?<![\w'’])(?:\((?P<a>[A-Ja-j])\)|\[(?P<b>[A-Ja-j])\]|(?P<c>[A-J])\))")
_LINE_START = re.compile(r"(?m)^[^\w\n]*(?P<letter>[A-J])(?:[.:]|\s+[-–—])(?=\s|$)")
_BARE = re.compile(r"(?<![\w'’\-°º])(?P<letter>[A-J])(?![\w'’\-])")  # "°C" is a unit, not option C


def _is_prose_letter(text: str, match_end: int, letter: str) -> bool:
    """True when a bare "A"/"I" is the article or pronoun ("A plant needs...", "I think ...")."""
    if letter not in "AI":
        return False
    following = text[match_end:]
    return re.match(r"\s+(?!or\b|and\b)[a-z]", following) is not None


def extract_choice(text: str, n_choices: int, choices: Sequence[str] = ()) -> str | None:
    """The option letter a response picks (``"A"``..), or ``None`` when there is none or it is ambiguous.

    Explicit markers ("Answer: B", "The answer is (B)", "Option B") win; then a reply that is just a
    letter; then bracketed or line-leading letters ("B) Nitrogen", "(B)"); then a lone capital letter
    in prose. A reply naming several different letters that way is ambiguous (``None``). With no
    letter at all, a reply containing exactly one option's text maps to that option.
    """
    if not text or n_choices < 1:
        return None
    valid = LETTERS[: min(n_choices, len(LETTERS))]
    boxed = _boxed_contents(text)
    cleaned = _clean(boxed[-1] if boxed else text).strip()
    if not cleaned:
        return None

    # 1. explicit marker; the last one is the final answer
    picked = None
    for match in _CHOICE_MARKER.finditer(cleaned):
        letter = match.group("letter")
        bracketed = match.group("open") or match.group("close")
        if letter.islower() and not bracketed and (letter == "a" or re.match(r"\s+[a-z]", cleaned[match.end():])):
            continue  # "the answer is a plant": an article, not a choice
        if not bracketed and _is_prose_letter(cleaned, match.end(), letter.upper()):
            continue
        if letter.upper() in valid:
            picked = letter.upper()
    if picked:
        return picked

    # 2. the whole reply is one letter: "B", "b.", "(B)", "**B**"
    bare = cleaned.strip(" \t\n.:;,!?()[]{}" + _QUOTES)
    if len(bare) == 1 and bare.upper() in valid:
        return bare.upper()

    # 3. bracketed / line-leading letters; several different ones mean the reply lists options
    structured = {
        (m.group("a") or m.group("b") or m.group("c")).upper() for m in _BRACKETED.finditer(cleaned)
    } | {m.group("letter") for m in _LINE_START.finditer(cleaned)}
    structured &= set(valid)
    if len(structured) == 1:
        return structured.pop()
    if len(structured) > 1:
        return None

    # 4. a lone capital letter in prose ("I'd go with C."), once option texts are blanked out so
    #    that an option such as "Vitamin D" does not read as letter D
    masked = cleaned
    for option in sorted(choices, key=len, reverse=True):
        if option.strip():
            masked = re.sub(_phrase_pattern(option), " ", masked, flags=re.IGNORECASE)
    bare_letters = {
        m.group("letter")
        for m in _BARE.finditer(masked)
        if m.group("letter") in valid and not _is_prose_letter(masked, m.end(), m.group("letter"))
    }
    if len(bare_letters) == 1:
        return bare_letters.pop()
    if len(bare_letters) > 1:
        return None

    # 5. no letter: the reply names exactly one option's text
    return _choice_by_text(cleaned, choices[: len(valid)])


def _phrase_pattern(phrase: str) -> str:
    """Case-insensitive whole-phrase pattern: "0" must not match inside "100"."""
    escaped = re.escape(phrase.strip())
    left = r"(?<!\w)" if phrase.strip()[:1].isalnum() or phrase.strip()[:1] == "_" else ""
    right = r"(?!\w)" if phrase.strip()[-1:].isalnum() or phrase.strip()[-1:] == "_" else ""
    return left + escaped + right


def _choice_by_text(text: str, choices: Sequence[str]) -> str | None:
    hits = [
        index
        for index, option in enumerate(choices)
        if option.strip() and re.search(_phrase_pattern(option), text, re.IGNORECASE)
    ]
    # "Red blood cells" also contains "blood cells"-like shorter options: keep the longest matches.
    hits = [
        i for i in hits
        if not any(j != i and choices[i].strip().lower() in choices[j].strip().lower() for j in hits)
    ]
    return LETTERS[hits[0]] if len(hits) == 1 else None


# lm-evaluation-harness's MMLU-Pro pattern ("answer is (X)"), also after "Answer:"; the last one counts.
_STRICT_CHOICE = re.compile(r"\banswer(?:\s+is|\s*:)\s*\(?(?P<letter>[A-J])\)?(?![\w'’])", re.IGNORECASE)


def extract_choice_strict(text: str, n_choices: int) -> str | None:
    """The option letter only where the reply gives it in a requested format, else None.

    "The answer is (C)" / "Answer: C" (the last one), or a reply that is just the letter ("C", "(C)",
    "C."). :func:`extract_choice` is the flexible reading (option text, lone letters, ...).
    """
    if not text:
        return None
    valid = LETTERS[: min(n_choices, len(LETTERS))]
    cleaned = _MARKDOWN.sub("", text)
    found = [m.group("letter") for m in _STRICT_CHOICE.finditer(cleaned)]
    # A lower-case letter must be bracketed: "the answer is a plant" names no option.
    found = [f for f, m in zip(found, _STRICT_CHOICE.finditer(cleaned)) if f.isupper() or "(" in m.group(0)]
    if not found:
        bare = cleaned.strip().strip(".").strip()
        if re.fullmatch(r"\(?[A-J]\)?", bare):
            found = [bare.strip("()")]
    letter = found[-1].upper() if found else None
    return letter if letter and letter in valid else None


def _score_choice(query: Query, response: str) -> Score:
    strict = extract_choice_strict(response, len(query.choices))
    reference = query.answer.strip().upper()
    strict_fields = {"correct_strict": strict == reference, "extracted_strict": strict}
    letter = extract_choice(response, len(query.choices), query.choices)
    if letter is None:
        return Score(correct=False, unscorable=True, extracted=None, **strict_fields)
    return Score(correct=letter == reference, unscorable=False, extracted=letter, **strict_fields)


# ---------------------------------------------------------------------------------------------
# exact and regex
# ---------------------------------------------------------------------------------------------


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _score_exact(query: Query, response: str) -> Score:
    if not response or not response.strip():
        return Score(correct=False, unscorable=True, extracted=None)
    references = [normalize_text(r) for r in (query.answer, *query.aliases)]
    references = [r for r in references if r]
    whole = normalize_text(response)
    boxed = _boxed_contents(response)
    tail = _marker_tail(_clean(boxed[-1] if boxed else response))
    final = normalize_text(boxed[-1]) if boxed else normalize_text(tail) if tail else None
    line = normalize_text(_first_line(response))
    extracted = final or line or whole or None
    if not extracted:
        return Score(correct=False, unscorable=True, extracted=None)
    for reference in references:
        if reference in (whole, final):
            return Score(correct=True, unscorable=False, extracted=reference)
        # A reply that names the answer in a sentence ("The capital of France is Paris.")
        if re.search(rf"(?<!\w){re.escape(reference)}(?!\w)", line):
            return Score(correct=True, unscorable=False, extracted=reference)
    return Score(correct=False, unscorable=False, extracted=extracted[:200])


def _score_regex(query: Query, response: str) -> Score:
    if not response or not response.strip():
        return Score(correct=False, unscorable=True, extracted=None)
    match = re.search(query.answer, response, re.IGNORECASE | re.MULTILINE)
    if match:
        return Score(correct=True, unscorable=False, extracted=match.group(0).strip()[:200] or match.group(0))
    return Score(correct=False, unscorable=False, extracted=_first_line(response)[:200])


_SCORERS = {
    "numeric": _score_numeric,
    "choice": _score_choice,
    "exact": _score_exact,
    "regex": _score_regex,
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
        from dataclasses import replace

        from pytest_ipw.queries.protocols import official_answer

        correct, extracted = official_answer(query, response or "")
        result = replace(result, correct_strict=correct, extracted_strict=extracted)
    if result.correct_strict is None:  # no separate strict reading: strict == flexible
        from dataclasses import replace

        result = replace(result, correct_strict=result.correct, extracted_strict=result.extracted)
    return result
