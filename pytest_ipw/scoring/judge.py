"""The judge: a model that grades open-ended answers against a reference answer (scorer ``judge``).

Any backend can judge (``--ipw-judge=SPEC``, the same syntax as ``--ipw-model``): the embedded local
model by default, a cloud endpoint when configured (``openai+https://api.example.com/v1#MODEL``, key from
``--ipw-api-key-env``). The judge's identity and its prompt (text and SHA-256) are recorded in the
results. The judge's output is held to the two words CORRECT / INCORRECT where its runtime can enforce it (a
llama.cpp grammar in process; a JSON schema in ``response_format`` on OpenAI-compatible servers), and any
other reply is no verdict (an unscorable answer), never a guess at what it meant. Verdicts are cached on
disk (SQLite, under ``~/.cache/pytest-ipw/judge``) keyed by judge, prompt template, query, reference and
answer, so a re-run with the same answers costs nothing.

The judge's cost (tokens; energy when it runs on this machine, read from the run's meter in its own
window after the model's window has closed) is kept per record under ``judge`` and reported on its own
line. It is never added to the measured model's energy.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from pytest_ipw.backends.base import QueryFailed
from pytest_ipw.backends.models import cache_dir, parse_model_spec
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.queries.schema import Query
from pytest_ipw.scoring.scorers import Score

DEFAULT_JUDGE = "smollm2-135m"
#: the text the judge sees; changing it changes the cache key (its hash is part of the identity)
JUDGE_PROMPT = """You are grading an answer to a question. Compare it with the reference answer.

Question:
{question}

Reference answer:
{reference}

Answer to grade:
{answer}

Does the answer to grade agree with the reference answer on what matters (the final result or the main
point)? Reply with exactly one word: CORRECT or INCORRECT."""
PROMPT_SHA256 = hashlib.sha256(JUDGE_PROMPT.encode()).hexdigest()
MAX_FIELD_CHARS = 2000  # long references/answers are cut so that the judge prompt fits small contexts
JUDGE_MAX_TOKENS = 8
#: the only replies that are a verdict; the backend is asked to constrain its output to them
#: (llama.cpp: a grammar; OpenAI-compatible servers: a JSON schema), and anything else is no verdict
VERDICTS = ("CORRECT", "INCORRECT")
# The whole reply is the word; case, surrounding space, quotes or emphasis and one full stop are forgiven.
_VERDICT = re.compile(r"[\s*_`\"']*(CORRECT|INCORRECT)[\s*_`\"']*\.?[\s*_`\"']*", re.IGNORECASE)


def parse_verdict(text: str) -> bool | None:
    """True for exactly CORRECT, False for exactly INCORRECT, None for anything else ("CORRECT or INCORRECT",
    "The answer is not correct", an explanation): a judge that did not give one of the two words gave no verdict."""
    match = _VERDICT.fullmatch(text or "")
    if match is None:
        return None
    return match.group(1).upper() == "CORRECT"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_FIELD_CHARS else text[:MAX_FIELD_CHARS] + " [...]"


def judge_prompt(query: Query, answer: str) -> str:
    return JUDGE_PROMPT.format(question=_cut(query.prompt), reference=_cut(query.answer), answer=_cut(answer))


class VerdictCache:
    """Verdicts on disk, shared by parallel workers (SQLite serialises writers)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                       "created REAL NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)

    def get(self, key: str) -> dict[str, Any] | None:
        with self._lock, self._connect() as db:
            row = db.execute("SELECT value FROM verdicts WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        with self._lock, self._connect() as db:
            db.execute("INSERT OR REPLACE INTO verdicts (key, value, created) VALUES (?, ?, ?)",
                       (key, json.dumps(value), time.time()))


class Judge:
    """Grades answers with a backend loaded on first use (a run without judged queries loads nothing)."""

    def __init__(self, spec_text: str | None, settings: Any, device: Any, cache_path: Path | None = None):
        from dataclasses import replace

        self.spec_text = spec_text or DEFAULT_JUDGE
        self.spec = parse_model_spec(self.spec_text, option="--ipw-judge")
        self.device = device
        # Deterministic and short: the verdict is one word; the context must hold question, reference, answer.
        self.settings = replace(settings, temperature=0.0, seed=0, max_tokens=JUDGE_MAX_TOKENS,
                                context_size=max(settings.context_size, 4096), batch_size=1)
        self.cache = VerdictCache(cache_path or cache_dir() / "judge" / "verdicts.sqlite")
        self._backend: Any = None
        self._info: dict[str, Any] | None = None

    @property
    def identity(self) -> dict[str, Any]:
        """What makes verdicts comparable: the judge model, where it runs, and the prompt."""
        return {"model": self.spec.name, "backend": self.spec.backend, "location": self.spec.location,
                "prompt_sha256": PROMPT_SHA256, "temperature": 0.0, "max_tokens": JUDGE_MAX_TOKENS,
                "verdicts": list(VERDICTS)}

    def describe(self) -> dict[str, Any]:
        """For the results: identity, the prompt itself, and the loaded backend's info when it was loaded."""
        return {**self.identity, "prompt": JUDGE_PROMPT, "backend_info": self._info}

    def key(self, query: Query, answer: str) -> str:
        material = json.dumps([self.identity, query.prompt, query.answer, answer], sort_keys=True)
        return hashlib.sha256(material.encode()).hexdigest()

    def _load(self) -> Any:
        if self._backend is None:
            from pytest_ipw.backends import load_backend

            try:
                self._backend = load_backend(self.spec, self.settings, self.device)
            except IPWUsageError as exc:
                raise IPWUsageError(f"the judge (--ipw-judge={self.spec_text}) could not be loaded: {exc}") from None
            self._info = self._backend.info()
        return self._backend

    def __call__(self, query: Query, answer: str, meter: Any = None) -> Score:
        key = self.key(query, answer)
        cached = self.cache.get(key)
        if cached is not None:
            return self._score(cached, cached=True)
        backend = self._load()
        prompt = judge_prompt(query, answer)
        measurement = None
        window = None
        try:
            if meter is not None and getattr(backend, "local", True):
                with meter.window() as window:  # its own window: never inside the measured model's
                    generation = backend.generate_choice(prompt, VERDICTS)
                measurement = window.measurement
            else:
                generation = backend.generate_choice(prompt, VERDICTS)
        except IPWUsageError as exc:
            raise IPWUsageError(f"the judge (--ipw-judge={self.spec_text}) failed: {exc}") from None
        except QueryFailed as failure:
            # This grading could not be done (its prompt over the judge's context...): no verdict, so the answer
            # counts as unscorable (wrong, in the denominator); not cached, and what it cost is kept.
            spent = window.measurement if window is not None else None
            return self._score({"verdict": "", "correct": False, "unscorable": True, "error": failure.to_dict(),
                                "joules": spent.joules if spent else None,
                                "energy_provenance": spent.provenance if spent else None}, cached=False)
        verdict = parse_verdict(generation.text)
        entry = {
            "verdict": generation.text.strip()[:200],
            "correct": bool(verdict),
            "unscorable": verdict is None,
            "constrained": generation.extra.get("constrained"),  # how the output was held to the two words
            "tokens_in": generation.tokens_in,
            "tokens_out": generation.tokens_out,
            "latency_s": generation.latency_s,
            "joules": measurement.joules if measurement else None,
            "energy_provenance": measurement.provenance if measurement else ("remote" if not backend.local else None),
            "energy_meter": measurement.sensor if measurement else None,
        }
        self.cache.put(key, entry)
        return self._score(entry, cached=False)

    def _score(self, entry: dict[str, Any], cached: bool) -> Score:
        details = {**entry, "cached": cached, "judge": self.spec.name}
        if cached:
            # A cached verdict cost nothing this time; the original cost stays visible as *_first.
            details.update(tokens_in=0, tokens_out=0, joules=0.0 if entry.get("joules") is not None else None,
                           latency_s=0.0, tokens_out_first=entry.get("tokens_out"), joules_first=entry.get("joules"))
        verdict = "correct" if entry["correct"] else ("no verdict" if entry["unscorable"] else "incorrect")
        return Score(correct=entry["correct"], unscorable=entry["unscorable"], extracted=verdict,
                     correct_strict=entry["correct"], extracted_strict=verdict, judge=details)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
