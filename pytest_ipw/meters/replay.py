"""Replay a recorded power or energy trace: ``--ipw-meter=replay:trace.csv`` (or ``.jsonl``).

Used by tests (known, analytic energies) and to re-score a recorded run. A trace has a ``timestamp``
(seconds; only differences matter) and ``watts`` (power) and/or ``joules`` (a cumulative energy counter,
preferred when both are there, as with live meters):

    # provenance: measured            <- CSV: optional "# key: value" lines before the header
    # sensor: nvml GPU0 H100 counter
    # domain: gpu
    timestamp,watts
    0.0,71.5
    0.05,240.2

JSONL: one object per line, ``{"timestamp": 0.0, "watts": 71.5}``; an optional first line without
``timestamp`` holds the same metadata, ``{"provenance": "measured", "sensor": "...", "domain": "gpu"}``.

Time 0 of the trace is the meter's first window (the idle baseline when there is one); a window
integrates the trace between its own offsets. A window that runs past the trace's end is an error, not a
silent zero.

Provenance: a replay is only as good as what was recorded, and this meter cannot tell. It carries the
provenance the trace *declares*; a trace that declares none is labelled ``estimated``, because nothing
vouches that its numbers came from a sensor. The sensor name always starts with ``replay:``, so a replayed
figure is never mistaken for a live one.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pytest_ipw.hardware.profiles import AcceleratorProfile
from pytest_ipw.core.errors import IPWUsageError
from .base import DOMAINS, ESTIMATED, PROVENANCES, Measurement, Meter, MeterFailure
from .trace import integrate_between, interpolate

META_KEYS = ("provenance", "sensor", "domain")


@dataclass(frozen=True)
class Trace:
    path: Path
    times: list[float]  # seconds from the first sample
    watts: list[float] | None
    joules: list[float] | None  # cumulative counter
    provenance: str
    declared: bool  # whether the trace states its provenance
    sensor: str | None
    domain: str

    @property
    def duration_s(self) -> float:
        return self.times[-1] - self.times[0]

    @property
    def period_s(self) -> float:
        gaps = [b - a for a, b in zip(self.times, self.times[1:]) if b > a]
        return statistics.median(gaps) if gaps else 0.0

    def energy(self, start: float, end: float) -> float:
        """Joules between two offsets (seconds from the trace's start)."""
        if self.joules is not None:
            return interpolate(self.times, self.joules, end) - interpolate(self.times, self.joules, start)
        assert self.watts is not None
        return integrate_between(self.times, self.watts, start, end)


def _number(value: Any, where: str, column: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise IPWUsageError(f"{where}: {column} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise IPWUsageError(f"{where}: {column} must be finite, got {value!r}")
    return number


def _rows_csv(text: str, path: Path) -> tuple[dict[str, str], list[tuple[int, dict[str, Any]]]]:
    meta: dict[str, str] = {}
    lines = text.splitlines()
    body_start = 0
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#"):
            key, _, value = stripped.lstrip("#").partition(":")
            if key.strip().lower() in META_KEYS:
                meta[key.strip().lower()] = value.strip()
            body_start = number + 1
        elif stripped:
            break
        else:
            body_start = number + 1
    reader = csv.DictReader(io.StringIO("\n".join(lines[body_start:])))
    rows = [(body_start + 2 + i, row) for i, row in enumerate(reader)]  # header is line body_start+1
    return meta, rows


def _rows_jsonl(text: str, path: Path) -> tuple[dict[str, str], list[tuple[int, dict[str, Any]]]]:
    from pytest_ipw.core.files import jsonl_objects

    meta: dict[str, str] = {}
    rows = []
    for number, row in jsonl_objects(text, path, "power trace"):
        if "timestamp" not in row and not rows:
            meta.update({k: str(row[k]) for k in META_KEYS if k in row})
            continue
        rows.append((number, row))
    return meta, rows


def load_trace(path: str | Path) -> Trace:
    """Read and validate a trace; every problem names the file, the line and the fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IPWUsageError(f"power trace {path} does not exist; check --ipw-meter=replay:PATH") from None
    except OSError as exc:
        raise IPWUsageError(f"cannot read power trace {path} ({exc.strerror or exc})") from None
    meta, rows = (_rows_jsonl if path.suffix.lower() in (".jsonl", ".ndjson") else _rows_csv)(text, path)
    if len(rows) < 2:
        raise IPWUsageError(f"power trace {path} needs at least two samples (timestamp plus watts or joules)")
    first = rows[0][1]
    has_joules, has_watts = "joules" in first, "watts" in first
    if "timestamp" not in first or not (has_joules or has_watts):
        raise IPWUsageError(f"power trace {path} needs the columns timestamp and watts (power, W) or joules "
                            f"(cumulative energy, J); it has {', '.join(map(str, first)) or 'none'}")
    times, watts, joules = [], [], []
    for number, row in rows:
        where = f"power trace {path}, line {number}"
        times.append(_number(row.get("timestamp"), where, "timestamp"))
        if has_joules:
            joules.append(_number(row.get("joules"), where, "joules"))
        if has_watts:
            watts.append(_number(row.get("watts"), where, "watts"))
        if len(times) > 1 and times[-1] < times[-2]:
            raise IPWUsageError(f"{where}: timestamps must not decrease ({times[-2]} then {times[-1]})")
        if has_joules and len(joules) > 1 and joules[-1] < joules[-2]:
            raise IPWUsageError(f"{where}: joules is a cumulative counter and must not decrease; "
                                "undo counter resets before replaying")
    if times[-1] <= times[0]:
        raise IPWUsageError(f"power trace {path} spans no time")
    declared = meta.get("provenance", "").strip().lower()
    if declared and declared not in PROVENANCES:
        raise IPWUsageError(f"power trace {path}: provenance must be one of {', '.join(PROVENANCES)}, got {declared!r}")
    domain = meta.get("domain", "system").strip().lower() or "system"
    if any(d not in DOMAINS for d in domain.split("+")):
        raise IPWUsageError(f"power trace {path}: domain must be one of {', '.join(DOMAINS)} (or a sum like cpu+dram), "
                            f"got {domain!r}")
    origin = times[0]
    return Trace(path=path, times=[t - origin for t in times], watts=watts if has_watts else None,
                 joules=joules if has_joules else None, provenance=declared or ESTIMATED, declared=bool(declared),
                 sensor=meta.get("sensor") or None, domain=domain)


class ReplayMeter(Meter):
    name = "replay"

    def __init__(self, trace: Trace, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.trace = trace
        self.provenance = trace.provenance
        self.domain = trace.domain
        self.update_period_s = trace.period_s
        self.reading = "counter" if trace.joules is not None else "gauge"
        self._clock = clock
        self._origin: float | None = None
        self._t0 = 0.0

    @property
    def sensor(self) -> str:
        what = "energy counter" if self.trace.joules is not None else "power samples, integrated"
        if not self.trace.declared:
            source = "provenance not declared in the trace: treated as an estimate"
        else:
            source = f"recorded by {self.trace.sensor}" if self.trace.sensor else "recorded, sensor not named"
        return f"replay: {self.trace.path.name} ({what}; {source})"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "trace": str(self.trace.path), "trace_seconds": self.trace.duration_s,
                "declared_provenance": self.trace.declared, "recorded_sensor": self.trace.sensor}

    def _begin(self) -> None:
        now = self._clock()
        if self._origin is None:
            self._origin = now  # the trace starts with the first window
        self._t0 = now - self._origin

    def _mark(self, label: str) -> Any:
        assert self._origin is not None
        return self._clock() - self._origin

    def _split(self, label: str, point: Any, measurement: Measurement) -> tuple[float, float, str]:
        how = "recorded counter read at the mark" if self.trace.joules is not None else \
            "recorded power samples split at the mark"
        return point - self._t0, self.trace.energy(self._t0, point), how

    def _end(self) -> Measurement:
        assert self._origin is not None
        t1 = self._clock() - self._origin
        if t1 > self.trace.duration_s:
            raise MeterFailure(f"replay: {self.trace.path} covers {self.trace.duration_s:.3g} s but the run reached "
                               f"{t1:.3g} s; record a longer trace, or run fewer queries (--ipw-limit)")
        samples = sum(1 for t in self.trace.times if self._t0 <= t <= t1)
        return Measurement(joules=self.trace.energy(self._t0, t1), seconds=t1 - self._t0, sensor=self.sensor,
                           provenance=self.provenance, domain=self.domain, samples=samples)


def create(profile: AcceleratorProfile, device_index: int | None = None, arg: str | None = None, **_: Any) -> ReplayMeter:
    if not arg:
        raise IPWUsageError("the replay meter needs a trace file: --ipw-meter=replay:trace.csv")
    return ReplayMeter(load_trace(arg))
