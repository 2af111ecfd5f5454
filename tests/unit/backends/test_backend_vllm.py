"""The vLLM adapter against a stand-in with vLLM's shapes (vLLM needs a GPU and cannot run here).

The stand-in follows vLLM 0.33.0 (the adapter's VLLM_CHECKED), read in vLLM's source: ``LLM(model=...,
**kwargs)`` with ``disable_log_stats`` True unless passed (vllm/entrypoints/llm.py); ``LLM.chat(messages,
sampling_params, use_tqdm, ..., tokenization_kwargs)``, which renders the chat template and tokenises it with
``add_special_tokens=False`` (vllm/entrypoints/common/offline.py), while ``LLM.generate`` tokenises text with
``add_special_tokens=True`` (vllm/renderers/base.py); ``LLM.reset_prefix_cache() -> bool``;
``LLM.llm_engine.engine_core.shutdown()`` (vllm/v1/engine/core_client.py); the engine-core start failure
"Engine core initialization failed. See root cause above. ..." (vllm/v1/engine/utils.py); ``RequestOutput``
and ``CompletionOutput`` with 0.33's fields, built by keyword (vllm/outputs.py); ``RequestStateStats``
(vllm/v1/metrics/stats.py), present only when stats logging is on. What the stand-in does not model: real
tokenisers (Mistral's included), CUDA itself, the engine-core process and its log, block-size details of the
prefix cache. ``vllm serve`` is covered by the OpenAI-compatible backend (tests/test_backend_openai.py)."""

from __future__ import annotations

import importlib.machinery
import json
import os
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from support import fixed_meter_conftest

from pytest_ipw.backends import BACKENDS
from pytest_ipw.backends import vllm as vllm_backend
from pytest_ipw.backends.base import GenerationSettings
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.backends.models import parse_model_spec


# -- vLLM 0.33.0's shapes (vllm/outputs.py, vllm/v1/metrics/stats.py) -------------------------------------

@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: Sequence[int]
    cumulative_logprob: float | None
    logprobs: Any
    routed_experts: Any = None
    finish_reason: str | None = None
    stop_reason: int | str | None = None
    lora_request: Any = None
    sampling_mask: Any = None
    spec_decode_metrics: Any = None
    weight_versions: Any = None


@dataclass
class RequestStateStats:
    num_generation_tokens: int = 0
    num_preemptions: int = 0
    arrival_time: float = 0.0  # front-end wall clock
    queued_ts: float = 0.0  # engine-core monotonic clock from here on
    scheduled_ts: float = 0.0
    first_token_ts: float = 0.0
    last_token_ts: float = 0.0
    first_token_latency: float = 0.0
    is_corrupted: bool = False
    is_watermarked: bool = False
    is_watermark_skipped: bool = False


class RequestOutput:
    def __init__(self, request_id: str, prompt: str | None, prompt_token_ids: list[int] | None, prompt_logprobs: Any,
                 outputs: list[CompletionOutput], finished: bool, metrics: RequestStateStats | None = None,
                 lora_request: Any = None, encoder_prompt: str | None = None,
                 encoder_prompt_token_ids: list[int] | None = None, num_cached_tokens: int | None = None,
                 num_cache_creation_tokens: int | None = None, *, prompt_token_id_logprobs: Any = None,
                 kv_transfer_params: dict[str, Any] | None = None, ec_transfer_params: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        self.request_id, self.prompt, self.prompt_token_ids = request_id, prompt, prompt_token_ids
        self.prompt_logprobs, self.outputs, self.finished, self.metrics = prompt_logprobs, outputs, finished, metrics
        self.lora_request, self.encoder_prompt, self.encoder_prompt_token_ids = lora_request, encoder_prompt, None
        self.num_cached_tokens, self.num_cache_creation_tokens = num_cached_tokens, num_cache_creation_tokens
        self.kv_transfer_params, self.ec_transfer_params = kv_transfer_params, ec_transfer_params


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    seed: int | None = None
    max_tokens: int | None = 16


BOS_ID = 1
BLOCK_SIZE = 4  # the stand-in's prefix-cache block (vLLM's default is 16 tokens)


class Tokenizer:
    """A template that emits its own BOS, like Llama 3's and Gemma's."""

    bos_token = "<s>"
    chat_template = "{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool = False,
                            add_generation_prompt: bool = True, **kwargs: Any) -> str:
        assert tokenize is False and add_generation_prompt is True
        return self.bos_token + "".join(f"<|{m['role']}|>{m['content']}" for m in messages) + "<|assistant|>"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        pieces = text.replace(self.bos_token, f" {self.bos_token} ").split()
        return ([BOS_ID] if add_special_tokens else []) + [BOS_ID if p == self.bos_token else 100 + len(p) for p in pieces]


@dataclass
class EngineCore:
    """``LLM.llm_engine.engine_core``: the client of the engine-core process."""

    gpu: str | None
    shutdowns: int = 0

    def shutdown(self, timeout: float | None = None) -> None:
        self.shutdowns += 1
        GPU_MEMORY.pop(self.gpu, None)


#: CUDA_VISIBLE_DEVICES value -> the engine core holding (about 90% of) that GPU's memory
GPU_MEMORY: dict[str | None, EngineCore] = {}


@dataclass
class FakeLLM:
    """Answers "The answer is 4" to short prompts; prompts with "poem" run into max_tokens."""

    kwargs: dict[str, Any]
    metrics: str = "v1"  # "v1" (RequestStateStats when stats are logged), "none" or "v0" (an old RequestMetrics)
    calls: list[list[str]] = field(default_factory=list)  # the prompts of each engine call, as rendered
    tokenized: list[list[int]] = field(default_factory=list)
    seen: list[list[int]] = field(default_factory=list)  # prompts in the prefix cache
    resets: int = 0
    call_log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.visible_devices = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.llm_engine = SimpleNamespace(engine_core=EngineCore(self.visible_devices))
        self.tokenizer = Tokenizer()

    def get_tokenizer(self) -> Tokenizer:
        return self.tokenizer

    def generate(self, prompts: Any, sampling_params: SamplingParams | None = None, *, use_tqdm: Any = True,
                 lora_request: Any = None, priority: Any = None, tokenization_kwargs: dict[str, Any] | None = None,
                 mm_processor_kwargs: dict[str, Any] | None = None) -> list[RequestOutput]:
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        special = {"add_special_tokens": True, **(tokenization_kwargs or {})}["add_special_tokens"]
        self.call_log.append("generate")
        return self._run(texts, [self.tokenizer.encode(t, add_special_tokens=special) for t in texts],
                         sampling_params or SamplingParams(), use_tqdm)

    def chat(self, messages: Any, sampling_params: SamplingParams | None = None, use_tqdm: Any = True,
             lora_request: Any = None, priority: Any = None, chat_template: str | None = None,
             chat_template_content_format: str = "auto", add_generation_prompt: bool = True,
             continue_final_message: bool = False, tools: Any = None, chat_template_kwargs: Any = None,
             tokenization_kwargs: dict[str, Any] | None = None, mm_processor_kwargs: Any = None) -> list[RequestOutput]:
        conversations = messages if messages and isinstance(messages[0], list) else [messages]
        texts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=add_generation_prompt)
                 for c in conversations]
        special = {"add_special_tokens": False, **(tokenization_kwargs or {})}["add_special_tokens"]
        self.call_log.append("chat")
        return self._run(texts, [self.tokenizer.encode(t, add_special_tokens=special) for t in texts],
                         sampling_params or SamplingParams(), use_tqdm)

    def reset_prefix_cache(self, reset_running_requests: bool = False, reset_connector: bool = False) -> bool:
        self.resets += 1
        self.call_log.append("reset_prefix_cache")
        self.seen.clear()
        return True

    def _cached_tokens(self, ids: list[int]) -> int:
        """Whole blocks shared with an earlier prompt; the last prompt token is always computed."""
        best = 0
        for earlier in self.seen:
            common = 0
            while common < min(len(ids) - 1, len(earlier)) and ids[common] == earlier[common]:
                common += 1
            best = max(best, common // BLOCK_SIZE * BLOCK_SIZE)
        return best

    def _run(self, texts: list[str], token_ids: list[list[int]], sampling_params: SamplingParams,
             use_tqdm: Any) -> list[RequestOutput]:
        assert use_tqdm is False
        self.calls.append(list(texts))
        self.tokenized.append([list(ids) for ids in token_ids])
        caching = self.kwargs.get("enable_prefix_caching", True)
        outputs = []
        for i, (text, ids) in enumerate(zip(texts, token_ids)):
            cached = self._cached_tokens(ids) if caching else 0
            long = "poem" in text
            tokens = list(range(sampling_params.max_tokens if long else 3))
            stats: Any = None
            if not self.kwargs["disable_log_stats"]:
                stats = {"v1": RequestStateStats(num_generation_tokens=len(tokens), arrival_time=1_700_000_000.0,
                                                 queued_ts=50.0, scheduled_ts=50.25, first_token_ts=50.5,
                                                 last_token_ts=51.0, first_token_latency=0.75),
                         "v0": SimpleNamespace(arrival_time=100.0, first_scheduled_time=100.01, first_token_time=100.02,
                                               last_token_time=100.5, time_in_queue=0.01),
                         "none": None}[self.metrics]
            completion = CompletionOutput(index=0, text="waves " * len(tokens) if long else "The answer is 4",
                                          token_ids=tokens, cumulative_logprob=None, logprobs=None,
                                          finish_reason="length" if long else "stop", stop_reason=None)
            outputs.append(RequestOutput(request_id=str(i), prompt=text, prompt_token_ids=list(ids), prompt_logprobs=None,
                                         outputs=[completion], finished=True, metrics=stats, num_cached_tokens=cached,
                                         num_cache_creation_tokens=len(ids) - cached))
            if caching:
                self.seen.append(list(ids))
        return outputs


class NVMLError(Exception):
    pass


class FakeNvml(types.SimpleNamespace):
    """The NVML calls of the adapter and of GPU detection (tests/test_meter_nvml.py fakes the meter's)."""

    def __init__(self, gpus: int = 4, broken: bool = False):
        super().__init__(NVMLError=NVMLError, gpus=gpus, broken=broken, open=0, mig={"MIG-aaaa": 2, "MIG-bbbb": 1})

    def nvmlInit(self) -> None:
        if self.broken:
            raise NVMLError("Driver Not Loaded")
        self.open += 1

    def nvmlShutdown(self) -> None:
        self.open -= 1

    def nvmlDeviceGetCount(self) -> int:
        return self.gpus

    def nvmlDeviceGetName(self, handle: tuple[str, int]) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetHandleByIndex(self, index: int) -> tuple[str, int]:
        if not 0 <= index < self.gpus:
            raise NVMLError("Invalid Argument")
        return ("gpu", index)

    def nvmlDeviceGetUUID(self, handle: tuple[str, int]) -> bytes:
        return uuid_of(handle[1]).encode()

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> tuple[str, str]:
        if uuid not in self.mig:
            raise NVMLError("Not Found")
        return ("mig", uuid)

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle: tuple[str, str]) -> tuple[str, int]:
        return ("gpu", self.mig[handle[1]])

    def nvmlDeviceGetIndex(self, handle: tuple[str, int]) -> int:
        return handle[1]


def uuid_of(index: int) -> str:
    return f"GPU-{index:08d}-1111-2222-3333-444444444444"


def fake_torch(cuda_initialized: bool = False, cuda_version: str | None = "12.8") -> types.ModuleType:
    torch = types.ModuleType("torch")

    def is_available() -> bool:  # pragma: no cover - the test fails if this is reached
        raise AssertionError("torch.cuda.is_available() initialises CUDA here and poisons vLLM's fork")

    torch.cuda = SimpleNamespace(is_initialized=lambda: cuda_initialized, is_available=is_available,
                                 empty_cache=lambda: None)
    torch.version = SimpleNamespace(cuda=cuda_version, hip=None)
    return torch


@pytest.fixture
def fake_vllm(monkeypatch):
    """``vllm``, ``torch`` (as vLLM's import leaves it) and ``pynvml`` with the shapes above."""
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.__version__ = "0.33.0"
    module.SamplingParams = SamplingParams
    module.engines = []
    module.metrics_kind = "v1"

    def LLM(model: str, **kwargs: Any) -> FakeLLM:  # noqa: N802 - vLLM's name
        kwargs.setdefault("disable_log_stats", True)  # vLLM's LLM() default
        if model == "broken/model":
            raise ValueError("Model architectures ['Broken'] are not supported")
        if model == "huge/model" or os.environ.get("CUDA_VISIBLE_DEVICES") in GPU_MEMORY:
            # vLLM 0.33: the engine-core process dies (its log says why) and the front end raises this
            raise RuntimeError("Engine core initialization failed. See root cause above. "
                               "Failed core proc(s): {'EngineCore_DP0': 1}")
        engine = FakeLLM({"model": model, **kwargs}, metrics=module.metrics_kind)
        GPU_MEMORY[engine.visible_devices] = engine.llm_engine.engine_core
        module.engines.append(engine)
        return engine

    module.LLM = LLM
    torch = fake_torch()
    nvml = FakeNvml()
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    monkeypatch.setattr(vllm_backend, "_in_process_cuda_pin", None, raising=False)
    GPU_MEMORY.clear()
    yield SimpleNamespace(vllm=module, torch=torch, nvml=nvml)
    GPU_MEMORY.clear()


def gpu(index: int = 1) -> Any:
    return SimpleNamespace(profile=SimpleNamespace(name="h100", offload=True, vendor="nvidia"), index=index,
                           device_name="NVIDIA H100 80GB HBM3")


def cpu() -> Any:
    return SimpleNamespace(profile=SimpleNamespace(name="cpu", offload=False, vendor="generic"), index=None,
                           device_name="cpu")


def load(spec: str = "vllm:Qwen/Qwen3-4B", accelerator: Any = None, **settings: Any):
    return vllm_backend.load(parse_model_spec(spec), GenerationSettings(**settings), accelerator or gpu())


# --------------------------------------------------------------------------------------------------


def test_generation_is_read_from_request_output(fake_vllm):
    backend = load(max_tokens=32, temperature=0.0, seed=5, context_size=4096)
    generation = backend.generate("What is 2 + 2?")
    engine = fake_vllm.vllm.engines[0]
    assert engine.kwargs == {"model": "Qwen/Qwen3-4B", "seed": 5, "max_model_len": 4096, "max_num_seqs": 1,
                             "disable_log_stats": False}
    assert engine.calls == [["<s><|user|>What is 2 + 2?<|assistant|>"]]  # vLLM applied the model's chat template
    assert generation.text == "The answer is 4" and generation.tokens_out == 3
    assert generation.tokens_in == len(engine.tokenized[0][0]) == 6
    assert generation.finish_reason == "stop" and generation.ttft_s == 0.75 and generation.token_source == "runtime"
    long = backend.generate("Write a long poem")
    assert long.finish_reason == "length" and long.tokens_out == 32


# -- 1. one BOS: vLLM renders and tokenises the chat --------------------------------------------------------

def test_a_template_with_its_own_bos_gets_one_bos(fake_vllm):
    generation = load().generate("What is 2 + 2?")
    engine = fake_vllm.vllm.engines[0]
    prompt_ids = engine.tokenized[0][0]
    assert engine.call_log == ["chat"]  # not LLM.generate on a rendered string, which adds a second BOS
    assert prompt_ids.count(BOS_ID) == 1 and prompt_ids[0] == BOS_ID
    assert generation.tokens_in == len(Tokenizer().encode(engine.calls[0][0], add_special_tokens=False))


# -- 2. each load pinned to its metered GPU, by NVML UUID, and the variable restored --------------------------

def test_each_load_runs_on_its_own_gpu_by_uuid_and_the_variable_is_restored(fake_vllm):
    first = load("vllm:org/a", gpu(1))
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    second = load("vllm:org/b", gpu(2))
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
    assert [e.visible_devices for e in fake_vllm.vllm.engines] == [uuid_of(1), uuid_of(2)]
    assert first.info()["device_uuid"] == first.info()["cuda_visible_devices"] == uuid_of(1)
    assert second.info()["device_index"] == 2 and second.info()["cuda_visible_devices"] == uuid_of(2)
    assert fake_vllm.nvml.open == 0  # every nvmlInit was shut down


def test_a_users_cuda_visible_devices_is_narrowed_for_the_load_and_restored(fake_vllm, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")  # detection then offers NVML indices 3 and 1
    load(accelerator=gpu(1))
    assert fake_vllm.vllm.engines[0].visible_devices == uuid_of(1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,1"
    with pytest.raises(IPWUsageError):
        load("vllm:broken/model", gpu(3))
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,1"  # restored after a failed load too


def test_a_mig_instance_the_user_named_stays_the_engines_device(fake_vllm, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-gone,MIG-aaaa,MIG-bbbb")  # detection: parents 2 and 1
    load(accelerator=gpu(1))  # a GPU in MIG mode is usable only through its instances
    assert fake_vllm.vllm.engines[0].visible_devices == "MIG-bbbb"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "MIG-gone,MIG-aaaa,MIG-bbbb"


@pytest.mark.parametrize(("in_process", "torch_state", "refused"), [
    ("0", "initialised", True),  # the engine would inherit this process's CUDA: the pin would be ignored
    ("0", "same-gpu", False),  # CUDA was initialised by an earlier in-process engine on this very GPU
    ("0", "not-initialised", False),
    ("0", "not-imported", False),
    (None, "initialised", False),  # default: vLLM starts its engine core in a new (spawned) process
])
def test_pinning_that_cuda_would_ignore_is_refused(fake_vllm, monkeypatch, in_process, torch_state, refused):
    if in_process is not None:
        monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", in_process)
    if torch_state == "not-imported":
        monkeypatch.delitem(sys.modules, "torch")
    else:
        monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda_initialized=torch_state != "not-initialised"))
    if torch_state == "same-gpu":
        monkeypatch.setattr(vllm_backend, "_in_process_cuda_pin", uuid_of(1))
    if refused:
        with pytest.raises(IPWUsageError, match=r"vLLM cannot be pinned to GPU 1 \(NVIDIA H100 80GB HBM3\): "
                                                r"VLLM_ENABLE_V1_MULTIPROCESSING=0 runs its engine in this process, "
                                                r"where CUDA is already initialised.*unset VLLM_ENABLE_V1_MULTI"):
            load(accelerator=gpu(1))
        assert not fake_vllm.vllm.engines
    else:
        load(accelerator=gpu(1))
        assert fake_vllm.vllm.engines[0].visible_devices == uuid_of(1)
    assert "torch" in sys.modules or torch_state == "not-imported"  # the adapter does not import torch itself


def test_an_in_process_engine_remembers_the_gpu_cuda_started_on(fake_vllm, monkeypatch):
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    load("vllm:org/a", gpu(1)).close()
    monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda_initialized=True))  # the first engine started CUDA
    load("vllm:org/b", gpu(1))  # the same GPU: fine
    with pytest.raises(IPWUsageError, match="cannot be pinned to GPU 2"):
        load("vllm:org/c", gpu(2))


def test_the_gpu_check_does_not_initialise_cuda_in_this_process(fake_vllm):
    # torch.cuda.is_available() starts the CUDA driver here (fixing CUDA_VISIBLE_DEVICES for the process) and
    # marks forked children bad, so vLLM's forked engine core could not use CUDA; fake_torch raises if called
    load().generate("What is 2 + 2?")


@pytest.mark.parametrize(("setup", "message"), [
    ("cpu", r"vLLM runs on a GPU, and this target's accelerator is cpu; run with --ipw-accelerator naming"),
    ("no-driver", r"vLLM found no usable NVIDIA GPU: NVML could not start \(Driver Not Loaded\); check the driver"),
    ("no-such-gpu", r"vLLM cannot use GPU 7 \(NVIDIA H100 80GB HBM3\): NVML says Invalid Argument; check it with"),
    ("cpu-torch", r"vLLM cannot use the GPU: the installed torch was built without CUDA \(torch\.version\.cuda is"),
    ("broken", r"vLLM could not load broken/model: Model architectures \['Broken'\] are not supported\. Check"),
])
def test_clear_messages_when_vllm_cannot_run(fake_vllm, monkeypatch, setup, message):
    if setup == "no-driver":
        fake_vllm.nvml.broken = True
    if setup == "cpu-torch":
        monkeypatch.setitem(sys.modules, "torch", fake_torch(cuda_version=None))
    accelerator = {"cpu": cpu(), "no-such-gpu": gpu(7)}.get(setup, gpu())
    with pytest.raises(IPWUsageError, match=message):
        load("vllm:broken/model" if setup == "broken" else "vllm:Qwen/Qwen3-4B", accelerator)
    assert fake_vllm.nvml.open == 0


# -- 3. close() shuts the engine core down ------------------------------------------------------------------

def test_close_shuts_the_engine_core_down_once(fake_vllm):
    backend = load()
    core = fake_vllm.vllm.engines[0].llm_engine.engine_core
    backend.close()
    backend.close()
    assert core.shutdowns == 1 and not GPU_MEMORY
    with pytest.raises(IPWUsageError, match="the vLLM model Qwen/Qwen3-4B was closed; load it again"):
        backend.generate("What is 2 + 2?")


def test_a_second_model_on_the_same_gpu_loads_after_the_first_is_closed(fake_vllm):
    load("vllm:org/a", gpu(1)).close()
    load("vllm:org/b", gpu(1))  # the stand-in refuses to start where a live engine holds the GPU's memory
    assert len(fake_vllm.vllm.engines) == 2


# -- 4. an engine-core failure says where its cause is ----------------------------------------------------

def test_an_engine_core_failure_says_where_the_cause_is_and_the_usual_fixes(fake_vllm):
    with pytest.raises(IPWUsageError) as failure:
        load("vllm:huge/model")
    message = str(failure.value)
    assert message.startswith("vLLM could not load huge/model: Engine core initialization failed. See root cause "
                              "above. Failed core proc(s): {'EngineCore_DP0': 1}. The cause is in the engine-core "
                              "process's log, printed on stderr before this message (pytest captures it: run again "
                              "with -s to see it).")
    assert "free the GPU's memory (nvidia-smi" in message and "a smaller --ipw-context (max_model_len)" in message


# -- 5. keep_prefix_cache=False empties vLLM's prefix cache; hits are recorded either way -----------------

@pytest.mark.parametrize(("keep", "second_hits", "resets"), [(True, 4, 0), (False, 0, 2)])
def test_prefix_cache_is_reset_when_asked_and_hits_are_recorded(fake_vllm, keep, second_hits, resets):
    backend = load(keep_prefix_cache=keep)
    first, second = backend.generate("What is 2 + 2?"), backend.generate("What is 2 + 2?")
    engine = fake_vllm.vllm.engines[0]
    assert first.extra["num_cached_tokens"] == 0 and second.extra["num_cached_tokens"] == second_hits
    assert engine.resets == resets and first.extra["prefix_cache"] == ("kept" if keep else "reset")
    if not keep:
        assert engine.call_log == ["reset_prefix_cache", "chat"] * 2  # emptied before each engine call
    assert backend.info()["keep_prefix_cache"] is keep


# -- 6. which TTFT, and a missing one in the report -------------------------------------------------------

def test_ttft_is_first_token_latency_and_says_so(fake_vllm):
    backend = load()
    generation = backend.generate("What is 2 + 2?")
    assert generation.ttft_s == 0.75  # RequestStateStats.first_token_latency: arrival here -> first token
    assert generation.extra["ttft_definition"] == vllm_backend.TTFT_DEFINITION == backend.info()["ttft_definition"]
    assert generation.extra["ttft_definition"].startswith("first_token_latency: from the request's arrival")
    assert generation.extra["engine_prefill_s"] == 0.25  # first_token_ts - scheduled_ts, the engine's own clock


def test_no_request_metrics_is_a_stated_missing_ttft(fake_vllm):
    fake_vllm.vllm.metrics_kind = "none"
    generation = load().generate("What is 2 + 2?")
    assert generation.ttft_s is None and generation.extra["engine_prefill_s"] is None
    assert generation.extra["ttft_definition"] == ("missing: vLLM returned no request metrics "
                                                   "(its stats logging is off)")


# -- 7. today's shapes --------------------------------------------------------------------------------------

def test_outputs_of_vllm_0_33_are_read_and_the_checked_version_recorded(fake_vllm):
    backend = load(temperature=0.7, seed=1, max_tokens=9)
    generations = backend.generate_batch(["a?", "a poem"])  # CompletionOutput built by keyword, as vLLM 0.33 does
    assert [g.finish_reason for g in generations] == ["stop", "length"] and generations[1].tokens_out == 9
    info = backend.info()
    assert info["backend"] == "vllm" and info["runtime_version"] == "0.33.0" and info["model"] == "Qwen/Qwen3-4B"
    assert info["checked_against"] == "vllm 0.33.0 source, stand-in tests only (not run on a GPU)"
    assert info["sampling"] == {"temperature": 0.7, "seed": 1, "max_tokens": 9, "n": 1}
    assert info["batch_size"] == 1 and len(info["chat_template_sha256"]) == 64
    assert info["prompt_api"].startswith("LLM.chat")


def test_the_old_engines_request_metrics_are_not_read(fake_vllm):
    fake_vllm.vllm.metrics_kind = "v0"  # vLLM's V0 engine (RequestMetrics) is gone since 0.11
    generation = load().generate("What is 2 + 2?")
    assert generation.ttft_s is None
    assert generation.extra["ttft_definition"] == "missing: vLLM's SimpleNamespace has no first_token_latency"


def test_batches_go_to_the_engine_in_one_call(fake_vllm):
    backend = load(batch_size=3)
    generations = backend.generate_batch(["a?", "b?", "a poem"])
    assert len(fake_vllm.vllm.engines[0].calls) == 1 and len(fake_vllm.vllm.engines[0].calls[0]) == 3
    assert [g.finish_reason for g in generations] == ["stop", "stop", "length"]
    assert len({g.latency_s for g in generations}) == 1  # every answer arrives with the batch
    assert {g.extra["batch_size"] for g in generations} == {3}
    assert fake_vllm.vllm.engines[0].kwargs["max_num_seqs"] == 3


def test_not_installed_is_one_message_before_any_test(pytester):
    if importlib.util.find_spec("vllm") is not None:  # pragma: no cover - a machine with vLLM
        pytest.skip("vLLM is installed here")
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-model=vllm:Qwen/Qwen3-4B")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(['ERROR: pytest-ipw: --ipw-model=vllm:Qwen/Qwen3-4B needs vLLM, which is not '
                                 'installed: pip install "pytest-ipw[vllm]" (Linux, NVIDIA GPU)'])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


# -- through the plugin, with the adapter on the stand-in engine -------------------------------------------

QUERIES = [{"id": f"q{i}", "prompt": f"What is {i} + {i}?", "answer": "4", "domain": "math", "split": "reasoning",
            "scorer": "numeric"} for i in range(1, 5)]


@pytest.fixture
def batching_project(pytester, fake_vllm, monkeypatch):
    """A backend scheme whose load() is the real vLLM adapter's, around the stand-in engine, on the GPUs that
    detection finds through the fake NVML (four H100s; the fixed meter stands in for theirs)."""
    module = types.ModuleType("ipw_test_fake_vllm")
    module.BATCHES = True

    module.load = vllm_backend.load
    monkeypatch.setitem(sys.modules, "ipw_test_fake_vllm", module)
    monkeypatch.setitem(BACKENDS, "fakevllm", "ipw_test_fake_vllm")
    (pytester.path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    pytester.makeconftest(fixed_meter_conftest(domain="gpu"))
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    return pytester


def run(pytester, *args: str, model: str = "fakevllm:org/tiny"):
    return pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", f"--ipw-model={model}",
                              "--ipw-warmup=0", "--ipw-json=run.json", *args)


def records_of(pytester) -> list[dict[str, Any]]:
    return json.loads((pytester.path / "run.json").read_text())["records"]


def test_batch_size_runs_queries_together_and_splits_the_energy(batching_project, fake_vllm):
    result = run(batching_project, "--ipw-batch-size=2")
    assert result.ret == 0, result.stdout.str()[-3000:]
    calls = fake_vllm.vllm.engines[0].calls
    assert [len(c) for c in calls] == [2, 2]  # four queries, two engine calls
    records = records_of(batching_project)
    assert [r["query_id"] for r in records] == ["q1", "q2", "q3", "q4"]
    for record in records:  # each gets half the window's energy over the whole window: half the device's power
        assert record["joules"] == 1.0 and record["seconds"] == 0.5 and record["watts"] == 2.0
        assert record["joules_window"] == 2.0
        assert "batched:2" in record["meter_flags"] and record["correct"]
        assert record["backend_extra"]["batch_size"] == 2


def test_batches_only_take_the_queries_that_will_run(batching_project, fake_vllm):
    result = run(batching_project, "--ipw-batch-size=2", "-k", "q1 or q2 or q4")
    assert result.ret == 0
    calls = fake_vllm.vllm.engines[0].calls
    assert [len(c) for c in calls] == [2, 1] and not any("3 + 3" in p for c in calls for p in c)


def test_batch_size_one_is_one_query_per_call(batching_project, fake_vllm):
    assert run(batching_project).ret == 0
    assert [len(c) for c in fake_vllm.vllm.engines[0].calls] == [1, 1, 1, 1]
    records = records_of(batching_project)
    assert all(r["joules"] == 2.0 and "batched:2" not in r["meter_flags"] for r in records)


def test_two_vllm_models_on_one_gpu_run_one_after_the_other(batching_project, fake_vllm):
    result = run(batching_project, model="fakevllm:org/a,fakevllm:org/b")
    assert result.ret == 0, result.stdout.str()[-3000:]
    first, second = fake_vllm.vllm.engines
    assert first.llm_engine.engine_core.shutdowns == 1 and second.llm_engine.engine_core.shutdowns == 1
    assert [r["model"] for r in records_of(batching_project)] == ["org-a"] * 4 + ["org-b"] * 4


def test_prefix_cache_hits_and_the_ttft_definition_reach_the_results(batching_project, fake_vllm):
    assert run(batching_project).ret == 0
    extras = [r["backend_extra"] for r in records_of(batching_project)]
    assert [e["num_cached_tokens"] for e in extras] == [0, 4, 4, 4]  # "<s> <|user|>What is" shared
    assert {e["ttft_definition"] for e in extras} == {vllm_backend.TTFT_DEFINITION}
    assert {e["prefix_cache"] for e in extras} == {"kept"}


def test_a_missing_ttft_is_said_in_the_report(batching_project, fake_vllm):
    fake_vllm.vllm.metrics_kind = "none"
    result = run(batching_project)
    assert result.ret == 0
    result.stdout.fnmatch_lines(["timing: 4 of 4 answer(s) have no time to first token (ttft_s is null; "
                                 "backend_extra.ttft_definition in --ipw-json says why, where the backend knows)"])
    assert all(r["ttft_s"] is None and r["backend_extra"]["ttft_definition"].startswith("missing: ")
               for r in records_of(batching_project))


def test_batch_size_on_a_backend_that_cannot_batch_is_a_usage_error(pytester):
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-batch-size=4")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-ipw: --ipw-batch-size=4: smollm2-135m run(s) one query at a time; "
                                 "batching applies to vllm models (use --ipw-batch-size=1)"])
