"""Prefill and decode: a window split at its first-token mark, on recorded counter and gauge traces (replayed with
a fake clock, so every energy is analytic), RAPL counters on the real captured sysfs tree, NVML's counter, the
estimate, sums of meters; the record fields built from the split, their summaries and the j_per_token gate."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from support import REAL_SAMPLES

from pytest_ipw.analysis.metrics import collapse_rounds, query_rounds, round_noise, summarize
from pytest_ipw.backends.base import Generation
from pytest_ipw.hardware.profiles import load_profiles
from pytest_ipw.history.compare import Gate, compare_runs, failed_gates
from pytest_ipw.meters.base import FIRST_TOKEN, MEASURED, Measurement, Meter, PhaseMark, PowerSampler
from pytest_ipw.meters.combined import SumMeter
from pytest_ipw.meters.estimate import EstimateMeter
from pytest_ipw.meters.nvml import NvmlMeter
from pytest_ipw.meters.rapl import RaplMeter, choose_zones, discover_zones
from pytest_ipw.meters.replay import ReplayMeter, load_trace
from pytest_ipw.queries.schema import Query
from pytest_ipw.run.records import make_record
from pytest_ipw.scoring.scorers import Score

PROFILES = load_profiles()
SAMPLES = REAL_SAMPLES


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0  # an arbitrary origin: only differences matter

    def __call__(self) -> float:
        return self.now


def counter_trace(path: Path) -> Path:
    """A cumulative energy counter: 300 W for 2 s (prefill), then 50 W for 8 s (decode)."""
    rows = ["# provenance: measured", "# sensor: test counter", "# domain: gpu", "timestamp,joules"]
    for k in range(11):
        rows.append(f"{k},{300 * min(k, 2) + 50 * max(0, k - 2)}")
    path.write_text("\n".join(rows) + "\n")
    return path


def gauge_trace(path: Path) -> Path:
    """Power samples every 0.5 s: 300 W up to 2 s, a step, then 50 W (the step written at one instant)."""
    rows = ["# provenance: measured", "# sensor: test gauge", "# domain: gpu", "timestamp,watts"]
    for k in range(21):
        t = k / 2
        rows.append(f"{t},{300 if t <= 2 else 50}")
        if t == 2:
            rows.append(f"{t},50")
    path.write_text("\n".join(rows) + "\n")
    return path


def run_window(meter: Meter, clock: FakeClock, mark_at: float | None, end_at: float) -> Measurement:
    start = clock.now
    with meter.window() as window:
        if mark_at is not None:
            clock.now = start + mark_at
            window.mark()
        clock.now = start + end_at
    assert window.measurement is not None
    return window.measurement


@pytest.mark.parametrize("make_trace, method", [(counter_trace, "recorded counter read at the mark"),
                                                (gauge_trace, "recorded power samples split at the mark")])
def test_recorded_trace_is_split_at_the_first_token(tmp_path, make_trace, method):
    clock = FakeClock()
    meter = ReplayMeter(load_trace(make_trace(tmp_path / "trace.csv")), clock=clock)
    measurement = run_window(meter, clock, mark_at=2.0, end_at=10.0)
    assert measurement.joules == pytest.approx(1000.0)
    mark = measurement.phase_mark(FIRST_TOKEN)
    assert mark is not None and mark.method == method and mark.precise
    assert (mark.seconds, mark.joules) == (pytest.approx(2.0), pytest.approx(600.0))
    assert measurement.to_dict()["marks"][0]["joules"] == pytest.approx(600.0)


@pytest.mark.parametrize("make_trace, expected", [(counter_trace, 450.0), (gauge_trace, 450.0)])
def test_a_mark_between_samples_is_interpolated(tmp_path, make_trace, expected):
    clock = FakeClock()
    meter = ReplayMeter(load_trace(make_trace(tmp_path / "trace.csv")), clock=clock)
    measurement = run_window(meter, clock, mark_at=1.5, end_at=10.0)
    assert measurement.phase_mark().joules == pytest.approx(expected)


def test_a_later_window_is_split_on_its_own_offsets(tmp_path):
    clock = FakeClock()
    meter = ReplayMeter(load_trace(counter_trace(tmp_path / "trace.csv")), clock=clock)
    run_window(meter, clock, mark_at=None, end_at=1.0)  # the trace starts with the first window
    measurement = run_window(meter, clock, mark_at=1.0, end_at=4.0)  # offsets 1..5, mark at 2
    assert measurement.joules == pytest.approx(300 + 3 * 50)
    assert measurement.phase_mark().joules == pytest.approx(300)


def test_a_split_shorter_than_the_sensor_period_is_imprecise(tmp_path):
    clock = FakeClock()
    meter = ReplayMeter(load_trace(gauge_trace(tmp_path / "trace.csv")), clock=clock)  # period 0.5 s
    mark = run_window(meter, clock, mark_at=0.1, end_at=3.0).phase_mark()
    assert mark.joules == pytest.approx(30.0) and not mark.precise


def test_only_the_first_mark_of_a_label_counts(tmp_path):
    clock = FakeClock()
    meter = ReplayMeter(load_trace(counter_trace(tmp_path / "trace.csv")), clock=clock)
    with meter.window() as window:
        clock.now += 1.0
        window.mark()
        clock.now += 1.0
        window.mark()
        clock.now += 1.0
    assert [m.seconds for m in window.measurement.marks] == [pytest.approx(1.0)]


def test_power_sampler_splits_its_last_window_like_it_integrated_it():
    sampler = PowerSampler(lambda: 0.0, interval_s=1.0)
    sampler.last_trace = ([0.0, 1.0, 2.0, 3.0], [100.0, 100.0, 50.0, 50.0])
    assert sampler.energy_until(1.5) == (pytest.approx(100 + 0.5 * (100 + 75) / 2), 1.5)
    assert sampler.energy_until(99.0) == (pytest.approx(100 + 75 + 50), 3.0)  # held at the trace's end
    assert sampler.energy_until(-1.0) == (0.0, 0.0)


def test_rapl_counters_on_the_real_tree_are_read_once_more_at_the_mark(tmp_path):
    with tarfile.open(SAMPLES / "rapl_sysfs_intel-laptop_codecarbon2020.tar.gz") as archive:
        members = [m for m in archive.getmembers() if not m.issym()
                   or not os.path.normpath(os.path.join(os.path.dirname(m.name), m.linkname)).startswith("..")]
        archive.extractall(tmp_path, members=members, filter="fully_trusted")
    zones = choose_zones(discover_zones(tmp_path), None)
    package = next(z for z in zones if z.name.startswith("package"))
    wrap = package.max_range_uj
    # per read of every zone: the constructor's check, the start, the mark, the end; the package wraps before the mark
    scripted = {z.energy_file: iter(values) for z, values in zip(zones, [
        [wrap - 1_000_000, wrap - 1_000_000, 2_000_000, 5_000_000] if z is package else [0, 0, 500_000, 1_500_000]
        for z in zones])}

    def reader(path: Path) -> str:
        return str(next(scripted[path])) if path in scripted else path.read_text()

    clock = FakeClock()
    meter = RaplMeter(zones, reader, clock=clock)
    measurement = run_window(meter, clock, mark_at=0.5, end_at=2.0)
    mark = measurement.phase_mark()
    others = len(zones) - 1
    assert mark.method == "counter read at the mark"
    assert mark.joules == pytest.approx(3.0 + 0.5 * others)  # 1 J to the wrap + 2 J after it, + 0.5 J per other zone
    assert measurement.joules == pytest.approx(6.0 + 1.5 * others)


class CounterNvml:
    """pynvml with one GPU whose counter answers scripted mJ readings."""

    class NVMLError(Exception):
        pass

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, readings: list[int]):
        self.readings = iter(readings)

    def nvmlDeviceGetHandleByIndex(self, index):
        return index

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H200"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        return next(self.readings)

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 40

    def nvmlShutdown(self):
        pass


def test_nvml_counter_is_read_at_the_mark():
    meter = NvmlMeter(CounterNvml([1_000, 1_000, 1_500, 3_000]), 0)  # probe, start, mark, end (mJ)
    with meter.window() as window:
        window.mark()
    mark = window.measurement.phase_mark()
    assert window.measurement.joules == pytest.approx(2.0)
    assert (mark.joules, mark.method) == (pytest.approx(0.5), "counter read at the mark")


def test_nvml_gauge_twin_reads_the_same_gpu_by_its_power_gauge():
    fake = CounterNvml([1_000])
    calls = []
    fake.nvmlInit = lambda: calls.append("init")
    fake.nvmlDeviceGetPowerUsage = lambda handle: 250_000
    meter = NvmlMeter(fake, 0)
    twin = meter.gauge_twin()
    assert calls == ["init"] and twin is not None
    assert twin.reading == "gauge" and not twin.uses_counter and twin.gpus[0].index == 0
    assert twin.gauge_twin() is None


def test_estimate_is_split_with_cpu_times_read_at_the_mark():
    clock = FakeClock()
    times = iter([(0.0, 0.0), (1.0, 2.0), (1.0, 8.0)])  # (busy, total) CPU seconds: start, mark, end
    meter = EstimateMeter(PROFILES["cpu"], cpu_times=lambda: next(times), clock=clock)
    measurement = run_window(meter, clock, mark_at=1.0, end_at=4.0)
    profile = PROFILES["cpu"]
    mark = measurement.phase_mark()
    assert mark.joules == pytest.approx(1.0 * (profile.idle_w + (profile.tdp_w - profile.idle_w) * 0.5))
    assert measurement.joules == pytest.approx(4.0 * (profile.idle_w + (profile.tdp_w - profile.idle_w) * 0.125))
    assert "estimate" in mark.method


def test_a_sum_of_meters_adds_up_their_splits(tmp_path):
    clock = FakeClock()
    first = ReplayMeter(load_trace(counter_trace(tmp_path / "a.csv")), clock=clock)
    trace = gauge_trace(tmp_path / "b.csv")
    trace.write_text(trace.read_text().replace("# domain: gpu", "# domain: cpu"))
    second = ReplayMeter(load_trace(trace), clock=clock)
    measurement = run_window(SumMeter([first, second]), clock, mark_at=2.0, end_at=10.0)
    assert measurement.phase_mark().joules == pytest.approx(1200.0)
    assert [p.phase_mark().joules for p in measurement.parts] == [pytest.approx(600.0)] * 2


class Unsplittable(Meter):
    name = "plain"
    provenance = MEASURED

    def _begin(self) -> None:
        pass

    def _end(self) -> Measurement:
        return Measurement(joules=4.0, seconds=2.0, sensor="plain", provenance=MEASURED, domain="system")


class BrokenAtTheMark(Unsplittable):
    def _mark(self, label):
        raise OSError("device gone")


def test_a_meter_that_cannot_split_says_so_and_keeps_its_figure():
    meter = Unsplittable()
    with meter.window() as window:
        window.mark()
    mark = window.measurement.phase_mark()
    assert window.measurement.joules == 4.0
    assert mark.joules is None and "cannot split" in mark.method


def test_a_failing_read_at_the_mark_never_ends_the_query():
    meter = BrokenAtTheMark()
    with meter.window() as window:
        window.mark()
    assert window.measurement.joules == 4.0
    assert "device gone" in window.measurement.phase_mark().method


def test_a_mark_outside_a_window_is_a_programming_error():
    with pytest.raises(RuntimeError, match="no open window"):
        Unsplittable().mark()


# -- records -------------------------------------------------------------------------------------------

QUERY = Query(id="q1", prompt="What is 2 + 2?", answer="4", domain="math", split="reasoning", scorer="numeric")


def record_of(measurement: Measurement, tokens_in: int = 10, tokens_out: int = 5, **kwargs) -> dict:
    generation = Generation(text="4", tokens_in=tokens_in, tokens_out=tokens_out, latency_s=measurement.seconds,
                            ttft_s=0.5)
    return make_record(query=QUERY, model="m", accelerator="cpu", benchmark="b", generation=generation,
                       measurement=measurement, score=Score(correct=True, unscorable=False, extracted="4"), **kwargs)


def measured(joules: float = 10.0, seconds: float = 2.0, marks: tuple = (), idle: float | None = None) -> Measurement:
    return Measurement(joules=joules, seconds=seconds, sensor="s", provenance=MEASURED, domain="gpu", marks=marks,
                       idle_watts=idle)


def test_record_carries_prefill_and_decode_and_energy_per_token():
    record = record_of(measured(marks=(PhaseMark(FIRST_TOKEN, 0.5, 4.0, "counter read at the mark"),)))
    assert (record["prefill_joules"], record["prefill_s"]) == (4.0, 0.5)
    assert (record["decode_joules"], record["decode_s"]) == (6.0, 1.5)
    assert record["decode_tokens"] == 4  # the first token came out of the prefill
    assert record["joules_per_input_token"] == pytest.approx(0.4)
    assert record["joules_per_output_token"] == pytest.approx(1.5)
    assert record["phase_split"] == "counter read at the mark"
    assert record["round"] == 1 and record["prefix_cache_reset"] is None


def test_active_energy_per_token_subtracts_the_idle_floor_per_phase():
    record = record_of(measured(marks=(PhaseMark(FIRST_TOKEN, 0.5, 4.0, "m"),), idle=2.0), energy_basis="active")
    assert record["joules_per_input_token"] == pytest.approx((4.0 - 1.0) / 10)
    assert record["joules_per_output_token"] == pytest.approx((6.0 - 3.0) / 4)
    assert record["prefill_joules"] == 4.0  # the phases themselves stay total energy, like joules


@pytest.mark.parametrize("marks, missing, reason", [
    ((), "the vllm backend does not report its first token", "none: the vllm backend does not report its first token"),
    ((), None, "none: the meter was not marked at the first token"),
    ((PhaseMark(FIRST_TOKEN, 0.5, None, "the plain meter cannot split a window at a mark", False),), None,
     "none: the plain meter cannot split a window at a mark"),
])
def test_record_without_a_split_says_why(marks, missing, reason):
    record = record_of(measured(marks=marks), phase_missing=missing)
    assert record["phase_split"] == reason
    assert record["prefill_joules"] is None and record["joules_per_output_token"] is None


def test_imprecise_split_and_single_token_answers():
    record = record_of(measured(marks=(PhaseMark(FIRST_TOKEN, 0.01, 0.1, "gauge samples split at the mark", False),)),
                       tokens_out=1, tokens_in=0)
    assert "imprecise" in record["phase_split"]
    assert record["decode_tokens"] == 0
    assert record["joules_per_output_token"] is None and record["joules_per_input_token"] is None


# -- summaries, repeats, compare ----------------------------------------------------------------------

def synthetic(query_id: str, decode_joules: float, prefill_joules: float = 1.0, round_number: int = 1,
              correct: bool = True, decode_tokens: int = 9) -> dict:
    joules = prefill_joules + decode_joules
    return {"query_id": query_id, "domain": "math", "model": "m", "accelerator": "cpu", "benchmark": "b",
            "correct": correct, "unscorable": False, "joules": joules, "watts": joules / 2, "seconds": 2.0,
            "latency_s": 2.0, "tokens_out": decode_tokens + 1, "tokens_in": 20, "provenance": MEASURED, "meter": "s",
            "energy_domain": "gpu", "prefill_joules": prefill_joules, "prefill_s": 0.5, "decode_joules": decode_joules,
            "decode_s": 1.5, "decode_tokens": decode_tokens, "round": round_number, "prefix_cache_reset": True}


def test_summary_gives_prefill_decode_and_ratio_of_sums_per_token():
    records = [synthetic("a", 9.0, decode_tokens=9), synthetic("b", 3.0, decode_tokens=1)]
    records.append({**synthetic("c", 0.0), "prefill_joules": None, "decode_joules": None, "decode_tokens": None})
    summary = summarize(records)
    assert summary.phase_queries == 2 and summary.queries == 3
    assert summary.joules_per_output_token == pytest.approx(12.0 / 10)  # not the mean of 1.0 and 3.0
    assert summary.joules_per_input_token == pytest.approx(2.0 / 40)
    assert summary.prefill_joules == pytest.approx(1.0) and summary.decode_joules == pytest.approx(6.0)


def test_rounds_are_averaged_per_query_and_their_spread_reported():
    records = [synthetic("a", d, round_number=r + 1, correct=c)
               for r, (d, c) in enumerate([(9.0, True), (11.0, False), (10.0, True)])]
    records += [synthetic("b", 5.0, round_number=r + 1, correct=False) for r in range(3)]
    collapsed = collapse_rounds(records)
    assert len(collapsed) == 2 and collapsed[0]["rounds"] == 3
    assert collapsed[0]["correct"] is True and collapsed[1]["correct"] is False  # 2 of 3 rounds, 0 of 3
    assert collapsed[0]["joules"] == pytest.approx(11.0)
    summary = summarize(records)
    assert (summary.queries, summary.correct, summary.rounds) == (2, 1, 3)
    cv_a = query_rounds(records)[0]["cv_joules"]
    assert cv_a == pytest.approx(1.0 / 11.0)  # stdev of 10, 12, 11 over their mean
    (noise,) = round_noise(records)
    assert noise["energy_cv_max"] == pytest.approx(cv_a) and noise["prefix_cache_reset"] is True
    assert summary.energy_cv_median == pytest.approx(noise["energy_cv_median"])


def test_a_run_without_repeats_is_not_copied():
    records = [synthetic("a", 1.0)]
    assert collapse_rounds(records)[0] is records[0]
    assert round_noise(records) == []


def test_j_per_token_gate_catches_a_decode_regression_and_uses_the_rounds():
    baseline = [synthetic(f"q{i}", 9.0 + 0.1 * (i % 3), round_number=r) for i in range(30) for r in (1, 2)]
    current = [synthetic(f"q{i}", 11.7 + 0.1 * (i % 3), round_number=r) for i in range(30) for r in (1, 2)]
    changes = compare_runs({"records": baseline}, {"records": current}, by_domain=False)
    (change,) = [c for c in changes if c.metric == "j_per_token"]
    assert change.queries == 30  # the rounds of a query are averaged before pairing
    assert change.relative == pytest.approx(2.7 / 9.1, rel=1e-3) and change.verdict == "worse"
    assert failed_gates(changes, [Gate.parse("j_per_token:10%")])
    assert not failed_gates(changes, [Gate.parse("j_per_token:40%")])


def test_runs_without_a_split_have_no_j_per_token_change():
    plain = [{**synthetic(f"q{i}", 1.0), "decode_joules": None, "decode_tokens": None} for i in range(5)]
    changes = compare_runs({"records": plain}, {"records": plain}, by_domain=False)
    assert "j_per_token" not in {c.metric for c in changes}
