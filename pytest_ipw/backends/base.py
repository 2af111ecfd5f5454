"""The backend interface: a loaded model that turns a prompt into a timed generation."""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings; recorded in every result file. Deterministic by default."""

    temperature: float = 0.0
    seed: int = 0
    max_tokens: int = 64
    context_size: int = 2048
    threads: int | None = None  # None: the backend's default (llama.cpp: physical cores)
    keep_prefix_cache: bool = True  # False resets model state before each query (about a third slower)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Generation:
    """One answer and its timing. ``latency_s`` covers the whole call, ``ttft_s`` up to the first token."""

    text: str
    tokens_in: int
    tokens_out: int
    latency_s: float
    ttft_s: float | None
    finish_reason: str | None = None  # "stop" | "length" (truncated at max_tokens) | ...
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(abc.ABC):
    """A loaded model. Implementations load in ``__init__`` and free resources in :meth:`close`."""

    #: registry name of the backend, e.g. "llama-cpp"
    kind: str = "backend"

    @abc.abstractmethod
    def generate(self, prompt: str) -> Generation:
        """Answer one user prompt with the backend's settings (chat template applied by the backend)."""

    def info(self) -> dict[str, Any]:
        """Model file, format, runtime version and settings, for the results' ``settings``."""
        return {"backend": self.kind}

    def close(self) -> None:
        """Free the model; safe to call twice."""
