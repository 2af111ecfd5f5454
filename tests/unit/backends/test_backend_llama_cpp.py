"""llama-cpp-python: GPU offload per accelerator, threads, context size and the GGUF's chat template are
honoured and recorded; a GPU target on a CPU-only build is an error, never a silent CPU run."""

from __future__ import annotations

import hashlib
import sys
from types import SimpleNamespace

import llama_cpp
import pytest

from pytest_ipw.backends import load_backend
from pytest_ipw.backends.base import GenerationSettings
from pytest_ipw.backends.llama_cpp import offload_settings
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.backends.models import parse_model_spec
from support import H100x4, FakeNvml


def device(name: str, vendor: str, offload: bool, index: int | None = None):
    return SimpleNamespace(profile=SimpleNamespace(name=name, vendor=vendor, offload=offload), index=index,
                           device_name=name)


def build(gpu: bool):
    return SimpleNamespace(__version__="0.3.x", llama_supports_gpu_offload=lambda: gpu)


def test_cpu_targets_offload_nothing():
    assert offload_settings(build(True), device("cpu", "generic", False)) == \
        {"gpu_layers": 0, "gpu_offload": "none (CPU)", "main_gpu": None}


def test_apple_gpu_offloads_all_layers_to_its_device():
    assert offload_settings(build(True), device("m4max", "apple", True, index=None)) == \
        {"gpu_layers": -1, "gpu_offload": "Metal (all layers)", "main_gpu": 0}


@pytest.mark.parametrize(("visible", "order", "nvml_index", "cuda"), [
    (None, None, 2, 2),
    ("1", None, 1, 0),  # the case: under CUDA_VISIBLE_DEVICES=1, NVML GPU 1 is CUDA device 0
    ("3,1", None, 1, 1),
    ("GPU-00000002-aaaa-bbbb-cccc-dddddddddddd,GPU-00000000-aaaa-bbbb-cccc-dddddddddddd", None, 0, 1),
    ("2,3", "PCI_BUS_ID", 3, 1),
])
def test_nvidia_main_gpu_is_the_cuda_ordinal_of_the_metered_gpu(monkeypatch, visible, order, nvml_index, cuda):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(H100x4))
    for name, value in (("CUDA_VISIBLE_DEVICES", visible), ("CUDA_DEVICE_ORDER", order)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    settings = offload_settings(build(True), device("h100", "nvidia", True, index=nvml_index))
    assert settings == {"gpu_layers": -1, "gpu_offload": "CUDA (all layers)", "main_gpu": cuda,
                        "nvml_index": nvml_index, "cuda_visible_devices": visible, "cuda_device_order": order}


def test_nvidia_gpu_hidden_from_cuda_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(H100x4))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(IPWUsageError, match="NVML GPU 2 is not visible to CUDA"):
        offload_settings(build(True), device("h100", "nvidia", True, index=2))


@pytest.mark.parametrize(("name", "vendor", "fix"), [("h100", "nvidia", 'CMAKE_ARGS="-DGGML_CUDA=on"'),
                                                     ("m4max", "apple", 'CMAKE_ARGS="-DGGML_METAL=on"')])
def test_a_gpu_target_on_a_cpu_only_build_names_the_rebuild(name, vendor, fix):
    with pytest.raises(IPWUsageError) as info:
        offload_settings(build(False), device(name, vendor, True))
    message = str(info.value)
    assert f"--ipw-accelerator={name} runs the model on the {vendor} accelerator" in message
    assert "built without GPU offload; rebuild it: " + fix in message and "or run on --ipw-accelerator=cpu" in message


@pytest.mark.skipif(llama_cpp.llama_supports_gpu_offload(), reason="this llama-cpp-python build can offload")
def test_loading_for_a_gpu_on_this_cpu_only_build_is_refused():
    with pytest.raises(IPWUsageError, match="built without GPU offload"):
        load_backend(parse_model_spec("smollm2-135m"), GenerationSettings(), device("h100", "nvidia", True, 0))


def test_threads_context_and_gguf_chat_template_are_honoured_and_recorded():
    backend = load_backend(parse_model_spec("smollm2-135m"), GenerationSettings(threads=1, context_size=512,
                                                                               max_tokens=4), device("cpu", "generic", False))
    try:
        info = backend.info()
        template = backend._llama.metadata["tokenizer.chat_template"]
        assert backend._llama.n_threads == 1 and backend._llama.n_ctx() == 512
        assert info["threads"] == 1 and info["context_size"] == 512 and info["gpu_layers"] == 0
        assert info["gpu_offload"] == "none (CPU)" and info["chat_format"] == "chat_template.default"
        assert info["chat_template_source"] == "gguf"
        assert info["chat_template_sha256"] == hashlib.sha256(template.encode()).hexdigest()
        assert "batch_size" not in info and "api_key_env" not in info  # only settings llama.cpp honours
        assert backend.generate("Say OK.").token_source == "runtime"
    finally:
        backend.close()
