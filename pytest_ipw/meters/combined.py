"""Several meters summed into one system figure (``--ipw-meter=nvml+rapl``), each part still reported."""

from __future__ import annotations

import time
from typing import Any, Sequence

from pytest_ipw.core.errors import IPWUsageError
from .base import COUNTER, ESTIMATED, MEASURED, Measurement, Meter, Readings


def sum_measurements(parts: Sequence[Measurement], seconds: float) -> Measurement:
    """The sum of parts measured over the same window. One estimated part makes the sum an estimate:
    a total is only as good as its weakest part, and must never be shown as measured."""
    provenance = MEASURED if all(p.provenance == MEASURED for p in parts) else ESTIMATED
    domains: list[str] = []
    for part in parts:
        for domain in part.domain.split("+"):
            if domain not in domains:
                domains.append(domain)
    flags: list[str] = []
    for part in parts:
        flags.extend(f for f in part.flags if f not in flags)
    readings = None
    if parts and all(p.readings is not None and p.readings.kind == COUNTER for p in parts):
        # counters add up: one series per part's series, at the mean time of the parts' reads
        edges = [(sum(p.readings.times[k] for p in parts) / len(parts),  # type: ignore[union-attr]
                  tuple(v for p in parts for v in p.readings.values[k])) for k in (0, -1)]  # type: ignore[union-attr]
        readings = Readings(COUNTER, (edges[0][0], edges[1][0]), (edges[0][1], edges[1][1]),
                            max(p.readings.period_s for p in parts),  # type: ignore[union-attr]
                            tuple(w for p in parts for w in (p.readings.wrap_j or (None,) * len(p.readings.values[0]))))  # type: ignore[union-attr]
    return Measurement(
        joules=sum(p.joules for p in parts),
        seconds=seconds,
        sensor=" + ".join(p.sensor for p in parts),
        provenance=provenance,
        domain="+".join(domains),
        samples=sum(p.samples for p in parts),
        flags=tuple(flags),
        parts=tuple(parts),
        readings=readings,
    )


class SumMeter(Meter):
    """Opens a window on every part at once; the total is the sum of the parts' energy."""

    name = "sum"

    def __init__(self, meters: Sequence[Meter]):
        super().__init__()
        if len(meters) < 2:
            raise ValueError("a sum needs at least two meters")
        system = [m for m in meters if "system" in m.domain.split("+")]
        if system:
            # a whole-system sensor (psys, a wall meter) already contains the other parts
            raise IPWUsageError(f"--ipw-meter: {system[0].sensor} measures the whole system (domain 'system'); "
                                "summing it with other meters would count their energy twice. Use it alone.")
        seen: dict[str, Meter] = {}
        for meter in meters:
            for device in meter.resolved_devices():
                if device in seen:
                    # nvml+nvml:0 on GPU 0, rapl+rapl:package...: different texts, one sensor, counted twice
                    raise IPWUsageError(f"--ipw-meter: {seen[device].sensor} and {meter.sensor} measure the same "
                                        f"device ({device}); its energy would be counted twice. Name each device once.")
                seen[device] = meter
        self.meters = list(meters)
        self.update_period_s = max(m.update_period_s for m in meters)
        self.provenance = MEASURED if all(m.provenance == MEASURED for m in meters) else ESTIMATED
        self.domain = "+".join(dict.fromkeys(d for m in meters for d in m.domain.split("+")))
        readings = {m.reading for m in meters}
        self.reading = readings.pop() if len(readings) == 1 else None
        self._t0 = 0.0

    @property
    def sensor(self) -> str:
        return " + ".join(m.sensor for m in self.meters)

    def resolved_devices(self) -> set[str]:
        return {d for m in self.meters for d in m.resolved_devices()}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "parts": [m.describe() for m in self.meters]}

    def _begin(self) -> None:
        started: list[Meter] = []
        try:
            for meter in self.meters:
                meter.start()
                started.append(meter)
        except BaseException:
            for meter in reversed(started):
                meter.stop()
            raise
        self._t0 = time.perf_counter()

    def _mark(self, label: str) -> Any:
        for meter in self.meters:
            meter.mark(label)  # each part keeps its own split; the sum adds them up
        return time.perf_counter()

    def _split(self, label: str, point: Any, measurement: Measurement) -> tuple[float, float, str] | None:
        marks = [part.phase_mark(label) for part in measurement.parts]
        missing = [part.sensor for part, mark in zip(measurement.parts, marks) if mark is None or mark.joules is None]
        if missing:
            raise ValueError(f"no split of {', '.join(missing)}")
        methods = "; ".join(dict.fromkeys(m.method for m in marks if m is not None))
        return point - self._t0, sum(m.joules for m in marks if m is not None and m.joules is not None), methods

    def _end(self) -> Measurement:
        seconds = time.perf_counter() - self._t0
        parts: list[Measurement] = []
        error: BaseException | None = None
        for meter in reversed(self.meters):  # close every part even when one fails
            try:
                parts.append(meter.stop())
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others are closed
                error = error or exc
        if error is not None:
            raise error
        parts.reverse()
        return sum_measurements(parts, seconds)

    def close(self) -> None:
        for meter in self.meters:
            meter.close()
