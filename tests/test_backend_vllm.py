"""The vLLM adapter against a stand-in with vLLM's shapes (vLLM needs a GPU and cannot run here).

The stand-in copies what the adapter reads from vLLM 0.22 (checked in vLLM's source, vllm/outputs.py and
vllm/v1/metrics/stats.py; the adapter's VLLM_SHAPES_CHECKED): ``LLM(model=..., seed=..., max_model_len=...,
max_num_seqs=..., disable_log_stats=...)``, ``LLM.get_tokenizer().apply_chat_template(...)``,
``LLM.generate(prompts, sampling_params, use_tqdm=False) -> list[RequestOutput]`` with
``RequestOutput.prompt_token_ids``, ``.outputs[0]`` (a ``CompletionOutput``: ``text``, ``token_ids``,
``finish_reason``) and ``.metrics`` (V1 ``RequestStateStats.first_token_latency``; V0 ``RequestMetrics``).
``vllm serve`` is covered by the OpenAI-compatible backend (tests/test_backend_openai.py)."""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from support import fixed_meter_conftest

from pytest_ipw.backends import BACKENDS
from pytest_ipw.backends import vllm as vllm_backend
from pytest_ipw.backends.base import GenerationSettings
from pytest_ipw.errors import IPWUsageError
from pytest_ipw.models import parse_model_spec


# -- vLLM's shapes (vllm/outputs.py, vllm/v1/metrics/stats.py) ---------------------------------------------

@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: Any
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestStateStats:  # V1 engine
    num_generation_tokens: int = 0
    arrival_time: float = 0.0
    queued_ts: float = 0.0
    scheduled_ts: float = 0.0
    first_token_ts: float = 0.0
    last_token_ts: float = 0.0
    first_token_latency: float = 0.0
    is_corrupted: bool = False


@dataclass
class RequestMetrics:  # V0 engine
    arrival_time: float
    last_token_time: float
    first_scheduled_time: float | None
    first_token_time: float | None
    time_in_queue: float | None
    finished_time: float | None = None


class RequestOutput:
    def __init__(self, request_id: str, prompt: str | None, prompt_token_ids: list[int] | None, prompt_logprobs: Any,
                 outputs: list[CompletionOutput], finished: bool, metrics: Any = None, lora_request: Any = None,
                 encoder_prompt: str | None = None, encoder_prompt_token_ids: list[int] | None = None,
                 num_cached_tokens: int | None = None) -> None:
        self.request_id, self.prompt, self.prompt_token_ids = request_id, prompt, prompt_token_ids
        self.prompt_logprobs, self.outputs, self.finished, self.metrics = prompt_logprobs, outputs, finished, metrics
        self.num_cached_tokens = num_cached_tokens


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    seed: int | None = None
    max_tokens: int | None = 16


class Tokenizer:
    chat_template = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}<|assistant|>"

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool, add_generation_prompt: bool) -> str:
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<|{m['role']}|>{m['content']}" for m in messages) + "<|assistant|>"


@dataclass
class FakeLLM:
    """Answers "<n>" to "What is n + n?"-style prompts; long prompts run into max_tokens."""

    kwargs: dict[str, Any]
    metrics: str = "v1"  # "v1", "v0" or "none"
    calls: list[list[str]] = field(default_factory=list)

    def get_tokenizer(self) -> Tokenizer:
        return Tokenizer()

    def generate(self, prompts: list[str], sampling_params: SamplingParams, use_tqdm: bool = True) -> list[RequestOutput]:
        assert use_tqdm is False and isinstance(prompts, list)
        self.calls.append(list(prompts))
        outputs = []
        for i, prompt in enumerate(prompts):
            long = "poem" in prompt
            tokens = list(range(sampling_params.max_tokens if long else 3))
            text = "waves " * len(tokens) if long else "The answer is 4"
            metrics = {"v1": RequestStateStats(num_generation_tokens=len(tokens), first_token_latency=0.0125),
                       "v0": RequestMetrics(arrival_time=100.0, last_token_time=100.5, first_scheduled_time=100.01,
                                            first_token_time=100.02, time_in_queue=0.01),
                       "none": None}[self.metrics]
            outputs.append(RequestOutput(str(i), prompt, list(range(len(prompt.split()))), None,
                                         [CompletionOutput(0, text, tokens, None, None,
                                                           "length" if long else "stop")], True, metrics))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    """A ``vllm`` and a ``torch`` module with the shapes above, in sys.modules for the test."""
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.__version__ = "0.22.1"
    module.SamplingParams = SamplingParams
    module.engines = []

    def LLM(**kwargs: Any) -> FakeLLM:  # noqa: N802 - vLLM's name
        if kwargs["model"] == "broken/model":
            raise ValueError("Model architectures ['Broken'] are not supported")
        module.engines.append(FakeLLM(kwargs, metrics=module.metrics_kind))
        return module.engines[-1]

    module.LLM = LLM
    module.metrics_kind = "v1"
    torch = types.ModuleType("torch")
    torch.cuda = SimpleNamespace(is_available=lambda: True)
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "unset-by-test")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    return SimpleNamespace(vllm=module, torch=torch)


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
    assert engine.calls == [["<|user|>What is 2 + 2?<|assistant|>"]]  # the model's chat template applied
    assert generation.text == "The answer is 4" and generation.tokens_out == 3 and generation.tokens_in == 5
    assert generation.finish_reason == "stop" and generation.ttft_s == 0.0125 and generation.token_source == "runtime"
    long = backend.generate("Write a long poem")
    assert long.finish_reason == "length" and long.tokens_out == 32


@pytest.mark.parametrize(("kind", "ttft"), [("v1", 0.0125), ("v0", pytest.approx(0.02)), ("none", None)])
def test_time_to_first_token_from_either_engine_or_none(fake_vllm, kind, ttft):
    fake_vllm.vllm.metrics_kind = kind
    assert load().generate("What is 2 + 2?").ttft_s == ttft


def test_batches_go_to_the_engine_in_one_call(fake_vllm):
    backend = load(batch_size=3)
    generations = backend.generate_batch(["a?", "b?", "a poem"])
    assert len(fake_vllm.vllm.engines[0].calls) == 1 and len(fake_vllm.vllm.engines[0].calls[0]) == 3
    assert [g.finish_reason for g in generations] == ["stop", "stop", "length"]
    assert len({g.latency_s for g in generations}) == 1  # every answer arrives with the batch
    assert fake_vllm.vllm.engines[0].kwargs["max_num_seqs"] == 3


def test_info_records_version_sampling_device_and_template(fake_vllm):
    info = load(temperature=0.7, seed=1, max_tokens=9).info()
    assert info["backend"] == "vllm" and info["runtime_version"] == "0.22.1" and info["model"] == "Qwen/Qwen3-4B"
    assert info["sampling"] == {"temperature": 0.7, "seed": 1, "max_tokens": 9, "n": 1}
    assert info["batch_size"] == 1 and info["shapes_checked_against"] == "vllm 0.22"
    assert info["device_index"] == 1 and info["cuda_visible_devices"] == "1"  # pinned to the metered GPU
    assert len(info["chat_template_sha256"]) == 64


@pytest.mark.parametrize(("setup", "message"), [
    ("cpu", r"vLLM runs on a GPU, and this target's accelerator is cpu; run with --ipw-accelerator naming"),
    ("no-cuda", r"vLLM found no usable GPU \(torch\.cuda\.is_available\(\) is False\): check the driver"),
    ("broken", r"vLLM could not load broken/model: Model architectures \['Broken'\] are not supported\. Check"),
])
def test_clear_messages_when_vllm_cannot_run(fake_vllm, setup, message):
    if setup == "no-cuda":
        fake_vllm.torch.cuda = SimpleNamespace(is_available=lambda: False)
    with pytest.raises(IPWUsageError, match=message):
        load("vllm:broken/model" if setup == "broken" else "vllm:Qwen/Qwen3-4B", cpu() if setup == "cpu" else gpu())


def test_not_installed_is_one_message_before_any_test(pytester):
    if importlib.util.find_spec("vllm") is not None:  # pragma: no cover - a machine with vLLM
        pytest.skip("vLLM is installed here")
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-model=vllm:Qwen/Qwen3-4B")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(['ERROR: pytest-ipw: --ipw-model=vllm:Qwen/Qwen3-4B needs vLLM, which is not '
                                 'installed: pip install "pytest-ipw[vllm]" (Linux, NVIDIA GPU)'])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


# -- --ipw-batch-size through the plugin, with the adapter on the stand-in engine --------------------------

QUERIES = [{"id": f"q{i}", "prompt": f"What is {i} + {i}?", "answer": "4", "domain": "math", "split": "reasoning",
            "scorer": "numeric"} for i in range(1, 5)]


@pytest.fixture
def batching_project(pytester, fake_vllm, monkeypatch):
    """A backend scheme whose load() builds the real vLLM adapter around the stand-in engine on the CPU
    device (the adapter's GPU check is what the tests above cover)."""
    module = types.ModuleType("ipw_test_fake_vllm")
    module.BATCHES = True

    def load_fake(spec: Any, settings: GenerationSettings, accelerator: Any) -> Any:
        return vllm_backend.load(spec, settings, gpu(0))

    module.load = load_fake
    monkeypatch.setitem(sys.modules, "ipw_test_fake_vllm", module)
    monkeypatch.setitem(BACKENDS, "fakevllm", "ipw_test_fake_vllm")
    (pytester.path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    pytester.makeconftest(fixed_meter_conftest(domain="gpu"))
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    return pytester


def run(pytester, *args: str):
    return pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-model=fakevllm:org/tiny",
                              "--ipw-warmup=0", "--ipw-json=run.json", *args)


def test_batch_size_runs_queries_together_and_splits_the_energy(batching_project, fake_vllm):
    result = run(batching_project, "--ipw-batch-size=2")
    assert result.ret == 0, result.stdout.str()[-3000:]
    calls = fake_vllm.vllm.engines[0].calls
    assert [len(c) for c in calls] == [2, 2]  # four queries, two engine calls
    records = json.loads((batching_project.path / "run.json").read_text())["records"]
    assert [r["query_id"] for r in records] == ["q1", "q2", "q3", "q4"]
    for record in records:  # each gets half the window's energy over the whole window: half the device's power
        assert record["joules"] == 1.0 and record["seconds"] == 0.5 and record["watts"] == 2.0
        assert record["joules_window"] == 2.0
        assert "batched:2" in record["meter_flags"] and record["correct"]


def test_batches_only_take_the_queries_that_will_run(batching_project, fake_vllm):
    result = run(batching_project, "--ipw-batch-size=2", "-k", "q1 or q2 or q4")
    assert result.ret == 0
    calls = fake_vllm.vllm.engines[0].calls
    assert [len(c) for c in calls] == [2, 1] and not any("3 + 3" in p for c in calls for p in c)


def test_batch_size_one_is_one_query_per_call(batching_project, fake_vllm):
    assert run(batching_project).ret == 0
    assert [len(c) for c in fake_vllm.vllm.engines[0].calls] == [1, 1, 1, 1]
    records = json.loads((batching_project.path / "run.json").read_text())["records"]
    assert all(r["joules"] == 2.0 and "batched:2" not in r["meter_flags"] for r in records)


def test_batch_size_on_a_backend_that_cannot_batch_is_a_usage_error(pytester):
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-batch-size=4")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-ipw: --ipw-batch-size=4: smollm2-135m run(s) one query at a time; "
                                 "batching applies to vllm models (use --ipw-batch-size=1)"])
