"""AMD Instinct and Radeon GPUs through AMD SMI's Python library (``amdsmi``, imported only when chosen).

Energy. ``amdsmi_get_energy_count`` returns the firmware's energy accumulator (``energy_accumulator``; called
``power`` before ROCm 6.4) in ticks of ``counter_resolution`` µJ (15.3, a C float) and the time it was sampled
(``timestamp``, ns). It is read at both ends of a window. Where it cannot be trusted, the socket power gauge
(W: ``current_socket_power`` on MI300 and newer, ``socket_power`` since ROCm 7, ``average_socket_power`` on
MI200, MI100 and Radeon) is sampled in a thread and integrated.

Accumulator width. MI200 and MI300 firmware keep a 64-bit accumulator; Navi and MI100 firmware a 32-bit one
(the driver copies it into the 64-bit field), which wraps after 2^32 ticks, about 65.7 kJ: 3.6 minutes at
300 W. So a counter that falls from below 2^32 has wrapped once (corrected); one that falls from above 2^32
was reset (driver reload, GPU reset) and is flagged. Windows long enough to wrap a 32-bit counter twice at the
power limit are flagged.

When the counter is not used (checked once, when the meter starts): it reports nothing (``N/A``, or the
0xFFFFFFFF "invalid" value that newer kernels give on RDNA3/RDNA4); it reads 0 (RDNA3 on older kernels); it
does not move while the gauge shows power (MI100, ROCm/amdsmi#38); it disagrees with the gauge by more than
10× (the loose bound zeus uses); or several distinct GPUs return the very same value (a virtual machine guest,
where AMD SMI does not support energy: all GPUs of the SR-IOV capture in the tests share one counter).

Which GPUs: ``amdsmi`` measures the GPU the accelerator was detected as; ``amdsmi:N`` the GPU with AMD SMI
index N; ``amdsmi:all`` every GPU this process may use, one part per GPU: ``ROCR_VISIBLE_DEVICES`` (indices or
``GPU-<unique id>`` UUIDs) applies first, then ``HIP_VISIBLE_DEVICES`` (or ``CUDA_VISIBLE_DEVICES``) indexes
what it left. Integer entries are taken in AMD SMI order (PCI bus order, also ROCm's default order).

Dies and partitions. On an MI250/MI250X the second die (GCD) of each card reports 0 W and a still counter:
the first die reports the card. Such a die is flagged ``die-reports-no-power`` and adds nothing; measured
alone it is refused with the fix. Logical GPUs of one partitioned socket (MI300X in CPX mode: 4 or 8 per
socket) share the socket's sensors and AMD SMI repeats its figure for each: a socket is measured once, and a
figure covering partitions this process does not use is flagged ``covers-whole-socket``.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from pytest_ipw.hardware.profiles import AcceleratorProfile
from .base import (
    DEFAULT_SAMPLE_HZ,
    FLAG_COUNTER_RESET,
    FLAG_MAY_HAVE_WRAPPED,
    FLAG_NO_UPDATE,
    MEASURED,
    Measurement,
    Meter,
    MeterFailure,
    PowerSampler,
    sample_interval_s,
)
from pytest_ipw.hardware.amd import INVALID_VALUES, _number, _serial, gpu_name, import_amdsmi, visible_gpu_indices  # noqa: F401

from .base import MeterUnavailable

#: Navi and MI100 firmware accumulate energy in 32 bits (smu11/smu13_0_7 ``uint32_t EnergyAccumulator``)
WRAP_32 = 2**32
#: gauge keys of amdsmi_get_power_info, best first (W)
GAUGE_KEYS = ("current_socket_power", "socket_power", "average_socket_power")
#: a die that reports 0 W (second die of an MI250/MI250X): its figure is not the die's energy
FLAG_DIE_NO_POWER = "die-reports-no-power"
#: a partition's figure is its whole socket's, including partitions this process does not use
FLAG_WHOLE_SOCKET = "covers-whole-socket"
#: the firmware's refresh of the accumulator is undocumented (the driver rereads it at most every 1 ms,
#: ROCm/legacy-rocm-build#1649); 0.1 s is assumed, as for NVML's counter. Power gauges: 1 s averages.
COUNTER_PERIOD_S = 0.1
GAUGE_PERIOD_S = 1.0
#: how long the counter is watched against the gauge before it is trusted, and the agreement asked for
VALIDATE_S = 0.25
AGREEMENT = (0.1, 10.0)
LOST = " during the run; check `amd-smi list` (a driver reset or a lost GPU)"


def accumulator_delta(before: int, after: int) -> tuple[int, str | None]:
    """Ticks counted between two reads, and a flag when the counter was reset rather than wrapped."""
    if after >= before:
        return after - before, None
    if before < WRAP_32:
        return (WRAP_32 - before) + after, None  # a 32-bit firmware accumulator wrapped
    return after, FLAG_COUNTER_RESET  # a 64-bit one went back: count what it gathered since the reset


@dataclass
class _Reading:
    ticks: int
    resolution_uj: float
    timestamp_ns: int


class _Gpu:
    """One GPU (or one partitioned socket): its handle, and how its energy is read."""

    def __init__(self, amdsmi: Any, index: int, handle: Any, interval_s: float):
        self.amdsmi = amdsmi
        self.index = index
        self.handle = handle
        self.name = gpu_name(amdsmi, handle)
        self.serial = _serial(amdsmi, handle)
        self.gauge_key = next((key for key in GAUGE_KEYS if self._gauge(key) is not None), None)
        self.uses_counter = self.read_counter() is not None
        self.why_not_counter: str | None = None if self.uses_counter else "no energy counter"
        self.silent = False  # reports 0 W and a still counter (second die of an MI250)
        self.partitions: list[int] = [index]  # the visible logical GPUs this entry measures (CPX partitions)
        self.socket: list[int] = [index]  # every logical GPU of its socket
        self.whole_socket = False  # some of the socket's partitions are not measured here
        self._interval_s = interval_s
        self.sampler: PowerSampler | None = None
        self._start: tuple[_Reading, int | None] | None = None

    def _gauge(self, key: str) -> float | None:
        try:
            return _number(self.amdsmi.amdsmi_get_power_info(self.handle).get(key))
        except self.amdsmi.AmdSmiException:
            return None

    def watts(self) -> float:
        """The power gauge now (W); raises when it stopped answering."""
        assert self.gauge_key is not None
        value = _number(self.amdsmi.amdsmi_get_power_info(self.handle).get(self.gauge_key))
        if value is None:
            raise MeterFailure(f"amdsmi: GPU{self.index} {self.name} stopped reporting {self.gauge_key}{LOST}")
        return value

    def read_counter(self) -> _Reading | None:
        """The accumulator, or None where this GPU has none that can be used."""
        try:
            raw = self.amdsmi.amdsmi_get_energy_count(self.handle)
        except self.amdsmi.AmdSmiException:
            return None
        ticks = _number(raw.get("energy_accumulator", raw.get("power")))  # "power" before ROCm 6.4
        resolution = _number(raw.get("counter_resolution"))
        if ticks is None or not resolution:
            return None
        return _Reading(int(ticks), resolution, int(_number(raw.get("timestamp")) or 0))

    def temperature(self) -> int | None:
        try:
            kinds, metrics = self.amdsmi.AmdSmiTemperatureType, self.amdsmi.AmdSmiTemperatureMetric
            value = self.amdsmi.amdsmi_get_temp_metric(self.handle, kinds.HOTSPOT, metrics.CURRENT)
        except (self.amdsmi.AmdSmiException, AttributeError):
            return None
        number = _number(value)
        return None if number is None else int(number)

    def power_limit_w(self) -> float | None:
        try:
            cap = _number(self.amdsmi.amdsmi_get_power_cap_info(self.handle).get("power_cap"))
        except (self.amdsmi.AmdSmiException, AttributeError):
            return None
        return cap / 1e6 if cap else None  # µW

    def use_gauge(self, reason: str) -> None:
        self.uses_counter = False
        self.why_not_counter = reason

    @property
    def sensor(self) -> str:
        if self.silent:
            how = "reports 0 W: on an MI250/MI250X the first die of the card reports both dies"
        elif self.uses_counter:
            how = "energy counter"
        else:
            how = f"{self.gauge_key} gauge, integrated; {self.why_not_counter}"
        where = f"GPU{self.index}"
        if len(self.socket) > 1:
            where += f" (socket of logical GPUs {', '.join(map(str, self.socket))})"
        return f"amdsmi: {where} {self.name} ({how})"

    def begin(self) -> None:
        if self.silent:
            return
        if self.uses_counter:
            reading = self.read_counter()
            if reading is None:
                raise MeterFailure(f"amdsmi: GPU{self.index} {self.name} stopped reporting its energy counter{LOST}")
            self._start = (reading, self.temperature())
        else:
            self._start = (_Reading(0, 0.0, 0), self.temperature())
            if self.sampler is None:
                self.sampler = PowerSampler(self.watts, self._interval_s)
            self.sampler.begin()

    def end(self, seconds: float, power_limit_w: float | None) -> Measurement:
        flags: list[str] = [FLAG_WHOLE_SOCKET] if self.whole_socket else []
        if self.silent:
            return Measurement(joules=0.0, seconds=seconds, sensor=self.sensor, provenance=MEASURED, domain="gpu",
                               samples=0, flags=(FLAG_DIE_NO_POWER, *flags))
        assert self._start is not None
        before, temperature_start = self._start
        extra: dict[str, Any] = {}
        if self.sampler is not None:
            joules, seconds, samples = self.sampler.end()
        else:
            after = self.read_counter()
            if after is None:
                raise MeterFailure(f"amdsmi: GPU{self.index} {self.name} stopped reporting its energy counter{LOST}")
            ticks, flag = accumulator_delta(before.ticks, after.ticks)
            flags.extend([flag] if flag else [])
            joules, samples = ticks * after.resolution_uj / 1e6, 2
            if before.ticks < WRAP_32 and seconds * (power_limit_w or 1000.0) * 1e6 >= WRAP_32 * after.resolution_uj:
                flags.append(FLAG_MAY_HAVE_WRAPPED)  # a 32-bit counter may have wrapped twice at full power
            if ticks == 0 and seconds >= COUNTER_PERIOD_S:
                flags.append(FLAG_NO_UPDATE)
            if after.timestamp_ns and before.timestamp_ns:
                extra["counter_seconds"] = (after.timestamp_ns - before.timestamp_ns) / 1e9  # firmware's own clock
        extra.update({"temperature_c_start": temperature_start, "temperature_c_end": self.temperature()})
        return Measurement(joules=joules, seconds=seconds, sensor=self.sensor, provenance=MEASURED, domain="gpu",
                           samples=samples, flags=tuple(dict.fromkeys(flags)), extra=extra)


def validate(gpus: Sequence[_Gpu], sleep: Callable[[float], None] = time.sleep, seconds: float = VALIDATE_S) -> None:
    """Decide, for each GPU, counter or gauge, and find dies that report nothing (see the module text)."""
    watched = [g for g in gpus if g.uses_counter]
    first = {g.index: g.read_counter() for g in watched}
    if watched:
        sleep(seconds)
    second = {g.index: g.read_counter() for g in watched}
    # distinct GPUs returning the very same accumulator share one counter (virtual machine guest)
    by_value: dict[tuple[int, int], list[_Gpu]] = {}
    for gpu in watched:
        a, b = first[gpu.index], second[gpu.index]
        if a is not None and b is not None:
            by_value.setdefault((a.ticks, b.ticks), []).append(gpu)
    for same in by_value.values():
        if len(same) > 1 and (len({g.serial for g in same}) > 1 or any(g.serial is None for g in same)):
            for gpu in same:
                gpu.use_gauge(f"the energy counter is identical on GPUs {', '.join(str(g.index) for g in same)}, "
                              "so it is not per GPU (a virtual machine guest; AMD SMI has no energy there)")
    for gpu in watched:
        a, b = first[gpu.index], second[gpu.index]
        watts = gpu._gauge(gpu.gauge_key) if gpu.gauge_key else None
        if a is None or b is None:
            gpu.use_gauge("the energy counter stopped answering")
            continue
        if a.ticks == b.ticks and watts == 0.0:
            gpu.silent = True  # 0 W and a still counter: a die whose card is reported by its other die
            continue
        if not gpu.uses_counter or watts is None:
            continue
        joules = accumulator_delta(a.ticks, b.ticks)[0] * b.resolution_uj / 1e6
        if joules == 0 and watts > 0:
            gpu.use_gauge(f"the energy counter did not move in {seconds:g} s while the gauge read {watts:g} W")
        elif watts > 0 and not AGREEMENT[0] <= joules / (watts * seconds) <= AGREEMENT[1]:
            gpu.use_gauge(f"the energy counter gave {joules:.3g} J in {seconds:g} s while the gauge read {watts:g} W")


class AmdSmiMeter(Meter):
    name = "amdsmi"
    provenance = MEASURED
    domain = "gpu"

    def __init__(self, amdsmi: Any, gpus: Sequence[_Gpu], visible_env: dict[str, str | None] | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self._clock = clock
        if not gpus:
            raise ValueError("an amdsmi meter needs at least one GPU")
        self._amdsmi = amdsmi
        self.gpus = list(gpus)
        self.index = self.gpus[0].index
        self.device_name = self.gpus[0].name
        reporting = [g for g in self.gpus if not g.silent]
        self.uses_counter = all(g.uses_counter for g in reporting)
        self.update_period_s = COUNTER_PERIOD_S if self.uses_counter else GAUGE_PERIOD_S
        self._visible_env = dict(visible_env or {})
        self._limits = [g.power_limit_w() for g in self.gpus]
        self._t0 = 0.0

    @property
    def sensor(self) -> str:
        if len(self.gpus) == 1:
            return self.gpus[0].sensor
        return (f"amdsmi: sum of GPUs {', '.join(str(g.index) for g in self.gpus)} "
                f"({', '.join(g.sensor for g in self.gpus)})")

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            **super().describe(), "gpu_index": self.index, "gpu_indices": [g.index for g in self.gpus],
            "device_name": self.device_name, "energy_counter": self.uses_counter,
            "update_period_s": self.update_period_s,
            "gpus": [{"index": g.index, "name": g.name, "counter": g.uses_counter, "gauge": g.gauge_key,
                      "why_not_counter": g.why_not_counter, "reports_no_power": g.silent,
                      "partitions": g.partitions, "socket": g.socket} for g in self.gpus],
            **self._visible_env,
        }
        try:
            driver = self._amdsmi.amdsmi_get_gpu_driver_info(self.gpus[0].handle)
            info["driver_version"] = str(driver.get("driver_version")) or None
        except (self._amdsmi.AmdSmiException, AttributeError):
            info["driver_version"] = None
        info["power_limit_w"] = self._limits[0] if len(self._limits) == 1 else self._limits
        return info

    def thermal(self) -> dict[str, Any]:
        if self._amdsmi is None:
            return {}
        values = [g.temperature() for g in self.gpus]
        return {"temperature_c": values[0] if len(values) == 1 else values}

    def _begin(self) -> None:
        try:
            for gpu in self.gpus:
                gpu.begin()
        except self._amdsmi.AmdSmiException as exc:
            raise MeterFailure(f"amdsmi: reading GPU energy failed ({exc}){LOST}") from None
        self._t0 = self._clock()

    def _end(self) -> Measurement:
        seconds = self._clock() - self._t0
        try:
            parts = [gpu.end(seconds, limit) for gpu, limit in zip(self.gpus, self._limits)]
        except self._amdsmi.AmdSmiException as exc:
            raise MeterFailure(f"amdsmi: reading GPU energy failed ({exc}){LOST}") from None
        if len(parts) == 1:
            return parts[0]
        flags = tuple(dict.fromkeys(f for p in parts for f in p.flags))
        reporting = [p for p in parts if FLAG_DIE_NO_POWER not in p.flags]
        return Measurement(joules=sum(p.joules for p in reporting), seconds=seconds, sensor=self.sensor,
                           provenance=MEASURED, domain="gpu", samples=sum(p.samples for p in reporting),
                           flags=flags, parts=tuple(parts), extra={"gpus_reporting": len(reporting)})

    def close(self) -> None:
        if self._amdsmi is not None:
            with contextlib.suppress(self._amdsmi.AmdSmiException):
                self._amdsmi.amdsmi_shut_down()
            self._amdsmi = None


def _group_partitions(gpus: list[_Gpu], all_serials: dict[int, int | None]) -> list[_Gpu]:
    """One entry per physical socket: logical GPUs sharing a unique id are one socket's partitions."""
    kept: dict[int | tuple[str, int], _Gpu] = {}
    for gpu in gpus:
        key = gpu.serial if gpu.serial is not None else ("index", gpu.index)
        if key in kept:
            kept[key].partitions.append(gpu.index)
        else:
            kept[key] = gpu
    for gpu in kept.values():
        gpu.socket = [i for i, s in all_serials.items() if gpu.serial is not None and s == gpu.serial] or [gpu.index]
        gpu.whole_socket = len(gpu.socket) > len(gpu.partitions)
    return list(kept.values())


def create(profile: AcceleratorProfile, device_index: int | None = None, arg: str | None = None,
           sample_hz: float = DEFAULT_SAMPLE_HZ, sleep: Callable[[float], None] = time.sleep,
           environ: dict[str, str] | None = None, clock: Callable[[], float] = time.perf_counter,
           **_: Any) -> AmdSmiMeter:
    """``sleep``, ``environ`` and ``clock`` are for tests (the counter check waits ``VALIDATE_S``)."""
    if arg is not None and arg != "all" and not arg.isdigit():
        raise MeterUnavailable(f"amdsmi:{arg} is not understood; use amdsmi, amdsmi:N (an AMD SMI GPU index) "
                               "or amdsmi:all")
    interval = sample_interval_s(sample_hz)
    environ = dict(os.environ if environ is None else environ)
    amdsmi = import_amdsmi()
    try:
        amdsmi.amdsmi_init()
    except amdsmi.AmdSmiException as exc:
        raise MeterUnavailable(f"AMD SMI could not start ({exc}); no amdgpu driver or AMD GPU here") from None
    try:
        handles = amdsmi.amdsmi_get_processor_handles()
        if arg == "all":
            indices = visible_gpu_indices(amdsmi, environ)
            if not indices:
                raise MeterUnavailable("no AMD GPU is visible to this process "
                                       "(check ROCR_VISIBLE_DEVICES and HIP_VISIBLE_DEVICES)")
        else:
            indices = [int(arg) if arg is not None else (device_index or 0)]
        missing = [i for i in indices if not 0 <= i < len(handles)]
        if missing:
            raise MeterUnavailable(f"AMD SMI has no GPU {missing[0]} (it lists {len(handles)})")
        gpus = [_Gpu(amdsmi, i, handles[i], interval) for i in indices]
        all_serials = {i: _serial(amdsmi, h) for i, h in enumerate(handles)}
        gpus = _group_partitions(gpus, all_serials)
        validate(gpus, sleep)
        blind = [g for g in gpus if not g.silent and not g.uses_counter and g.gauge_key is None]
        if blind:
            raise MeterUnavailable(f"GPU{blind[0].index} {blind[0].name} reports neither a usable energy counter "
                                   f"({blind[0].why_not_counter}) nor socket power to AMD SMI")
        if all(g.silent for g in gpus):
            first_die = f"amdsmi:{gpus[0].index - 1} on a two-die card" if gpus[0].index > 0 else "amdsmi:all"
            raise MeterUnavailable(
                f"GPU{gpus[0].index} {gpus[0].name} reports 0 W and its energy counter does not move: on an "
                "MI250/MI250X only the first die (GCD) of each card reports power, for both dies. Measure that die "
                f"({first_die}), whose figure includes this one")
        visible_env = {key.lower(): environ.get(key) for key in
                       ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES")}
        return AmdSmiMeter(amdsmi, gpus, visible_env, clock)
    except MeterUnavailable:
        with contextlib.suppress(amdsmi.AmdSmiException):
            amdsmi.amdsmi_shut_down()
        raise
    except amdsmi.AmdSmiException as exc:
        with contextlib.suppress(amdsmi.AmdSmiException):
            amdsmi.amdsmi_shut_down()
        raise MeterUnavailable(f"AMD SMI could not read its GPUs ({exc})") from None
