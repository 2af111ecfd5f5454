"""A remote meter: energy scraped from a Prometheus text endpoint where the model actually runs.

``--ipw-meter=prometheus+http://gpu-host:9400/metrics`` (dcgm-exporter) or ``...:9100/metrics``
(node_exporter). Series are chosen with a URL fragment of label matches, never sent to the server:
``prometheus+http://gpu-host:9400/metrics#gpu=0`` or ``#UUID=GPU-5b4e...&Hostname=node1``. Two fragment keys
are settings, not labels:

- ``period=SECONDS``: how often the exporter refreshes its values. Without it, dcgm-exporter's own default
  collect interval (30 s) is assumed and lowered as soon as the counter is seen to change faster (two changes
  observed between scrapes bound the period); node_exporter reads RAPL's sysfs at every scrape (1 ms). A
  counter this coarse is spread over the time between its observed updates after the run
  (:func:`pytest_ipw.meters.trace.counter_timeline`); start dcgm-exporter with ``-c 1000`` for finer figures.
- ``range=JOULES`` (node_exporter RAPL): where the exported ``*_joules_total`` wraps, i.e. the zone's
  ``max_energy_range_uj`` / 1e6 (``range=262143.32885``), or per zone ``range=package:262143.32885,dram:65712.99``.
  node_exporter exports the raw wrapping register: with the range a wrap is undone; without it, a window in
  which the counter went backwards is flagged ``counter-went-backwards-range-unknown`` and left out of the
  energy means (never counted as the small post-wrap value).

Metrics, in order of preference (energy counters first, they need no sampling):
1. ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` — mJ counter per GPU (domain gpu);
2. ``node_rapl_<zone>_joules_total`` / ``node_rapl_joules_total{rapl_zone=...}`` — J counters; package and
   dram zones are added, core/uncore (inside package) and psys (contains the rest) are not (domain cpu+dram);
3. ``DCGM_FI_DEV_POWER_USAGE`` — W gauge, sampled in a thread and integrated (trapezoid).
Without a label selection every GPU of the scrape is summed, one series per GPU: MIG-instance series
(``GPU_I_ID``) repeat their GPU's figures and are skipped; a GPU split into MIG instances is measured
whole, the sensor name says so and every window is flagged ``shared-device``. A DCGM counter that goes
backwards was reset (driver reload, exporter restart): the window is flagged ``counter-reset`` and left out
of the energy means.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qsl, urldefrag

from pytest_ipw.hardware.profiles import AcceleratorProfile
from .base import (
    DEFAULT_SAMPLE_HZ,
    FLAG_COUNTER_RESET,
    FLAG_NO_UPDATE,
    FLAG_SHARED_DEVICE,
    FLAG_WRAP_UNKNOWN,
    MEASURED,
    Measurement,
    Meter,
    MeterFailure,
    PowerSampler,
    counter_delta,
    counter_readings,
    sample_interval_s,
)
from .base import MeterUnavailable

DCGM_ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"  # mJ counter
DCGM_POWER = "DCGM_FI_DEV_POWER_USAGE"  # W gauge
DCGM_TEMP = "DCGM_FI_DEV_GPU_TEMP"
RAPL_ADDED = ("package", "dram")
SCRAPE_TIMEOUT_S = 5.0
#: dcgm-exporter's default collect interval (``-c 30000`` ms): its values change at most this often
DCGM_DEFAULT_PERIOD_S = 30.0
#: node_exporter reads RAPL's sysfs at each scrape; the register itself updates about every millisecond
RAPL_PERIOD_S = 0.001
#: the shortest refresh period the counter's own changes may bring the assumed period down to
MIN_DETECTED_PERIOD_S = 0.01

Fetch = Callable[[str, float], str]
Series = dict[tuple[str, ...], float]  # series key -> value


def http_get(url: str, timeout: float) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - the user's own endpoint
        return response.read().decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def parse_exposition(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition (prometheus_client's parser, imported lazily)."""
    from pytest_ipw.core.extras import require

    text_string_to_metric_families = require("prometheus_client.parser", "the prometheus meter",
                                             error=MeterUnavailable).text_string_to_metric_families
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.append(Sample(sample.name, dict(sample.labels), float(sample.value)))
    return samples


def _rapl_zone(sample: Sample) -> str | None:
    if sample.name == "node_rapl_joules_total":
        return sample.labels.get("rapl_zone")
    if sample.name.startswith("node_rapl_") and sample.name.endswith("_joules_total"):
        return sample.name[len("node_rapl_"):-len("_joules_total")]
    return None


def _gpu_key(sample: Sample) -> tuple[str, ...]:
    return ("gpu", sample.labels.get("UUID") or sample.labels.get("gpu") or sample.labels.get("device") or "")


def select_series(samples: list[Sample], kind: str, selector: dict[str, str]) -> tuple[Series, float]:
    """Values of the chosen metric by series, and their unit in joules (mJ counter -> 0.001, W -> 1).

    ``kind`` is "dcgm-energy", "rapl-energy" or "dcgm-power".
    """
    matching = [s for s in samples if all(s.labels.get(k) == v for k, v in selector.items())]
    series: Series = {}
    if kind == "rapl-energy":
        for sample in matching:
            zone = _rapl_zone(sample)
            if zone in RAPL_ADDED:
                key = (zone, sample.labels.get("index", ""), sample.labels.get("path", ""))
                series[key] = sample.value
        return series, 1.0
    # prometheus_client names a counter's samples NAME_total when the exposition's TYPE says counter
    names = (DCGM_ENERGY, DCGM_ENERGY + "_total") if kind == "dcgm-energy" else (DCGM_POWER,)
    whole_gpu: dict[tuple[str, ...], Sample] = {}
    for sample in (s for s in matching if s.name in names):
        key = _gpu_key(sample)
        # a MIG instance's series repeats its GPU's figure: prefer the GPU-level series
        if key not in whole_gpu or ("GPU_I_ID" in whole_gpu[key].labels and "GPU_I_ID" not in sample.labels):
            whole_gpu[key] = sample
    series = {key: sample.value for key, sample in whole_gpu.items()}
    return series, (0.001 if kind == "dcgm-energy" else 1.0)


def choose_kind(samples: list[Sample], selector: dict[str, str]) -> str | None:
    for kind in ("dcgm-energy", "rapl-energy", "dcgm-power"):
        if select_series(samples, kind, selector)[0]:
            return kind
    return None


def temperatures(samples: list[Sample], selector: dict[str, str]) -> list[float]:
    return [s.value for s in samples
            if s.name == DCGM_TEMP and "GPU_I_ID" not in s.labels and all(s.labels.get(k) == v for k, v in selector.items())]


def _wrap_ranges(text: str, arg: str) -> dict[str, float]:
    """``range=J`` (every zone) or ``range=zone:J,zone:J`` -> zone (or "*") -> joules."""
    ranges: dict[str, float] = {}
    for item in text.split(","):
        zone, _, value = item.rpartition(":")
        try:
            joules = float(value)
        except ValueError:
            joules = -1.0
        if joules <= 0 or (zone and zone not in RAPL_ADDED):
            raise MeterUnavailable(f"range in {arg!r} must be the joules where the counter wraps (max_energy_range_uj "
                                   "/ 1e6), for every zone (range=262143.32885) or per zone (range=package:262143.32885,"
                                   "dram:65712.99)")
        ranges[zone or "*"] = joules
    return ranges


def parse_target(arg: str) -> tuple[str, dict[str, str], float | None, dict[str, float]]:
    """``URL[#label=value&...&period=S&range=J]`` -> (URL, label selector, exporter refresh period or None
    when not given, RAPL wrap range by zone)."""
    url, fragment = urldefrag(arg)
    selector = dict(parse_qsl(fragment, keep_blank_values=True))
    period: float | None = None
    if "period" in selector:
        try:
            period = float(selector.pop("period"))
        except ValueError:
            raise MeterUnavailable(f"period in {arg!r} must be a number of seconds") from None
        if not period > 0:
            raise MeterUnavailable(f"period in {arg!r} must be positive")
    ranges = _wrap_ranges(selector.pop("range"), arg) if "range" in selector else {}
    return url, selector, period, ranges


class PrometheusMeter(Meter):
    name = "prometheus"
    provenance = MEASURED

    def __init__(self, url: str, selector: dict[str, str] | None = None, period_s: float | None = None,
                 sample_hz: float = DEFAULT_SAMPLE_HZ, fetch: Fetch = http_get,
                 clock: Callable[[], float] = time.perf_counter, wrap_j: dict[str, float] | None = None):
        super().__init__()
        self.url = url
        self.selector = dict(selector or {})
        self._fetch = fetch
        self._clock = clock
        self._sample_hz = sample_hz
        self._wrap_j = dict(wrap_j or {})
        # refresh-period detection: (wall time, values) of the last scrape, the span of the last observed change
        self._period_lock = threading.Lock()
        self._last_scrape: tuple[float, tuple[float, ...]] | None = None
        self._last_change: tuple[float, float] | None = None
        samples = self._scrape(MeterUnavailable)
        kind = choose_kind(samples, self.selector)
        if kind is None:
            where = f" matching {self._selector_text()}" if self.selector else ""
            names = sorted({s.name for s in samples})
            raise MeterUnavailable(
                f"{url} has no energy or power metric{where}: expected {DCGM_ENERGY}, node_rapl_*_joules_total or "
                f"{DCGM_POWER} (it serves {len(names)} metric names, e.g. {', '.join(names[:4]) or 'none'}); "
                "check the URL and the #label=value selection")
        self.kind = kind
        series, self._unit = select_series(samples, kind, self.selector)
        self.series_count = len(series)
        self.domain = "gpu"
        if kind == "rapl-energy":
            self.domain = "cpu+dram" if any(key[0] == "dram" for key in series) else "cpu"
        self.period_declared = period_s is not None
        self.update_period_s = period_s if period_s is not None else (
            RAPL_PERIOD_S if kind == "rapl-energy" else DCGM_DEFAULT_PERIOD_S)
        # a MIG instance has no sensor of its own: its GPU's figure is the whole GPU's, shared with other instances
        self.mig_shared = kind != "rapl-energy" and (
            "GPU_I_ID" in self.selector or bool({_gpu_key(s) for s in samples if "GPU_I_ID" in s.labels} & set(series)))
        # the gauge is polled over HTTP: no faster than the exporter refreshes it
        self._sampler = (PowerSampler(self._read_watts, sample_interval_s(sample_hz, self.update_period_s))
                         if kind == "dcgm-power" else None)
        self.reading = "gauge" if self._sampler is not None else "counter"
        self._start: tuple[float, float, Series] | None = None
        self._temperature_start: list[float] = []

    def _selector_text(self) -> str:
        return ",".join(f'{k}="{v}"' for k, v in self.selector.items())

    @property
    def sensor(self) -> str:
        what = {"dcgm-energy": f"{DCGM_ENERGY} (mJ counter)", "rapl-energy": "node_rapl package+dram joules counters",
                "dcgm-power": f"{DCGM_POWER} (W gauge, integrated)"}[self.kind]
        where = f"{{{self._selector_text()}}}" if self.selector else ""
        whole = ", the WHOLE GPU (MIG instances have no sensor of their own; shared-device)" if self.mig_shared else ""
        return f"prometheus: {what}{where} from {self.url}, {self.series_count} series{whole}"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.url, "selector": self.selector, "metric_kind": self.kind,
                "series": self.series_count, "exporter_period_s": self.update_period_s,
                "exporter_period_declared": self.period_declared, "wrap_range_j": self._wrap_j or None,
                "mig_shared_gpu": self.mig_shared}

    def resolved_devices(self) -> set[str]:
        return {f"prometheus:{self.url}#{sorted(self.selector.items())}:{self.kind}"}

    def _observe(self, when: float, series: Series) -> None:
        """Lower the assumed refresh period when the values are seen to change faster: two changes seen in
        the scrape spans (a0, a1] and (b0, b1] are two updates, at most b1 - a0 apart."""
        values = tuple(series[k] for k in sorted(series))
        with self._period_lock:
            last, self._last_scrape = self._last_scrape, (when, values)
            if self.period_declared or last is None or last[1] == values or when <= last[0]:
                return
            change, self._last_change = self._last_change, (last[0], when)
            if change is None:
                return
            bound = max(MIN_DETECTED_PERIOD_S, when - change[0])
            if bound < self.update_period_s:
                self.update_period_s = bound
                if self._sampler is not None:
                    self._sampler.interval_s = sample_interval_s(self._sample_hz, bound)

    def _scrape(self, error: type[Exception] = MeterFailure) -> list[Sample]:
        try:
            text = self._fetch(self.url, SCRAPE_TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            raise error(f"{self.url} answered HTTP {exc.code} {exc.reason}; check the path (usually /metrics)") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise error(f"cannot reach {self.url} ({reason}). Start the exporter on that machine (dcgm-exporter "
                        "listens on :9400, node_exporter on :9100), or fix the host, port or firewall") from None
        try:
            return parse_exposition(text)
        except MeterUnavailable:
            raise
        except Exception as exc:  # the parser raises ValueError/TypeError on malformed lines
            raise error(f"{self.url} did not serve Prometheus text format ({exc})") from None

    def _series(self) -> tuple[Series, list[float]]:
        before = time.time()
        samples = self._scrape()
        series = select_series(samples, self.kind, self.selector)[0]
        self._observe((before + time.time()) / 2, series)
        return series, temperatures(samples, self.selector)

    def _timed_series(self) -> tuple[float, float, Series, list[float]]:
        """(clock and wall time at the middle of the scrape, series, temperatures): a scrape takes tens of ms."""
        before, wall_before = self._clock(), time.time()
        series, temps = self._series()
        return (before + self._clock()) / 2, (wall_before + time.time()) / 2, series, temps

    def _wrap_of(self, key: tuple[str, ...]) -> float | None:
        if self.kind != "rapl-energy":
            return None
        return self._wrap_j.get(key[0], self._wrap_j.get("*"))

    def thermal(self) -> dict[str, Any]:
        try:
            values = self._series()[1]
        except MeterFailure:
            return {}
        return {"temperature_c": _one_or_all(values)} if values else {}

    def _read_watts(self) -> float:
        return sum(self._series()[0].values())

    def _begin(self) -> None:
        if self._sampler is not None:
            self._temperature_start = self._series()[1]
            self._sampler.begin()
        else:
            started, wall, series, self._temperature_start = self._timed_series()
            self._start = (started, wall, series)

    def _mark(self, label: str) -> Any:
        if self._sampler is not None:
            return self._sampler.now()
        return self._clock(), self._series()[0]  # one extra scrape

    def _split(self, label: str, point: Any, measurement: Measurement) -> tuple[float, float, str]:
        if self._sampler is not None:
            joules, seconds = self._sampler.energy_until(point)
            return seconds, joules, "gauge samples split at the mark"
        assert self._start is not None
        started, _, before = self._start
        at, series = point
        # a series reset since the start counts from 0, as in the window itself
        total = sum((series[k] - v if series.get(k, v) >= v else series[k]) for k, v in before.items() if k in series)
        return at - started, total * self._unit, "counter scraped at the mark"

    def _end(self) -> Measurement:
        flags: list[str] = [FLAG_SHARED_DEVICE] if self.mig_shared else []
        readings = None
        if self._sampler is not None:
            joules, seconds, samples = self._sampler.end()
            temperature_end = self._series()[1]
            readings = self._sampler.readings(self.update_period_s)
        else:
            assert self._start is not None
            started, wall_started, before = self._start
            ended, wall_ended, after, temperature_end = self._timed_series()
            seconds = ended - started
            missing = sorted(set(before) - set(after))
            if missing:
                raise MeterFailure(f"prometheus: series {missing[0]} vanished from {self.url} during the run; "
                                   "pin one with a #label=value selection")
            total = 0.0
            for key, start_value in before.items():
                end_value, wrap = after[key], self._wrap_of(key)
                if end_value >= start_value:
                    total += end_value - start_value
                elif wrap is not None:
                    total += counter_delta(start_value, end_value, wrap)  # node_exporter's raw RAPL register wrapped
                else:
                    # a wrap of unknown range, or a reset: the energy is unknown, so this window is flagged and left
                    # out of the energy means; joules keep only what was gathered since (never used as a figure)
                    flags.append(FLAG_WRAP_UNKNOWN if self.kind == "rapl-energy" else FLAG_COUNTER_RESET)
                    total += end_value
            joules, samples = total * self._unit, 2
            if total == 0 and seconds >= self.update_period_s:
                flags.append(FLAG_NO_UPDATE)  # a live device always uses some energy: the exporter is stale
            keys = sorted(before)
            readings = counter_readings((wall_started, [before[k] * self._unit for k in keys]),
                                        (wall_ended, [after[k] * self._unit for k in keys]), self.update_period_s,
                                        [self._wrap_of(k) for k in keys])
        extra: dict[str, Any] = {}
        if self._temperature_start or temperature_end:
            extra = {"temperature_c_start": _one_or_all(self._temperature_start),
                     "temperature_c_end": _one_or_all(temperature_end)}
        return Measurement(joules=joules, seconds=seconds, sensor=self.sensor, provenance=MEASURED, domain=self.domain,
                           samples=samples, flags=tuple(dict.fromkeys(flags)), extra=extra, readings=readings)


def _one_or_all(values: list[float]) -> Any:
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def create(profile: AcceleratorProfile, device_index: int | None = None, arg: str | None = None,
           sample_hz: float = DEFAULT_SAMPLE_HZ, fetch: Fetch = http_get, **_: Any) -> PrometheusMeter:
    if not arg:
        raise MeterUnavailable("the prometheus meter needs an endpoint: --ipw-meter=prometheus+http://HOST:PORT/metrics")
    url, selector, period, ranges = parse_target(arg)
    return PrometheusMeter(url, selector, period, sample_hz=sample_hz, fetch=fetch, wrap_j=ranges)
