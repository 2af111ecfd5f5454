"""The backend interface: a loaded model that turns a prompt into a timed generation."""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

from pytest_ipw.core import defaults


@dataclass(frozen=True)
class GenerationSettings:
    """Sampling settings; recorded in every result file. Deterministic by default."""

    temperature: float = defaults.TEMPERATURE
    seed: int = defaults.SEED
    max_tokens: int = defaults.MAX_TOKENS
    context_size: int = defaults.CONTEXT_SIZE
    threads: int | None = None  # None: the backend's default (llama.cpp: half the cores)
    keep_prefix_cache: bool = True  # False resets model state before each query (about a third slower)
    batch_size: int = defaults.BATCH_SIZE
    request_timeout_s: float = defaults.REQUEST_TIMEOUT_S
    retries: int = defaults.RETRIES
    api_key_env: str = defaults.API_KEY_ENV

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
    #: whether :meth:`generate` calls ``on_first_token`` when the first token appears (the prefill/decode split)
    marks_first_token: bool = False

    @abc.abstractmethod
    def generate(self, prompt: str, on_first_token: Callable[[], None] | None = None) -> Generation:
        """Answer one user prompt with the backend's settings (chat template applied by the backend).

        Backends that set ``marks_first_token`` call ``on_first_token()`` once, at the moment they measure
        ``ttft_s``: the meter splits the window there into prefill and decode.
        """

    def reset_prefix_cache(self) -> bool:
        """Forget cached prompt prefixes, so that the next prompt pays its whole prefill (``--ipw-repeat``
        rounds); False where the runtime offers no way to (a server keeps its own cache)."""
        return False

    def generate_sampled(self, prompt: str, *, temperature: float, seed: int) -> Generation:
        """One answer sampled with another temperature and seed than the run's (a self-consistency vote).

        Backends read ``self.settings`` when they generate, so the settings are swapped for this one call.
        """
        saved = getattr(self, "settings", None)
        if not isinstance(saved, GenerationSettings):
            raise NotImplementedError(f"the {self.kind} backend keeps no GenerationSettings to sample with")
        self.settings = replace(saved, temperature=temperature, seed=seed)
        try:
            return self.generate(prompt)
        finally:
            self.settings = saved

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
