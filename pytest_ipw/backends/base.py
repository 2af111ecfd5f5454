"""The backend interface: a loaded model that turns a prompt into a timed generation."""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings; recorded in every result file. Deterministic by default."""

    temperature: float = 0.0
    seed: int = 0
    max_tokens: int = 64
    context_size: int = 2048
    threads: int | None = None  # None: the backend's default (llama.cpp: physical cores)
    keep_prefix_cache: bool = True  # False resets model state before each query (about a third slower)
    batch_size: int = 1  # queries per engine call; 1 like the study (only batching backends accept more)
    request_timeout_s: float = 120.0  # HTTP backends: per request, connect and each read
    retries: int = 2  # HTTP backends: extra tries after a connection failure or HTTP 429/5xx
    api_key_env: str = "OPENAI_API_KEY"  # the variable's *name* is recorded, never its value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def subset(self, *names: str) -> dict[str, Any]:
        """The settings a backend honours, for its ``info()`` (others would be noise there)."""
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True)
class Generation:
    """One answer and its timing. ``latency_s`` covers the whole call, ``ttft_s`` up to the first token."""

    text: str
    tokens_in: int | None  # None where the runtime does not say (streamed chunks without a usage block)
    tokens_out: int
    latency_s: float
    ttft_s: float | None
    finish_reason: str | None = None  # "stop" | "length" (truncated at max_tokens) | ...
    extra: dict[str, Any] = field(default_factory=dict)
    #: where the token counts come from: "runtime" (counted by the engine in-process), "usage" (the
    #: server's usage block), "chunks" (streamed chunks counted, prompt tokens unknown), "recorded"
    token_source: str = "runtime"


class Backend(abc.ABC):
    """A loaded model. Implementations load in ``__init__`` and free resources in :meth:`close`."""

    #: registry name of the backend, e.g. "llama-cpp"
    kind: str = "backend"
    #: whether :meth:`generate_batch` runs prompts together in one engine call (``--ipw-batch-size`` > 1)
    batches: bool = False
    #: whether the model runs on this machine (its energy can be metered here); False for remote endpoints
    local: bool = True

    @abc.abstractmethod
    def generate(self, prompt: str) -> Generation:
        """Answer one user prompt with the backend's settings (chat template applied by the backend)."""

    def generate_choice(self, prompt: str, options: Sequence[str]) -> Generation:
        """Answer with exactly one of ``options`` where the runtime can enforce it (a grammar, a JSON schema);
        ``extra["constrained"]`` says how. This default cannot: it generates freely (``constrained`` None), and
        the caller must treat any text other than an option as no answer."""
        generation = self.generate(prompt)
        return replace(generation, extra={**generation.extra, "constrained": None})

    def generate_batch(self, prompts: list[str]) -> list[Generation]:
        """Answer several prompts; backends that batch natively override this (and set ``batches``)."""
        return [self.generate(prompt) for prompt in prompts]

    def info(self) -> dict[str, Any]:
        """Model file, format, runtime version and settings, for the results' ``settings``."""
        return {"backend": self.kind}

    def close(self) -> None:
        """Free the model; safe to call twice."""
