"""Official answer extraction of the study's data sets: strict accuracy as each data set's authors score it.

A built-in hub mapping (:mod:`pytest_ipw.sources`) puts its protocol's name on every query it makes
(:attr:`Query.protocol`); :func:`pytest_ipw.scoring.score` then takes the *strict* reading from here, so a
strict accuracy can be set beside a published number. The *flexible* reading stays the project's own rule
(:mod:`pytest_ipw.scoring`). Each protocol below re-expresses, in this module's own code, the extraction
in the evaluation script its authors publish, and says where it knowingly differs. Prompts stay the
project's (zero-shot, with an instruction asking for the format the protocol reads): what is reproduced
is the scoring, not the prompting.

NaturalReasoning and WildChat have free-form references compared by a judge model: they publish no
extraction protocol, so they have none here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # queries imports this module lazily; no import cycle at run time
    from pytest_ipw.queries.schema import Query

__all__ = ["PROTOCOLS", "Protocol", "official_answer", "protocol_title"]


@dataclass(frozen=True)
class Protocol:
    """One data set's published answer extraction."""

    name: str  # the key in PROTOCOLS, stored on queries and records
    title: str  # what the report says: "strict = <title>"
    source: str  # the evaluation code it reproduces
    extract: Callable[[str, Query], str | None]  # response, query -> the answer the official code extracts
    deviations: str = ""  # where this reproduction knowingly differs from the official numbers

    def read(self, query: Query, response: str) -> tuple[bool, str | None]:
        """(correct, extracted): the official comparison is exact string equality with the reference."""
        extracted = self.extract(response or "", query)
        return extracted is not None and extracted == query.answer, extracted


# --------------------------------------------------------------------------------------------------
# MMLU-Pro (TIGER-AI-Lab/MMLU-Pro, evaluate_from_local.py / evaluate_from_api.py: extract_answer)
# --------------------------------------------------------------------------------------------------

# Stage 1: the *first* "answer is (X)" (case-sensitive). Its 5-shot prompts make base models run on into
# the next question's "Answer: ...", so the first match, not the last, is the model's own answer.
_MMLU_PRO_FIRST = re.compile(r"answer is \(?([A-J])\)?")
# Stage 2, as the official `.*[aA]nswer:\s*([A-J])` reads: the first line holding an "Answer: X" (X may follow on
# a later line), and on that line the last one. Found here without that pattern's quadratic backtracking, which
# takes seconds on a long reply.
_MMLU_PRO_ANSWER_COLON = re.compile(r"(?=[aA]nswer:\s*([A-J]))")  # every start, overlapping ones too
# Stage 3: the last standalone capital letter A-J anywhere in the reply.
_STANDALONE_LETTER = re.compile(r"\b([A-J])\b")


def _mmlu_pro(response: str, query: Query) -> str | None:
    match = _MMLU_PRO_FIRST.search(response)
    if match:
        return match.group(1)
    found = list(_MMLU_PRO_ANSWER_COLON.finditer(response))
    if found:
        line_end = response.find("\n", found[0].start())
        on_line = [m for m in found if line_end < 0 or m.start() < line_end]
        return on_line[-1].group(1)
    letters = list(_STANDALONE_LETTER.finditer(response))
    return letters[-1].group(1) if letters else None


# --------------------------------------------------------------------------------------------------
# GSM8K (openai/grade-school-math, grade_school_math/dataset.py: extract_answer / is_correct)
# --------------------------------------------------------------------------------------------------

_GSM8K_FINAL = re.compile(r"#### (-?[0-9.,]+)")  # the first "#### N"; commas dropped; compared as text


def _gsm8k(response: str, query: Query) -> str | None:
    match = _GSM8K_FINAL.search(response)
    return match.group(1).strip().replace(",", "") if match else None


# --------------------------------------------------------------------------------------------------
# GPQA (idavidrein/gpqa, baselines: AnswerPredictor.parse_sampled_answer)
# --------------------------------------------------------------------------------------------------

# Tried in order; each pattern's first match counts when its character is one of A-D.
_GPQA_PATTERNS = tuple(re.compile(p) for p in (
    r"answer is \((.)\)", r"Answer: \((.)\)", r"answer: \((.)\)", r"answer \((.)\)", r"\((.)\)"))


def _gpqa(response: str, query: Query) -> str | None:
    for pattern in _GPQA_PATTERNS:
        match = pattern.search(response)
        if match and match.group(1) in ("A", "B", "C", "D"):
            return match.group(1)
    return None


# --------------------------------------------------------------------------------------------------
# SuperGPQA (SuperGPQA/SuperGPQA, eval/eval.py, zero-shot: extract_option_labels, then extract_option_content)
# --------------------------------------------------------------------------------------------------

# What may wrap the answer: "(", "[", "*", "$", "{", "\" and LaTeX "\boxed{", "\mathbf{", "\mathrm{", "\text{" before
# it; "\", "}", "$", ")", "]" after it; then a space, ":", ".", "*", ")" or the end of the text.
_OPEN = r"(?:[*${(\[\\]|\\(?:boxed|mathbf|mathrm|text)\{)*?"
_CLOSE = r"[\\}$)\]]*(?:[\s:.*)]|$)"
_LETTER = r"\s*([A-J])"  # with IGNORECASE below: a lower-case letter is extracted, and then does not equal the key
_SUPERGPQA_LABELS = tuple(re.compile(p, re.IGNORECASE) for p in (
    r"The\s+(?:\w+\s+)?(?:answer|option)(?:\w+\s+)?\s+is?:?\s*" + _OPEN + _LETTER + _CLOSE,  # "The correct answer is (C)."
    r"Answer[*\s]*:\s*" + _OPEN + _LETTER + _CLOSE,  # "ANSWER: $\boxed{B}$"
    r"^[^\w\r\n]*" + _OPEN + _LETTER + _CLOSE,  # a reply (or its last line) that is the letter: "(C)."
))


def _supergpqa_content_patterns(options: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    texts = "|".join(re.escape(option) for option in options)
    body = _OPEN + r"\s*(" + texts + r")" + _CLOSE
    return (re.compile(r"[Tt]he\s+(?:\w+\s+)?(?:answer|option)(?:\w+\s+)?\s+is:?\s*" + body),
            re.compile(r"(?i:Answer)\s*" + body),
            re.compile(r"^[^\w\r\n]*" + body))


def _last_line_then_all(text: str, patterns: tuple[re.Pattern[str], ...]) -> re.Match[str] | None:
    text = text.rstrip()
    for where in (text.split("\n")[-1], text):
        for pattern in patterns:
            match = pattern.search(where)
            if match:
                return match
    return None


def _supergpqa(response: str, query: Query) -> str | None:
    match = _last_line_then_all(response, _SUPERGPQA_LABELS)
    if match:
        return match.group(1)
    if not query.choices:
        return None
    match = _last_line_then_all(response, _supergpqa_content_patterns(query.choices))
    return chr(ord("A") + query.choices.index(match.group(1))) if match else None


PROTOCOLS: dict[str, Protocol] = {p.name: p for p in (
    Protocol("mmlu-pro", "MMLU-Pro official extraction",
             "TIGER-AI-Lab/MMLU-Pro evaluate_from_local.py extract_answer: first 'answer is (X)', then "
             "'Answer: X', then the last standalone letter A-J",
             _mmlu_pro,
             deviations="a reply with no extractable letter counts as wrong here; the official script scores it "
                        "as a random guess (random.randint from one seeded stream, so it depends on question order), "
                        "which adds about (unextracted share) / (number of options) to its accuracy"),
    Protocol("gsm8k", "GSM8K official extraction (#### N)",
             "openai/grade-school-math grade_school_math/dataset.py extract_answer: the first '#### N', commas "
             "removed, compared as text with the reference",
             _gsm8k),
    Protocol("gpqa", "GPQA official extraction",
             "idavidrein/gpqa baselines parse_sampled_answer: 'answer is (X)', 'Answer: (X)', 'answer: (X)', "
             "'answer (X)', then any '(X)', first match of each, X in A-D",
             _gpqa,
             deviations="options are shuffled by record id here (the baselines shuffle with their own seed)"),
    Protocol("supergpqa", "SuperGPQA official extraction",
             "SuperGPQA/SuperGPQA eval/eval.py zero-shot: option letter on the last line, then anywhere "
             "('The answer is X', 'Answer: X', a bare letter, LaTeX-wrapped), then an option's text",
             _supergpqa),
)}


def protocol_title(name: str | None) -> str:
    """The report's name for a protocol key (an unknown key, from another version, is shown as it is)."""
    if name is None:
        return "the project's format rule"
    protocol = PROTOCOLS.get(name)
    return protocol.title if protocol else name


def official_answer(query: Query, response: str) -> tuple[bool, str | None]:
    """(correct, extracted) under the query's protocol; the query must name one in PROTOCOLS."""
    return PROTOCOLS[str(query.protocol)].read(query, response)
