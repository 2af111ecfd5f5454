"""Apple Silicon CPU, GPU and ANE energy from macOS ``powermetrics`` (plist output; needs root).

``powermetrics -f plist`` streams one plist document per sample, separated by NUL bytes. Each sample's
``processor`` block holds ``cpu_energy``, ``gpu_energy`` and ``ane_energy`` in mJ over ``elapsed_ns``:
the energy figures are used, not the ``*_power`` ones, and only from that block (the ``gpu`` block's
``gpu_energy`` disagrees slightly; one source is used throughout). macOS versions without the energy keys
fall back to ``*_power`` (mW) × elapsed, and a stream never switches source once started.

The samples tile time by their own ``elapsed_ns``: each covers the ``elapsed_ns`` before the next one
begins, so the stream is a chain of intervals. Arrival times only anchor that chain on the reader's clock:
a sample cannot arrive before it was written, so the chain is placed as late as every arrival allows
(the earliest arrival relative to the chain wins). Samples that arrive together (several documents in one
read, a reader that fell behind) keep their own intervals. Each sample's energy is shared among windows
in proportion to their overlap (power taken as constant within a sample). So the sampling interval
(``--ipw-sample-hz``) is this sensor's update period, and shorter windows are flagged.

The figures come from Apple's on-chip energy model: Apple's powermetrics documentation calls them
estimated. They are the device's own telemetry (labelled ``measured`` here, like NVML or RAPL), and the
sensor name says which model they come from.
"""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from pytest_ipw.hardware.profiles import AcceleratorProfile
from .base import (
    DEFAULT_SAMPLE_HZ,
    MEASURED,
    POWER,
    Measurement,
    Meter,
    MeterFailure,
    Readings,
    sample_interval_s,
    wall_offset,
)
from .base import MeterUnavailable

SAMPLERS = "cpu_power,gpu_power,thermal"
#: powermetrics itself costs CPU; sampling faster than this buys nothing
MIN_INTERVAL_S = 0.02
SOURCE_ENERGY = "processor.*_energy (mJ)"
SOURCE_POWER = "processor.*_power (mW) x elapsed_ns"
MODEL_NOTE = "Apple's on-chip energy model, which Apple documents as estimated"


@dataclass(frozen=True)
class PowermetricsSample:
    elapsed_s: float
    cpu_j: float
    gpu_j: float
    ane_j: float
    thermal_pressure: str | None
    source: str

    @property
    def joules(self) -> float:
        return self.cpu_j + self.gpu_j + self.ane_j


def sample_source(document: dict[str, Any]) -> str:
    processor = document.get("processor") or {}
    return SOURCE_ENERGY if "cpu_energy" in processor else SOURCE_POWER


def parse_sample(document: dict[str, Any], source: str | None = None) -> PowermetricsSample:
    """One powermetrics plist sample (already parsed by plistlib) as joules per engine."""
    processor = document.get("processor")
    if not isinstance(processor, dict) or "elapsed_ns" not in document:
        raise ValueError("not a powermetrics cpu_power sample (no 'processor' block or 'elapsed_ns')")
    source = source or sample_source(document)
    elapsed = float(document["elapsed_ns"]) / 1e9
    if source == SOURCE_ENERGY:
        if "cpu_energy" not in processor:
            raise ValueError("sample lacks processor.cpu_energy, which earlier samples had")
        values = [float(processor.get(k, 0.0)) / 1000.0 for k in ("cpu_energy", "gpu_energy", "ane_energy")]
    else:
        if "cpu_power" not in processor:
            raise ValueError("sample lacks both processor.cpu_energy and processor.cpu_power")
        values = [float(processor.get(k, 0.0)) / 1000.0 * elapsed for k in ("cpu_power", "gpu_power", "ane_power")]
    pressure = document.get("thermal_pressure")
    return PowermetricsSample(elapsed, *values, thermal_pressure=str(pressure) if pressure is not None else None,
                              source=source)


class PlistStream:
    """Turns the bytes of a live ``powermetrics -f plist`` stream into documents, however they are chunked.

    A document is complete at its NUL separator, or as soon as it ends with ``</plist>`` (so the newest
    sample is not held back until the next one starts).
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        *complete, self._buffer = self._buffer.split(b"\0")
        if self._buffer.rstrip().endswith(b"</plist>"):
            complete.append(self._buffer)
            self._buffer = b""
        documents = []
        for chunk in complete:
            chunk = chunk.strip()
            if chunk:
                documents.append(plistlib.loads(chunk))
        return documents


def parse_stream(data: bytes) -> list[PowermetricsSample]:
    """Every sample of a recorded stream (or a single ``-n 1`` capture), with one source throughout."""
    documents = PlistStream().feed(data)
    source = sample_source(documents[0]) if documents else None
    return [parse_sample(d, source) for d in documents]


def _privilege_message(detail: str) -> str:
    return (f"powermetrics needs root and was refused ({detail.strip() or 'no output'}). Run pytest with sudo, "
            "or allow it without a password (`sudo visudo`, add `%admin ALL=(root) NOPASSWD: /usr/bin/powermetrics`), "
            "or install the sudo-less IOReport counters: pip install 'pytest-ipw[apple]' (--ipw-meter=ioreport)")


class SampleTimeline:
    """Places powermetrics samples on the reader's clock by their own ``elapsed_ns`` (see the module text).

    ``add(arrived, sample)`` appends the next sample of the stream; ``placed()`` gives (start, end, sample)
    on the reader's clock. Not thread-safe: the meter holds its lock around every call.
    """

    def __init__(self) -> None:
        self._chain_end = 0.0  # end of the newest sample, in seconds of the stream since its first sample began
        self._offset: float | None = None  # reader clock = stream time + offset
        self._samples: list[tuple[float, float, PowermetricsSample]] = []  # (stream start, stream end, sample)

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, arrived: float, sample: PowermetricsSample) -> None:
        start, self._chain_end = self._chain_end, self._chain_end + sample.elapsed_s
        # written no later than it arrived: the chain sits as late as all arrivals allow
        latest = arrived - self._chain_end
        self._offset = latest if self._offset is None else min(self._offset, latest)
        self._samples.append((start, self._chain_end, sample))

    def covered_until(self) -> float | None:
        """Reader-clock time up to which samples have arrived (None before the first)."""
        return None if self._offset is None else self._chain_end + self._offset

    def placed(self) -> list[tuple[float, float, PowermetricsSample]]:
        offset = self._offset or 0.0
        return [(start + offset, end + offset, sample) for start, end, sample in self._samples]

    def forget_before(self, t: float) -> None:
        """Drop samples that ended before reader-clock time ``t`` (keeping the newest): no window needs them."""
        if self._offset is None:
            return
        kept = [s for s in self._samples if s[1] + self._offset > t]
        self._samples = kept or self._samples[-1:]

    @property
    def newest(self) -> PowermetricsSample | None:
        return self._samples[-1][2] if self._samples else None


class PowermetricsMeter(Meter):
    name = "powermetrics"
    provenance = MEASURED
    domain = "soc"

    def __init__(self, command: Sequence[str], interval_s: float, first_sample_timeout_s: float = 10.0,
                 clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.command = list(command)
        self.interval_s = interval_s
        self.update_period_s = interval_s
        self.reading = "gauge"  # energy per sample interval, shared among windows by overlap
        self._clock = clock
        self._lock = threading.Condition()
        self._samples = SampleTimeline()
        self._source: str | None = None
        self._error: str | None = None
        self._t0 = 0.0
        try:
            self._process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE)
        except OSError as exc:
            raise MeterUnavailable(f"cannot run {self.command[0]} ({exc.strerror or exc})") from None
        self._reader = threading.Thread(target=self._read, name="pytest-ipw-powermetrics", daemon=True)
        self._reader.start()
        with self._lock:
            self._lock.wait_for(lambda: self._samples or self._error, timeout=first_sample_timeout_s)
            error, ready = self._error, bool(self._samples)
        if not ready:
            self.close()
            stderr = self._stderr()
            if "password" in stderr or "superuser" in stderr or "not permitted" in stderr.lower():
                raise MeterUnavailable(_privilege_message(stderr))
            raise MeterUnavailable(f"powermetrics gave no sample within {first_sample_timeout_s:g} s "
                                   f"({error or stderr.strip() or 'no output'})")

    @property
    def sensor(self) -> str:
        return f"powermetrics: CPU+GPU+ANE energy, {self._source or SOURCE_ENERGY} ({MODEL_NOTE})"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "command": " ".join(self.command), "interval_s": self.interval_s,
                "source": self._source, "model_based": True}

    def thermal(self) -> dict[str, Any]:
        with self._lock:
            latest = self._samples.newest
        return {"thermal_pressure": latest.thermal_pressure} if latest and latest.thermal_pressure else {}

    def _stderr(self) -> str:
        try:
            _, err = self._process.communicate(timeout=2)
            return (err or b"").decode(errors="replace")
        except (subprocess.TimeoutExpired, ValueError, OSError):
            return ""

    def _read(self) -> None:
        stream = PlistStream()
        stdout = self._process.stdout
        assert stdout is not None
        try:
            while True:
                data = stdout.read1(65536) if hasattr(stdout, "read1") else stdout.read(65536)
                if not data:
                    break
                arrived = self._clock()
                for document in stream.feed(data):
                    if self._source is None:
                        self._source = sample_source(document)
                    sample = parse_sample(document, self._source)
                    with self._lock:
                        self._samples.add(arrived, sample)
                        self._lock.notify_all()
        except Exception as exc:  # a malformed sample ends the stream; the next window reports it
            with self._lock:
                self._error = f"unreadable powermetrics output: {exc}"
                self._lock.notify_all()
            return
        with self._lock:
            self._error = self._error or "powermetrics exited"
            self._lock.notify_all()

    def _begin(self) -> None:
        self._t0 = self._clock()
        with self._lock:
            self._samples.forget_before(self._t0)

    def _mark(self, label: str) -> Any:
        return self._clock()  # split later, once the samples covering the mark have arrived

    def _split(self, label: str, point: Any, measurement: Measurement) -> tuple[float, float, str]:
        with self._lock:
            samples = list(self._samples)
        joules = 0.0
        for start, end, sample in samples:
            overlap = min(end, point) - max(start, self._t0)
            if overlap > 0 and end > start:
                joules += sample.joules * overlap / (end - start)
        return point - self._t0, joules, "samples shared out at the mark by overlap"

    def _end(self) -> Measurement:
        t1 = self._clock()
        t0 = self._t0
        deadline = 3 * self.interval_s + 2.0

        def covered() -> bool:
            until = self._samples.covered_until()
            return until is not None and until >= t1

        with self._lock:
            self._lock.wait_for(lambda: covered() or self._error, timeout=deadline)
            ready = covered()
            samples = self._samples.placed()
            error = self._error
        if not ready:
            raise MeterFailure(f"powermetrics stopped sending samples during the run ({error or f'none for {deadline:g} s'}); "
                               "check that it still runs (as root), or use --ipw-meter=ioreport")
        cpu = gpu = ane = 0.0
        first: PowermetricsSample | None = None
        last: PowermetricsSample | None = None
        # the window's power as a step function (constant within a sample), on the wall clock
        offset = wall_offset() if self._clock is time.perf_counter else 0.0
        steps: list[tuple[float, float]] = []
        for start, end, sample in samples:
            overlap = min(end, t1) - max(start, t0)
            if overlap <= 0 or end <= start:
                continue
            share = overlap / (end - start)
            cpu, gpu, ane = cpu + sample.cpu_j * share, gpu + sample.gpu_j * share, ane + sample.ane_j * share
            first = sample if first is None else first
            last = sample
            watts = sample.joules / (end - start)
            steps += [(max(start, t0) + offset, watts), (min(end, t1) + offset, watts)]
        readings = Readings(POWER, tuple(t for t, _ in steps), tuple((w,) for _, w in steps), self.update_period_s) \
            if len(steps) >= 2 else None
        seconds = t1 - t0
        parts = tuple(Measurement(joules=j, seconds=seconds, sensor=f"powermetrics: {engine}", provenance=MEASURED,
                                  domain=domain, samples=len(samples))
                      for engine, domain, j in (("CPU", "cpu", cpu), ("GPU", "gpu", gpu), ("ANE", "soc", ane)))
        extra = {"thermal_pressure_start": first.thermal_pressure if first else None,
                 "thermal_pressure_end": last.thermal_pressure if last else None}
        return Measurement(joules=cpu + gpu + ane, seconds=seconds, sensor=self.sensor, provenance=MEASURED,
                           domain="soc", samples=sum(1 for s in samples if s[1] > t0 and s[0] < t1),
                           parts=parts, extra=extra, readings=readings)

    def close(self) -> None:
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()


def powermetrics_command(interval_s: float) -> list[str]:
    command = ["powermetrics", "--samplers", SAMPLERS, "-f", "plist", "-i", str(max(1, round(interval_s * 1000)))]
    if os.geteuid() != 0:
        command = ["sudo", "-n", *command]  # -n: fail at once instead of waiting for a password prompt
    return command


def create(profile: AcceleratorProfile, device_index: int | None = None, arg: str | None = None,
           sample_hz: float = DEFAULT_SAMPLE_HZ, command: Sequence[str] | None = None, **_: Any) -> PowermetricsMeter:
    interval = sample_interval_s(sample_hz, MIN_INTERVAL_S)
    if command is None:
        if sys.platform != "darwin":
            raise MeterUnavailable("powermetrics exists on macOS only")
        command = powermetrics_command(interval)
    return PowermetricsMeter(command, interval)
