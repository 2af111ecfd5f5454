"""Model metadata for the study's analyses: release date, parameter count, and role (local or reference).

``--ipw-model-info=FILE`` (and ``pytest-ipw report/merge --model-info FILE``) is a JSON object keyed by
model name, as the model is labelled in the records::

    {
      "qwen3-4b":   {"release_date": "2025-04", "parameters": "4B", "role": "local"},
      "llama-2-7b": {"release_date": "2023-07-18", "parameters": 6.7e9},
      "frontier":   {"role": "reference"}
    }

Every field is optional. ``release_date`` is ``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD`` (the first day of the
year or month stands in for a missing part); ``parameters`` is a number of parameters or a string such as
``135M``, ``1.7B``; ``role`` is ``local`` (the default) or ``reference`` (the model the local ones are
compared with, and where the routers send what no local model answers).
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.core.files import read_json

LOCAL = "local"
REFERENCE = "reference"
ROLES = (LOCAL, REFERENCE)
_FIELDS = ("release_date", "parameters", "role", "family")
_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "t": 1e12}
_PARAMETERS = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmbt]?)\s*", re.IGNORECASE)
_DATE = re.compile(r"(\d{4})(?:-(\d{2}))?(?:-(\d{2}))?")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    release_date: dt.date | None = None
    parameters: float | None = None
    role: str = LOCAL
    family: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"release_date": self.release_date.isoformat() if self.release_date else None,
                "parameters": self.parameters, "role": self.role, "family": self.family}


def parse_parameters(value: Any, where: str) -> float | None:
    """A parameter count from a number (``6.7e9``) or a string (``135M``, ``1.7B``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise IPWUsageError(f"{where}: parameters must be a number or a string like '1.7B', got {value!r}")
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        match = _PARAMETERS.fullmatch(str(value))
        if not match:
            raise IPWUsageError(f"{where}: parameters {value!r} is not a count like 6.7e9, '135M' or '1.7B'")
        number = float(match[1]) * _SUFFIX.get(match[2].lower(), 1.0)
    if not math.isfinite(number) or number <= 0:
        raise IPWUsageError(f"{where}: parameters must be positive, got {value!r}")
    return number


def parse_release_date(value: Any, where: str) -> dt.date | None:
    """``YYYY``, ``YYYY-MM`` or ``YYYY-MM-DD``; a missing month or day is the first one."""
    if value is None:
        return None
    match = _DATE.fullmatch(str(value).strip())
    try:
        if not match:
            raise ValueError
        return dt.date(int(match[1]), int(match[2] or 1), int(match[3] or 1))
    except ValueError:
        raise IPWUsageError(f"{where}: release_date {value!r} is not YYYY, YYYY-MM or YYYY-MM-DD") from None


def parse_model_info(data: Any, source: str) -> dict[str, ModelInfo]:
    """Validate a model-info mapping (already parsed JSON); ``source`` names it in error messages."""
    if not isinstance(data, Mapping):
        raise IPWUsageError(f"model info {source} must be a JSON object keyed by model name")
    infos: dict[str, ModelInfo] = {}
    for name, entry in data.items():
        where = f"model info {source}, model {name!r}"
        if not isinstance(entry, Mapping):
            raise IPWUsageError(f"{where}: expected an object with {', '.join(_FIELDS)}")
        unknown = sorted(set(entry) - set(_FIELDS))
        if unknown:
            raise IPWUsageError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
        role = entry.get("role") or LOCAL
        if role not in ROLES:
            raise IPWUsageError(f"{where}: role must be 'local' or 'reference', got {role!r}")
        family = entry.get("family")
        infos[str(name)] = ModelInfo(
            name=str(name),
            release_date=parse_release_date(entry.get("release_date"), where),
            parameters=parse_parameters(entry.get("parameters"), where),
            role=role,
            family=None if family is None else str(family),
        )
    return infos


def load_model_info(path: str | os.PathLike[str] | None) -> dict[str, ModelInfo]:
    """Read ``--ipw-model-info``; an empty mapping when no file is given."""
    if path is None:
        return {}
    data = read_json(path, "model info file")
    return parse_model_info(data, str(path))


def model_info_to_json(infos: Mapping[str, ModelInfo]) -> dict[str, dict[str, Any]]:
    """The JSON form, as stored in merged results (``model_info``) and read back by :func:`parse_model_info`."""
    out = {}
    for name, info in infos.items():
        entry = {k: v for k, v in info.to_dict().items() if v is not None}
        out[name] = entry
    return out
