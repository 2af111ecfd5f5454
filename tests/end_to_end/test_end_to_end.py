"""End to end with the real embedded model (SmolLM2-135M through llama-cpp-python) on this machine."""

from __future__ import annotations

import json
import os

import pytest

from pytest_ipw.hardware.profiles import detect_devices, load_profiles
from pytest_ipw.backends import load_backend
from pytest_ipw.backends.base import GenerationSettings
from pytest_ipw.backends.models import parse_model_spec

#: .ci/run runs this file a second time with IPW_TEST_THREADS set: another thread count changes llama.cpp's
#: reduction order much as another CPU does, so a test that depends on one machine's floating point fails
#: where it is written instead of on the next machine.
THREADS = int(os.environ.get("IPW_TEST_THREADS") or 0) or None
THREAD_ARGS = [f"--ipw-threads={THREADS}"] if THREADS else []

BENCHMARK = """
def test_answer(ipw_bench):
    ipw_bench()
"""


@pytest.fixture(scope="module")
def cpu_device():
    profiles = load_profiles()
    return next(d for d in detect_devices(profiles) if d.profile.name == "cpu")


@pytest.fixture(scope="module")
def smollm(cpu_device):
    backend = load_backend(parse_model_spec("smollm2-135m"), GenerationSettings(max_tokens=24, threads=THREADS), cpu_device)
    yield backend
    backend.close()


PROMPTS = [
    "What is the capital of France? Answer with one word.",
    "Write a long poem about the sea.",  # runs into max_tokens
    "What is 7 + 5? Answer with just the number.",
]


def test_token_counts_match_llama_cpp_usage(smollm):
    """Streamed generations count the same tokens as llama-cpp-python's own usage block.

    Both calls start from a reset model, so they run the same computation (the whole prompt in one batch)
    and give the same text on any machine. Comparing against a call that reuses the prompt-prefix cache
    would not: the batch split changes llama.cpp's floating point, and how it changes depends on the CPU.
    """
    llama = smollm._llama
    for prompt in PROMPTS:
        llama.reset()
        generation = smollm.generate(prompt)
        llama.reset()
        usage = llama.create_chat_completion(
            messages=[{"role": "user", "content": prompt}], temperature=0.0, seed=0, max_tokens=24
        )
        assert generation.text == usage["choices"][0]["message"]["content"]
        assert generation.tokens_out == usage["usage"]["completion_tokens"]
        assert generation.tokens_in == usage["usage"]["prompt_tokens"]
        assert generation.finish_reason == usage["choices"][0]["finish_reason"]
        assert 0 < generation.ttft_s <= generation.latency_s


def test_prompt_token_count_does_not_depend_on_the_prefix_cache(smollm):
    """Whatever the cache held before, the prompt's token count is the same (tokenisation is exact)."""
    counts = []
    for previous in (None, *PROMPTS):
        smollm._llama.reset()
        if previous is not None:
            smollm.generate(previous)
        counts.append(smollm.generate(PROMPTS[0]).tokens_in)
    assert len(set(counts)) == 1 and counts[0] > 0


def test_a_repeated_identical_call_after_reset_gives_the_same_answer(smollm):
    """Determinism at temperature 0 within one process and call path (not across machines or cache states)."""
    for prompt in PROMPTS:
        smollm._llama.reset()
        first = smollm.generate(prompt)
        smollm._llama.reset()
        second = smollm.generate(prompt)
        assert (first.text, first.tokens_in, first.tokens_out, first.finish_reason) == (
            second.text, second.tokens_in, second.tokens_out, second.finish_reason)


def test_benchmark_run_on_the_real_model(pytester: pytest.Pytester):
    pytester.makepyfile(test_bench=BENCHMARK)
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-limit=6", "--ipw-json=run.json", *THREAD_ARGS)
    result.assert_outcomes(passed=6)
    result.stdout.fnmatch_lines(["*intelligence per watt*", "*smollm2-135m*cpu*6*", "*ESTIMATED*"])
    document = json.loads((pytester.path / "run.json").read_text())
    records = document["records"]
    assert len(records) == 6
    assert len({r["domain"] for r in records}) == 6  # --ipw-limit takes queries round-robin over domains
    for record in records:
        assert record["tokens_in"] > 0 and record["tokens_out"] > 0
        assert record["joules"] > 0 and record["provenance"] == "estimated"
        assert record["response"]
    info = document["settings"]["models"]["smollm2-135m-cpu"]
    assert info["backend"] == "llama-cpp" and info["gpu_layers"] == 0 and info["temperature"] == 0.0
    assert info["model_file"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")


def test_quantised_variants_form_a_models_axis(pytester: pytest.Pytester, monkeypatch, tmp_path):
    monkeypatch.setenv("PYTEST_IPW_CACHE", str(tmp_path / "cache"))
    pytester.makepyfile(test_bench=BENCHMARK)
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-limit=4", "--ipw-json=run.json",
                                "--ipw-model=smollm2-135m,smollm2-135m-q8_0", *THREAD_ARGS)
    result.assert_outcomes(passed=8)
    document = json.loads((pytester.path / "run.json").read_text())
    assert {s["model"] for s in document["summary"]} == {"smollm2-135m", "smollm2-135m-q8_0"}
    assert document["coverage"]["queries"] == 4
    assert (tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.q8_0.gguf").is_file()
