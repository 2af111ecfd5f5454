"""Model aliases (``--ipw-model=NAME=SPEC``) and what is recorded behind a system's name (issue 16)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pytest_ipw.backends.models import (
    ModelSpec,
    model_provenance,
    parse_model_list,
    parse_model_spec,
)
from pytest_ipw.core.errors import IPWUsageError


def test_alias_names_any_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    specs = parse_model_list("assistant=./models/assistant-v2.gguf,remote=openai+http://127.0.0.1:8080/v1#v2,"
                             "q8=smollm2-135m-q8_0,plain=recorded:a.jsonl")
    assert [(s.name, s.backend, s.aliased, s.text) for s in specs] == [
        ("assistant", "llama-cpp", True, "./models/assistant-v2.gguf"),
        ("remote", "openai+http", True, "openai+http://127.0.0.1:8080/v1#v2"),
        ("q8", "llama-cpp", True, "smollm2-135m-q8_0"),
        ("plain", "recorded", True, "recorded:a.jsonl")]
    assert specs[1].location == "http://127.0.0.1:8080/v1#v2" and specs[2].options["quant"] == "q8_0"
    unaliased = parse_model_spec("openai+http://host:1/v1?x=1#m")  # '=' in a URL is no alias
    assert unaliased.name == "m" and not unaliased.aliased
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd=name.gguf").write_bytes(b"GGUF")
    assert parse_model_spec("odd=name.gguf").location == "odd=name.gguf"  # a file of that name stays a file
    for bad, message in [("assistant=", "nothing after 'assistant='"), ("a=x.gguf,a=y.gguf", "names a more than once")]:
        with pytest.raises(IPWUsageError, match=message):
            parse_model_list(bad)


def test_model_provenance_records_file_hash_and_server_model(tmp_path: Path):
    path = tmp_path / "assistant-v2.gguf"
    path.write_bytes(b"GGUF" + bytes(range(256)) * 10)
    spec = parse_model_spec(f"assistant={path}")
    described = model_provenance(spec, {"backend": "llama-cpp", "model_file": str(path)})
    assert described["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert described["alias"] is True and described["spec"] == str(path) and described["name"] == "assistant"
    served = model_provenance(parse_model_spec("assistant=openai+http://h:1/v1#v2"),
                              {"backend": "openai+http", "model": "v2", "served_model": "v2-2025-01-01"})
    assert served["server_model"] == "v2-2025-01-01" and served["file"] is None and served["file_sha256"] is None
    assert model_provenance(ModelSpec("m", "vllm", "Qwen/Qwen3-4B"), {"model": "Qwen/Qwen3-4B"})["spec"] == "Qwen/Qwen3-4B"
