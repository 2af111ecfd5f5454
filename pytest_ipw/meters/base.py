"""The meter interface: energy over a window, with its provenance.

Two shapes of sensor exist. *Counters* (NVML total energy, RAPL ``energy_uj``, DCGM total energy) are read
at the start and the end of a window: no thread, no integration error. *Power gauges* (NVML power usage,
powermetrics, a psutil estimate) are sampled by a background thread and integrated with the trapezoid
rule over the window; every sample of the window is kept, however long it runs.

Once :meth:`Meter.measure_idle` has measured an idle baseline, every window carries its ``idle_watts`` and
so its ``joules_active`` (energy above idle); ``joules`` stays the total.

Every window also keeps what it read (:class:`Readings`: the counter at its two edges, or its power
samples) on the wall clock, so that after the run the windows of one sensor can be put on one timeline:
overlapping windows (xdist workers, batches) are then split exactly, and a coarse counter's updates are
spread over the time they cover (:func:`pytest_ipw.records.share_overlapping_energy`).
A window can be *marked* at a point inside it (``window.mark("first_token")``): the measurement then says
how much energy and time went before that point (prefill) and, by difference, after it (decode). Counters
are read once more at the mark; gauge samples are split at the mark's time once the window has ended, so
a mark costs a gauge meter nothing during generation. A meter that cannot split says so in the mark.
"""

from __future__ import annotations

import abc
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

from pytest_ipw.core import defaults
from pytest_ipw.core.errors import IPWUsageError, MeterUnavailable  # noqa: F401  (re-exported: sensor modules raise it)
from .trace import integrate_between

MEASURED = "measured"
ESTIMATED = "estimated"
PROVENANCES = (MEASURED, ESTIMATED)
DOMAINS = ("gpu", "cpu", "soc", "dram", "system")

#: flag set on a window shorter than the sensor's update period: its figure is not precise
FLAG_SHORT_WINDOW = "window-shorter-than-sensor-period"
#: flag set when a window used less energy than the idle baseline predicts: its active energy is clamped to 0
FLAG_BELOW_IDLE = "below-idle-baseline"
#: flag set when a counter did not move over a window that should have seen an update (stale exporter)
FLAG_NO_UPDATE = "sensor-did-not-update"
#: flag set when a counter went backwards without a known wrap range (driver reload, exporter restart)
FLAG_COUNTER_RESET = "counter-reset"
#: flag set when a window is long enough for a wrapping counter to have wrapped more than once
FLAG_MAY_HAVE_WRAPPED = "counter-may-have-wrapped-twice"
#: flag set when a counter went backwards and its wrap range is unknown: a wrap or a reset, the energy is unknown
FLAG_WRAP_UNKNOWN = "counter-went-backwards-range-unknown"
#: flag set on a coarse counter's window with an edge outside the counter updates the run observed
FLAG_UNATTRIBUTABLE = "energy-unattributable"
#: flag set when the sensor measures more than this target's device (a MIG instance metered through its GPU)
FLAG_SHARED_DEVICE = "shared-device"
#: windows with one of these flags have no trustworthy energy: they are left out of J/query, W, IPW and IPJ
#: (their queries still count for accuracy), and the report says how many were left out and why
EXCLUDED_FLAGS = (FLAG_COUNTER_RESET, FLAG_WRAP_UNKNOWN, FLAG_NO_UPDATE, FLAG_UNATTRIBUTABLE, FLAG_MAY_HAVE_WRAPPED)


def energy_exclusions(flags: Sequence[str] | None) -> list[str]:
    """The flags among ``flags`` that keep a window out of the energy means (empty: it counts)."""
    return [f for f in flags or () if f in EXCLUDED_FLAGS]


DEFAULT_SAMPLE_HZ = defaults.SAMPLE_HZ

COUNTER, POWER = "counter", "power"


@dataclass(frozen=True)
class Readings:
    """What one window read from its sensor, on the wall clock (``time.time()``, comparable across processes).

    ``kind`` COUNTER: ``values[i]`` holds each series' raw cumulative joules at ``times[i]`` (a series wraps
    at ``wrap_j[k]`` where known, None where it does not wrap or the range is unknown). ``kind`` POWER:
    ``values[i]`` is ``(watts,)`` at ``times[i]``. ``period_s`` is the sensor's update period.
    """

    kind: str
    times: tuple[float, ...]
    values: tuple[tuple[float, ...], ...]
    period_s: float
    wrap_j: tuple[float | None, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "period_s": self.period_s, "times": list(self.times),
                "values": [list(v) for v in self.values], "wrap_j": list(self.wrap_j)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Readings":
        return cls(data["kind"], tuple(data["times"]), tuple(tuple(v) for v in data["values"]),
                   float(data["period_s"]), tuple(data.get("wrap_j") or ()))


def wall_offset() -> float:
    """``time.time() - time.perf_counter()`` now: turns a perf_counter time into wall-clock seconds."""
    return time.time() - time.perf_counter()


def timed_read(read: Callable[[], Any], clock: Callable[[], float] = time.time) -> tuple[float, Any]:
    """(time at the middle of the read, value): a scrape or driver call takes time, and the value belongs
    to its middle, not its end."""
    before = clock()
    value = read()
    return (before + clock()) / 2, value


def counter_readings(start: tuple[float, Sequence[float]], end: tuple[float, Sequence[float]], period_s: float,
                     wrap_j: Sequence[float | None] = ()) -> Readings:
    """The readings of a counter window: (wall time, raw joules of each series) at its two edges."""
    return Readings(COUNTER, (start[0], end[0]), (tuple(map(float, start[1])), tuple(map(float, end[1]))),
                    period_s, tuple(wrap_j))
#: the mark a backend sets when it sees the first generated token: prefill before it, decode after it
FIRST_TOKEN = "first_token"


@dataclass(frozen=True)
class PhaseMark:
    """Energy and time from a window's start to a point inside it (e.g. the first token of an answer)."""

    label: str
    seconds: float
    #: energy from the window's start to the mark, on the window's own basis (total); None: no split here
    joules: float | None
    #: how the split was made ("counter read at the mark", "gauge samples split at the mark"...), or why not
    method: str
    #: False when the part before or after the mark is shorter than the sensor's update period (imprecise)
    precise: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "seconds": self.seconds, "joules": self.joules, "method": self.method,
                "precise": self.precise}


@dataclass(frozen=True)
class Measurement:
    """Energy used over one window, and where the figure comes from."""

    joules: float
    seconds: float
    sensor: str
    provenance: str  # "measured" | "estimated"
    domain: str  # "gpu" | "cpu" | "soc" | "dram" | "system", or "a+b" for a sum
    samples: int = 0
    flags: tuple[str, ...] = ()
    parts: tuple["Measurement", ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    #: mean power of the idle baseline measured by the same meter before the run (None: no baseline)
    idle_watts: float | None = None
    #: what the window read, for putting windows of one sensor on one timeline after the run (None: nothing kept)
    readings: Readings | None = None
    #: wall-clock start and end of the window (``time.time()``), set by :meth:`Meter.stop`
    started_at: float | None = None
    ended_at: float | None = None
    #: the window split at its marks (see :meth:`Meter.mark`); empty when nothing marked the window
    marks: tuple[PhaseMark, ...] = ()

    def phase_mark(self, label: str = FIRST_TOKEN) -> PhaseMark | None:
        """The mark of that label, or None when the window was not marked there."""
        return next((m for m in self.marks if m.label == label), None)

    def __post_init__(self) -> None:
        if self.provenance not in PROVENANCES:
            raise ValueError(f"provenance must be one of {PROVENANCES}, got {self.provenance!r}")

    @property
    def watts(self) -> float:
        """Mean power over the window (0 for an empty window rather than a division error)."""
        return self.joules / self.seconds if self.seconds > 0 else 0.0

    @property
    def joules_active(self) -> float | None:
        """Energy above the idle baseline (``joules - idle_watts * seconds``, at least 0), or None without one."""
        if self.idle_watts is None:
            return None
        return max(0.0, self.joules - self.idle_watts * self.seconds)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "joules": self.joules,
            "seconds": self.seconds,
            "watts": self.watts,
            "sensor": self.sensor,
            "provenance": self.provenance,
            "domain": self.domain,
            "samples": self.samples,
            "flags": list(self.flags),
        }
        if self.idle_watts is not None:
            data["idle_watts"] = self.idle_watts
            data["joules_active"] = self.joules_active
        if self.parts:
            data["parts"] = [part.to_dict() for part in self.parts]
        if self.extra:
            data["extra"] = dict(self.extra)
        if self.marks:
            data["marks"] = [m.to_dict() for m in self.marks]
        return data


class MeterFailure(IPWUsageError):
    """A meter that worked at the start of the run failed during it; the message names the sensor and the fix."""


class Window:
    """Handle yielded by :meth:`Meter.window`; ``measurement`` is set when the block exits.

    ``window.mark("first_token")`` inside the block splits the window there (see :meth:`Meter.mark`);
    backends get it as their ``on_first_token`` callback.
    """

    measurement: Measurement | None = None

    def __init__(self, meter: "Meter | None" = None):
        self._meter = meter

    def mark(self, label: str = FIRST_TOKEN) -> None:
        if self._meter is not None:
            self._meter.mark(label)


class Meter(abc.ABC):
    """Measures energy over windows. Subclasses implement :meth:`_begin` and :meth:`_end`.

    Windows do not nest on one meter: ``start()`` twice without ``stop()`` is a programming error.
    """

    #: short registry name, e.g. "nvml", "estimate"
    name: str = "meter"
    provenance: str = MEASURED
    domain: str = "system"
    #: how often the underlying sensor updates; shorter windows are flagged
    update_period_s: float = 0.0
    #: how the sensor is read: "counter" (cumulative energy, read at window ends), "gauge" (power, sampled and
    #: integrated), or None where this meter does not say
    reading: str | None = None

    def __init__(self) -> None:
        self._started_at: float | None = None
        self._listeners: list[Callable[[Measurement], None]] = []
        self._wall_started_at: float | None = None
        #: the idle baseline (see :meth:`measure_idle`); once set, every window carries its ``idle_watts``
        self.idle: Measurement | None = None
        self._marks: dict[str, tuple[float, Any, str | None]] = {}  # label -> (time, point, error)

    @property
    def sensor(self) -> str:
        """Human-readable sensor description for reports, e.g. "nvml: GPU0 NVIDIA H100 (energy counter)"."""
        return self.name

    def resolved_devices(self) -> set[str]:
        """What this meter reads, resolved (GPU UUIDs, RAPL zones, an endpoint's series): two meters summed with
        a device in common would count its energy twice. Meters that know better override this."""
        return {f"{self.name}:{self.domain}:{self.sensor}"}

    def describe(self) -> dict[str, Any]:
        """What is known about the sensor and device (driver, power limit...), for machine_info."""
        return {"meter": self.name, "sensor": self.sensor, "provenance": self.provenance, "domain": self.domain,
                "update_period_s": self.update_period_s, "reading": self.reading}

    def probe(self) -> float | None:
        """The raw sensor reading now (a counter, or a gauge's power), so that ``pytest-ipw calibrate`` can see
        how often it changes; None where the meter offers no raw reading."""
        return None

    def thermal(self) -> dict[str, Any]:
        """Thermal state now, where the sensor reports one (GPU temperature, macOS thermal pressure); else {}."""
        return {}

    def start(self) -> None:
        if self._started_at is not None:
            raise RuntimeError(f"meter {self.name!r} already has an open window; call stop() first")
        self._marks = {}
        self._started_at = time.perf_counter()
        self._wall_started_at = time.time()
        self._begin()

    def mark(self, label: str = FIRST_TOKEN) -> None:
        """Note a point inside the open window; the window's measurement then carries the split there.

        Called from a backend's generation loop, so it must never end a query: a failing extra read is kept
        as the reason the split is missing. The first mark of a label wins.
        """
        if self._started_at is None:
            raise RuntimeError(f"meter {self.name!r} has no open window to mark; call start() first")
        if label in self._marks:
            return
        now = time.perf_counter()
        try:
            self._marks[label] = (now, self._mark(label), None)
        except Exception as exc:  # noqa: BLE001 - the split is lost, the query goes on
            self._marks[label] = (now, None, f"reading {self.name} at the mark failed ({exc})")

    def _mark(self, label: str) -> Any:
        """What this meter keeps at a mark to split its window later (a counter reading, a timestamp)."""
        return None

    def _split(self, label: str, point: Any, measurement: Measurement) -> tuple[float, float, str] | None:
        """(seconds, joules, method) from the window's start to the mark, once the window has ended; None when
        this meter cannot split a window."""
        return None

    def _phase_marks(self, started: float, measurement: Measurement) -> tuple[PhaseMark, ...]:
        marks = []
        for label, (at, point, error) in self._marks.items():
            fallback_seconds = min(max(0.0, at - started), measurement.seconds)
            split = None
            if error is None:
                try:
                    split = self._split(label, point, measurement)
                except Exception as exc:  # noqa: BLE001 - a failed split must not lose the window's figure
                    error = f"splitting the {self.name} window at the mark failed ({exc})"
            if split is None:
                reason = error or f"the {self.name} meter cannot split a window at a mark"
                marks.append(PhaseMark(label, fallback_seconds, None, reason, precise=False))
                continue
            seconds, joules, method = split
            seconds = min(max(0.0, seconds), measurement.seconds)
            joules = min(max(0.0, joules), measurement.joules)  # interpolation never leaves the window's energy
            # either side shorter than the sensor's update period holds too few updates to be trusted
            precise = min(seconds, measurement.seconds - seconds) >= self.update_period_s
            marks.append(PhaseMark(label, seconds, joules, method, precise=precise))
        return tuple(marks)

    def stop(self) -> Measurement:
        if self._started_at is None:
            raise RuntimeError(f"meter {self.name!r} has no open window; call start() first")
        started = self._started_at
        try:
            measurement = self._end()
        finally:
            self._started_at = None
        measurement = replace(measurement, started_at=measurement.started_at or self._wall_started_at,
                              ended_at=measurement.ended_at or time.time())
        if self._marks:
            try:
                measurement = replace(measurement, marks=self._phase_marks(started, measurement))
            finally:
                self._marks = {}
        if 0 < measurement.seconds < self.update_period_s and FLAG_SHORT_WINDOW not in measurement.flags:
            measurement = _with_flag(measurement, FLAG_SHORT_WINDOW)
        if self.idle is not None:
            measurement = replace(measurement, idle_watts=self.idle.watts)
            if measurement.joules < self.idle.watts * measurement.seconds:
                measurement = _with_flag(measurement, FLAG_BELOW_IDLE)
        for listener in tuple(getattr(self, "_listeners", ())):  # a subclass may skip Meter.__init__
            listener(measurement)
        return measurement

    def add_listener(self, listener: Callable[[Measurement], None]) -> None:
        """Call ``listener`` with every window's measurement from now on (``ipw_record`` collects a test's windows)."""
        self.__dict__.setdefault("_listeners", []).append(listener)

    def remove_listener(self, listener: Callable[[Measurement], None]) -> None:
        listeners = getattr(self, "_listeners", [])
        if listener in listeners:
            listeners.remove(listener)

    def measure_idle(self, seconds: float, sleep: Callable[[float], None] = time.sleep) -> Measurement:
        """Measure the machine doing nothing for ``seconds``; later windows get its mean power as ``idle_watts``.

        Taken by the same meter as the queries, so that total − idle compares like with like.
        """
        self.idle = None
        with self.window() as handle:
            sleep(seconds)
        assert handle.measurement is not None
        self.idle = handle.measurement
        return handle.measurement

    @contextmanager
    def window(self) -> Iterator[Window]:
        """``with meter.window() as w: ...`` then ``w.measurement``. A failing block still stops the meter."""
        handle = Window(self)
        self.start()
        try:
            yield handle
        finally:
            handle.measurement = self.stop()

    def close(self) -> None:
        """Release sensor handles and threads; safe to call twice."""

    @abc.abstractmethod
    def _begin(self) -> None: ...

    @abc.abstractmethod
    def _end(self) -> Measurement: ...


def _with_flag(measurement: Measurement, flag: str) -> Measurement:
    return replace(measurement, flags=measurement.flags + (flag,))


def integrate_trapezoid(times: Sequence[float], watts: Sequence[float]) -> float:
    """Joules from power samples at increasing timestamps (seconds), by the trapezoid rule."""
    if len(times) != len(watts):
        raise ValueError("times and watts must have the same length")
    total = 0.0
    for i in range(1, len(times)):
        dt = times[i] - times[i - 1]
        if dt < 0:
            raise ValueError("sample timestamps must not decrease")
        total += 0.5 * (watts[i] + watts[i - 1]) * dt
    return total


def sample_interval_s(sample_hz: float, min_interval_s: float = 0.0) -> float:
    """Seconds between samples for ``--ipw-sample-hz``, never faster than the sensor can give new values."""
    if not sample_hz > 0:
        raise IPWUsageError(f"--ipw-sample-hz must be positive, got {sample_hz}")
    return max(1.0 / sample_hz, min_interval_s)


def counter_delta(before: float, after: float, wrap_at: float | None) -> float:
    """Increase of a cumulative counter that wraps to 0 after ``wrap_at`` (RAPL ``max_energy_range_uj``)."""
    if after >= before:
        return after - before
    if wrap_at is None or wrap_at <= 0:
        raise ValueError(f"counter went backwards ({before} -> {after}) and no wrap-around range is known")
    return (wrap_at - before) + after


class PowerSampler:
    """Background thread reading a power gauge at a fixed rate; windows integrate its samples.

    ``read_watts`` is called from the sampler thread only (and once on start/stop from the caller),
    so sensors need not be thread-safe beyond that.
    """

    def __init__(self, read_watts: Callable[[], float], interval_s: float = 0.05, clock: Callable[[], float] = time.perf_counter):
        if interval_s <= 0:
            raise ValueError(f"sampling interval must be positive, got {interval_s}")
        self._read = read_watts
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._times: list[float] = []
        self._watts: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: (times, watts) of the last finished window, e.g. for splitting energy among concurrent queries
        self.last_trace: tuple[list[float], list[float]] = ([], [])
        self._error: Exception | None = None

    def now(self) -> float:
        """The sampler's clock now (a mark's time, to split the window's samples at later)."""
        return self._clock()

    def energy_until(self, at: float) -> tuple[float, float]:
        """(joules, seconds) of the last finished window from its first sample to ``at``, by the same
        piecewise-linear reading of the samples that integrated the whole window."""
        times, watts = self.last_trace
        if len(times) < 2:
            return 0.0, 0.0
        at = min(max(at, times[0]), times[-1])
        return integrate_between(times, watts, times[0], at), at - times[0]

    def _sample(self) -> None:
        # stamped at the middle of the read: an HTTP scrape takes tens of ms, and its value is not from its end
        now, value = timed_read(self._read, self._clock)
        value = float(value)
        with self._lock:
            self._times.append(now)
            self._watts.append(value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample()
            except Exception as exc:  # noqa: BLE001 - handed to the caller's thread by end()
                self._error = exc
                return

    def begin(self) -> None:
        with self._lock:
            self._times.clear()
            self._watts.clear()
        self._error = None
        self._sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pytest-ipw-power-sampler", daemon=True)
        self._thread.start()

    def end(self) -> tuple[float, float, int]:
        """Stop sampling; return (joules, seconds, samples) of the window."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error  # a sensor that failed mid-window must not yield a partial figure
        self._sample()
        with self._lock:
            times, watts = list(self._times), list(self._watts)
        self.last_trace = (times, watts)
        seconds = times[-1] - times[0] if len(times) > 1 else 0.0
        return integrate_trapezoid(times, watts), seconds, len(times)

    def readings(self, period_s: float) -> Readings:
        """The last window's samples as :class:`Readings` on the wall clock (the sampler's clock is perf_counter)."""
        times, watts = self.last_trace
        offset = wall_offset() if self._clock is time.perf_counter else 0.0
        return Readings(POWER, tuple(t + offset for t in times), tuple((w,) for w in watts), period_s)

