"""A remote meter: energy scraped from a Prometheus text endpoint where the model actually runs.

``--ipw-meter=prometheus+http://gpu-host:9400/metrics`` (dcgm-exporter) or ``...:9100/metrics``
(node_exporter). Series are chosen with a URL fragment of label matches, never sent to the server:
``prometheus+http://gpu-host:9400/metrics#gpu=0`` or ``#UUID=GPU-5b4e...&Hostname=node1``; the fragment
key ``period=SECONDS`` tells the exporter's refresh period (default 1 s; dcgm-exporter's own default
collect interval is 30 s, so start it with ``-c 1000`` or less for per-query figures).

Metrics, in order of preference (energy counters first, they need no sampling):
1. ``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` — mJ counter per GPU (domain gpu);
2. ``node_rapl_<zone>_joules_total`` / ``node_rapl_joules_total{rapl_zone=...}`` — J counters; package and
   dram zones are added, core/uncore (inside package) and psys (contains the rest) are not (domain cpu+dram);
3. ``DCGM_FI_DEV_POWER_USAGE`` — W gauge, sampled in a thread and integrated (trapezoid).
Without a label selection every GPU of the scrape is summed, one series per GPU: MIG-instance series
(``GPU_I_ID``) repeat their GPU's figures and are skipped. A counter that goes backwards was reset
(driver reload, exporter restart): the window counts its value since the reset and is flagged.
"""

from __future__ import annotations

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
    MEASURED,
    Measurement,
    Meter,
    MeterFailure,
    PowerSampler,
    sample_interval_s,
)
from .base import MeterUnavailable

DCGM_ENERGY = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"  # mJ counter
DCGM_POWER = "DCGM_FI_DEV_POWER_USAGE"  # W gauge
DCGM_TEMP = "DCGM_FI_DEV_GPU_TEMP"
RAPL_ADDED = ("package", "dram")
SCRAPE_TIMEOUT_S = 5.0

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


def parse_target(arg: str) -> tuple[str, dict[str, str], float]:
    """``URL[#label=value&...&period=S]`` -> (URL, label selector, exporter refresh period)."""
    url, fragment = urldefrag(arg)
    selector = dict(parse_qsl(fragment, keep_blank_values=True))
    try:
        period = float(selector.pop("period", 1.0))
    except ValueError:
        raise MeterUnavailable(f"period in {arg!r} must be a number of seconds") from None
    if period <= 0:
        raise MeterUnavailable(f"period in {arg!r} must be positive")
    return url, selector, period


class PrometheusMeter(Meter):
    name = "prometheus"
    provenance = MEASURED

    def __init__(self, url: str, selector: dict[str, str] | None = None, period_s: float = 1.0,
                 sample_hz: float = DEFAULT_SAMPLE_HZ, fetch: Fetch = http_get,
                 clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.url = url
        self.selector = dict(selector or {})
        self.update_period_s = period_s
        self._fetch = fetch
        self._clock = clock
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
        # the gauge is polled over HTTP: no faster than the exporter refreshes it
        self._sampler = (PowerSampler(self._read_watts, sample_interval_s(sample_hz, period_s))
                         if kind == "dcgm-power" else None)
        self._start: tuple[float, Series] | None = None
        self._temperature_start: list[float] = []

    def _selector_text(self) -> str:
        return ",".join(f'{k}="{v}"' for k, v in self.selector.items())

    @property
    def sensor(self) -> str:
        what = {"dcgm-energy": f"{DCGM_ENERGY} (mJ counter)", "rapl-energy": "node_rapl package+dram joules counters",
                "dcgm-power": f"{DCGM_POWER} (W gauge, integrated)"}[self.kind]
        where = f"{{{self._selector_text()}}}" if self.selector else ""
        return f"prometheus: {what}{where} from {self.url}, {self.series_count} series"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "url": self.url, "selector": self.selector, "metric_kind": self.kind,
                "series": self.series_count, "exporter_period_s": self.update_period_s}

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
        samples = self._scrape()
        return select_series(samples, self.kind, self.selector)[0], temperatures(samples, self.selector)

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
            series, self._temperature_start = self._series()
            self._start = (self._clock(), series)

    def _end(self) -> Measurement:
        flags: list[str] = []
        if self._sampler is not None:
            joules, seconds, samples = self._sampler.end()
            temperature_end = self._series()[1]
        else:
            assert self._start is not None
            started, before = self._start
            after, temperature_end = self._series()
            seconds = self._clock() - started
            missing = sorted(set(before) - set(after))
            if missing:
                raise MeterFailure(f"prometheus: series {missing[0]} vanished from {self.url} during the run; "
                                   "pin one with a #label=value selection")
            total = 0.0
            for key, start_value in before.items():
                end_value = after[key]
                if end_value < start_value:
                    flags.append(FLAG_COUNTER_RESET)  # restarted from 0: count what it gathered since
                    total += end_value
                else:
                    total += end_value - start_value
            joules, samples = total * self._unit, 2
            if total == 0 and seconds >= self.update_period_s:
                flags.append(FLAG_NO_UPDATE)  # a live device always uses some energy: the exporter is stale
        extra: dict[str, Any] = {}
        if self._temperature_start or temperature_end:
            extra = {"temperature_c_start": _one_or_all(self._temperature_start),
                     "temperature_c_end": _one_or_all(temperature_end)}
        return Measurement(joules=joules, seconds=seconds, sensor=self.sensor, provenance=MEASURED, domain=self.domain,
                           samples=samples, flags=tuple(dict.fromkeys(flags)), extra=extra)


def _one_or_all(values: list[float]) -> Any:
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def create(profile: AcceleratorProfile, device_index: int | None = None, arg: str | None = None,
           sample_hz: float = DEFAULT_SAMPLE_HZ, fetch: Fetch = http_get, **_: Any) -> PrometheusMeter:
    if not arg:
        raise MeterUnavailable("the prometheus meter needs an endpoint: --ipw-meter=prometheus+http://HOST:PORT/metrics")
    url, selector, period = parse_target(arg)
    return PrometheusMeter(url, selector, period, sample_hz=sample_hz, fetch=fetch)
