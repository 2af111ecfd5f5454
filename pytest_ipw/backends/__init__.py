"""Backends: one module per runtime behind :class:`~pytest_ipw.backends.base.Backend`.

Runtimes are imported only when a model of theirs is loaded (llama_cpp, vllm... are heavy). ``models``
parses model specs (short names, the embedded SmolLM2, re-quantised variants). May import hardware and core.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import Backend, Generation, GenerationSettings, QueryFailed

#: scheme used in --ipw-model -> module with ``load(spec, settings, accelerator) -> Backend``
BACKENDS: dict[str, str] = {
    "llama-cpp": "pytest_ipw.backends.llama_cpp",
    "vllm": "pytest_ipw.backends.vllm",
    "openai+http": "pytest_ipw.backends.openai_http",
    "openai+https": "pytest_ipw.backends.openai_http",
    "recorded": "pytest_ipw.backends.recorded",
}


def load_backend(spec: Any, settings: GenerationSettings, accelerator: Any) -> Backend:
    """Load ``spec`` (a :class:`~pytest_ipw.models.ModelSpec`) on ``accelerator`` (a LocalDevice)."""
    module = importlib.import_module(BACKENDS[spec.backend])
    return module.load(spec, settings, accelerator)


def backend_batches(spec: Any) -> bool:
    """Whether the spec's backend runs several prompts in one engine call (``--ipw-batch-size`` > 1)."""
    module = importlib.import_module(BACKENDS[spec.backend])
    return bool(getattr(module, "BATCHES", False))


def check_backend_spec(spec: Any) -> None:
    """Cheap early check of a model spec (file exists, right format...); raises IPWUsageError."""
    module = importlib.import_module(BACKENDS[spec.backend])
    check = getattr(module, "check", None)
    if check is not None:
        check(spec)


__all__ = ["BACKENDS", "Backend", "Generation", "GenerationSettings", "QueryFailed", "backend_batches",
           "check_backend_spec", "load_backend"]
