"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, imported lazily).

Volta and newer GPUs have a total-energy counter (mJ since driver load): read at both ends of a window.
Older GPUs only report power (mW): sampled in a thread and integrated.
"""

from __future__ import annotations

import time
from typing import Any

from ..accelerators import AcceleratorProfile
from .base import MEASURED, Measurement, Meter, PowerSampler
from .registry import MeterUnavailable


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlMeter(Meter):
    name = "nvml"
    provenance = MEASURED
    domain = "gpu"

    def __init__(self, pynvml: Any, index: int, sample_interval_s: float = 0.05):
        super().__init__()
        self._nvml = pynvml
        self.index = index
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.device_name = _text(pynvml.nvmlDeviceGetName(self._handle))
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self.uses_counter = True
        except pynvml.NVMLError:
            self.uses_counter = False
        # The counter moves in mJ but the firmware refreshes it about every 20-100 ms; power gauges
        # are averaged over up to a second on recent GPUs.
        self.update_period_s = 0.1 if self.uses_counter else 1.0
        self._sampler = None if self.uses_counter else PowerSampler(self._read_watts, sample_interval_s)
        self._counter_start: int | None = None
        self._temperature_start: int | None = None

    @property
    def sensor(self) -> str:
        how = "total-energy counter" if self.uses_counter else "power gauge, integrated"
        return f"nvml: GPU{self.index} {self.device_name} ({how})"

    def _read_watts(self) -> float:
        return self._nvml.nvmlDeviceGetPowerUsage(self._handle) / 1000.0

    def _temperature(self) -> int | None:
        try:
            return int(self._nvml.nvmlDeviceGetTemperature(self._handle, self._nvml.NVML_TEMPERATURE_GPU))
        except self._nvml.NVMLError:
            return None

    def describe(self) -> dict[str, Any]:
        info = {**super().describe(), "gpu_index": self.index, "device_name": self.device_name,
                "energy_counter": self.uses_counter}
        for key, call in (("driver_version", lambda: _text(self._nvml.nvmlSystemGetDriverVersion())),
                          ("power_limit_w", lambda: self._nvml.nvmlDeviceGetEnforcedPowerLimit(self._handle) / 1000.0)):
            try:
                info[key] = call()
            except self._nvml.NVMLError:
                info[key] = None
        return info

    def _begin(self) -> None:
        self._temperature_start = self._temperature()
        if self._sampler is not None:
            self._sampler.begin()
        else:
            self._counter_start = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            self._t0 = time.perf_counter()

    def _end(self) -> Measurement:
        extra = {"temperature_c_start": self._temperature_start}
        if self._sampler is not None:
            joules, seconds, samples = self._sampler.end()
        else:
            end = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
            seconds = time.perf_counter() - self._t0
            joules = (end - self._counter_start) / 1000.0  # mJ -> J
            samples = 2
        extra["temperature_c_end"] = self._temperature()
        return Measurement(joules=joules, seconds=seconds, sensor=self.sensor, provenance=MEASURED,
                           domain="gpu", samples=samples, extra=extra)

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._nvml = None


def create(profile: AcceleratorProfile, device_index: int | None = None, **options: Any) -> NvmlMeter:
    try:
        import pynvml
    except ImportError:
        raise MeterUnavailable("the nvidia-ml-py package is not installed (pip install nvidia-ml-py)") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise MeterUnavailable(f"NVML could not start ({exc}); no NVIDIA driver or GPU here") from None
    try:
        return NvmlMeter(pynvml, device_index or 0, **options)
    except pynvml.NVMLError as exc:
        pynvml.nvmlShutdown()
        raise MeterUnavailable(f"NVML has no GPU {device_index or 0} ({exc})") from None
