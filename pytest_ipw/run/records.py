"""Per-query records: the one row shape that reports, JSON files and comparisons read.

A record is a plain JSON-able dict (it travels in pytest reports, e.g. between xdist workers).
Field names are public API; README documents them.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from pytest_ipw.analysis.metrics import phase_energy
from pytest_ipw.backends.base import Generation
from pytest_ipw.meters.base import FIRST_TOKEN, Measurement
from pytest_ipw.queries.schema import Query
from pytest_ipw.scoring.scorers import Score

RECORD_FIELDS = (
    "query_id", "domain", "split", "difficulty", "model", "accelerator", "benchmark", "prompt", "response",
    "reference", "extracted", "correct", "unscorable", "truncated", "tokens_in", "tokens_out", "latency_s",
    "ttft_s", "joules", "watts", "seconds", "meter", "provenance", "energy_domain", "meter_flags",
    "joules_active", "idle_watts", "energy_basis", "energy_parts", "meter_extra", "window_start", "window_end",
    "correct_strict", "extracted_strict", "token_source", "judge",
    # the window split at the first token (README: Prefill and decode), and the round of --ipw-repeat
    "prefill_joules", "prefill_s", "decode_joules", "decode_s", "decode_tokens", "joules_per_input_token",
    "joules_per_output_token", "phase_split", "round", "prefix_cache_reset",
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
    phase_missing: str | None = None,
    round_number: int = 1,
    prefix_cache_reset: bool | None = None,
) -> dict[str, Any]:
    """``joules``/``watts`` are always the total over the window; ``energy_basis`` says whether IPW uses
    them or ``joules_active`` (total minus the idle baseline, None without a baseline).

    ``phase_missing`` says why the window has no first-token mark when it has none (a backend that does not
    report its first token); ``round_number`` is the round of ``--ipw-repeat`` (1 without repeats), and
    ``prefix_cache_reset`` whether the model's prompt-prefix cache was reset before it (None: not asked)."""
    record = {
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
    record.update(phase_fields(measurement, generation, phase_missing))
    record.update(per_token_energy(record))
    record["round"] = round_number
    record["prefix_cache_reset"] = prefix_cache_reset
    return record


def phase_fields(measurement: Measurement, generation: Generation, missing: str | None) -> dict[str, Any]:
    """Prefill (window start to the first token) and decode (the rest) of one window, in total energy.

    ``decode_tokens`` counts the tokens generated after the first one: the first token comes out of the
    prefill's last step, so decode makes ``tokens_out - 1`` (as time per output token counts them).
    """
    empty: dict[str, Any] = {"prefill_joules": None, "prefill_s": None, "decode_joules": None, "decode_s": None,
                             "decode_tokens": None}
    mark = measurement.phase_mark(FIRST_TOKEN)
    if mark is None:
        reason = missing or ("no first token was seen (an empty answer, a server that ignored streaming, or a "
                             "recording without ttft_s)" if generation.ttft_s is None else
                             "the meter was not marked at the first token")
        return {**empty, "phase_split": f"none: {reason}"}
    if mark.joules is None:
        return {**empty, "phase_split": f"none: {mark.method}"}
    method = mark.method if mark.precise else (f"{mark.method} (imprecise: prefill or decode is shorter than the "
                                               "sensor's update period)")
    return {
        "prefill_joules": mark.joules,
        "prefill_s": mark.seconds,
        "decode_joules": measurement.joules - mark.joules,
        "decode_s": measurement.seconds - mark.seconds,
        "decode_tokens": max(0, generation.tokens_out - 1),
        "phase_split": method,
    }


def per_token_energy(record: Mapping[str, Any]) -> dict[str, float | None]:
    """J per input token (prefill energy / prompt tokens) and J per output token (decode energy / decode
    tokens), on the record's energy basis (:func:`~pytest_ipw.analysis.metrics.phase_energy`)."""
    phases = phase_energy(record)
    if phases is None:
        return {"joules_per_input_token": None, "joules_per_output_token": None}
    tokens_in, decode_tokens = record.get("tokens_in"), record.get("decode_tokens")
    return {"joules_per_input_token": phases[0] / tokens_in if tokens_in else None,
            "joules_per_output_token": phases[1] / decode_tokens if decode_tokens else None}


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
            if record.get("prefill_joules") is not None and record["joules_window"]:
                # each phase keeps its part of the window's energy: the share is scaled, not re-split
                factor = share / record["joules_window"]
                record["prefill_joules"] *= factor
                record["decode_joules"] *= factor
                record.update(per_token_energy(record))
            record["watts"] = share / seconds if seconds > 0 else 0.0
            if record.get("idle_watts") is not None:
                # the idle baseline is shared the same way: each query's share of the window's idle energy
                idle_share = record["idle_watts"] * seconds * share / record["joules_window"] if record["joules_window"] else 0.0
                record["joules_active"] = max(0.0, share - idle_share)
            record["meter_flags"] = list(record.get("meter_flags") or []) + [f"energy-shared:{concurrency}"]
            out[i] = record
    return out
