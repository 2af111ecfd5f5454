"""The performance benchmarks in perf/ keep working: the whole suite runs at a tiny size with timing off
(docs/performance.md), and its synthetic runs keep the fields a run writes. No figure is timed here."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PERF = ROOT / "perf"


def load_synthetic():
    spec = importlib.util.spec_from_file_location("perf_synthetic", PERF / "synthetic.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_perf_benchmarks_run_at_a_tiny_size(tmp_path):
    pytest.importorskip("pytest_benchmark")
    env = {**os.environ, "IPW_PERF_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    result = subprocess.run([sys.executable, "-m", "pytest", "perf/", "-p", "no:cacheprovider", "-q", "-rs",
                             "--perf-sizes=200", "--benchmark-disable", f"--basetemp={tmp_path / 'base'}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    passed = re.search(r"(\d+) passed", result.stdout)
    assert passed and int(passed.group(1)) >= 14, result.stdout[-2000:]
    assert "skipped" not in result.stdout.splitlines()[-1], result.stdout[-2000:]
    # the synthetic runs were written where IPW_PERF_CACHE says, and are results files every command reads
    files = sorted((tmp_path / "cache").glob("synthetic-*.json"))
    assert len(files) == 3  # two runs to compare, and one with a Parquet copy of its records
    assert len(json.loads(files[0].read_text())["records"]) == 200
    assert len(list((tmp_path / "cache").glob("synthetic-*-parquet.parquet"))) == 1


def test_an_unusable_size_is_one_usage_error(tmp_path):
    pytest.importorskip("pytest_benchmark")
    result = subprocess.run([sys.executable, "-m", "pytest", "perf/", "-p", "no:cacheprovider", "-q",
                             "--perf-sizes=10k", "--benchmark-disable", "--collect-only"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                            env={**os.environ, "IPW_PERF_CACHE": str(tmp_path)})
    assert result.returncode == 4, result.stdout[-2000:]
    assert "--perf-sizes='10k': give positive record counts" in result.stderr


def test_synthetic_records_have_every_field_a_run_writes():
    """When runs write a new field, the benchmarks' synthetic runs must carry it too (perf/synthetic.py)."""
    from pytest_ipw.run.records import RECORD_FIELDS

    golden = json.loads((ROOT / "tests" / "data" / "golden" / "results-0acd67f.json").read_text())
    record = next(load_synthetic().iter_records(8))
    missing = [f for f in (*RECORD_FIELDS, *golden["records"][0]) if f not in record]
    assert not missing, f"perf/synthetic.py lacks {missing}: add them (and bump GENERATOR_VERSION)"


def test_synthetic_runs_are_seeded():
    synthetic = load_synthetic()
    first, again, other = (list(synthetic.iter_records(40, seed=s)) for s in (0, 0, 1))
    assert first == again and first != other
    # a second run of the study asks the same queries; only the answers and the measurements differ
    assert [(r["query_id"], r["prompt"], r["reference"]) for r in first] == \
        [(r["query_id"], r["prompt"], r["reference"]) for r in other]
    assert {r["model"] for r in first} == {f"model-{m}" for m in range(4)}
    assert {r["provenance"] for r in first} == {"measured"} and all(r["meter"] for r in first)
