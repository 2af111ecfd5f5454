"""Numeric answers: integers, decimals, thousands separators, fractions and mixed numbers, scientific notation
and scale words, read under the shared commitment rule (``reading``); the ``numeric`` scorer."""

from __future__ import annotations

import math
import re
from typing import Iterable, Sequence

from pytest_ipw.queries.schema import Query
from pytest_ipw.scoring.reading import (
    _ANSWER_MARKER,
    _HEDGED,
    _REJECT_AFTER,
    _REJECT_BEFORE,
    DEFAULT_REL_TOL,
    Score,
    _box_spans,
    _clean,
    _corrections,
    _Hedge,
    _mask,
    _sentence,
)

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
