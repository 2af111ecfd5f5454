"""Replay of recorded traces: analytic energies (constant, ramp, step, sine) within 0.1%, both file formats,
power and energy-counter traces, provenance honesty, the idle baseline, and every malformed-file message."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import pytest

from pytest_ipw.hardware.profiles import load_profiles
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.meters import replay
from pytest_ipw.meters.base import ESTIMATED, FLAG_BELOW_IDLE, FLAG_SHORT_WINDOW, MEASURED, MeterFailure
from pytest_ipw.meters.registry import select_meter
from pytest_ipw.meters.replay import ReplayMeter, load_trace

PROFILES = load_profiles()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0  # an arbitrary origin: only differences may matter

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def grid(end: float, hz: float) -> list[float]:
    return [i / hz for i in range(int(round(end * hz)) + 1)]


# (name, power P(t), energy E(t) = ∫0^t P, extra samples for exactness) — all analytic
PERIOD = 1.7


def sine_power(t: float) -> float:
    return 100.0 + 50.0 * math.sin(2 * math.pi * t / PERIOD)


def sine_energy(t: float) -> float:
    return 100.0 * t + 50.0 * PERIOD / (2 * math.pi) * (1 - math.cos(2 * math.pi * t / PERIOD))


SHAPES: dict[str, tuple[Callable[[float], float], Callable[[float], float]]] = {
    "constant": (lambda t: 50.0, lambda t: 50.0 * t),
    "ramp": (lambda t: 10.0 + 5.0 * t, lambda t: 10.0 * t + 2.5 * t * t),
    "step": (lambda t: 20.0 if t < 3.0 else 80.0, lambda t: 20.0 * t if t < 3.0 else 60.0 + 80.0 * (t - 3.0)),
    "sine": (sine_power, sine_energy),
}


def power_rows(shape: str, hz: float = 100.0, end: float = 10.0) -> list[tuple[float, float]]:
    power, _ = SHAPES[shape]
    rows = [(t, power(t)) for t in grid(end, hz)]
    if shape == "step":  # a step is two samples at one instant: power before and after it
        rows = [(t, p) for t, p in rows if t != 3.0] + [(3.0, 20.0), (3.0, 80.0)]
        rows.sort(key=lambda r: (r[0], r[1]))
    return rows


def write_trace(path: Path, rows: list[tuple[float, float]], column: str, meta: dict[str, str] | None = None) -> Path:
    meta = meta or {}
    if path.suffix == ".jsonl":
        lines = [json.dumps(meta)] if meta else []
        lines += [json.dumps({"timestamp": t, column: v}) for t, v in rows]
    else:
        lines = [f"# {k}: {v}" for k, v in meta.items()] + [f"timestamp,{column}"] + [f"{t!r},{v!r}" for t, v in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def window_joules(meter: ReplayMeter, clock: FakeClock, start: float, end: float) -> float:
    """Energy the meter gives for [start, end] seconds after its first window (which opens at 0)."""
    if meter._origin is None:
        with meter.window():
            pass
    clock.now = meter._origin + start
    meter.start()
    clock.now = meter._origin + end
    return meter.stop().joules


WINDOWS = [(0.0, 10.0), (1.234, 7.891), (2.99, 3.01), (2.5, 3.5), (4.321, 4.9)]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_power_trace_energy_matches_analytic_within_a_tenth_of_a_percent(tmp_path, shape, suffix):
    path = write_trace(tmp_path / f"{shape}{suffix}", power_rows(shape), "watts", {"provenance": "measured"})
    clock = FakeClock()
    meter = ReplayMeter(load_trace(path), clock=clock)
    _, energy = SHAPES[shape]
    for start, end in WINDOWS:
        exact = energy(end) - energy(start)
        assert window_joules(meter, clock, start, end) == pytest.approx(exact, rel=1e-3), (start, end)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_energy_counter_trace_matches_analytic(tmp_path, shape):
    _, energy = SHAPES[shape]
    rows = [(t, energy(t)) for t in grid(10.0, 20.0)]  # a counter at 20 Hz: exact at samples, linear between
    clock = FakeClock()
    meter = ReplayMeter(load_trace(write_trace(tmp_path / "e.csv", rows, "joules")), clock=clock)
    for start, end in WINDOWS[:2]:
        exact = energy(end) - energy(start)
        assert window_joules(meter, clock, start, end) == pytest.approx(exact, rel=1e-3)


def test_coarse_sine_really_misses_the_tolerance(tmp_path):
    """The 0.1% checks above are not vacuous: a 2 Hz trace of the same sine is further off."""
    clock = FakeClock()
    meter = ReplayMeter(load_trace(write_trace(tmp_path / "coarse.csv", power_rows("sine", hz=2.0), "watts")), clock=clock)
    exact = sine_energy(7.891) - sine_energy(1.234)
    assert abs(window_joules(meter, clock, 1.234, 7.891) - exact) / exact > 1e-3


def test_joules_column_is_preferred_over_watts(tmp_path):
    path = tmp_path / "both.csv"
    path.write_text("timestamp,watts,joules\n0,999,0\n1,999,10\n2,999,20\n")
    trace = load_trace(path)
    assert trace.energy(0.5, 1.5) == pytest.approx(10.0)


def test_declared_measurement_is_measured_and_says_it_is_a_replay(tmp_path):
    meta = {"provenance": "measured", "sensor": "nvml GPU0 H100 (total-energy counter)", "domain": "gpu"}
    meter = replay.create(PROFILES["cpu"], arg=str(write_trace(tmp_path / "t.csv", power_rows("constant"), "watts", meta)))
    with meter.window() as w:
        pass
    m = w.measurement
    assert m.provenance == MEASURED and m.domain == "gpu"
    assert m.sensor.startswith("replay: t.csv") and "recorded by nvml GPU0 H100" in m.sensor
    assert meter.describe()["declared_provenance"] is True


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_undeclared_provenance_is_an_estimate(tmp_path, suffix):
    meter = replay.create(PROFILES["cpu"], arg=str(write_trace(tmp_path / f"t{suffix}", power_rows("constant"), "watts")))
    with meter.window() as w:
        pass
    assert w.measurement.provenance == ESTIMATED
    assert "not declared" in w.measurement.sensor and "estimate" in w.measurement.sensor
    assert w.measurement.domain == "system"


def test_idle_baseline_and_active_energy(tmp_path):
    rows = [(0.0, 20.0), (2.0, 20.0), (2.0, 80.0), (10.0, 80.0)]  # idle at 20 W for 2 s, then 80 W
    clock = FakeClock()
    meter = ReplayMeter(load_trace(write_trace(tmp_path / "idle.csv", rows, "watts", {"provenance": "measured"})), clock=clock)
    idle = meter.measure_idle(2.0, sleep=clock.sleep)
    assert idle.watts == pytest.approx(20.0) and idle.idle_watts is None
    meter.start()
    clock.sleep(3.0)
    m = meter.stop()
    assert m.joules == pytest.approx(240.0)
    assert m.idle_watts == pytest.approx(20.0)
    assert m.joules_active == pytest.approx(180.0)
    data = m.to_dict()
    assert data["idle_watts"] == pytest.approx(20.0) and data["joules_active"] == pytest.approx(180.0)


def test_window_below_idle_is_flagged_and_clamped(tmp_path):
    rows = [(0.0, 50.0), (1.0, 50.0), (1.0, 10.0), (5.0, 10.0)]
    clock = FakeClock()
    meter = ReplayMeter(load_trace(write_trace(tmp_path / "below.csv", rows, "watts")), clock=clock)
    meter.measure_idle(1.0, sleep=clock.sleep)
    meter.start()
    clock.sleep(2.0)
    m = meter.stop()
    assert m.joules == pytest.approx(20.0) and m.joules_active == 0.0
    assert FLAG_BELOW_IDLE in m.flags


def test_short_window_is_flagged_by_the_trace_period(tmp_path):
    clock = FakeClock()
    meter = ReplayMeter(load_trace(write_trace(tmp_path / "t.csv", power_rows("constant", hz=20.0), "watts")), clock=clock)
    assert meter.update_period_s == pytest.approx(0.05)
    meter.start()
    clock.sleep(0.01)
    assert FLAG_SHORT_WINDOW in meter.stop().flags


def test_running_past_the_trace_is_an_error_not_zero(tmp_path):
    clock = FakeClock()
    meter = ReplayMeter(load_trace(write_trace(tmp_path / "t.csv", [(0, 5.0), (1, 5.0)], "watts")), clock=clock)
    meter.start()
    clock.sleep(1.5)
    with pytest.raises(MeterFailure, match="covers 1 s but the run reached 1.5 s"):
        meter.stop()


@pytest.mark.parametrize("content, message", [
    ("timestamp,volts\n0,1\n1,2\n", "needs the columns timestamp and watts"),
    ("timestamp,watts\n0,1\n", "at least two samples"),
    ("timestamp,watts\n0,1\n2,1\n1,1\n", "line 4: timestamps must not decrease"),
    ("timestamp,joules\n0,5\n1,4\n", "line 3: joules is a cumulative counter"),
    ("timestamp,watts\n0,1\n1,lots\n", "line 3: watts must be a number, got 'lots'"),
    ("timestamp,watts\n0,1\n1,nan\n", "watts must be finite"),
    ("timestamp,watts\n1,1\n1,2\n", "spans no time"),
    ("# provenance: guessed\ntimestamp,watts\n0,1\n1,1\n", "provenance must be one of measured, estimated"),
    ("# domain: wall\ntimestamp,watts\n0,1\n1,1\n", "domain must be one of"),
])
def test_malformed_csv_names_file_line_and_fix(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(IPWUsageError, match=message) as info:
        load_trace(path)
    assert str(path) in str(info.value)


def test_malformed_jsonl(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"timestamp": 0, "watts": 1}\n{oops\n')
    with pytest.raises(IPWUsageError, match="line 2: invalid JSON"):
        load_trace(path)
    path.write_text('{"timestamp": 0, "watts": 1}\n[1, 2]\n')
    with pytest.raises(IPWUsageError, match="line 2: each line must be a JSON object"):
        load_trace(path)


def test_missing_file_through_the_option(tmp_path):
    with pytest.raises(IPWUsageError, match="power trace .*nope.csv does not exist; check --ipw-meter=replay:PATH"):
        select_meter(PROFILES["cpu"], requested=f"replay:{tmp_path / 'nope.csv'}")
    with pytest.raises(IPWUsageError, match="needs a trace file"):
        select_meter(PROFILES["cpu"], requested="replay")
