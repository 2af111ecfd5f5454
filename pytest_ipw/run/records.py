"""Per-query records: the one row shape that reports, JSON files and comparisons read.

A record is a plain JSON-able dict (it travels in pytest reports, e.g. between xdist workers).
Field names are public API; README documents them.
"""

from __future__ import annotations

from typing import Any, Sequence

from pytest_ipw.backends.base import Generation
from pytest_ipw.meters.base import Measurement
from pytest_ipw.queries.schema import Query
from pytest_ipw.scoring.scorers import Score

RECORD_FIELDS = (
    "query_id", "domain", "split", "difficulty", "model", "accelerator", "benchmark", "prompt", "response",
    "reference", "extracted", "correct", "unscorable", "truncated", "tokens_in", "tokens_out", "latency_s",
    "ttft_s", "joules", "watts", "seconds", "meter", "provenance", "energy_domain", "meter_flags",
    "joules_active", "idle_watts", "energy_basis", "energy_parts", "meter_extra", "window_start", "window_end",
    "correct_strict", "extracted_strict", "token_source", "judge", "backend_extra", "strict_protocol",
)


def make_record(
    *,
    query: Query,
    model: str,
    accelerator: str,
    benchmark: str,
    generation: Generation,
    measurement: Measurement,
    score: Score,
    energy_basis: str = "total",
) -> dict[str, Any]:
    """``joules``/``watts`` are always the total over the window; ``energy_basis`` says whether IPW uses
    them or ``joules_active`` (total minus the idle baseline, None without a baseline)."""
    return {
        "query_id": query.id,
        "domain": query.domain,
        "split": query.split,
        "difficulty": query.difficulty,
        "model": model,
        "accelerator": accelerator,
        "benchmark": benchmark,
        "prompt": query.prompt,
        "response": generation.text,
        "reference": query.answer,
        "extracted": score.extracted,
        "correct": score.correct,
        "unscorable": score.unscorable,
        "truncated": generation.finish_reason == "length",
        "tokens_in": generation.tokens_in,
        "tokens_out": generation.tokens_out,
        "latency_s": generation.latency_s,
        "ttft_s": generation.ttft_s,
        "joules": measurement.joules,
        "watts": measurement.watts,
        "seconds": measurement.seconds,
        "meter": measurement.sensor,
        "provenance": measurement.provenance,
        "energy_domain": measurement.domain,
        "meter_flags": list(measurement.flags),
        "joules_active": measurement.joules_active,
        "idle_watts": measurement.idle_watts,
        "energy_basis": energy_basis,
        # each summed part keeps its own sensor and provenance (--ipw-meter=nvml+rapl)
        "energy_parts": [{"sensor": p.sensor, "provenance": p.provenance, "domain": p.domain, "joules": p.joules}
                         for p in measurement.parts],
        "meter_extra": dict(measurement.extra) or None,  # None, not {}: columnar writers reject empty structs
        # strict reading (answer in the requested format), where counts came from, the judge's verdict and cost
        "correct_strict": score.correct_strict,
        "extracted_strict": score.extracted_strict,
        "token_source": generation.token_source,
        "judge": score.judge,
        # what the backend says of this answer beyond the common fields (vllm: prefix-cache hits, TTFT definition)
        "backend_extra": dict(generation.extra) or None,
        "strict_protocol": query.protocol,  # the data set's official extraction behind correct_strict, if any
    }


def share_overlapping_energy(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records whose windows overlapped on one sensor (xdist workers on one device) get their share of
    the energy instead of their whole window's (the report counts them by their flag).

    Records are grouped by accelerator and sensor; only records with wall-clock window times take part.
    The raw window energy stays in ``joules_window``; ``meter_flags`` gets ``energy-shared:N`` (N the
    most queries running at once during the window).
    """
    from pytest_ipw.meters.trace import split_overlapping_windows

    out = list(records)
    groups: dict[tuple[str, str], list[int]] = {}
    for index, record in enumerate(records):
        if record.get("window_start") is not None and record.get("window_end") is not None:
            groups.setdefault((record["accelerator"], record["meter"]), []).append(index)
    for indices in groups.values():
        windows = [(records[i]["window_start"], records[i]["window_end"], records[i]["joules"]) for i in indices]
        shares, most = split_overlapping_windows(windows)
        for i, share, concurrency in zip(indices, shares, most):
            if concurrency < 2:
                continue
            record = dict(records[i])
            seconds = record["seconds"] or (record["window_end"] - record["window_start"])
            record["joules_window"] = record["joules"]
            record["joules"] = share
            record["watts"] = share / seconds if seconds > 0 else 0.0
            if record.get("idle_watts") is not None:
                # the idle baseline is shared the same way: each query's share of the window's idle energy
                idle_share = record["idle_watts"] * seconds * share / record["joules_window"] if record["joules_window"] else 0.0
                record["joules_active"] = max(0.0, share - idle_share)
            record["meter_flags"] = list(record.get("meter_flags") or []) + [f"energy-shared:{concurrency}"]
            out[i] = record
    return out
