"""Seeded synthetic runs for pytest-ipw's own benchmarks (perf/): results documents of any size, with the
fields and field order that a run writes today (docs/results-schema.md; tests/data/golden/ holds a real one).

The study shape: ``models`` models (default 4) on one NVIDIA H100 read through NVML's total-energy counter
(measured, GPU domain, a 60 W idle baseline), ``n // models`` queries each in six domains and two splits; a
larger model answers more queries and spends more energy and time per query. Every record carries the
``benchmark`` it ran in, its energy provenance (meter, provenance, domain, idle baseline, active energy,
the counter's readings) and a prefill/decode split at the first token, as an NVML run writes them.

``results_file(n)`` writes the document with the plugin's own writer (and, with ``parquet=True``, the
Parquet copy of its records a run writes with ``--ipw-parquet``), once per size, seed, shift and generator
version, into a cache folder (``IPW_PERF_CACHE``, default ``$TMPDIR/ipw-perf-cache``): writing a
million records takes minutes.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Iterator

#: bump when the generated records change, so that cached files are written again
GENERATOR_VERSION = 1
DOMAINS = ("arithmetic", "units", "knowledge", "science_mc", "logic", "strings")
WORDS = ("the", "energy", "model", "answer", "query", "watt", "token", "joule", "number", "value", "unit", "time")
BENCHMARK = "benchmarks/test_answer.py::test_answer"
ACCELERATOR = "h100"
SENSOR = "nvml: GPU0 NVIDIA H100 80GB HBM3 (total-energy counter)"
IDLE_WATTS = 60.0
#: NVML's energy counter update period on an H100 (s): the readings' period
COUNTER_PERIOD_S = 0.02
#: the documented results schema's version (docs/results-schema.md)
SCHEMA_VERSION = 1
MACHINE_INFO = {"node": "synthetic", "system": "Linux", "release": "6.8.0", "machine": "x86_64",
                "cpu": "AMD EPYC 9654", "cpu_count": 192, "memory_gb": 1511.5, "python": "3.11.7",
                "python_implementation": "CPython",
                "accelerators": [{"profile": ACCELERATOR, "device_name": "NVIDIA H100 80GB HBM3", "index": 0}]}


def model_names(models: int) -> list[str]:
    return [f"model-{m}" for m in range(models)]


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


def iter_records(n: int, *, seed: int = 0, models: int = 4, shift: float = 1.0) -> Iterator[dict[str, Any]]:
    """``n // models`` queries × ``models`` records (at least one query), one at a time, as a run adds them.

    The queries (prompts, references, hardness) are the same for every ``seed``; ``seed`` draws the answers
    and the measurement noise, and ``shift`` scales the power (a second run of the same study on a slightly
    less efficient build, for comparisons)."""
    study = random.Random(f"queries-{n}-{models}")
    per_model = max(1, n // models)
    queries = [(f"q{q:07d}", DOMAINS[q % len(DOMAINS)], "chat" if q % 3 else "reasoning", study.random(),
                f"Question {q}: {_words(study, 12)}? Reply with only the number.", str(q % 97))
               for q in range(per_model)]
    rng = random.Random(seed)
    clock = 1_700_000_000.0  # wall-clock seconds of the first window
    counter_j = 5_000_000.0  # the GPU's cumulative energy counter (J)
    for m, name in enumerate(model_names(models)):
        skill = 0.3 + 0.6 * m / max(1, models - 1)  # share of queries it can answer
        load_watts = (120.0 + 90.0 * m) * shift  # a larger model draws more power, for longer
        for query_id, domain, split, hardness, prompt, answer in queries:
            latency = 0.05 * 1.8 ** m * rng.uniform(0.8, 1.2)
            ttft = latency * rng.uniform(0.08, 0.2)
            seconds = latency + 0.0004  # the meter's window holds the generation
            joules = load_watts * rng.uniform(0.9, 1.1) * seconds
            prefill_joules = joules * ttft / seconds
            correct = hardness + rng.gauss(0, 0.08) < skill
            tokens_out = rng.randint(5, 64)
            given = answer if correct else str(rng.randint(0, 96))
            strict = correct and tokens_out % 5 != 0  # some right answers are not in the requested format
            start, end = clock, clock + seconds
            yield {
                "query_id": query_id, "domain": domain, "split": split, "difficulty": None, "model": name,
                "accelerator": ACCELERATOR, "benchmark": BENCHMARK, "prompt": prompt,
                "response": f"{_words(rng, 8)}. The answer is {given}.", "reference": answer, "extracted": given,
                "correct": correct, "unscorable": False, "truncated": tokens_out == 64, "tokens_in": 40,
                "tokens_out": tokens_out, "latency_s": latency, "ttft_s": ttft, "joules": joules,
                "watts": joules / seconds, "seconds": seconds, "meter": SENSOR, "provenance": "measured",
                "energy_domain": "gpu", "meter_flags": [], "joules_active": joules - IDLE_WATTS * seconds,
                "idle_watts": IDLE_WATTS, "energy_basis": "total", "energy_parts": [],
                "meter_extra": {"temperature_c_start": 41 + m, "temperature_c_end": 42 + m, "sm_clock_mhz": 1980,
                                "mem_clock_mhz": 2619},
                "window_start": start, "window_end": end,
                "energy_readings": {"kind": "counter", "period_s": COUNTER_PERIOD_S, "times": [start, end],
                                    "values": [[counter_j], [counter_j + joules]], "wrap_j": []},
                "correct_strict": strict, "extracted_strict": given if strict else None, "token_source": "runtime",
                "judge": None, "backend_extra": None, "strict_protocol": None, "error": None,
                "prefill_joules": prefill_joules, "prefill_s": ttft, "decode_joules": joules - prefill_joules,
                "decode_s": seconds - ttft, "decode_tokens": tokens_out - 1, "phase_split": "counter read at the mark",
                "joules_per_input_token": prefill_joules / 40, "joules_per_output_token": (joules - prefill_joules) / (tokens_out - 1),
                "round": 1, "prefix_cache_reset": None, "system": f"{name}@{ACCELERATOR}",
            }
            gap = 0.002
            clock = end + gap
            counter_j += joules + IDLE_WATTS * gap


def synthetic_records(n: int, *, seed: int = 0, models: int = 4, shift: float = 1.0) -> list[dict[str, Any]]:
    """The records of :func:`iter_records` as a list."""
    return list(iter_records(n, seed=seed, models=models, shift=shift))


def synthetic_document(n: int, *, seed: int = 0, models: int = 4, shift: float = 1.0) -> dict[str, Any]:
    """A results document (``--ipw-json``) of ``n`` synthetic records, with the aggregates a run writes,
    computed by the package's own functions."""
    from pytest_ipw.analysis import metrics, quality

    records = synthetic_records(n, seed=seed, models=models, shift=shift)
    meter = {"meter": "nvml", "sensor": SENSOR, "provenance": "measured", "domain": "gpu",
             "update_period_s": COUNTER_PERIOD_S, "reading": "counter",
             "idle_baseline": {"joules": IDLE_WATTS * 2.0, "seconds": 2.0, "watts": IDLE_WATTS, "sensor": SENSOR,
                               "provenance": "measured", "domain": "gpu"}}
    targets = {f"{name}-{ACCELERATOR}": name for name in model_names(models)}
    return {
        "schema_version": SCHEMA_VERSION, "pytest_ipw_version": "synthetic", "created_at": "2026-01-01T00:00:00Z",
        "duration_s": sum(r["seconds"] for r in records), "partial": False, "expected_records": len(records),
        "machine_info": MACHINE_INFO,
        "settings": {
            "generation": {"temperature": 0.0, "seed": 0, "max_tokens": 64, "context_size": 2048, "threads": None,
                           "keep_prefix_cache": True, "batch_size": 1},
            "dataset": "synthetic", "limit": None, "domains": None, "warmup": 1, "granularity": "query",
            "models": {target: {"backend": "llama-cpp", "model": name} for target, name in targets.items()},
            "meters": {target: meter for target in targets},
            "energy": {"basis": "total", "idle_seconds": 2.0, "sample_hz": 20.0, "meter": None},
        },
        "records": records, "skipped_queries": [], "query_errors": [],
        "summary": [summary.to_dict() for summary in metrics.summarize_systems(records)],
        "repeats": None,
        "accuracy_by_domain": metrics.accuracy_by_domain_rows(records),
        "coverage": metrics.coverage(records).to_dict(),
        "threshold_failures": [],
        "quality": quality.quality_summary(records, 64),
        "judge_cost": quality.judge_cost(records),
    }


def cache_folder() -> Path:
    folder = Path(os.environ.get("IPW_PERF_CACHE") or Path(tempfile.gettempdir()) / "ipw-perf-cache")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def results_file(n: int, *, seed: int = 0, shift: float = 1.0, parquet: bool = False) -> Path:
    """The path of a synthetic results file of ``n`` records, written by the plugin's writer on first use.

    ``parquet``: the run also wrote its records as Parquet (``--ipw-parquet``), as the run does: the document
    records the option, and the Parquet file beside it carries the document's stamp."""
    from pytest_ipw.core.files import write_json_atomic

    stem = f"synthetic-v{GENERATOR_VERSION}-{n}-s{seed}-x{shift:g}" + ("-parquet" if parquet else "")
    path = cache_folder() / f"{stem}.json"
    if path.exists():
        return path
    document = synthetic_document(n, seed=seed, shift=shift)
    if parquet:
        from pytest_ipw.core.files import results_stamp, write_parquet

        copy = path.with_suffix(".parquet")
        document["settings"]["options"] = {"ipw_parquet": {"value": copy.name, "from": "command line"}}
        write_parquet(copy, document["records"], stamp=results_stamp(document))
    write_json_atomic(path, document)  # last: its presence says the pair is complete
    return path


def second_results_file(n: int, *, parquet: bool = False) -> Path:
    """Another run of the same study for comparisons: other noise, 2% more energy per query."""
    return results_file(n, seed=1, shift=1.02, parquet=parquet)
