"""llama-cpp-python: GGUF models in-process, on the CPU or offloaded to a GPU / Metal.

Deterministic by default: temperature 0 and a fixed seed. The prompt-prefix cache is kept between
queries (it saves about a third of the time); ``keep_prefix_cache=False`` resets the model state before
each query instead. With the cache, only the uncached rest of a prompt is evaluated, in another batch
split, and llama.cpp's floating point depends on the split and the CPU: an answer can then depend on the
query before it on some machines. After a reset, a repeated identical call gives the same answer.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.core.extras import MissingExtra, missing_message, require
from pytest_ipw.backends.models import ModelSpec, check_gguf, embedded_gguf_path, resolve_model_file
from .base import BACKEND_ERROR, CONTEXT_OVERFLOW, Backend, Generation, GenerationSettings, QueryFailed

#: llama-cpp-python's check, made after tokenising the formatted prompt and before evaluating any of it
_OVERFLOW = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


def _query_failure(exc: Exception) -> QueryFailed:
    """What llama-cpp-python raised while answering one prompt, as that query's failure."""
    message = str(exc)
    overflow = _OVERFLOW.search(message)
    if overflow:
        tokens, window = int(overflow.group(1)), int(overflow.group(2))
        return QueryFailed(CONTEXT_OVERFLOW, f"the prompt is {tokens} tokens with the chat template; the context "
                                             f"window is {window} (--ipw-context)", tokens_in=tokens,
                           context_window=window)
    return QueryFailed(BACKEND_ERROR, f"llama.cpp raised {type(exc).__name__}: {message[:300]}")


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp prints load logs on fd 2 even with verbose=False; keep pytest's output clean."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class LlamaCppBackend(Backend):
    kind = "llama-cpp"
    marks_first_token = True

    def __init__(self, llama: Any, model_file: str, settings: GenerationSettings, gpu_layers: int,
                 offload: dict[str, Any] | None = None):
        self._llama = llama
        self.model_file = model_file
        self.settings = settings
        self.gpu_layers = gpu_layers
        self.offload = offload or {"gpu_layers": gpu_layers}

    def reset_prefix_cache(self) -> bool:
        self._llama.reset()
        return True

    def generate(self, prompt: str, on_first_token: Callable[[], None] | None = None) -> Generation:
        return self._answer(prompt, on_first_token=on_first_token)

    def generate_choice(self, prompt: str, options: Sequence[str]) -> Generation:
        """Sampling restricted by a llama.cpp grammar to exactly one of ``options`` (then end of text)."""
        import json

        import llama_cpp

        rule = " | ".join(json.dumps(option) for option in options)  # GBNF string literals are JSON-quoted
        with _quiet_stderr():
            grammar = llama_cpp.LlamaGrammar.from_string(f"root ::= {rule}", verbose=False)
        generation = self._answer(prompt, grammar=grammar)
        return replace(generation, extra={**generation.extra, "constrained": "llama.cpp grammar"})

    def _answer(self, prompt: str, grammar: Any = None,
                on_first_token: Callable[[], None] | None = None) -> Generation:
        """:meth:`_generate`, with what llama-cpp-python raises for this prompt as the query's failure."""
        try:
            return self._generate(prompt, grammar=grammar, on_first_token=on_first_token)
        except (ValueError, RuntimeError) as exc:
            failure = _query_failure(exc)
            if failure.kind != CONTEXT_OVERFLOW:
                # An overflow is found before anything is evaluated; after any other failure the cached
                # state may be half-written, so the next query starts from a clean context.
                self._llama.reset()
            raise failure from None

    def _generate(self, prompt: str, grammar: Any = None,
                  on_first_token: Callable[[], None] | None = None) -> Generation:
        llama = self._llama
        if not self.settings.keep_prefix_cache:
            llama.reset()
        started = time.perf_counter()
        first_token_at: float | None = None
        text_parts: list[str] = []
        finish_reason = None
        chunks = 0
        stream = llama.create_chat_completion(
            messages=[{"role": "user", "content": prompt}],
            temperature=self.settings.temperature,
            seed=self.settings.seed,
            max_tokens=self.settings.max_tokens,
            stream=True,
            grammar=grammar,
        )
        for chunk in stream:
            choice = chunk["choices"][0]
            content = choice.get("delta", {}).get("content")
            if content:
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                    if on_first_token is not None:
                        on_first_token()  # the meter splits prefill from decode here
                text_parts.append(content)
                chunks += 1
            if choice.get("finish_reason"):
                finish_reason = choice["finish_reason"]
        latency = time.perf_counter() - started
        # Streaming yields no usage block. Each streamed chunk is one completion token (llama-cpp-python
        # yields per token), and afterwards the context holds prompt + completion tokens, less the last
        # one when generation stopped at max_tokens (sampled, never evaluated). This matches the usage
        # block of a non-streamed call exactly (tests/test_end_to_end.py checks it).
        text = "".join(text_parts)
        tokens_out = chunks
        tokens_in = llama.n_tokens - tokens_out + (1 if finish_reason == "length" else 0)
        return Generation(
            text=text,
            tokens_in=max(0, tokens_in),
            tokens_out=tokens_out,
            latency_s=latency,
            ttft_s=(first_token_at - started) if first_token_at is not None else None,
            finish_reason=finish_reason,
        )

    def info(self) -> dict[str, Any]:
        import llama_cpp

        llama = self._llama
        template = (getattr(llama, "metadata", None) or {}).get("tokenizer.chat_template")
        return {
            "backend": self.kind,
            "runtime_version": getattr(llama_cpp, "__version__", "unknown"),
            "model_file": self.model_file,
            "model_bytes": os.path.getsize(self.model_file),
            "gpu_layers": self.gpu_layers,
            **self.offload,
            "chat_format": getattr(llama, "chat_format", None),
            # The template text is long; its source and hash say which one formatted the prompts.
            "chat_template_source": "gguf" if template else "llama-cpp-python built-in",
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
            **self.settings.subset("temperature", "seed", "max_tokens", "keep_prefix_cache"),
            # What llama.cpp actually uses (None in the settings means "its default"):
            "threads": getattr(llama, "n_threads", self.settings.threads),
            "threads_batch": getattr(llama, "n_threads_batch", None),
            "context_size": llama.n_ctx() if hasattr(llama, "n_ctx") else self.settings.context_size,
            # the build: CPU features (AVX2, NEON...) and GPU backend, for the results' comparability card
            **runtime_build(llama_cpp),
        }

    def close(self) -> None:
        if self._llama is not None:
            close = getattr(self._llama, "close", None)
            if close is not None:
                close()
            self._llama = None


def system_info(llama_cpp: Any) -> str | None:
    """llama.cpp's own account of its build: ``CPU : SSE3 = 1 | AVX2 = 1 | ... | OPENMP = 1 |``, trimmed."""
    describe = getattr(llama_cpp, "llama_print_system_info", None)
    if describe is None:
        return None
    try:
        raw = describe()
    except Exception:  # an old or unusual build: the run goes on without it
        return None
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split()).strip(" |") or None


def runtime_build(llama_cpp: Any) -> dict[str, Any]:
    """What this llama.cpp was built with: its system-info line (CPU features, CUDA/Metal/HIP) and whether it
    can offload to a GPU. Best effort: an older binding without the call records None."""
    info: dict[str, Any] = {"system_info": system_info(llama_cpp), "gpu_offload_supported": None}
    try:
        info["gpu_offload_supported"] = bool(llama_cpp.llama_supports_gpu_offload())
    except (AttributeError, OSError):
        pass
    return info


#: how to rebuild llama-cpp-python with GPU offload, by accelerator vendor
_REBUILD = {
    "nvidia": 'CMAKE_ARGS="-DGGML_CUDA=on" pip install --force-reinstall --no-cache-dir llama-cpp-python',
    "apple": 'CMAKE_ARGS="-DGGML_METAL=on" pip install --force-reinstall --no-cache-dir llama-cpp-python',
    "amd": 'CMAKE_ARGS="-DGGML_HIP=on" pip install --force-reinstall --no-cache-dir llama-cpp-python',
}


def offload_settings(llama_cpp: Any, accelerator: Any) -> dict[str, Any]:
    """GPU layers and device for ``accelerator``; an error when it needs offload this build cannot do.

    Without this check a CPU-only build would silently run a "GPU" benchmark on the CPU.
    """
    profile = accelerator.profile
    if not profile.offload:
        return {"gpu_layers": 0, "gpu_offload": "none (CPU)", "main_gpu": None}
    if not llama_cpp.llama_supports_gpu_offload():
        fix = _REBUILD.get(profile.vendor, "rebuild llama-cpp-python with its GPU backend enabled (CMAKE_ARGS)")
        raise IPWUsageError(
            f"--ipw-accelerator={profile.name} runs the model on the {profile.vendor} accelerator, but this "
            f"llama-cpp-python {getattr(llama_cpp, '__version__', '')} was built without GPU offload; rebuild it: "
            f"{fix}, or run on --ipw-accelerator=cpu"
        )
    backend = {"nvidia": "CUDA", "apple": "Metal", "amd": "HIP/ROCm"}.get(profile.vendor, profile.vendor)
    index = accelerator.index if accelerator.index is not None else 0
    settings = {"gpu_layers": -1, "gpu_offload": f"{backend} (all layers)", "main_gpu": index}
    if profile.vendor == "nvidia" and accelerator.index is not None:
        # main_gpu is a CUDA device number; the accelerator's index is NVML's (what the meter reads). They differ
        # under CUDA_VISIBLE_DEVICES or CUDA_DEVICE_ORDER: map by UUID / PCI bus id and record both.
        from pytest_ipw.hardware.nvidia import cuda_ordinal_of

        settings.update(main_gpu=cuda_ordinal_of(accelerator.index), nvml_index=accelerator.index,
                        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                        cuda_device_order=os.environ.get("CUDA_DEVICE_ORDER"))
    return settings


def check(spec: ModelSpec) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        raise MissingExtra(missing_message("llama_cpp", f"--ipw-model={spec.name} (llama.cpp, in-process)"))
    if spec.options.get("embedded"):
        embedded_gguf_path()
    else:
        check_gguf(Path(spec.location).expanduser(), spec.name)


def load(spec: ModelSpec, settings: GenerationSettings, accelerator: Any) -> LlamaCppBackend:
    llama_cpp = require("llama_cpp", f"--ipw-model={spec.name} (llama.cpp, in-process)")
    model_file = resolve_model_file(spec)
    offload = offload_settings(llama_cpp, accelerator)
    gpu_layers = offload["gpu_layers"]
    placement: dict[str, Any] = {}
    if gpu_layers:
        # One accelerator per target: keep the whole model on that device (no split across GPUs), so the
        # meter of that device sees all of its work.
        placement = {"split_mode": llama_cpp.LLAMA_SPLIT_MODE_NONE, "main_gpu": offload["main_gpu"]}
    try:
        with _quiet_stderr():
            llama = llama_cpp.Llama(
                model_path=str(model_file),
                n_ctx=settings.context_size,
                n_gpu_layers=gpu_layers,
                seed=settings.seed,
                n_threads=settings.threads,
                verbose=False,
                **placement,
            )
    except (ValueError, RuntimeError, OSError) as exc:
        raise IPWUsageError(
            f"llama.cpp could not load model {spec.name} from {model_file}: {exc}. "
            "The file may be truncated or corrupt, or made for a newer llama.cpp; re-download it or "
            "upgrade llama-cpp-python"
        ) from None
    return LlamaCppBackend(llama, str(model_file), settings, gpu_layers, offload)
