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

import math
import re
import unicodedata
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Sequence

from pytest_ipw.queries.schema import Query

__all__ = ["Score", "score", "extract_number", "extract_choice", "extract_choice_strict", "extract_number_strict",
           "normalize_text"]

LETTERS = "ABCDEFGHIJ"  # choice scoring supports up to 10 options
DEFAULT_REL_TOL = 1e-6  # numeric answers without a tolerance must match (up to float noise)
MATH_EXTRA = "pip install 'pytest-ipw[math]' (or: pip install math-verify)"


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
_HEADING = re.compile(r"(?m)^\s{0,3}#{1,6}[ \t]+(?![ \t]*\$?-?\d)")  # "#### 7" is GSM8K's answer, not a heading
# "The answer is", "Final answer:", "answer =", GSM8K's "####" (a preceding "final"/"correct" needs no special case).
_ANSWER_MARKER = re.compile(r"\banswer\s*(?:is\b|would\s+be\b|will\s+be\b|[=:])\s*:?|####", re.IGNORECASE)
_LEADING_MARKER = re.compile(
    r"^\s*(?:(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is|:|=)|final\s*:|solution\s*:)\s*:?\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’«»`"
_SENTENCE_END = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|[!?;\n]")


def _box_spans(text: str) -> list[tuple[int, int, int, int]]:
    """(start, end, content start, content end) of every ``\\boxed{...}``, nested braces handled."""
    found: list[tuple[int, int, int, int]] = []
    for match in _BOXED.finditer(text):
        depth, start = 1, match.end()
        for index in range(start, len(text)):
            char = text[index]
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    found.append((match.start(), index + 1, start, index))
                    break
    return found


def _boxed_contents(text: str) -> list[str]:
    """Contents of every ``\\boxed{...}`` (``\\boxed{\\frac{3}{4}}`` included)."""
    return [text[inner_start:inner_end] for _, _, inner_start, inner_end in _box_spans(text)]


def _strip_latex(text: str) -> str:
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    text = _LATEX_WRAPPER.sub(r"\1", text)
    text = re.sub(r"\\(?:times|cdot)\b", "×", text)
    # Inline math delimiters and spacing commands carry no content.
    return re.sub(r"\\[()\[\]]|\$|\\[,;!]|\\quad", " ", text)


def _clean(text: str) -> str:
    """Remove chat formatting that never changes the answer: markdown emphasis, headings, LaTeX wrappers."""
    text = text.replace("\u2212", "-").replace("\u00a0", " ")  # unicode minus, no-break space
    text = _HEADING.sub("", text)
    text = _MARKDOWN.sub("", text)
    return _strip_latex(text)


def _fold(text: str) -> str:
    """Accents off and lower case, character for character (offsets stay comparable across calls)."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return text.replace("’", "'").replace("‘", "'").lower()


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


def _marker_tail(text: str) -> tuple[int, str] | None:
    """Where the text after the last "answer is" / "Answer:" marker starts, and that text up to its line's end.

    A marker that ends its line ("Here is my answer:") takes the next non-empty line.
    """
    last = None
    for last in _ANSWER_MARKER.finditer(text):
        pass
    if last is None:
        return None
    rest = text[last.end():]
    start = last.end() + len(rest) - len(rest.lstrip())
    line = text[start:].split("\n", 1)[0].rstrip()
    return (start, line) if line else None


def _sentence(text: str, start: int = 0) -> str:
    """``text`` from ``start`` to the end of that sentence (a decimal point does not end it)."""
    end = _SENTENCE_END.search(text, start)
    return text[start: end.start() if end else len(text)]


def _mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` with ``spans`` blanked out; offsets are kept so that positions stay comparable."""
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


# ---------------------------------------------------------------------------------------------
# the rule shared by all scorers: self-correction, rejection (negation), hedges
# ---------------------------------------------------------------------------------------------

# A self-correction replaces what came before it: "9. Hmm, no — 11.", "B. Wait, actually C", "Lyon. Sorry, Paris",
# "Jupiter, but it's actually Mercury". A cue opens a clause after earlier text. Weak cues ("actually", "no",
# "wait", "rather") need punctuation or a lead-in ("it's", "the answer is") after them, so that "No, because..."
# or "Actually I used three steps" is not one; strong cues correct by themselves.
_STRONG_CUES = (r"no\W{0,3}wait|sorry|oops|correction|scratch\s+that|on\s+second\s+thought|i\s+was\s+wrong|i\s+meant?"
                r"|make\s+that|let\s+me\s+correct(?:\s+(?:that|myself))?|i\s+take\s+(?:that|it)\s+back"
                r"|(?:it'?s|it\s+is|that'?s|the\s+answer\s+is)\s+(?:actually|really)")
_WEAK_CUES = r"actually|wait|rather|no"
_LEAD_IN = (r"(?:it'?s|it\s+is|it\s+should\s+be|that'?s|that\s+should\s+be|make\s+(?:it|that)|i\s+think\s+(?:it'?s|it\s+is)"
            r"|the\s+(?:correct\s+|right\s+|real\s+|final\s+)?answer\s+(?:is|should\s+be))\b\W{0,3}")
_CORRECTION = re.compile(
    r"(?:(?<=[.!?;:,)\]\n—–…-])|(?<=[.!?;:,)\]—–…-]\s)|(?<=\bbut\s)|(?<=\band\s))\s*"  # opens a clause
    r"(?:(?:hmm+|oh|ah|um+|uh+|well)\b\W{0,3})?"  # an interjection before the cue
    rf"(?:(?P<strong>{_STRONG_CUES})|(?P<weak>{_WEAK_CUES}))\b"
    rf"(?P<tail>\W{{0,4}}(?:(?:no|wait|hmm+|sorry|actually|oops)\b\W{{0,4}})*(?P<lead>{_LEAD_IN})?)",
    re.IGNORECASE,
)


def _corrections(text: str) -> list[tuple[int, int, str]]:
    """(cue start, corrected answer start, strength) of each self-correction in ``text``, in order.

    Strength: "strong" (a strong cue: "Sorry, I mean"), "lead" (a weak cue with a lead-in: "Actually, it's"),
    or "weak" ("Actually, oxygen is also needed" is a remark more often than a correction: the callers ask
    more of what follows).
    """
    found = []
    for match in _CORRECTION.finditer(text):
        if not re.search(r"\w", text[: match.start()]):
            continue  # nothing before it to correct ("No, because ...")
        if match.group("weak") and not (match.group("lead") or re.search(r"[^\w\s]", match.group("tail"))):
            continue  # "actually I used", "wait until": a remark, not a correction
        strength = "strong" if match.group("strong") else "lead" if match.group("lead") else "weak"
        found.append((match.start(), match.end(), strength))
    return found


# A value named only to reject it: "not D", "isn't 10", "rather than Vienna", "rule out A and B", "neither A nor B",
# and after it: "B is wrong", "Vienna isn't it", "A would be incorrect".
_REJECT_BEFORE = (r"(?:\bnot|n't|\bnever|\bneither|\bnor|\brather\s+than|\binstead\s+of|\bexcept(?:\s+for)?|\bexcluding"
                  r"|\brul(?:e|es|ed|ing)\s+out|\beliminat(?:e|es|ed|ing))\s+")
_REJECT_AFTER = (r"\s*(?:(?:is|are|was|would\s+be|seems|looks)\s+(?:not\b|wrong\b|incorrect\b|false\b|out\b)"
                 r"|(?:isn't|isnt|aren't|wasn't)\b)")


# ---------------------------------------------------------------------------------------------
# numeric
# ---------------------------------------------------------------------------------------------

# A number: optional sign, thousands-separated or plain digits, optional decimals, scientific notation
# ("2.5e4", "2.5 × 10^4"), a simple fraction ("5/8", also before a full stop), "%" (dropped: "45%" reads
# as 45) or a scale word ("2.5 million").
_NUMBER = re.compile(
    r"(?:(?<![\w)^])(?P<sign>-))?"  # "= -5" is negative; in "3-2" the hyphen is an operator, not a sign
    r"(?<![\w.^])"  # no number inside "v2" or "CH4", and an exponent is not a number of its own
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:[eE](?P<exp>[-+]?\d+)(?!\w))?"
    r"(?:\s*[×x*·]\s*10\s*(?:\^|\*\*)\s*\{?\s*(?P<exp10>[-+]?\d+)\s*\}?)?"
    r"(?:\s*/\s*(?P<den>\d+(?:\.\d+)?)(?!\d|\.\d))?"
    r"(?:(?P<pct>\s*%)|\s+(?P<scale>thousand|million|billion|trillion)\b)?",
    re.IGNORECASE,
)
_SCALES = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}
_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}
_NUMBER_WORD = re.compile(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", re.IGNORECASE)
_SUPERSCRIPT = re.compile(r"[⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺]+")
_SUPERSCRIPT_DIGITS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻⁺", "0123456789-+")
_MIXED = re.compile(r"(?<![\w.,/^])(\d+)\s+(\d+)\s*/\s*(\d+)(?![\w/]|\.\d)")
# Loose number text, for the hedge and list patterns below (the value is read with _NUMBER).
_N = r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:[eE][-+]?\d+)?(?:\s*/\s*\d+)?"
# Two values offered as alternatives or as a range: "10 or 11", "10 to 12", "10–12", "11, maybe 12",
# "between 10 and 12".
_HEDGE = re.compile(
    rf"(?P<a>{_N})\s*%?(?:\s+[a-z]+)?\s*,?\s*(?:\bor\b|\bto\b|\bthrough\b|[–—]|,\s*(?:or\s+)?(?:maybe|perhaps|possibly))"
    rf"\s*(?:maybe\s+|perhaps\s+|possibly\s+|even\s+)?(?P<b>{_N})"
    rf"|\bbetween\s+(?P<c>{_N})\s*%?(?:\s+[a-z]+)?\s+and\s+(?P<d>{_N})",
    re.IGNORECASE,
)
_LIST = re.compile(rf"{_N}(?:\s*,\s*{_N}){{2,}}")
_NEGATED_NUMBER = re.compile(
    rf"{_REJECT_BEFORE}(?:equal\s+to\s+|exactly\s+)?(?P<a>{_N})|(?P<b>{_N}){_REJECT_AFTER}", re.IGNORECASE)


class _Hedge:
    """Marks a reading that offers two different values: no answer."""


_HEDGED = _Hedge()
_Reading = float | _Hedge | None


def _numeric_text(text: str) -> str:
    """Numeric spellings normalised: superscript exponents ("10⁴" -> "10^4"), mixed numbers ("3 1/2" -> "3.5"),
    and spelled-out numbers up to twenty where no digit appears at all."""
    text = _SUPERSCRIPT.sub(lambda m: "^" + m.group(0).translate(_SUPERSCRIPT_DIGITS), text)

    def mixed(match: re.Match[str]) -> str:
        whole, numerator, denominator = (int(g) for g in match.groups())
        if 0 < numerator < denominator:
            return repr(whole + numerator / denominator)
        return match.group(0)

    text = _MIXED.sub(mixed, text)
    if not re.search(r"\d", text):
        text = _NUMBER_WORD.sub(lambda m: str(_NUMBER_WORDS[m.group(1).lower()]), text)
    return text


def _value(match: re.Match[str]) -> float | None:
    try:
        value = float(match.group("num").replace(",", ""))
        if match.group("exp") is not None:
            value *= 10.0 ** int(match.group("exp"))
        if match.group("exp10") is not None:
            value *= 10.0 ** int(match.group("exp10"))
        if match.group("den") is not None:
            denominator = float(match.group("den"))
            if denominator == 0:
                return None
            value /= denominator
        if match.group("scale"):
            value *= _SCALES[match.group("scale").lower()]
    except (ValueError, OverflowError):
        return None
    return -value if match.group("sign") else value


def _tokens(text: str) -> list[tuple[int, int, float]]:
    """(start, end, value) of every number in ``text``."""
    found = []
    for match in _NUMBER.finditer(text):
        value = _value(match)
        if value is not None and math.isfinite(value):
            found.append((match.start(), match.end(), value))
    return found


def _numbers(text: str) -> list[float]:
    return [value for _, _, value in _tokens(text)]


def _unrejected(text: str) -> str:
    """``text`` with the numbers it rejects ("not 10", "12 is wrong") blanked out."""
    spans = []
    for match in _NEGATED_NUMBER.finditer(text):
        group = "a" if match.group("a") is not None else "b"
        spans.append((match.start(group), match.end(group)))
    return _mask(text, spans)


def _same(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _checked(text: str, token: tuple[int, int, float], avoid: Sequence[float] = ()) -> _Reading:
    """The token's value, or the hedge marker when it is one of two different values offered, or one of a
    run of new values ("11, 12, 13, 14": no single answer)."""
    start, end, value = token
    for match in _HEDGE.finditer(text):
        if match.start() < end and start < match.end():
            pair = [_numbers(match.group(g)) for g in (("a", "b") if match.group("a") is not None else ("c", "d"))]
            if pair[0] and pair[1] and not _same(pair[0][0], pair[1][0]):
                return _HEDGED
    for match in _LIST.finditer(text):
        if match.start() <= start and end <= match.end():
            fresh = [v for v in _numbers(match.group(0)) if not any(_same(v, a) for a in avoid)]
            if len(fresh) >= 2:
                return _HEDGED
    return value


def _segment_value(segment: str, at_start: bool = False) -> _Reading:
    """The value a segment gives: after its last "=" ("5 + 7 = 12"), else its first number ("12 apples (5 + 7)").

    ``at_start``: the number must open the segment (a self-correction: "no — 11", not "wait, I used 3 steps").
    """
    segment = _unrejected(segment)
    if "=" in segment:
        offset = segment.rindex("=") + 1
        tokens = _tokens(segment[offset:])
        if tokens:
            start, end, value = tokens[0]
            return _checked(segment, (start + offset, end + offset, value))
    tokens = _tokens(segment)
    if not tokens or (at_start and segment[: tokens[0][0]].strip(" \t'\"“”‘’:$(")):
        return None
    return _checked(segment, tokens[0])


def _number_commitments(text: str) -> list[tuple[int, _Reading, bool]]:
    """(position, reading, strict format) of each answer ``text`` commits to: boxes, answer markers,
    self-corrections. ``text`` is cleaned, with boxes replaced by \\x02...\\x03."""
    found: list[tuple[int, _Reading, bool]] = []
    for match in re.finditer(r"\x02([^\x02\x03]*)\x03", text):
        reading = _segment_value(match.group(1))
        if reading is not None:
            only = re.fullmatch(r"\s*\$?\s*" + _NUMBER.pattern + r"\s*\.?\s*", match.group(1), re.IGNORECASE)
            found.append((match.start(), reading, only is not None))
    for match in _ANSWER_MARKER.finditer(text):
        segment = _sentence(text, match.end()).lstrip(" :\t")
        if not segment.strip():  # "Answer:" at the end of a line: the next line holds it
            rest = text[match.end():].lstrip()
            segment = _sentence(rest)
        reading = _segment_value(segment)
        if reading is not None:
            # strict (lm-evaluation-harness): the number right after "####" / "answer is"
            strict = bool(re.match(r"(?:####|answer\s+is\b:?)\s*\$?\s*-?\d", text[match.start():], re.IGNORECASE))
            found.append((match.start(), reading, strict))
    for cue_start, answer_start, strength in _corrections(text):
        segment = _sentence(text, answer_start)
        reading = _segment_value(segment, at_start=True)
        if reading is not None and (strength != "weak" or "=" in segment or _bare_number(segment)):
            found.append((cue_start, reading, False))
    return sorted(found, key=lambda item: item[0])


def _bare_number(segment: str) -> bool:
    """A segment that is one number, perhaps with a unit word: "11.", "11 apples" (not "3 more apples arrive")."""
    tokens = _tokens(segment)
    return bool(tokens) and len(segment[tokens[0][1]:].split()) <= 1


def _prepared_number_text(text: str) -> str:
    spans = _box_spans(text)
    for start, end, inner_start, inner_end in reversed(spans):
        text = text[:start] + "\x02" + text[inner_start:inner_end] + "\x03" + text[end:]
    return _numeric_text(_clean(text))


def _number_reading(text: str, avoid: Iterable[float] = ()) -> tuple[_Reading, bool]:
    """The flexible reading and whether the commitment it comes from is in a strict format."""
    if not text:
        return None, False
    prepared = _prepared_number_text(text)
    commitments = _number_commitments(prepared)
    if commitments:
        _, reading, strict = commitments[-1]
        return reading, strict
    plain = _unrejected(prepared.replace("\x02", " ").replace("\x03", " "))
    if "=" in plain:
        reading = _segment_value(plain[plain.rindex("=") + 1:])
        if reading is not None:
            return reading, False
    tokens = _tokens(plain)
    if not tokens:
        return None, False
    avoided = list(avoid)
    fresh = [t for t in tokens if not any(_same(t[2], a) for a in avoided)]
    reading = _checked(plain, (fresh or tokens)[-1], avoided)
    only = re.fullmatch(r"\s*\$?\s*" + _NUMBER.pattern + r"\s*\.?\s*", plain, re.IGNORECASE)
    return reading, only is not None


def extract_number(text: str, avoid: Iterable[float] = ()) -> float | None:
    """The final numeric answer in ``text``, or ``None`` (none, or a hedge between two values).

    The last commitment wins: a ``\\boxed{}``, the text after an "answer is"/"Answer:"/"####" marker (after
    its "=" if it has one), or a self-correction ("Hmm, no — 11"). Without one: the number after the last
    "="; else the last number. Handles "1,234", "-5", "0.5", "3/4", "5/8.", "3 1/2", "2.5e4", "2.5 × 10^4",
    "2.5 million", "45%" ("45"); rejected values ("not 10") do not count; spelled-out numbers up to twenty
    only where no digit appears at all.

    ``avoid`` (the numbers of the prompt) only refines the last-number fallback: in "There are 5000
    grams in 5 kilograms" the restated 5 is skipped, as long as some other number is left.
    """
    reading, _ = _number_reading(text, avoid)
    return reading if isinstance(reading, float) else None


def _format_number(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def extract_number_strict(text: str, avoid: Iterable[float] = ()) -> float | None:
    """The final number only where the reply gives it in a requested format, else None.

    Like lm-evaluation-harness's "strict-match" (GSM8K: ``#### N``; CoT prompts: ``The answer is N``), plus
    ``\\boxed{N}`` and a reply that is just the number; and only when that is the answer the reply ends on
    (a formatted answer it later corrects is not its answer). :func:`extract_number` is the flexible reading.
    """
    reading, strict = _number_reading(text, avoid)
    return reading if strict and isinstance(reading, float) else None


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
    avoid = _numbers(_numeric_text(_clean(query.prompt)))
    reading, strict = _number_reading(response, avoid)
    value = reading if isinstance(reading, float) else None
    strict_value = value if strict else None
    strict_fields = {"correct_strict": strict_value is not None and _numbers_match(query, strict_value),
                     "extracted_strict": None if strict_value is None else _format_number(strict_value)}
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
_CHOICE_TEXT_MARKER = re.compile(r"\banswer\s*(?:is|would\s+be|:|=)\s*:?\s*", re.IGNORECASE)
# "B) Nitrogen", "(B)", "[B]" anywhere; "B." / "B:" / "B -" at the start of a line.
_BRACKETED = re.compile(r"(?<![\w'’])(?:\((?P<a>[A-Ja-j])\)|\[(?P<b>[A-Ja-j])\]|(?P<c>[A-J])\))")
_LINE_START = re.compile(r"(?m)^[^\w\n]*(?P<letter>[A-J])(?:[.:]|\s+[-–—])(?=\s|$)")
_BARE = re.compile(r"(?<![\w'’\-°º])(?P<letter>[A-J])(?![\w'’\-])")  # "°C" is a unit, not option C
_LETTER_AT = re.compile(r"[\s\"'“”‘’]*(?P<open>[(\[])?(?P<letter>[A-Ja-j])(?P<close>[)\]])?(?![\w'’])")
# After a capital "A" or "I", a verb makes it the letter ("A is correct", "A would be my pick");
# any other lower-case word makes it the article or pronoun ("A plant needs...", "I think ...").
_AFTER_LETTER_A = re.compile(
    r"\s+(?:is|was|would|will|seems|looks|appears|should|must|might|could|fits|matches|sounds|it|definitely"
    r"|clearly|certainly|instead|then)\b")
# "B or D", "B/D", "B, or maybe D" right after a letter: a hedge (the second letter must be a capital).
_HEDGED_LETTER = re.compile(r"\s*,?\s*(?i:or|and|/|&)\s*(?i:maybe\s+|perhaps\s+)?(?i:option\s+|choice\s+)?[(\[]?"
                            r"(?P<letter>[A-J])[)\]]?(?![\w'’])")


def _is_prose_letter(text: str, match_end: int, letter: str) -> bool:
    """True when a bare "A"/"I" is the article or pronoun ("A plant needs...", "I think ...")."""
    if letter not in "AI":
        return False
    following = text[match_end:]
    if letter == "A" and _AFTER_LETTER_A.match(following):
        return False
    if letter == "I" and re.match(r"\s+is\b", following):
        return False
    return re.match(r"\s+(?!or\b|and\b|nor\b)[a-z]", following) is not None


def _option_at(text: str, position: int, choices: Sequence[str]) -> int | None:
    """The option whose text starts at ``position`` (the longest one), or None."""
    rest = text[position:].lstrip(" \t\"'“”‘’:")
    best = None
    for index, option in enumerate(choices):
        phrase = option.strip()
        longer = best is None or len(phrase) > len(choices[best].strip())
        if phrase and longer and re.match(_phrase_pattern(phrase), rest, re.IGNORECASE):
            best = index
    return best


def _letter_with_text(text: str, letter: str, after: int, choices: Sequence[str]) -> str | _Hedge:
    """``letter``, unless the option text right after it is another option's ("B) Eight" when B is Six):
    then the reply names two options, which is no answer."""
    following = text[after:].split("\n", 1)[0]
    following = re.sub(r"^\s*[.:)\]-]?\s*", "", following)
    index = _option_at(following, 0, choices)
    own = LETTERS.index(letter)
    if index is not None and index != own and not (
            own < len(choices) and re.match(_phrase_pattern(choices[own]), following, re.IGNORECASE)):
        return _HEDGED
    return letter


def _read_choice_at(text: str, position: int, valid: str, choices: Sequence[str],
                    decisive: bool = True) -> str | _Hedge | None:
    """The option a self-correction or marker names at ``position``: a letter or an option's text (which, when
    not ``decisive``, must end its sentence: "Actually, oxygen." but not "Actually, oxygen is also needed")."""
    match = _LETTER_AT.match(text, position)
    if match:
        letter = match.group("letter")
        bracketed = match.group("open") or match.group("close")
        following = text[match.end():]
        article = letter.islower() and not bracketed and re.match(r"\s+[a-z]", following)
        is_letter = not article and (bracketed or not _is_prose_letter(text, match.end(), letter.upper()))
        if is_letter and letter.upper() in valid:
            hedge = _HEDGED_LETTER.match(text, match.end())
            if hedge and hedge.group("letter").upper() != letter.upper() and hedge.group("letter").upper() in valid:
                return _HEDGED
            return _letter_with_text(text, letter.upper(), match.end(), choices)
    index = _option_at(text, position, choices[: len(valid)])
    if index is None:
        return None
    if not decisive:
        rest = text[position:].lstrip(" \t\"'“”‘’:")
        end = re.match(_phrase_pattern(choices[index]), rest, re.IGNORECASE).end()
        if not re.match(r"\s*(?:$|[.!?;,)\n]|is\s+(?:the\s+)?(?:answer|correct|right)\b)", rest[end:], re.IGNORECASE):
            return None
    return LETTERS[index]


_LETTER_ITEM = r"[(\[]?[A-Ja-j][)\]]?(?![\w'’])"
_REJECTED_LETTERS = re.compile(
    rf"{_REJECT_BEFORE}(?:(?:option|choice|answer)s?\s+)?(?P<first>{_LETTER_ITEM})"
    rf"(?:\s*(?:,|and|or|nor|&)\s*(?:(?:option|choice)\s+)?{_LETTER_ITEM})*",
    re.IGNORECASE,
)


def _rejected_choices(text: str, valid: str, choices: Sequence[str]) -> str:
    """``text`` with the options it rejects blanked out: "not D", "rule out A and B", "neither A nor B",
    "B is wrong", "A) Oxygen is not correct", "not the ohm", "Vitamin A is not made by the skin"."""
    spans = []
    for match in _REJECTED_LETTERS.finditer(text):
        first = match.group("first")
        letter = first.strip("()[]")
        if first == letter and (letter.islower() or _is_prose_letter(text, match.end("first"), letter)):
            continue  # "is not a gas": the article
        spans.append(match.span())
    texts = "|".join(_phrase_pattern(o) for o in choices[: len(valid)] if o.strip())
    own_text = rf"(?:\s*[-:.]?\s*(?:{texts}))?" if texts else ""
    # A capital letter (or a bracketed one), perhaps with its option's text, then the rejection: "B is wrong".
    for match in re.finditer(rf"(?<![\w'’])(?:\((?i:[A-J])\)|\[(?i:[A-J])\]|[A-J]\)?){own_text}{_REJECT_AFTER}",
                             text, re.IGNORECASE):
        if match.group(0)[0] in "([" or match.group(0)[0].isupper():
            spans.append(match.span())
    for option in choices[: len(valid)]:
        if option.strip():
            phrase = _phrase_pattern(option)
            for pattern in (rf"{_REJECT_BEFORE}(?:the\s+|an?\s+)?{phrase}", rf"{phrase}{_REJECT_AFTER}"):
                spans.extend(m.span() for m in re.finditer(pattern, text, re.IGNORECASE))
    return _mask(text, spans)


def extract_choice(text: str, n_choices: int, choices: Sequence[str] = ()) -> str | None:
    """The option letter a response picks (``"A"``..), or ``None`` when there is none or it is ambiguous.

    The last commitment wins: explicit markers ("Answer: B", "The answer is (B)", "Option B", "The answer
    is: Nitrogen") and self-corrections ("C. Wait, no — D"); then a reply that is just a letter; then
    bracketed or line-leading letters ("B) Nitrogen", "(B)"); then a lone capital letter in prose ("A is
    correct", "I'd go with C"). Rejected options ("not D", "B is wrong") do not count. A reply naming several
    different letters that way, a hedge ("B or D") or a letter with another option's text ("B) Eight" when
    B is Six) is no answer (``None``). With no letter at all, a reply containing exactly one option's text
    maps to that option.
    """
    if not text or n_choices < 1:
        return None
    valid = LETTERS[: min(n_choices, len(LETTERS))]
    boxed = _boxed_contents(text)
    cleaned = _clean(boxed[-1] if boxed else text).strip()
    if not cleaned:
        return None
    masked = _rejected_choices(cleaned, valid, choices)

    # 1. commitments: markers and self-corrections; the last one is the final answer
    commitments: list[tuple[int, str | _Hedge | None]] = []
    for match in _CHOICE_MARKER.finditer(masked):
        reading = _read_choice_at(masked, match.start("open") if match.group("open") else match.start("letter"),
                                  valid, choices)
        if reading is not None:
            commitments.append((match.start(), reading))
    for match in _CHOICE_TEXT_MARKER.finditer(masked):
        index = _option_at(masked, match.end(), choices[: len(valid)])
        if index is not None:
            commitments.append((match.start(), LETTERS[index]))
    for cue_start, answer_start, strength in _corrections(masked):
        reading = _read_choice_at(masked, answer_start, valid, choices, decisive=strength != "weak")
        if reading is not None:
            commitments.append((cue_start, reading))
    if commitments:
        final = max(commitments, key=lambda item: item[0])[1]
        return final if isinstance(final, str) else None

    # 2. the whole reply is one letter: "B", "b.", "(B)", "**B**"
    bare = masked.strip(" \t\n.:;,!?()[]{}" + _QUOTES)
    if len(bare) == 1 and bare.upper() in valid:
        return bare.upper()

    # 3. bracketed / line-leading letters; several different ones mean the reply lists options
    structured: dict[str, int] = {}
    for m in _BRACKETED.finditer(masked):
        structured.setdefault((m.group("a") or m.group("b") or m.group("c")).upper(), m.end())
    for m in _LINE_START.finditer(masked):
        structured.setdefault(m.group("letter"), m.end())
    structured = {letter: end for letter, end in structured.items() if letter in valid}
    if len(structured) == 1:
        ((letter, end),) = structured.items()
        reading = _letter_with_text(masked, letter, end, choices)
        return reading if isinstance(reading, str) else None
    if len(structured) > 1:
        return None

    # 4. a lone capital letter in prose ("I'd go with C."), once option texts are blanked out so
    #    that an option such as "Vitamin D" does not read as letter D
    without_texts = masked
    for option in sorted(choices, key=len, reverse=True):
        if option.strip():
            without_texts = re.sub(_phrase_pattern(option), " ", without_texts, flags=re.IGNORECASE)
    bare_letters = {
        m.group("letter")
        for m in _BARE.finditer(without_texts)
        if m.group("letter") in valid and not _is_prose_letter(without_texts, m.end(), m.group("letter"))
    }
    if len(bare_letters) == 1:
        return bare_letters.pop()
    if len(bare_letters) > 1:
        return None

    # 5. no letter: the reply names exactly one option's text
    return _choice_by_text(masked, choices[: len(valid)])


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


def extract_choice_strict(text: str, n_choices: int, choices: Sequence[str] = ()) -> str | None:
    """The option letter only where the reply gives it in a requested format, else None.

    "The answer is (C)" / "Answer: C" (the last one), or a reply that is just the letter ("C", "(C)",
    "C."); and only when that is the option the reply ends on (:func:`extract_choice`, the flexible
    reading, agrees): a formatted answer that is later corrected, hedged or rejected is not its answer.
    """
    if not text:
        return None
    valid = LETTERS[: min(n_choices, len(LETTERS))]
    cleaned = _MARKDOWN.sub("", text)
    # A lower-case letter must be bracketed: "the answer is a plant" names no option.
    found = [m.group("letter") for m in _STRICT_CHOICE.finditer(cleaned)
             if m.group("letter").isupper() or "(" in m.group(0)]
    if not found:
        bare = cleaned.strip().strip(".").strip()
        if re.fullmatch(r"\(?[A-J]\)?", bare):
            found = [bare.strip("()")]
    letter = found[-1].upper() if found else None
    if not letter or letter not in valid:
        return None
    return letter if extract_choice(text, n_choices, choices) == letter else None


def _score_choice(query: Query, response: str) -> Score:
    strict = extract_choice_strict(response, len(query.choices), query.choices)
    reference = query.answer.strip().upper()
    strict_fields = {"correct_strict": strict == reference, "extracted_strict": strict}
    letter = extract_choice(response, len(query.choices), query.choices)
    if letter is None:
        return Score(correct=False, unscorable=True, extracted=None, **strict_fields)
    return Score(correct=letter == reference, unscorable=False, extracted=letter, **strict_fields)


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
