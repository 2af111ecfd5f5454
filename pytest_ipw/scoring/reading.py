"""How a response is read, before any scorer compares it: the verdict type (``Score``), the clean-up of
markdown and LaTeX, and the rule every scorer shares — the last answer a response commits to counts, a hedge
between values is no answer, a value named only to reject it is not picked (see ``scorers``)."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Iterable

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

class _Hedge:
    """Marks a reading that offers two different values: no answer."""


_HEDGED = _Hedge()
