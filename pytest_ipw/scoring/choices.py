"""Multiple-choice answers: option letters A-J (A as reachable as B-D), option text, rejected and hedged
letters, the strict ``answer is (X)`` reading; the ``choice`` scorer."""

from __future__ import annotations

import re
from typing import Sequence

from pytest_ipw.queries.schema import Query
from pytest_ipw.scoring.reading import (
    _HEDGED,
    _MARKDOWN,
    _QUOTES,
    _REJECT_AFTER,
    _REJECT_BEFORE,
    LETTERS,
    Score,
    _boxed_contents,
    _clean,
    _corrections,
    _Hedge,
    _mask,
)

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
