"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, imported lazily).

Volta and newer GPUs have a total-energy counter (mJ since driver load): read at both ends of a window.
Older GPUs only report power (mW): sampled in a thread and integrated.

Which GPUs: ``nvml`` measures the GPU the accelerator was detected as (its NVML index); ``nvml:N`` the
GPU with NVML index N; ``nvml:all`` the sum over every GPU this process may use, i.e. those listed in
``CUDA_VISIBLE_DEVICES`` when it is set (indices, ``GPU-`` UUIDs or ``MIG-`` UUIDs), else all of them.
Each window also records temperature before and after and the SM/memory clocks at its end; the driver
version and enforced power limit go into the run's meter description.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

from pytest_ipw.hardware.nvidia import nvml_text as _text, visible_gpu_indices
from pytest_ipw.hardware.profiles import AcceleratorProfile
from .base import DEFAULT_SAMPLE_HZ, MEASURED, Measurement, Meter, MeterFailure, PowerSampler, sample_interval_s
from .base import MeterUnavailable


class _Gpu:
    """One GPU's handle and the way its energy is read."""

    def __init__(self, pynvml: Any, index: int, interval_s: float, gauge_only: bool = False):
        self.nvml = pynvml
        self.index = index
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.name = _text(pynvml.nvmlDeviceGetName(self.handle))
        self.uses_counter = False
        if not gauge_only:
            try:
                pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
                self.uses_counter = True
            except pynvml.NVMLError:
                pass
        self.sampler = None if self.uses_counter else PowerSampler(self.watts, interval_s)
        self.counter_start = 0
        self.temperature_start: int | None = None

    def watts(self) -> float:
        return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0

    def _optional(self, call: Any, *args: Any) -> Any:
        try:
            return call(self.handle, *args)
        except self.nvml.NVMLError:
            return None

    def temperature(self) -> int | None:
        value = self._optional(self.nvml.nvmlDeviceGetTemperature, getattr(self.nvml, "NVML_TEMPERATURE_GPU", 0))
        return None if value is None else int(value)

    def clocks(self) -> dict[str, int]:
        """SM and memory clocks now (MHz), those the GPU reports."""
        clock = getattr(self.nvml, "nvmlDeviceGetClockInfo", None)
        if clock is None:
            return {}
        values = {"sm_clock_mhz": self._optional(clock, getattr(self.nvml, "NVML_CLOCK_SM", 1)),
                  "mem_clock_mhz": self._optional(clock, getattr(self.nvml, "NVML_CLOCK_MEM", 2))}
        return {k: int(v) for k, v in values.items() if v is not None}

    @property
    def sensor(self) -> str:
        how = "total-energy counter" if self.uses_counter else "power gauge, integrated"
        return f"nvml: GPU{self.index} {self.name} ({how})"

    def begin(self) -> None:
        self.temperature_start = self.temperature()
        if self.sampler is not None:
            self.sampler.begin()
        else:
            self.counter_start = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def mark_point(self) -> Any:
        """The counter now (one extra read), or the sampler's clock (its samples are split later)."""
        if self.sampler is not None:
            return self.sampler.now()
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def joules_to(self, point: Any) -> float:
        if self.sampler is not None:
            return self.sampler.energy_until(point)[0]
        return (point - self.counter_start) / 1000.0  # mJ -> J

    def probe(self) -> float:
        """The raw reading now: the counter (mJ) or the power gauge (mW), to see how often it changes."""
        if self.uses_counter:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        return float(self.nvml.nvmlDeviceGetPowerUsage(self.handle))

    def end(self, seconds: float) -> Measurement:
        if self.sampler is not None:
            joules, seconds, samples = self.sampler.end()
        else:
            end = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            joules, samples = (end - self.counter_start) / 1000.0, 2  # mJ -> J
        extra = {"temperature_c_start": self.temperature_start, "temperature_c_end": self.temperature(), **self.clocks()}
        return Measurement(joules=joules, seconds=seconds, sensor=self.sensor, provenance=MEASURED, domain="gpu",
                           samples=samples, extra=extra)


class NvmlMeter(Meter):
    name = "nvml"
    provenance = MEASURED
    domain = "gpu"

    def __init__(self, pynvml: Any, index: int | Sequence[int], sample_interval_s: float = 1.0 / DEFAULT_SAMPLE_HZ,
                 gauge_only: bool = False):
        super().__init__()
        self._nvml = pynvml
        indices = [index] if isinstance(index, int) else list(index)
        if not indices:
            raise ValueError("an NVML meter needs at least one GPU index")
        self._interval_s = sample_interval_s
        self.gpus = [_Gpu(pynvml, i, sample_interval_s, gauge_only) for i in indices]
        self.index = indices[0]
        self.device_name = self.gpus[0].name
        self.uses_counter = all(g.uses_counter for g in self.gpus)
        # The counter moves in mJ but the firmware refreshes it about every 20-100 ms; power gauges
        # are averaged over up to a second on recent GPUs.
        self.update_period_s = 0.1 if self.uses_counter else 1.0
        self.reading = "counter" if self.uses_counter else "gauge"
        self._t0 = 0.0

    @property
    def sensor(self) -> str:
        if len(self.gpus) == 1:
            return self.gpus[0].sensor
        return f"nvml: sum of GPUs {', '.join(str(g.index) for g in self.gpus)} ({', '.join(g.sensor for g in self.gpus)})"

    def describe(self) -> dict[str, Any]:
        info = {**super().describe(), "gpu_index": self.index, "gpu_indices": [g.index for g in self.gpus],
                "device_name": self.device_name, "energy_counter": self.uses_counter,
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        try:
            info["driver_version"] = _text(self._nvml.nvmlSystemGetDriverVersion())
        except self._nvml.NVMLError:
            info["driver_version"] = None
        limits = []
        for gpu in self.gpus:
            limit = gpu._optional(self._nvml.nvmlDeviceGetEnforcedPowerLimit)
            limits.append(None if limit is None else limit / 1000.0)
        info["power_limit_w"] = limits[0] if len(limits) == 1 else limits
        clocks = [g.clocks() for g in self.gpus]
        info["clocks_mhz"] = clocks[0] if len(clocks) == 1 else clocks
        return info

    def thermal(self) -> dict[str, Any]:
        if self._nvml is None:
            return {}
        values = [g.temperature() for g in self.gpus]
        return {"temperature_c": values[0] if len(values) == 1 else values}

    def _begin(self) -> None:
        for gpu in self.gpus:
            gpu.begin()
        self._t0 = time.perf_counter()

    def _mark(self, label: str) -> Any:
        return time.perf_counter(), [gpu.mark_point() for gpu in self.gpus]

    def _split(self, label: str, point: Any, measurement: Measurement) -> tuple[float, float, str]:
        at, points = point
        how = "counter read at the mark" if self.uses_counter else "gauge samples split at the mark"
        return at - self._t0, sum(g.joules_to(p) for g, p in zip(self.gpus, points)), how

    def probe(self) -> float:
        """Sum of the GPUs' raw readings now (counter mJ or gauge mW), for ``pytest-ipw calibrate``."""
        return sum(g.probe() for g in self.gpus)

    def gauge_twin(self) -> "NvmlMeter | None":
        """A second meter on the same GPUs reading the power gauge, to check the counter against it
        (``pytest-ipw calibrate``); None when this meter already reads the gauge."""
        if not self.uses_counter:
            return None
        self._nvml.nvmlInit()  # NVML counts its users: the twin's close() shuts down only its own
        return NvmlMeter(self._nvml, [g.index for g in self.gpus], sample_interval_s=self._interval_s, gauge_only=True)

    def _end(self) -> Measurement:
        seconds = time.perf_counter() - self._t0
        try:
            parts = [gpu.end(seconds) for gpu in self.gpus]
        except self._nvml.NVMLError as exc:
            raise MeterFailure(f"nvml: reading GPU energy failed during the run ({exc}); "
                               "check `nvidia-smi` (a driver reset or a lost GPU)") from None
        if len(parts) == 1:
            return parts[0]
        return Measurement(joules=sum(p.joules for p in parts), seconds=seconds, sensor=self.sensor,
                           provenance=MEASURED, domain="gpu", samples=sum(p.samples for p in parts), parts=tuple(parts))

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._nvml = None


def create(profile: AcceleratorProfile, device_index: int | None = None, arg: str | None = None,
           sample_hz: float = DEFAULT_SAMPLE_HZ, **_: Any) -> NvmlMeter:
    if arg is not None and arg != "all" and not arg.isdigit():
        raise MeterUnavailable(f"nvml:{arg} is not understood; use nvml, nvml:N (an NVML GPU index) or nvml:all")
    interval = sample_interval_s(sample_hz)
    indices: list[int] = []
    try:
        import pynvml
    except ImportError:
        raise MeterUnavailable("the nvidia-ml-py package is not installed (pip install nvidia-ml-py)") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise MeterUnavailable(f"NVML could not start ({exc}); no NVIDIA driver or GPU here") from None
    try:
        if arg == "all":
            indices = visible_gpu_indices(pynvml, os.environ.get("CUDA_VISIBLE_DEVICES"))
            if not indices:
                pynvml.nvmlShutdown()
                raise MeterUnavailable("no GPU is visible to this process (check CUDA_VISIBLE_DEVICES)")
        else:
            indices = [int(arg) if arg is not None else (device_index or 0)]
        return NvmlMeter(pynvml, indices, sample_interval_s=interval)
    except pynvml.NVMLError as exc:
        pynvml.nvmlShutdown()
        raise MeterUnavailable(f"NVML has no GPU {', '.join(map(str, indices))} ({exc})") from None
