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


#: why one query could not be answered (``error.kind`` of its record); README lists them
CONTEXT_OVERFLOW, REJECTED, TIMEOUT, BACKEND_ERROR = "context-overflow", "rejected", "timeout", "backend-error"
FAILURE_KINDS = (CONTEXT_OVERFLOW, REJECTED, TIMEOUT, BACKEND_ERROR)
#: kinds that may not happen again (a stuck or crashing runtime): several in a row stop the run as broken, and
#: ``--ipw-resume`` runs such queries again; an overflow or a rejection would only repeat
TRANSIENT_KINDS = (TIMEOUT, BACKEND_ERROR)


class QueryFailed(Exception):
    """This query cannot be answered, and the next one may be: the prompt exceeds the context window, the
    server rejected this one request, it timed out, or the runtime raised for this input.

    The run records it (counted wrong, ``--ipw-on-error`` decides more) and goes on. A failure of the run
    itself (server gone, model or meter broken) is an :class:`~pytest_ipw.core.errors.IPWUsageError` instead.
    """

    def __init__(self, kind: str, message: str, *, tokens_in: int | None = None, context_window: int | None = None):
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown query failure kind {kind!r}; one of {', '.join(FAILURE_KINDS)}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.tokens_in = tokens_in  # the prompt's length where the runtime said it (context overflow)
        self.context_window = context_window  # the limit the prompt exceeded, where known

    def to_dict(self) -> dict[str, Any]:
        """The record's ``error`` field."""
        return {"kind": self.kind, "message": self.message, "context_window": self.context_window}


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
        ``ttft_s``: the meter splits the window there into prefill and decode. Raises :class:`QueryFailed` when
        this prompt cannot be answered, IPWUsageError when the run cannot go on.
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

    def generate_batch(self, prompts: list[str]) -> list[Generation | QueryFailed]:
        """Answer several prompts, in order; a prompt that cannot be answered gets its :class:`QueryFailed` in
        its place, so one overlong prompt does not cost the others their answers. Backends that batch natively
        override this (and set ``batches``)."""
        answers: list[Generation | QueryFailed] = []
        for prompt in prompts:
            try:
                answers.append(self.generate(prompt))
            except QueryFailed as failure:
                answers.append(failure)
        return answers

    def info(self) -> dict[str, Any]:
        """Model file, format, runtime version and settings, for the results' ``settings``."""
        return {"backend": self.kind}

    def close(self) -> None:
        """Free the model; safe to call twice."""
