"""One timeline per sensor after the run: overlapping windows split exactly from their readings, batches and
xdist workers charged by one rule, a coarse counter's updates spread instead of landing on one query.

A simulated device gives the ground truth: its power over time is known, so is its energy counter, and the
meters under test read that counter (or sample that power) exactly as a real sensor would be read."""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pytest_ipw.backends.base import Generation
from pytest_ipw.run.batching import Batcher
from pytest_ipw.meters.base import (
    FLAG_NO_UPDATE,
    FLAG_UNATTRIBUTABLE,
    MEASURED,
    POWER,
    Measurement,
    Meter,
    Readings,
    counter_readings,
    energy_exclusions,
)
from pytest_ipw.meters.trace import (
    COARSE_PERIOD_S,
    InconsistentReadings,
    counter_timeline,
    counter_union_energy,
    integrate_between,
    split_counter,
    split_overlapping_windows,
    union_energy,
)
from pytest_ipw.analysis.metrics import summarize
from pytest_ipw.queries.schema import Query
from pytest_ipw.run.records import FLAG_SPREAD, make_record, share_overlapping_energy
from pytest_ipw.scoring.scorers import Score

T0 = 1_800_000_000.0  # a wall-clock origin: records carry time.time() values


@dataclass
class Device:
    """Power is ``watts[k]`` from ``starts[k]`` to the next start (constant before the first and after the last)."""

    starts: list[float]
    watts: list[float]

    def energy(self, t: float) -> float:
        """The true cumulative energy counter at ``t`` (0 at the first start)."""
        total, k = 0.0, 0
        while k + 1 < len(self.starts) and self.starts[k + 1] <= t:
            total += self.watts[k] * (self.starts[k + 1] - self.starts[k])
            k += 1
        return total + self.watts[k] * (t - self.starts[k])

    def power(self, t: float) -> float:
        return self.watts[max(0, bisect.bisect_right(self.starts, t) - 1)]


def counter_record(device: Device, start: float, end: float, *, period: float = 0.1, offset: float = 5_000.0,
                   sensor: str = "sim: counter", reads=None) -> dict:
    """The record of a query whose window [start, end] read ``device``'s counter at both edges
    (``reads(t)`` gives the counter's value as read at t: exact by default)."""
    read = reads or (lambda t: offset + device.energy(t))
    joules = read(end) - read(start)
    return {"query_id": f"q{start:.6f}-{end:.6f}", "model": "m", "accelerator": "gpu", "meter": sensor, "domain": "d",
            "correct": True, "unscorable": False, "latency_s": end - start, "tokens_out": 1, "provenance": MEASURED,
            "energy_domain": "gpu", "energy_basis": "total", "idle_watts": None, "joules_active": None,
            "energy_parts": [], "joules": joules, "seconds": end - start,
            "watts": joules / (end - start) if end > start else 0.0, "meter_flags": [],
            "window_start": start, "window_end": end,
            "energy_readings": counter_readings((start, [read(start)]), (end, [read(end)]), period).to_dict()}


def union(windows):
    merged = []
    for a, b in sorted(windows):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return merged


@st.composite
def devices(draw):
    steps = draw(st.lists(st.floats(0.05, 5.0), min_size=1, max_size=12))
    starts = list(itertools.accumulate([T0] + steps))
    watts = draw(st.lists(st.floats(0.0, 700.0), min_size=len(starts), max_size=len(starts)))
    return Device(starts, watts)


@st.composite
def windows_of(draw, device: Device, max_windows: int = 8):
    span = device.starts[-1] + 5.0 - T0
    out = []
    for _ in range(draw(st.integers(1, max_windows))):
        start = T0 + draw(st.floats(0.0, span))
        out.append((start, start + draw(st.floats(0.001, span))))
    return out


# --------------------------------------------------------------------------- item 2: the issue's example


def test_the_issue_example_is_split_exactly_from_the_counter():
    """(0-10 s, 10 J) and (9-10 s, 10 J) on one device: 10 J used in all, all of it in the last second.
    The old split (mean power of the windows open) charged 11.75 J and 2.75 J: 14.5 J for 10 J used."""
    device = Device([T0, T0 + 9.0], [0.0, 10.0])
    records = [counter_record(device, T0, T0 + 10.0), counter_record(device, T0 + 9.0, T0 + 10.0)]
    assert [r["joules"] for r in records] == [10.0, 10.0]
    a, b = share_overlapping_energy(records)
    assert (a["joules"], b["joules"]) == (pytest.approx(5.0), pytest.approx(5.0))  # the last second, halved
    assert a["joules_window"] == b["joules_window"] == 10.0
    assert "energy-shared:2" in a["meter_flags"] and "energy-shared:2" in b["meter_flags"]
    assert (a["seconds"], b["seconds"]) == (10.0, 1.0) and (a["watts"], b["watts"]) == (0.5, 5.0)


def test_the_issue_example_without_readings_is_fitted_and_flagged():
    shares, most = split_overlapping_windows([(0.0, 10.0, 10.0), (9.0, 10.0, 10.0)])
    assert shares[0] <= 10.0 and shares[1] <= 10.0 and sum(shares) == pytest.approx(10.0, rel=1e-2)
    assert shares == [pytest.approx(5.0, abs=0.05), pytest.approx(5.0, abs=0.05)] and most == [2, 2]


# --------------------------------------------------------------------------- item 2: properties


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_counter_shares_never_exceed_their_window_and_add_up_to_the_union(data):
    device = data.draw(devices())
    windows = data.draw(windows_of(device))
    measured = [counter_record(device, s, e) for s, e in windows]
    records = share_overlapping_energy(measured)
    true_union = math.fsum(device.energy(b) - device.energy(a) for a, b in union(windows))
    assert math.fsum(r["joules"] for r in records) == pytest.approx(true_union, rel=1e-9, abs=1e-6)
    for record, before, (start, end) in zip(records, measured, windows):
        raw = before["joules"]  # what the window read
        assert -1e-9 <= record["joules"] <= raw * (1 + 1e-9) + 1e-6
        alone = all(e2 <= start or s2 >= end for s2, e2 in windows if (s2, e2) != (start, end))
        if alone and windows.count((start, end)) == 1:
            assert record["joules"] == raw and not record["meter_flags"]  # untouched
        assert record["seconds"] == end - start  # always the query's own window


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_split_counter_is_exact_on_any_monotone_counter(data):
    device = data.draw(devices())
    windows = data.draw(windows_of(device))
    readings = [(t, [device.energy(t)]) for w in windows for t in w]
    timeline = counter_timeline(readings, [None], period_s=0.0)
    shares, concurrency = split_counter(timeline, windows)
    assert math.fsum(shares) == pytest.approx(counter_union_energy(timeline, windows), rel=1e-9, abs=1e-6)
    for share, (start, end), load in zip(shares, windows, concurrency):
        assert share <= timeline.at(end) - timeline.at(start) + 1e-6 and load >= 1


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_gauge_shares_add_up_to_the_shared_trace(data):
    device = data.draw(devices())
    windows = data.draw(windows_of(device, max_windows=5))
    records = []
    for start, end in windows:  # each window samples the device's power itself, at its own times
        inner = sorted(data.draw(st.lists(st.floats(start, end), max_size=6)))
        times = [start, *inner, end]
        readings = Readings(POWER, tuple(times), tuple((device.power(t),) for t in times), 0.05)
        joules = integrate_between(list(times), [device.power(t) for t in times], start, end)
        record = counter_record(device, start, end)
        record.update(joules=joules, energy_readings=readings.to_dict(), meter="sim: gauge")
        records.append(record)
    assume(all(e > s for s, e in windows))
    shared = share_overlapping_energy(records)
    samples = sorted((t, w[0]) for r in records for t, w in zip(r["energy_readings"]["times"],
                                                                   r["energy_readings"]["values"]))
    times, watts = [t for t, _ in samples], [w for _, w in samples]
    assert math.fsum(r["joules"] for r in shared) == pytest.approx(union_energy(times, watts, windows), rel=1e-9,
                                                                    abs=1e-6)
    for record, (start, end) in zip(shared, windows):
        assert record["joules"] <= integrate_between(times, watts, start, end) + 1e-6


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0.001, 10), st.floats(0, 500)), min_size=1, max_size=12))
def test_fitted_shares_never_exceed_the_raw_windows(raw):
    windows = [(start, start + length, joules) for start, length, joules in raw]
    shares, most = split_overlapping_windows(windows)
    for share, (_, _, joules), concurrency in zip(shares, windows, most):
        assert -1e-9 <= share <= joules
        if concurrency == 1:
            assert share == joules


def test_counter_readings_that_go_backwards_fall_back_to_the_fit():
    device = Device([T0], [50.0])
    a, b = counter_record(device, T0, T0 + 2.0), counter_record(device, T0 + 1.0, T0 + 3.0, offset=0.0)  # a reset
    with pytest.raises(InconsistentReadings):
        counter_timeline([(T0, [5000.0]), (T0 + 1.0, [50.0])], [None], 0.0)
    shared = share_overlapping_energy([a, b])
    assert all("energy-shared-without-readings" in r["meter_flags"] for r in shared)
    assert all(r["joules"] <= r["joules_window"] for r in shared)


def test_a_wrapping_counter_is_unwrapped_across_windows():
    wrap = 1_000.0
    device = Device([T0], [100.0])
    reads = lambda t: (900.0 + device.energy(t)) % wrap  # noqa: E731 - wraps 1 s into the run
    records = [counter_record(device, T0, T0 + 2.0, reads=reads), counter_record(device, T0 + 1.5, T0 + 4.0, reads=reads)]
    for record in records:
        record["energy_readings"]["wrap_j"] = [wrap]
    shared = share_overlapping_energy(records)
    assert math.fsum(r["joules"] for r in shared) == pytest.approx(400.0)  # 4 s at 100 W, counted once
    assert [r["joules"] for r in shared] == [pytest.approx(175.0), pytest.approx(225.0)]


# --------------------------------------------------------------------------- item 3: one rule on both paths


class SimulatedClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class CounterMeter(Meter):
    """Reads the simulated device's energy counter at both edges, as the NVML or RAPL meter does."""

    name = "sim"
    update_period_s = 0.0

    def __init__(self, device: Device, clock: SimulatedClock):
        super().__init__()
        self.device, self.clock = device, clock

    @property
    def sensor(self) -> str:
        return "sim: device counter"

    def _begin(self) -> None:
        self._t0 = self.clock()

    def _end(self) -> Measurement:
        t0, t1 = self._t0, self.clock()
        e0, e1 = self.device.energy(t0), self.device.energy(t1)
        return Measurement(joules=e1 - e0, seconds=t1 - t0, sensor=self.sensor, provenance=MEASURED, domain="gpu",
                           samples=2, readings=counter_readings((t0, [e0]), (t1, [e1]), 0.0), started_at=t0,
                           ended_at=t1)


class BatchEngine:
    """generate_batch takes ``seconds`` of the simulated clock, whatever the batch size."""

    def __init__(self, clock: SimulatedClock, seconds: float):
        self.clock, self.seconds = clock, seconds

    def generate_batch(self, prompts):
        self.clock.now += self.seconds
        return [Generation(text="4", tokens_in=5, tokens_out=1, latency_s=self.seconds, ttft_s=None) for _ in prompts]


QUERIES = [Query(id=f"q{i}", prompt=f"What is {i}?", answer="4", domain="math", split="chat", scorer="numeric")
           for i in range(4)]
SCORE = Score(correct=True, unscorable=False, extracted="4")


def make(query, generation, measurement):
    return make_record(query=query, model="m", accelerator="h100", benchmark="test_bench.py::test_answer",
                       generation=generation, measurement=measurement, score=SCORE)


def test_batched_and_xdist_queries_are_charged_alike_on_the_same_timeline():
    """4 queries in flight for the same 2 s on a 100 W device: once as one batch of 4 (--ipw-batch-size=4), once
    as 4 xdist workers each metering its own window. Before, the batch path divided joules and seconds by 4
    (50 J over 0.5 s: 100 W per query) and the xdist path joules only (50 J over 2 s: 25 W per query)."""
    device = Device([T0], [100.0])
    clock = SimulatedClock()
    meter, engine = CounterMeter(device, clock), BatchEngine(clock, 2.0)
    batcher = Batcher(4)
    batched = [make(q, *batcher.answer(q, QUERIES[i + 1:], engine, meter)) for i, q in enumerate(QUERIES)]
    xdist = []
    for query in QUERIES:  # four workers, four meters, the same two seconds
        clock.now = T0 + 2.0
        worker = CounterMeter(device, clock)
        clock.now = T0 + 2.0
        worker.start()
        clock.now = T0 + 4.0
        xdist.append(make(query, Generation("4", 5, 1, 2.0, None), worker.stop()))
    for path in (batched, xdist):
        for record in share_overlapping_energy(path):
            assert (record["joules"], record["seconds"], record["watts"]) == (50.0, 2.0, 25.0)
            assert record["joules_window"] == 200.0
    # the batched records already carry their share before the controller runs (JUnit, journal)
    assert [(r["joules"], r["watts"]) for r in batched] == [(50.0, 25.0)] * 4
    assert summarize(share_overlapping_energy(batched)).mean_watts == summarize(share_overlapping_energy(xdist)).mean_watts


def test_a_batch_missing_members_still_counts_all_of_them():
    """Resuming can bring back 2 records of a batch of 4: they keep 1/4 each, not 1/2."""
    device = Device([T0], [100.0])
    clock = SimulatedClock()
    batcher = Batcher(4)
    records = [make(q, *batcher.answer(q, QUERIES[i + 1:], BatchEngine(clock, 2.0), CounterMeter(device, clock)))
               for i, q in enumerate(QUERIES)]
    kept = share_overlapping_energy(records[:2])
    assert [r["joules"] for r in kept] == [50.0, 50.0]


# --------------------------------------------------------------------------- item 8: coarse counters


def dcgm_reads(device: Device, period: float = 30.0, first_update: float = T0 + 1.0):
    """A dcgm-exporter counter: it shows the device's energy as of its last update (every ``period`` s)."""
    def read(t: float) -> float:
        last = first_update + math.floor((t - first_update) / period) * period
        return 7_000.0 + device.energy(last)  # (the device drew its first power level before T0, too)
    return read


def test_a_coarse_counter_is_spread_over_its_updates_never_0_or_a_whole_period():
    """100 W, a 30 s exporter, 3 s queries back to back for 2 minutes. Read raw, 9 of every 10 queries show 0 J
    and the tenth 3000 J; spread over the observed updates, each query between the first and the last observed
    update gets its 300 J, and the others are flagged and left out of the means."""
    device = Device([T0], [100.0])
    read = dcgm_reads(device)
    windows = [(T0 + 3.0 * k, T0 + 3.0 * (k + 1)) for k in range(40)]
    records = [counter_record(device, s, e, period=30.0, reads=read, sensor="sim: dcgm") for s, e in windows]
    for record in records:
        if record["joules"] == 0:
            record["meter_flags"].append(FLAG_NO_UPDATE)  # what the meter says of a raw 0 (when long enough)
    raw = [r["joules"] for r in records]
    assert raw.count(0.0) == 36 and raw.count(3000.0) == 4  # the raw figures: a stale 0 or a whole period's jump
    shared = share_overlapping_energy(records)
    placed = [r for r in shared if FLAG_UNATTRIBUTABLE not in r["meter_flags"]]
    left_out = [r for r in shared if FLAG_UNATTRIBUTABLE in r["meter_flags"]]
    assert len(placed) >= 25 and len(placed) + len(left_out) == 40
    for record in placed:
        assert record["joules"] == pytest.approx(300.0) and record["watts"] == pytest.approx(100.0)
        assert FLAG_SPREAD in record["meter_flags"] and FLAG_NO_UPDATE not in record["meter_flags"]
    assert all(energy_exclusions(r["meter_flags"]) for r in left_out)
    summary = summarize(shared)
    assert summary.mean_watts == pytest.approx(100.0) and summary.energy_excluded == len(left_out)


@settings(max_examples=60, deadline=None)
@given(st.floats(0.5, 29.5), st.floats(1.0, 8.0), st.integers(0, 3))
def test_coarse_spreading_never_charges_more_than_the_run_used(first_update, length, gap):
    device = Device([T0, T0 + 40.0, T0 + 75.0], [80.0, 300.0, 20.0])
    read = dcgm_reads(device, first_update=T0 + first_update)
    windows = [(T0 + k * (length + gap), T0 + k * (length + gap) + length) for k in range(int(120 // (length + gap)))]
    records = share_overlapping_energy([counter_record(device, s, e, period=30.0, reads=read) for s, e in windows])
    placed = [r for r in records if FLAG_UNATTRIBUTABLE not in r["meter_flags"]]
    # between its first and last observed update the rebuilt counter is exact at each update: the windows'
    # total can never exceed what the counter rose by over the run
    assert math.fsum(r["joules"] for r in placed) <= read(windows[-1][1]) - read(windows[0][0]) + 1e-6
    assert all(r["joules"] > 0 for r in placed)  # never a raw 0: the device always drew power


def test_fine_counters_are_taken_at_face_value():
    assert COARSE_PERIOD_S == 1.0
    timeline = counter_timeline([(0.0, [10.0]), (1.0, [12.0]), (1.0, [12.5]), (3.0, [20.0])], [None], 0.1)
    assert not timeline.coarse and timeline.times == [0.0, 1.0, 3.0] and timeline.joules == [10.0, 12.5, 20.0]
