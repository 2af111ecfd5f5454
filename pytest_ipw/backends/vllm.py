"""vLLM's offline engine (``vllm.LLM``) in-process, on an NVIDIA GPU: ``--ipw-model=vllm:Qwen/Qwen3-4B``.

Installed with the optional extra ``pip install "pytest-ipw[vllm]"`` and imported only when a vLLM model
is loaded. Batch size 1 by default, like the study; ``--ipw-batch-size=N`` sends N queries per engine
call (each query's record then carries 1/N of the batch's energy, flagged).

Read against vLLM's source at the version in :data:`VLLM_CHECKED` (``vllm/entrypoints/llm.py``,
``vllm/entrypoints/common/offline.py``, ``vllm/outputs.py``, ``vllm/v1/metrics/stats.py``,
``vllm/v1/engine/core_client.py``, ``vllm/platforms/cuda.py``); ``tests/test_backend_vllm.py`` pins
those shapes with a stand-in. The backend has not run on a real GPU.

- Prompts go through ``LLM.chat``: vLLM renders the model's chat template itself and tokenises the
  result without adding special tokens, so templates that emit their own BOS (Llama 3, Gemma) get one.
- Each load runs with ``CUDA_VISIBLE_DEVICES`` set to the NVML UUID of the GPU whose meter measures the
  target (vLLM and CUDA accept ``GPU-...`` UUIDs; an index would depend on ``CUDA_DEVICE_ORDER``), and
  the variable is restored afterwards.
- ``close()`` shuts the engine core down (its process holds most of the GPU's memory until then).
- Time to first token is ``RequestStateStats.first_token_latency`` (filled only with
  ``disable_log_stats=False``); the engine's own prefill time is kept beside it.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.util
import os
import re
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.backends.models import ModelSpec
from .base import CONTEXT_OVERFLOW, Backend, Generation, GenerationSettings, QueryFailed

BATCHES = True
#: the vLLM release whose source this adapter was checked against (wheel 0.33.0, commit 4ba787ec9)
VLLM_CHECKED = "0.33.0"
INSTALL_HINT = 'pip install "pytest-ipw[vllm]" (Linux, NVIDIA GPU)'
#: what ``ttft_s`` means for this backend (RequestStateStats.first_token_latency, vllm/v1/metrics/stats.py)
TTFT_DEFINITION = ("first_token_latency: from the request's arrival in this process's engine front end to "
                   "its first token (includes queueing and, in a batch, the other prompts' prefill)")
VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
#: vLLM's input check (ValueError, vllm/v1/engine/input_processor.py), made while requests are added, before any runs
_OVERFLOW = re.compile(r"prompt \(length (\d+)\) is longer than the maximum model length of (\d+)")


def first_token_timing(metrics: Any) -> tuple[float | None, float | None, str]:
    """``(ttft_s, engine_prefill_s, definition)`` from a RequestOutput's ``metrics`` (a V1
    ``RequestStateStats``). ``definition`` says which clock ``ttft_s`` is, or why it is missing."""
    if metrics is None:
        return None, None, "missing: vLLM returned no request metrics (its stats logging is off)"
    number = (int, float)
    first, scheduled = getattr(metrics, "first_token_ts", None), getattr(metrics, "scheduled_ts", None)
    # engine-core monotonic clock: from the first scheduling of the request to its first token
    prefill = (float(first - scheduled) if isinstance(first, number) and isinstance(scheduled, number)
               and first >= scheduled > 0 else None)
    latency = getattr(metrics, "first_token_latency", None)
    if isinstance(latency, number) and latency > 0:
        return float(latency), prefill, TTFT_DEFINITION
    return None, prefill, f"missing: vLLM's {type(metrics).__name__} has no first_token_latency"


class VLLMBackend(Backend):
    kind = "vllm"
    batches = True

    def __init__(self, llm: Any, sampling_params_cls: Any, model: str, settings: GenerationSettings,
                 runtime_version: str, device: dict[str, Any]):
        self._llm = llm
        self._sampling_params_cls = sampling_params_cls
        self.model = model
        self.settings = settings
        self.runtime_version = runtime_version
        self.device = device
        self._tokenizer = llm.get_tokenizer()

    def _sampling_params(self) -> Any:
        s = self.settings
        return self._sampling_params_cls(temperature=s.temperature, seed=s.seed, max_tokens=s.max_tokens)

    def _prefix_cache(self) -> str:
        """Empty vLLM's prefix cache before an engine call when the settings ask for it."""
        if self.settings.keep_prefix_cache:
            return "kept"
        # False when vLLM could not reset it (requests still running): num_cached_tokens then shows the hits
        return "reset" if self._llm.reset_prefix_cache() is not False else "reset-refused"

    def generate(self, prompt: str) -> Generation:
        (answer,) = self.generate_batch([prompt])
        if isinstance(answer, QueryFailed):
            raise answer
        return answer

    def generate_batch(self, prompts: list[str]) -> list[Generation | QueryFailed]:
        try:
            return list(self._generate_batch(prompts))
        except ValueError as exc:
            overflow = _OVERFLOW.search(str(exc))
            if overflow is None:
                raise
            if len(prompts) == 1:
                tokens, window = int(overflow.group(1)), int(overflow.group(2))
                return [QueryFailed(CONTEXT_OVERFLOW, f"the prompt is {tokens} tokens with the chat template; the "
                                                      f"context window is {window} (--ipw-context, max_model_len)",
                                    tokens_in=tokens, context_window=window)]
            # LLM.chat adds a batch's requests all or none (it aborts the added ones when one is refused), so
            # nothing ran: answer the prompts one at a time, and only the overlong one fails
            return [answer for prompt in prompts for answer in self.generate_batch([prompt])]

    def _generate_batch(self, prompts: list[str]) -> list[Generation]:
        if self._llm is None:
            raise IPWUsageError(f"the vLLM model {self.model} was closed; load it again")
        conversations = [[{"role": "user", "content": p}] for p in prompts]
        prefix_cache = self._prefix_cache()
        started = time.perf_counter()
        # LLM.chat renders the template and tokenises without special tokens (the template has its own BOS);
        # said here too, so that no vLLM version adds a second one
        outputs = self._llm.chat(conversations, self._sampling_params(), use_tqdm=False,
                                 tokenization_kwargs={"add_special_tokens": False})
        latency = time.perf_counter() - started  # the whole batch: every answer arrives by then
        if len(outputs) != len(prompts):
            raise IPWUsageError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts; "
                                f"this vLLM version ({self.runtime_version}) is not supported: use vLLM {VLLM_CHECKED}")
        generations = []
        for output in outputs:
            completion = output.outputs[0]
            ttft, prefill, definition = first_token_timing(getattr(output, "metrics", None))
            generations.append(Generation(
                text=completion.text,
                tokens_in=len(output.prompt_token_ids or ()),
                tokens_out=len(completion.token_ids),
                latency_s=latency,
                ttft_s=ttft,
                finish_reason=completion.finish_reason,
                extra={"batch_size": len(prompts), "ttft_definition": definition, "engine_prefill_s": prefill,
                       "num_cached_tokens": getattr(output, "num_cached_tokens", None),
                       "prefix_cache": prefix_cache},
            ))
        return generations

    def info(self) -> dict[str, Any]:
        template = getattr(self._tokenizer, "chat_template", None)
        return {
            "backend": self.kind,
            "runtime_version": self.runtime_version,
            "model": self.model,
            "prompt_api": "LLM.chat (vLLM renders the chat template, no special tokens added)",
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if isinstance(template, str) else None,
            "checked_against": f"vllm {VLLM_CHECKED} source, stand-in tests only (not run on a GPU)",
            "ttft_definition": TTFT_DEFINITION,
            **self.device,
            "sampling": {"temperature": self.settings.temperature, "seed": self.settings.seed,
                         "max_tokens": self.settings.max_tokens, "n": 1},
            **self.settings.subset("batch_size", "context_size", "keep_prefix_cache"),
        }

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is None:
            return
        # The engine core (a process of its own by default) keeps the model and KV cache in GPU memory until
        # it is shut down; dropping the LLM only frees it at garbage collection, after the next model loaded.
        engine_core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        try:
            if engine_core is not None:
                engine_core.shutdown()
        finally:
            del llm, engine_core
            gc.collect()
            torch = sys.modules.get("torch")
            if torch is not None and torch.cuda.is_initialized():  # an in-process engine's cached blocks
                torch.cuda.empty_cache()


def check(spec: ModelSpec) -> None:
    if importlib.util.find_spec("vllm") is None:
        raise IPWUsageError(f"--ipw-model=vllm:{spec.location} needs vLLM, which is not installed: {INSTALL_HINT}")


def gpu_pin(index: int, device_name: str) -> str:
    """What CUDA_VISIBLE_DEVICES names for an engine on the GPU with NVML index ``index``: its NVML UUID
    (``GPU-...``), or the MIG instance of it that CUDA_VISIBLE_DEVICES already names (CUDA can use a GPU in
    MIG mode only through its instances; the meter measures the whole GPU either way)."""
    try:
        import pynvml
    except ImportError:
        raise IPWUsageError(f"pinning vLLM to GPU {index} ({device_name}) needs NVML: pip install nvidia-ml-py") from None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded
        raise IPWUsageError(f"vLLM found no usable NVIDIA GPU: NVML could not start ({exc}); check the driver with "
                            "nvidia-smi") from None
    try:
        for entry in (e.strip() for e in os.environ.get(VISIBLE_DEVICES, "").split(",")):
            if entry.startswith("MIG-"):
                try:
                    parent = pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(pynvml.nvmlDeviceGetHandleByUUID(entry))
                    if int(pynvml.nvmlDeviceGetIndex(parent)) == index:
                        return entry
                except pynvml.NVMLError:
                    continue
        uuid = pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(index))
    except pynvml.NVMLError as exc:
        raise IPWUsageError(f"vLLM cannot use GPU {index} ({device_name}): NVML says {exc}; check it with "
                            "nvidia-smi, or name another one with --ipw-accelerator") from None
    finally:
        pynvml.nvmlShutdown()
    return uuid.decode() if isinstance(uuid, bytes) else str(uuid)


def _engine_in_this_process() -> bool:
    """Whether vLLM will run its engine core in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``)."""
    value = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1").strip()
    return value.isdigit() and int(value) == 0


#: the GPU an in-process engine initialised CUDA on (CUDA then ignores later CUDA_VISIBLE_DEVICES changes)
_in_process_cuda_pin: str | None = None


def _check_pin_takes_effect(pin: str, device: str) -> None:
    """Refuse where CUDA_VISIBLE_DEVICES=pin would be ignored: the engine runs in this process and CUDA is
    already initialised here on another GPU. torch is looked at only when something imported it."""
    torch = sys.modules.get("torch")
    if not _engine_in_this_process() or torch is None or not torch.cuda.is_initialized():
        return
    if _in_process_cuda_pin == pin:
        return
    raise IPWUsageError(
        f"vLLM cannot be pinned to {device}: VLLM_ENABLE_V1_MULTIPROCESSING=0 runs its engine in this process, "
        "where CUDA is already initialised, so CUDA_VISIBLE_DEVICES would be ignored and the model could run on a "
        "GPU other than the metered one; unset VLLM_ENABLE_V1_MULTIPROCESSING (vLLM then runs the engine in a "
        "process of its own), or run each vLLM GPU target in its own pytest run"
    )


@contextmanager
def _pinned(pin: str | None) -> Iterator[None]:
    """CUDA_VISIBLE_DEVICES=pin while the engine starts (its processes inherit it), then as it was."""
    if pin is None:
        yield
        return
    previous = os.environ.get(VISIBLE_DEVICES)
    os.environ[VISIBLE_DEVICES] = pin
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(VISIBLE_DEVICES, None)
        else:
            os.environ[VISIBLE_DEVICES] = previous


def _load_error(location: str, exc: BaseException) -> IPWUsageError:
    text = str(exc)
    if "root cause above" in text:  # vLLM's engine core failed in its own process; its log has the cause
        return IPWUsageError(
            f"vLLM could not load {location}: {text[:300]}. The cause is in the engine-core process's log, "
            "printed on stderr before this message (pytest captures it: run again with -s to see it). Usual "
            "fixes: free the GPU's memory (nvidia-smi shows what holds it; vLLM claims about 90% of it at start), "
            "a smaller --ipw-context (max_model_len) so the KV cache fits, or a smaller model")
    return IPWUsageError(f"vLLM could not load {location}: {text[:400]}. Check the model id or path, "
                         "--ipw-context (max_model_len) and the GPU's free memory")


def load(spec: ModelSpec, settings: GenerationSettings, accelerator: Any) -> VLLMBackend:
    global _in_process_cuda_pin
    check(spec)
    profile = accelerator.profile
    if not profile.offload or profile.vendor not in ("nvidia", "amd"):
        raise IPWUsageError(
            f"vLLM runs on a GPU, and this target's accelerator is {profile.name}; run with "
            "--ipw-accelerator naming an NVIDIA/AMD GPU here, or use llama-cpp:MODEL.gguf (CPU, Metal) or "
            "openai+http://... against a server"
        )
    device_label = f"GPU {accelerator.index} ({accelerator.device_name})"
    # The engine must run on the GPU whose meter (NVML index) measures this target: pinned by UUID, which does
    # not depend on CUDA_DEVICE_ORDER as an index would.
    pin = (gpu_pin(accelerator.index, accelerator.device_name)
           if profile.vendor == "nvidia" and accelerator.index is not None else None)
    try:
        import vllm
    except ImportError as exc:
        raise IPWUsageError(f"vLLM could not be imported ({exc}); reinstall it: {INSTALL_HINT}") from None
    torch = sys.modules.get("torch")  # vLLM imports it; torch.cuda.is_available() is not called (it poisons fork)
    version = getattr(torch, "version", None)
    if torch is not None and getattr(version, "cuda", None) is None and getattr(version, "hip", None) is None:
        raise IPWUsageError("vLLM cannot use the GPU: the installed torch was built without CUDA "
                            "(torch.version.cuda is None); reinstall vLLM with its CUDA torch")
    if pin is not None:
        _check_pin_takes_effect(pin, device_label)
    cuda_was_initialised = torch is not None and torch.cuda.is_initialized()
    try:
        with _pinned(pin):
            llm = vllm.LLM(
                model=spec.location,
                seed=settings.seed,
                max_model_len=settings.context_size,
                max_num_seqs=max(1, settings.batch_size),
                disable_log_stats=False,  # per-request metrics give the time to first token
            )
    except (ValueError, RuntimeError, OSError) as exc:
        raise _load_error(spec.location, exc) from None
    if pin is not None and _engine_in_this_process() and not cuda_was_initialised:
        _in_process_cuda_pin = pin
    device = {"device_index": accelerator.index, "device_name": accelerator.device_name, "device_uuid": pin,
              "cuda_visible_devices": pin if pin is not None else os.environ.get(VISIBLE_DEVICES)}
    return VLLMBackend(llm, vllm.SamplingParams, spec.location, settings, getattr(vllm, "__version__", "unknown"),
                       device)
