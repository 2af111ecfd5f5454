"""A backend that replays recorded answers: re-score a past run, or test without running a model.

``--ipw-model=recorded:answers.jsonl`` where each line is ``{"prompt": ..., "response": ...}`` and
optionally ``tokens_in``, ``tokens_out``, ``latency_s``, ``ttft_s``, ``finish_reason``, and ``error``
(``{"kind": "context-overflow", "message": ...}``, as a results record has it: the query fails again, the
same way). A results file written by ``--ipw-json`` can be turned into one (its records carry prompt and
response).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.core.files import jsonl_objects
from pytest_ipw.backends.models import ModelSpec
from .base import FAILURE_KINDS, Backend, Generation, GenerationSettings, QueryFailed


def read_answers(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        raise IPWUsageError(f"recorded answers file {path} does not exist; check --ipw-model=recorded:PATH")
    answers: dict[str, dict[str, Any]] = {}
    for number, row in jsonl_objects(path.read_text(encoding="utf-8"), path, "recorded answers"):
        if not isinstance(row.get("prompt"), str) or not isinstance(row.get("response"), str):
            raise IPWUsageError(f"recorded answers {path}, line {number}: needs string fields 'prompt' and 'response'")
        error = row.get("error")
        if error is not None and not (isinstance(error, dict) and error.get("kind") in FAILURE_KINDS):
            raise IPWUsageError(f"recorded answers {path}, line {number}: 'error' must be null or an object whose "
                                f"'kind' is one of {', '.join(FAILURE_KINDS)}")
        answers[row["prompt"]] = row
    return answers


class RecordedBackend(Backend):
    kind = "recorded"
    marks_first_token = True  # at the recorded ttft_s, where the answer has one

    def __init__(self, path: Path, settings: GenerationSettings):
        self.path = path
        self.settings = settings
        self.answers = read_answers(path)

    def generate(self, prompt: str, on_first_token: Callable[[], None] | None = None) -> Generation:
        row = self.answers.get(prompt)
        if row is None:
            if prompt.startswith("Reply with the word OK"):  # the plugin's warm-up prompt
                return Generation(text="OK", tokens_in=0, tokens_out=1, latency_s=0.0, ttft_s=0.0, finish_reason="stop",
                                  token_source="recorded")
            raise IPWUsageError(f"recorded answers {self.path} have no answer for the prompt {prompt[:60]!r}")
        latency = float(row.get("latency_s", 0.0))
        ttft = row.get("ttft_s")
        # so that meters see a window of the recorded length, split at the recorded first token
        if ttft is not None and 0 <= float(ttft) <= latency:
            time.sleep(float(ttft))
            if on_first_token is not None:
                on_first_token()
            time.sleep(latency - float(ttft))
        elif latency > 0:
            time.sleep(latency)
        error = row.get("error")
        if error:
            raise QueryFailed(error["kind"], str(error.get("message") or ""), tokens_in=row.get("tokens_in"),
                              context_window=error.get("context_window"))
        text = row["response"]
        return Generation(
            text=text,
            tokens_in=int(row.get("tokens_in", len(prompt.split()))),
            tokens_out=int(row.get("tokens_out", len(text.split()))),
            latency_s=latency,
            ttft_s=row.get("ttft_s"),
            finish_reason=row.get("finish_reason", "stop"),
            token_source="recorded",
        )

    def reset_prefix_cache(self) -> bool:
        return True  # nothing is cached between recorded answers

    def info(self) -> dict[str, Any]:
        return {"backend": self.kind, "answers_file": str(self.path), "answers": len(self.answers)}


def check(spec: ModelSpec) -> None:
    read_answers(Path(spec.location).expanduser())


def load(spec: ModelSpec, settings: GenerationSettings, accelerator: Any) -> RecordedBackend:
    return RecordedBackend(Path(spec.location).expanduser(), settings)
