"""Per-query records: the one row shape that reports, JSON files and comparisons read.

A record is a plain JSON-able dict (it travels in pytest reports, e.g. between xdist workers).
Field names are public API; README documents them.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from pytest_ipw.analysis.metrics import phase_energy
from pytest_ipw.backends.base import Generation, QueryFailed
from pytest_ipw.meters.base import FIRST_TOKEN, FLAG_NO_UPDATE, FLAG_UNATTRIBUTABLE, Measurement
from pytest_ipw.queries.schema import Query
from pytest_ipw.scoring.scorers import Score

RECORD_FIELDS = (
    "query_id", "domain", "split", "difficulty", "model", "accelerator", "benchmark", "prompt", "response",
    "reference", "extracted", "correct", "unscorable", "truncated", "tokens_in", "tokens_out", "latency_s",
    "ttft_s", "joules", "watts", "seconds", "meter", "provenance", "energy_domain", "meter_flags",
    "joules_active", "idle_watts", "energy_basis", "energy_parts", "meter_extra", "window_start", "window_end",
    "energy_readings", "correct_strict", "extracted_strict", "token_source", "judge", "backend_extra", "strict_protocol",
    # the window split at the first token (README: Prefill and decode), and the round of --ipw-repeat
    "prefill_joules", "prefill_s", "decode_joules", "decode_s", "decode_tokens", "joules_per_input_token",
    "joules_per_output_token", "phase_split", "round", "prefix_cache_reset", "error",
)

#: the score of a query that could not be answered: wrong, in both readings (never left out of the denominator)
FAILED_SCORE = Score(correct=False, unscorable=False, extracted=None, correct_strict=False, extracted_strict=None)


def failed_generation(failure: QueryFailed, latency_s: float) -> Generation:
    """What a failed query produced: no text, no tokens out, the time the attempt took (its energy window)."""
    return Generation(text="", tokens_in=failure.tokens_in, tokens_out=0, latency_s=latency_s, ttft_s=None,
                      finish_reason="error", token_source="error")


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
    failure: QueryFailed | None = None,
) -> dict[str, Any]:
    """``joules``/``watts`` are the total over the query's window (its share of it when the window ran
    several queries: :func:`charge`); ``energy_basis`` says whether IPW uses them or ``joules_active``
    (total minus the idle baseline, None without a baseline).

    ``phase_missing`` says why the window has no first-token mark when it has none (a backend that does not
    report its first token); ``round_number`` is the round of ``--ipw-repeat`` (1 without repeats), and
    ``prefix_cache_reset`` whether the model's prompt-prefix cache was reset before it (None: not asked). A
    query that could not be answered has its ``failure`` in ``error`` ({"kind", "message", "context_window"};
    else None)."""
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
        # wall-clock window and what the sensor read in it: the controller puts every window of a sensor on one
        # timeline with them (share_overlapping_energy)
        "window_start": measurement.started_at,
        "window_end": measurement.ended_at,
        "energy_readings": measurement.readings.to_dict() if measurement.readings is not None else None,
        # strict reading (answer in the requested format), where counts came from, the judge's verdict and cost
        "correct_strict": score.correct_strict,
        "extracted_strict": score.extracted_strict,
        "token_source": generation.token_source,
        "judge": score.judge,
        # what the backend says of this answer beyond the common fields (vllm: prefix-cache hits, TTFT definition)
        "backend_extra": dict(generation.extra) or None,
        "strict_protocol": query.protocol,  # the data set's official extraction behind correct_strict, if any
        "error": failure.to_dict() if failure is not None else None,
    }
    record.update(phase_fields(measurement, generation, phase_missing))
    record.update(per_token_energy(record))
    record["round"] = round_number
    record["prefix_cache_reset"] = prefix_cache_reset
    queries = queries_in_window(record["meter_flags"])
    if queries > 1:
        record = charge(record, measurement.joules / queries)
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


_BATCHED = re.compile(r"batched:(\d+)$")


def queries_in_window(flags: Sequence[str] | None) -> int:
    """How many queries one window ran at once: N for a batch (flag ``batched:N``), else 1."""
    for flag in flags or ():
        match = _BATCHED.match(str(flag))
        if match:
            return int(match.group(1))
    return 1


def charge(record: dict[str, Any], joules: float, flag: str | None = None) -> dict[str, Any]:
    """THE rule for a query's energy (docs/energy-methodology.md): a query is charged ``joules``, its share
    of what its sensor used during the query's own wall-clock window; ``seconds`` stay that window's
    length, so ``watts`` = share / window seconds, on every path (a batch of N, xdist workers on one device,
    a coarse counter's spread updates). The window's own figure stays in ``joules_window``; the parts and
    the idle baseline are scaled by the same fraction. Returns a new record."""
    record = dict(record)
    raw = record.get("joules_window", record["joules"])
    fraction = joules / raw if raw else 0.0
    seconds = record["seconds"] or 0.0
    record["joules_window"] = raw
    record["joules"] = joules
    record["watts"] = joules / seconds if seconds > 0 else 0.0
    if record.get("idle_watts") is not None:
        # the window's idle energy is shared the same way as its total
        record["joules_active"] = max(0.0, joules - record["idle_watts"] * seconds * fraction)
    if record.get("prefill_joules") is not None and record.get("decode_joules") is not None:
        # each phase keeps its part of the window: the share is scaled, not re-split
        original_phases = record.get("phases_window") or (record["prefill_joules"], record["decode_joules"])
        record["phases_window"] = list(original_phases)
        record["prefill_joules"], record["decode_joules"] = (j * fraction for j in original_phases)
        record.update(per_token_energy(record))
    if record.get("energy_parts"):
        original = record.get("energy_parts_window") or record["energy_parts"]
        record["energy_parts_window"] = original
        record["energy_parts"] = [{**part, "joules": part["joules"] * fraction} for part in original]
    if flag and flag not in (record.get("meter_flags") or ()):
        record["meter_flags"] = list(record.get("meter_flags") or []) + [flag]
    return record


#: flag on a coarse counter's window whose energy was rebuilt from the counter's observed updates
FLAG_SPREAD = "energy-spread-over-counter-updates"
#: flag on a window that had no readings of its sensor and overlapped others: its share is an estimate
FLAG_APPROX = "energy-shared-without-readings"


def share_overlapping_energy(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Put the windows of each sensor on one timeline and charge every query by :func:`charge`.

    Records are grouped by accelerator and sensor; only records with wall-clock window times take part.
    With readings (counter values at each window's edges, or power samples) the device's energy in every
    piece of time between window edges is known, and each piece is divided among the queries open then
    (``pytest_ipw.meters.trace.split_pieces``): exact for counters, the shared trace for gauges. A coarse
    counter's increments are first spread over the time between its observed updates, and a window it
    cannot place is flagged ``energy-unattributable`` (left out of the energy means). Without readings
    the windows' totals are fitted (``split_overlapping_windows``) and flagged as such. A window that
    overlapped others gets ``energy-shared:N`` (N the most queries open at once during it).
    """
    out = list(records)
    groups: dict[tuple[str, str], list[int]] = {}
    for index, record in enumerate(records):
        if record.get("window_start") is not None and record.get("window_end") is not None:
            groups.setdefault((record["accelerator"], record["meter"]), []).append(index)
    for indices in groups.values():
        for index, record in _share_group([records[i] for i in indices]).items():
            out[indices[index]] = record
    return out


def _windows(records: Sequence[dict[str, Any]]) -> tuple[list[list[int]], list[int]]:
    """Records grouped into physical windows (the N records of one batch share one), and each one's weight."""
    by_key: dict[Any, list[int]] = {}
    for i, record in enumerate(records):
        n = queries_in_window(record.get("meter_flags"))
        key = (record["window_start"], record["window_end"], n) if n > 1 else ("record", i)
        by_key.setdefault(key, []).append(i)
    members = list(by_key.values())
    return members, [queries_in_window(records[m[0]].get("meter_flags")) for m in members]


def _share_group(records: Sequence[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Changed records of one sensor, by position in ``records``."""
    from pytest_ipw.meters.base import COUNTER, POWER, Readings
    from pytest_ipw.meters.trace import (InconsistentReadings, concurrency, counter_timeline, split_counter, split_energy,
                               split_overlapping_windows)

    members, weights = _windows(records)
    first = [records[m[0]] for m in members]
    readings = [Readings.from_dict(r["energy_readings"]) if r.get("energy_readings") else None for r in first]
    kinds = {r.kind if r is not None and len(r.times) >= 2 else None for r in readings}
    if kinds == {COUNTER}:
        edges = [(r.times[0], r.times[-1]) for r in readings]  # type: ignore[union-attr]
        points = [(t, v) for r in readings for t, v in zip(r.times, r.values)]  # type: ignore[union-attr]
        try:
            timeline = counter_timeline(points, readings[0].wrap_j, min(r.period_s for r in readings))  # type: ignore[union-attr]
        except InconsistentReadings:
            timeline = None
        if timeline is not None:
            # every window of a coarse counter is rebuilt (spread), not only the overlapping ones
            shares, load = split_counter(timeline, edges, weights)
            return _charge_windows(records, members, weights, shares, load, coarse=timeline.coarse)
    if kinds == {POWER}:
        edges = [(r.times[0], r.times[-1]) for r in readings]  # type: ignore[union-attr]
    else:
        edges = [(r["window_start"], r["window_end"]) for r in first]
    # only windows that overlap another change: the others keep their own figure (and cost nothing here)
    load = concurrency(edges, weights)
    chosen = [k for k, (most, weight) in enumerate(zip(load, weights)) if most > weight + 1e-9]
    if not chosen:
        return {}
    sub_edges, sub_weights = [edges[k] for k in chosen], [weights[k] for k in chosen]
    if kinds == {POWER}:
        samples = sorted((t, v[0]) for k in chosen for t, v in zip(readings[k].times, readings[k].values))  # type: ignore[union-attr]
        shares = list(split_energy([t for t, _ in samples], [w for _, w in samples], sub_edges, sub_weights))
        approximate = False
    else:
        raw = [first[k].get("joules_window", first[k]["joules"]) for k in chosen]
        shares = split_overlapping_windows([(a, b, j) for (a, b), j in zip(sub_edges, raw)], sub_weights)[0]
        approximate = True
    return _charge_windows(records, [members[k] for k in chosen], sub_weights, shares, [load[k] for k in chosen],
                           approximate=approximate)


def _charge_windows(records: Sequence[dict[str, Any]], members: list[list[int]], weights: list[int],
                    shares: Sequence[float | None], concurrency: Sequence[float], *, coarse: bool = False,
                    approximate: bool = False) -> dict[int, dict[str, Any]]:
    changed: dict[int, dict[str, Any]] = {}
    for window, weight, share, load in zip(members, weights, shares, concurrency):
        for i in window:
            record = records[i]
            if share is None:  # a coarse counter's update times do not bracket this window
                flags = list(record.get("meter_flags") or [])
                changed[i] = {**record, "meter_flags": flags + [FLAG_UNATTRIBUTABLE]}
                continue
            overlapped = load > weight + 1e-9
            if not (overlapped or coarse or weight > 1):
                continue  # alone, read exactly: the window's own figure stands
            flags = []
            if overlapped:
                flags.append(f"energy-shared:{int(round(load))}")
                if approximate:
                    flags.append(FLAG_APPROX)
            if coarse:
                flags.append(FLAG_SPREAD)
            record = charge(record, share / weight)
            kept = list(record.get("meter_flags") or [])
            if coarse:
                # its energy now comes from the counter's updates around it, not from its own raw reading
                kept = [f for f in kept if f != FLAG_NO_UPDATE]
            record["meter_flags"] = kept + [f for f in flags if f not in kept]
            changed[i] = record
    return changed

