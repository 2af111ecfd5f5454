"""powermetrics: the recorded M4 Max plist, a NUL-separated multi-sample stream made from it, and the meter
driving a real subprocess that streams such samples (no Mac needed)."""

from __future__ import annotations

import gzip
import plistlib
import re
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import REAL_SAMPLES

from pytest_ipw.hardware.profiles import load_profiles
from pytest_ipw.meters import powermetrics
from pytest_ipw.meters.base import MEASURED, MeterFailure
from pytest_ipw.meters.powermetrics import (
    SOURCE_ENERGY,
    SOURCE_POWER,
    PlistStream,
    PowermetricsMeter,
    parse_sample,
    parse_stream,
)
from pytest_ipw.meters.registry import MeterUnavailable, select_meter

RECORDED = REAL_SAMPLES / "powermetrics_plist_M4-Max_Mac16-5_macOS26.2_full_1sample.plist.gz"
PROFILES = load_profiles()


@pytest.fixture(scope="module")
def recorded() -> bytes:
    return gzip.open(RECORDED).read()


def variant(data: bytes, *, cpu_mj: int, gpu_mj: int, ane_mj: int, elapsed_ns: int) -> bytes:
    """The recorded sample with other processor energies and interval; everything else byte-identical.
    Only the first gpu_energy is the processor's (the gpu block's own comes later and stays 284)."""
    for key, value in (("cpu_energy", cpu_mj), ("gpu_energy", gpu_mj), ("ane_energy", ane_mj), ("elapsed_ns", elapsed_ns)):
        data, n = re.subn(rb"(<key>" + key.encode() + rb"</key>\s*<integer>)\d+(</integer>)",
                          rb"\g<1>" + str(value).encode() + rb"\g<2>", data, count=1)
        assert n == 1, key
    return data


def test_recorded_sample_uses_processor_energy(recorded: bytes):
    assert b"\0" not in recorded  # a -n 1 capture: no separator at all
    [sample] = parse_stream(recorded)
    assert sample.source == SOURCE_ENERGY
    assert sample.elapsed_s == pytest.approx(1.023685416)
    assert (sample.cpu_j, sample.gpu_j, sample.ane_j) == (3.049, 0.276, 0.0)  # processor.gpu_energy, not gpu's 284
    assert sample.joules == pytest.approx(3.325)
    assert sample.thermal_pressure == "Nominal"
    # the energy figures agree with the sample's own power figures (mJ / s = mW)
    assert sample.cpu_j / sample.elapsed_s * 1000 == pytest.approx(2978.45, rel=2e-3)


def test_power_fallback_when_energy_keys_are_absent(recorded: bytes):
    document = plistlib.loads(recorded)
    for key in ("cpu_energy", "gpu_energy", "ane_energy"):
        del document["processor"][key]
    sample = parse_sample(document)
    assert sample.source == SOURCE_POWER
    assert sample.cpu_j == pytest.approx(2.97845 * 1.023685416)
    assert sample.gpu_j == pytest.approx(0.269614 * 1.023685416)
    # and a stream that began with energy keys does not silently switch to power
    with pytest.raises(ValueError, match="earlier samples had"):
        parse_sample(document, SOURCE_ENERGY)


def test_non_powermetrics_plist_is_rejected():
    with pytest.raises(ValueError, match="processor"):
        parse_sample({"elapsed_ns": 1})


def make_stream(recorded: bytes, energies: list[tuple[int, int, int]], trailing_nul: bool = True) -> bytes:
    samples = [variant(recorded, cpu_mj=c, gpu_mj=g, ane_mj=a, elapsed_ns=50_000_000) for c, g, a in energies]
    return b"\0".join(samples) + (b"\0" if trailing_nul else b"")


ENERGIES = [(500, 250, 50), (610, 0, 0), (123, 456, 789), (1, 2, 3)]


def test_multi_sample_stream(recorded: bytes):
    samples = parse_stream(make_stream(recorded, ENERGIES))
    assert [(s.cpu_j, s.gpu_j, s.ane_j) for s in samples] == [(c / 1000, g / 1000, a / 1000) for c, g, a in ENERGIES]
    assert all(s.elapsed_s == 0.05 for s in samples)
    # the newest sample is complete at </plist>, without waiting for the next separator
    assert len(parse_stream(make_stream(recorded, ENERGIES, trailing_nul=False))) == len(ENERGIES)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40_000), min_size=1, max_size=30))
def test_stream_parsing_does_not_depend_on_chunking(cuts):
    data = make_stream(gzip.open(RECORDED).read(), ENERGIES)
    positions = sorted({min(c * 7, len(data)) for c in cuts} | {len(data)})
    stream, documents, previous = PlistStream(), [], 0
    for position in positions:
        documents.extend(stream.feed(data[previous:position]))
        previous = position
    assert [d["processor"]["cpu_energy"] for d in documents] == [c for c, _, _ in ENERGIES]


EMITTER = textwrap.dedent('''
    import gzip, re, sys, time
    data = gzip.open(sys.argv[1]).read()
    interval, watts = float(sys.argv[2]), [float(w) for w in sys.argv[3].split(",")]
    def sub(data, key, value):
        return re.sub(rb"(<key>" + key + rb"</key>\\s*<integer>)\\d+(</integer>)", rb"\\g<1>" + str(value).encode() + rb"\\g<2>", data, count=1)
    last = time.perf_counter()
    while True:
        time.sleep(interval)
        now = time.perf_counter()
        elapsed, last = now - last, now
        sample = data
        for key, w in zip((b"cpu_energy", b"gpu_energy", b"ane_energy"), watts):
            sample = sub(sample, key, round(w * elapsed * 1000))  # mJ over the real interval, like powermetrics
        sample = sub(sample, b"elapsed_ns", round(elapsed * 1e9))
        sys.stdout.buffer.write(sample + b"\\0")
        sys.stdout.buffer.flush()
''')


def emitter(watts: str = "10,5,1", interval: float = 0.02) -> list[str]:
    return [sys.executable, "-c", EMITTER, str(RECORDED), str(interval), watts]


def test_meter_reads_a_live_stream_from_a_subprocess():
    meter = powermetrics.create(PROFILES["m4max"], sample_hz=50, command=emitter("10,5,1", 0.02))
    try:
        assert meter.update_period_s == pytest.approx(0.02)
        with meter.window() as w:
            time.sleep(0.6)
        m = w.measurement
        assert m.provenance == MEASURED and m.domain == "soc"
        assert m.seconds == pytest.approx(0.6, abs=0.1)
        assert m.watts == pytest.approx(16.0, rel=0.1)  # 10 W CPU + 5 W GPU + 1 W ANE (timing jitter on a busy CI)
        cpu, gpu, ane = m.parts
        assert (cpu.domain, gpu.domain, ane.domain) == ("cpu", "gpu", "soc")
        # whatever the timing, every sample holds the engines in the ratio 10:5:1 (mJ rounding aside)
        assert cpu.joules / gpu.joules == pytest.approx(2.0, rel=0.02)
        assert cpu.joules / ane.joules == pytest.approx(10.0, rel=0.05)
        assert m.joules == pytest.approx(cpu.joules + gpu.joules + ane.joules)
        assert m.samples >= 5
        assert m.extra == {"thermal_pressure_start": "Nominal", "thermal_pressure_end": "Nominal"}
        assert meter.thermal() == {"thermal_pressure": "Nominal"}
        assert "Apple" in m.sensor and "estimated" in m.sensor  # labelled as Apple's energy model
    finally:
        meter.close()
    assert meter._process.poll() is not None  # close() ends the subprocess


def test_short_window_is_flagged():
    meter = powermetrics.create(PROFILES["m4max"], sample_hz=10, command=emitter("3,0,0", 0.1))
    try:
        with meter.window() as w:
            pass
        assert "window-shorter-than-sensor-period" in w.measurement.flags
    finally:
        meter.close()


@pytest.mark.parametrize("stderr", ["sudo: a password is required",
                                    "powermetrics must be invoked as the superuser"])
def test_refused_sudo_says_so(stderr: str):
    command = [sys.executable, "-c", f"import sys; sys.stderr.write({stderr!r} + '\\n'); sys.exit(1)"]
    with pytest.raises(MeterUnavailable) as info:
        PowermetricsMeter(command, 0.05, first_sample_timeout_s=5)
    message = str(info.value)
    assert "needs root" in message and "sudo" in message and stderr in message
    assert "ioreport" in message  # the sudo-less alternative is named


def test_missing_binary_and_garbage_output():
    with pytest.raises(MeterUnavailable, match="cannot run"):
        PowermetricsMeter(["/nonexistent/powermetrics"], 0.05)
    garbage = [sys.executable, "-c", "import sys, time; sys.stdout.write('<plist>not a plist</plist>'); sys.stdout.flush(); time.sleep(5)"]
    with pytest.raises(MeterUnavailable, match="unreadable powermetrics output"):
        PowermetricsMeter(garbage, 0.05, first_sample_timeout_s=5)


def test_stream_that_stops_mid_run_fails_the_window():
    command = [sys.executable, "-c", EMITTER.replace("while True:", "for _ in range(3):"), str(RECORDED), "0.02", "1,1,1"]
    meter = PowermetricsMeter(command, 0.02)
    try:
        meter.start()
        time.sleep(0.3)
        with pytest.raises(MeterFailure, match="stopped sending samples"):
            meter.stop()
    finally:
        meter.close()


def test_not_on_macos_without_a_command(monkeypatch):
    monkeypatch.setattr(powermetrics.sys, "platform", "linux")
    with pytest.raises(MeterUnavailable, match="macOS only"):
        powermetrics.create(PROFILES["m4max"])


def test_apple_profile_here_falls_back_with_both_reasons(monkeypatch):
    monkeypatch.setattr(powermetrics.sys, "platform", "linux")
    choice = select_meter(PROFILES["m4max"])
    assert choice.meter.name == "estimate"
    assert "ioreport:" in choice.fallback_reason and "powermetrics:" in choice.fallback_reason


def test_command_asks_sudo_non_interactively(monkeypatch):
    monkeypatch.setattr(powermetrics.os, "geteuid", lambda: 501)
    command = powermetrics.powermetrics_command(0.05)
    assert command[:2] == ["sudo", "-n"] and "plist" in command and command[-1] == "50"
    monkeypatch.setattr(powermetrics.os, "geteuid", lambda: 0)
    assert powermetrics.powermetrics_command(0.05)[0] == "powermetrics"


# --------------------------------------------------------------------------- samples placed by their own elapsed_ns


class FeedClock:
    """The meter's clock, set by the test: every read of a delivery sees the same arrival time."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FifoPowermetrics:
    """``cat FIFO`` stands in for powermetrics; the test writes real plist documents into the FIFO."""

    def __init__(self, directory: Path):
        import os
        import queue
        import threading

        self.path = directory / "powermetrics.fifo"
        os.mkfifo(self.path)
        self._fd = os.open(self.path, os.O_RDWR)  # Linux: does not block, and keeps the FIFO open
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._write, daemon=True)
        self._thread.start()

    @property
    def command(self) -> list[str]:
        return ["cat", str(self.path)]

    def _write(self) -> None:
        import os

        while (data := self._queue.get()) is not None:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]

    def deliver(self, documents: list[bytes]) -> None:
        self._queue.put(b"".join(d + b"\0" for d in documents))

    def close(self) -> None:
        import os

        self._queue.put(None)
        self._thread.join(timeout=5)
        os.close(self._fd)


def wait_for_samples(meter: PowermetricsMeter, count: int) -> None:
    deadline = time.monotonic() + 30
    while len(meter._samples) < count:
        assert time.monotonic() < deadline, f"the meter read {len(meter._samples)} of {count} samples"
        time.sleep(0.005)


def deliveries(burst: int, writes_per_read: int, lag_s: float, count: int = 24, step_s: float = 0.1):
    """(arrival time, samples) of each read: powermetrics writes ``burst`` samples at once, the reader
    gets ``writes_per_read`` writes per read, ``lag_s`` after the last of them was written (the first
    read is prompt). Sample j (from 0) covers [j * step_s, (j + 1) * step_s]."""
    reads, j = [], 0
    while j < count:
        take = min(burst * writes_per_read, count - j)
        written_at = (j + take) * step_s
        reads.append((written_at + (lag_s if reads else 0.0), list(range(j, j + take))))
        j += take
    return reads


def feed(recorded: bytes, tmp_path: Path, reads, watts_of, step_s: float = 0.1) -> tuple[PowermetricsMeter, FeedClock, FifoPowermetrics]:
    clock, fifo = FeedClock(), FifoPowermetrics(tmp_path)
    documents = {j: variant(recorded, cpu_mj=round(watts_of(j) * step_s * 1000), gpu_mj=0, ane_mj=0,
                            elapsed_ns=round(step_s * 1e9)) for _, js in reads for j in js}
    (first_at, first), *rest = reads
    clock.now = first_at
    fifo.deliver([documents[j] for j in first])
    meter = PowermetricsMeter(fifo.command, step_s, clock=clock)
    wait_for_samples(meter, len(first))
    received = len(first)
    for arrived, js in rest:
        clock.now = arrived
        fifo.deliver([documents[j] for j in js])
        received += len(js)
        wait_for_samples(meter, received)
    return meter, clock, fifo


def window_watts(meter: PowermetricsMeter, clock: FeedClock, t0: float, t1: float) -> float:
    clock.now = t0
    meter.start()
    clock.now = t1
    return meter.stop().watts


@pytest.mark.parametrize("burst, writes_per_read, lag_s", [
    (1, 1, 0.0),  # one sample per write, read at once
    (2, 1, 0.0),  # 2 documents per write
    (4, 1, 0.0),  # 4 documents per write
    (1, 3, 0.15),  # a slow reader: 3 writes per read, 150 ms late
    (4, 2, 0.25),  # both
])
def test_a_steady_10_w_stream_reads_10_w_however_its_samples_arrive(recorded, tmp_path, burst, writes_per_read, lag_s):
    """Samples tile time by their own elapsed_ns; laying them end to end by arrival time gave the k-1
    samples that arrive together no time at all (10 W read as 5.0 W in bursts of 2, 2.5 W in bursts of 4)."""
    reads = deliveries(burst, writes_per_read, lag_s)
    meter, clock, fifo = feed(recorded, tmp_path, reads, lambda j: 10.0)
    try:
        assert window_watts(meter, clock, 0.6, 1.8) == pytest.approx(10.0, rel=1e-9)
    finally:
        meter.close()
        fifo.close()


def test_power_changes_are_placed_where_the_samples_say(recorded, tmp_path):
    """Samples of 10 W then 30 W, delivered 4 per write and read late: each window sees the power of
    the samples that really cover it, not of those that happened to arrive during it."""
    reads = deliveries(4, 1, 0.3)
    meter, clock, fifo = feed(recorded, tmp_path, reads, lambda j: 10.0 if j < 12 else 30.0)
    try:
        assert window_watts(meter, clock, 0.2, 1.0) == pytest.approx(10.0, rel=1e-9)
        assert window_watts(meter, clock, 1.0, 1.4) == pytest.approx(20.0, rel=1e-9)  # 0.2 s of each
        assert window_watts(meter, clock, 1.4, 2.4) == pytest.approx(30.0, rel=1e-9)
    finally:
        meter.close()
        fifo.close()
