"""NVIDIA GPUs through NVML (the ``nvidia-ml-py`` package, imported lazily).

Volta and newer GPUs have a total-energy counter (mJ since driver load): read at both ends of a window.
Older GPUs only report power (mW): sampled in a thread and integrated.

Which GPUs: ``nvml`` measures the GPU the accelerator was detected as (its NVML index); ``nvml:N`` the
GPU with NVML index N; ``nvml:all`` the sum over every GPU this process may use, i.e. those listed in
``CUDA_VISIBLE_DEVICES`` when it is set (indices, ``GPU-`` UUIDs or ``MIG-`` UUIDs), else all of them.
Each window also records temperature before and after and the SM/memory clocks at its end; the driver
version and enforced power limit go into the run's meter description.

NVML and CUDA number GPUs differently. NVML indices follow the PCI bus; CUDA's ordinals follow
``CUDA_DEVICE_ORDER`` (``FASTEST_FIRST`` by default, ``PCI_BUS_ID``) and then ``CUDA_VISIBLE_DEVICES``, whose
integer entries are CUDA ordinals and whose ``GPU-``/``MIG-`` entries are UUIDs: under
``CUDA_VISIBLE_DEVICES=1`` NVML GPU 1 is CUDA device 0. :func:`cuda_ordinal` maps one to the other by UUID
and PCI bus id, and refuses (with the fix) where CUDA's order cannot be known (different GPU models under
``FASTEST_FIRST``, whose heuristic is undocumented). A GPU in MIG mode is measured whole: its sensor name
says so and its windows are flagged ``shared-device``.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.hardware.nvidia import (  # noqa: F401  (re-exported: the GPU mapping lives in the hardware layer)
    cuda_enumeration,
    cuda_ordinal,
    cuda_ordinal_of,
    cuda_visible_nvml_indices,
    nvml_text as _text,
    visible_gpu_indices,
)
from pytest_ipw.hardware.profiles import AcceleratorProfile
from .base import (
    COUNTER,
    DEFAULT_SAMPLE_HZ,
    FLAG_NO_UPDATE,
    FLAG_SHARED_DEVICE,
    MEASURED,
    Measurement,
    Meter,
    MeterFailure,
    PowerSampler,
    Readings,
    counter_readings,
    sample_interval_s,
    timed_read,
)
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
        self.counter_start: tuple[float, float] = (0.0, 0.0)  # (wall time of the read's middle, mJ)
        self.temperature_start: int | None = None
        uuid = self._optional(pynvml.nvmlDeviceGetUUID) if hasattr(pynvml, "nvmlDeviceGetUUID") else None
        self.uuid = None if uuid is None else _text(uuid)
        # a GPU in MIG mode is measured whole: its instances have no sensor of their own
        mode = self._optional(pynvml.nvmlDeviceGetMigMode) if hasattr(pynvml, "nvmlDeviceGetMigMode") else None
        self.mig_enabled = bool(mode and mode[0] == getattr(pynvml, "NVML_DEVICE_MIG_ENABLE", 1))

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
        whole = "; the WHOLE GPU: MIG is enabled and instances have no sensor of their own" if self.mig_enabled else ""
        return f"nvml: GPU{self.index} {self.name} ({how}{whole})"

    def _counter(self) -> tuple[float, float]:
        return timed_read(lambda: self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))

    def begin(self) -> None:
        self.temperature_start = self.temperature()
        if self.sampler is not None:
            self.sampler.begin()
        else:
            self.counter_start = self._counter()

    def mark_point(self) -> Any:
        """The counter now (one extra read), or the sampler's clock (its samples are split later)."""
        if self.sampler is not None:
            return self.sampler.now()
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)

    def joules_to(self, point: Any) -> float:
        if self.sampler is not None:
            return self.sampler.energy_until(point)[0]
        return (point - self.counter_start[1]) / 1000.0  # mJ -> J

    def probe(self) -> float:
        """The raw reading now: the counter (mJ) or the power gauge (mW), to see how often it changes."""
        if self.uses_counter:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        return float(self.nvml.nvmlDeviceGetPowerUsage(self.handle))


    def end(self, seconds: float, period_s: float) -> Measurement:
        flags = [FLAG_SHARED_DEVICE] if self.mig_enabled else []
        if self.sampler is not None:
            joules, seconds, samples = self.sampler.end()
            readings = self.sampler.readings(period_s)
        else:
            end = self._counter()
            joules, samples = (end[1] - self.counter_start[1]) / 1000.0, 2  # mJ -> J
            readings = counter_readings((self.counter_start[0], [self.counter_start[1] / 1000.0]),
                                        (end[0], [end[1] / 1000.0]), period_s)
            if joules == 0 and seconds >= period_s:
                flags.append(FLAG_NO_UPDATE)  # a powered GPU always uses energy: the counter did not update
        extra = {"temperature_c_start": self.temperature_start, "temperature_c_end": self.temperature(), **self.clocks()}
        return Measurement(joules=joules, seconds=seconds, sensor=self.sensor, provenance=MEASURED, domain="gpu",
                           samples=samples, flags=tuple(flags), extra=extra, readings=readings)


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

    def resolved_devices(self) -> set[str]:
        return {f"nvml:{g.uuid or g.index}" for g in self.gpus}

    def describe(self) -> dict[str, Any]:
        info = {**super().describe(), "gpu_index": self.index, "gpu_indices": [g.index for g in self.gpus],
                "gpu_uuids": [g.uuid for g in self.gpus], "device_name": self.device_name,
                "energy_counter": self.uses_counter, "mig_enabled": [g.mig_enabled for g in self.gpus],
                "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
                "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER")}
        try:  # both numberings: NVML's (what is metered) and CUDA's (what the engine runs on)
            info["cuda_ordinals"] = [cuda_ordinal(self._nvml, g.index, info["cuda_visible_devices"],
                                                  info["cuda_device_order"]) for g in self.gpus]
        except (IPWUsageError, self._nvml.NVMLError, AttributeError) as exc:
            info["cuda_ordinals"] = f"unknown: {exc}"
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
            parts = [gpu.end(seconds, self.update_period_s) for gpu in self.gpus]
        except self._nvml.NVMLError as exc:
            raise MeterFailure(f"nvml: reading GPU energy failed during the run ({exc}); "
                               "check `nvidia-smi` (a driver reset or a lost GPU)") from None
        if len(parts) == 1:
            return parts[0]
        readings = None
        if all(p.readings is not None and p.readings.kind == COUNTER for p in parts):
            # one counter per GPU, read one after the other: a series each, at the mean time of the reads
            edges = [(sum(p.readings.times[k] for p in parts) / len(parts),  # type: ignore[union-attr]
                      tuple(v for p in parts for v in p.readings.values[k])) for k in (0, 1)]  # type: ignore[union-attr]
            readings = Readings(COUNTER, (edges[0][0], edges[1][0]), (edges[0][1], edges[1][1]), self.update_period_s,
                                (None,) * len(parts))
        flags = tuple(dict.fromkeys(f for p in parts for f in p.flags if f != FLAG_NO_UPDATE))
        if all(FLAG_NO_UPDATE in p.flags for p in parts):
            flags += (FLAG_NO_UPDATE,)
        return Measurement(joules=sum(p.joules for p in parts), seconds=seconds, sensor=self.sensor,
                           provenance=MEASURED, domain="gpu", samples=sum(p.samples for p in parts), parts=tuple(parts),
                           flags=flags, readings=readings)

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
