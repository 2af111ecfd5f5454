"""vLLM's offline engine (``vllm.LLM``) in-process, on an NVIDIA GPU: ``--ipw-model=vllm:Qwen/Qwen3-4B``.

Installed with the optional extra ``pip install "pytest-ipw[vllm]"`` and imported only when a vLLM model
is loaded. Batch size 1 by default, like the study; ``--ipw-batch-size=N`` sends N queries per
``LLM.generate`` call (each query's record then carries 1/N of the batch's energy, flagged).

The prompt is the user message formatted with the model's own chat template (the tokenizer's
``apply_chat_template``), then generated with ``LLM.generate``. Results are read from vLLM's
``RequestOutput``: ``prompt_token_ids``, ``outputs[0].text``, ``outputs[0].token_ids``,
``outputs[0].finish_reason``, and ``metrics`` for the time to first token where vLLM fills it in
(V1 engine: ``RequestStateStats.first_token_latency``; V0: ``RequestMetrics.first_token_time`` -
``arrival_time``); offline generation has no other way to see the first token, so it is None otherwise.
These shapes were checked against vLLM's source (``vllm/outputs.py``, ``vllm/v1/metrics/stats.py``) for
the version in :data:`VLLM_SHAPES_CHECKED`; ``tests/test_backend_vllm.py`` pins them with a stand-in.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from typing import Any

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.backends.models import ModelSpec
from .base import Backend, Generation, GenerationSettings

BATCHES = True
#: the vLLM release whose RequestOutput / CompletionOutput / RequestStateStats shapes this adapter reads
VLLM_SHAPES_CHECKED = "0.22"
INSTALL_HINT = 'pip install "pytest-ipw[vllm]" (Linux, NVIDIA GPU)'


def first_token_seconds(metrics: Any) -> float | None:
    """Time to first token from a RequestOutput's ``metrics``, whichever engine generation filled it."""
    if metrics is None:
        return None
    latency = getattr(metrics, "first_token_latency", None)  # V1: RequestStateStats
    if isinstance(latency, (int, float)) and latency > 0:
        return float(latency)
    first, arrival = getattr(metrics, "first_token_time", None), getattr(metrics, "arrival_time", None)  # V0
    if isinstance(first, (int, float)) and isinstance(arrival, (int, float)) and first >= arrival > 0:
        return float(first - arrival)
    return None


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

    def _chat_prompt(self, prompt: str) -> str:
        return self._tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                   add_generation_prompt=True)

    def generate(self, prompt: str) -> Generation:
        return self.generate_batch([prompt])[0]

    def generate_batch(self, prompts: list[str]) -> list[Generation]:
        texts = [self._chat_prompt(p) for p in prompts]
        started = time.perf_counter()
        outputs = self._llm.generate(texts, self._sampling_params(), use_tqdm=False)
        latency = time.perf_counter() - started  # the whole batch: every answer arrives by then
        generations = []
        for output in outputs:
            completion = output.outputs[0]
            generations.append(Generation(
                text=completion.text,
                tokens_in=len(output.prompt_token_ids or ()),
                tokens_out=len(completion.token_ids),
                latency_s=latency,
                ttft_s=first_token_seconds(getattr(output, "metrics", None)),
                finish_reason=completion.finish_reason,
                extra={"batch_size": len(prompts)},
            ))
        if len(generations) != len(prompts):
            raise IPWUsageError(f"vLLM returned {len(generations)} outputs for {len(prompts)} prompts; "
                                "this vLLM version is not supported: upgrade pytest-ipw or vLLM")
        return generations

    def info(self) -> dict[str, Any]:
        template = getattr(self._tokenizer, "chat_template", None)
        return {
            "backend": self.kind,
            "runtime_version": self.runtime_version,
            "model": self.model,
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if isinstance(template, str) else None,
            "shapes_checked_against": f"vllm {VLLM_SHAPES_CHECKED}",
            **self.device,
            "sampling": {"temperature": self.settings.temperature, "seed": self.settings.seed,
                         "max_tokens": self.settings.max_tokens, "n": 1},
            **self.settings.subset("batch_size", "context_size"),
        }

    def close(self) -> None:
        self._llm = None


def check(spec: ModelSpec) -> None:
    if importlib.util.find_spec("vllm") is None:
        raise IPWUsageError(f"--ipw-model=vllm:{spec.location} needs vLLM, which is not installed: {INSTALL_HINT}")


def load(spec: ModelSpec, settings: GenerationSettings, accelerator: Any) -> VLLMBackend:
    check(spec)
    profile = accelerator.profile
    if not profile.offload or profile.vendor not in ("nvidia", "amd"):
        raise IPWUsageError(
            f"vLLM runs on a GPU, and this target's accelerator is {profile.name}; run with "
            "--ipw-accelerator naming an NVIDIA/AMD GPU here, or use llama-cpp:MODEL.gguf (CPU, Metal) or "
            "openai+http://... against a server"
        )
    if accelerator.index is not None and "CUDA_VISIBLE_DEVICES" not in os.environ:
        # The engine must run on the GPU whose meter measures this target (set before vLLM starts CUDA).
        os.environ["CUDA_VISIBLE_DEVICES"] = str(accelerator.index)
    try:
        import torch
        import vllm
    except ImportError as exc:
        raise IPWUsageError(f"vLLM could not be imported ({exc}); reinstall it: {INSTALL_HINT}") from None
    if not torch.cuda.is_available():
        raise IPWUsageError("vLLM found no usable GPU (torch.cuda.is_available() is False): check the driver "
                            "with nvidia-smi, and that torch was installed with CUDA support")
    try:
        llm = vllm.LLM(
            model=spec.location,
            seed=settings.seed,
            max_model_len=settings.context_size,
            max_num_seqs=max(1, settings.batch_size),
            disable_log_stats=False,  # per-request metrics give the time to first token
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise IPWUsageError(f"vLLM could not load {spec.location}: {str(exc)[:400]}. Check the model id or path, "
                            "--ipw-context (max_model_len) and the GPU's free memory") from None
    device = {"device_index": accelerator.index, "device_name": accelerator.device_name,
              "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    return VLLMBackend(llm, vllm.SamplingParams, spec.location, settings, getattr(vllm, "__version__", "unknown"),
                       device)
