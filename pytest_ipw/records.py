"""Per-query records: the one row shape that reports, JSON files and comparisons read.

A record is a plain JSON-able dict (it travels in pytest reports, e.g. between xdist workers).
Field names are public API; README documents them.
"""

from __future__ import annotations

from typing import Any

from .backends.base import Generation
from .meters.base import Measurement
from .queries import Query
from .scoring import Score

RECORD_FIELDS = (
    "query_id", "domain", "split", "difficulty", "model", "accelerator", "benchmark", "prompt", "response",
    "reference", "extracted", "correct", "unscorable", "truncated", "tokens_in", "tokens_out", "latency_s",
    "ttft_s", "joules", "watts", "seconds", "meter", "provenance", "energy_domain", "meter_flags",
    "joules_active", "idle_watts", "energy_basis", "energy_parts", "meter_extra",
    "correct_strict", "extracted_strict", "token_source", "judge",
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
    }
