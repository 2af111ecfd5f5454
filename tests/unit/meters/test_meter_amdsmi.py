"""The amdsmi meter against a fake ``amdsmi`` module whose values come from real captures.

Real (tests/data/real-samples, see its README): the MI300X SR-IOV guest of ``rocm-smi -a`` (unique ids, PCI
bus, socket power, power cap, and the energy counter all four GPUs share), the 8-GPU MI300X and the 32-logical-GPU
MI300X ``amd-smi monitor`` tables (socket power per GPU), the two-GPU ``amd-smi metric --power`` (Navi/MI1x
socket power). Built, because no capture exists (the README's "Gaps"): how the fake's counters advance with
its clock, unique ids where a capture has none, a silent MI250 die, a 32-bit counter about to wrap, a counter
that does not move (MI100, ROCm/amdsmi#38). The fake has its own clock: counters advance only when a test
advances it, so energies are exact and nothing depends on this machine's speed.
"""

from __future__ import annotations

import re
import struct
import sys
import types

import pytest
from support import REAL_SAMPLES

from pytest_ipw.hardware.profiles import amd_devices, detect_devices, load_profiles
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.meters import amdsmi as amd
from pytest_ipw.meters.amdsmi import (
    FLAG_DIE_NO_POWER,
    FLAG_WHOLE_SOCKET,
    WRAP_32,
    AmdSmiMeter,
    accumulator_delta,
    visible_gpu_indices,
)
from pytest_ipw.meters.base import (
    FLAG_COUNTER_RESET,
    FLAG_MAY_HAVE_WRAPPED,
    MEASURED,
    MeterFailure,
)
from pytest_ipw.meters.registry import MeterUnavailable, select_meter

SAMPLES = REAL_SAMPLES
PROFILES = load_profiles()
FLOAT32_15_3 = struct.unpack("f", struct.pack("f", 15.3))[0]  # counter_resolution is a C float


# --------------------------------------------------------------------------- the captures


def rocm_smi_all() -> dict[int, dict[str, str]]:
    """``GPU[n]\t\t: key: value`` lines of ``rocm-smi -a``, per GPU (the last value of a key wins)."""
    gpus: dict[int, dict[str, str]] = {}
    for line in (SAMPLES / "rocm-smi_-a_MI300X-OAM_x4_SRIOV.txt").read_text().splitlines():
        match = re.match(r"GPU\[(\d+)\]\s*: (.+?): (.*)$", line)
        if match:
            gpus.setdefault(int(match.group(1)), {})[match.group(2).strip()] = match.group(3).strip()
    return gpus


def monitor_watts(name: str) -> list[int]:
    """The POWER column of an ``amd-smi monitor`` table, one entry per GPU."""
    lines = (SAMPLES / name).read_text(encoding="utf-8").splitlines()
    column = lines[0].split().index("POWER")
    return [int(line.split()[column]) for line in lines[1:] if line.strip()]


def metric_socket_watts() -> list[int]:
    text = (SAMPLES / "amd-smi_metric_--power_Navi2x-Navi3x-MI1x_x2_rocm6.1.2_amdsmi-changelog.txt").read_text()
    return [int(w) for w in re.findall(r"SOCKET_POWER: (\d+) W", text)]


def concise_name() -> str:
    text = (SAMPLES / "rocm-smi_concise_MI300X-OAM_x4_SRIOV.txt").read_text()
    return re.search(r"^\s+(AMD Instinct \S+)", text, re.M).group(1)


def test_counter_times_resolution_is_the_accumulated_energy_in_microjoules():
    # rocm-smi prints both the raw accumulator and its product with the resolution: the meter's unit rule
    for gpu in rocm_smi_all().values():
        ticks, microjoules = int(gpu["Energy counter"]), float(gpu["Accumulated Energy (uJ)"])
        assert microjoules / ticks == pytest.approx(FLOAT32_15_3, rel=1e-12)
        assert ticks > WRAP_32  # MI300's accumulator is 64 bits wide
    assert len({gpu["Energy counter"] for gpu in rocm_smi_all().values()}) == 1  # the SR-IOV quirk


# --------------------------------------------------------------------------- the fake library


class AmdSmiException(Exception):
    pass


class AmdSmiLibraryException(AmdSmiException):
    pass


class Counter:
    """An energy accumulator in 15.3 µJ ticks, driven by the fake's clock at ``watts``; ``width`` bits wide."""

    def __init__(self, start: int, watts: float, width: int = 64, moving: bool = True):
        self.start, self.watts, self.width, self.moving = start, watts, width, moving

    def ticks(self, t: float) -> int:
        advanced = round(self.watts * t * 1e6 / FLOAT32_15_3) if self.moving else 0
        return (self.start + advanced) % 2**self.width


class FakeGpu:
    def __init__(self, name: str, watts: float, counter: Counter | None | str, serial: int | None = None,
                 gauge: str = "current_socket_power", bdf: str = "", cap_w: float = 750.0, temperature: int = 35):
        self.name, self.watts, self.counter, self.serial, self.gauge = name, watts, counter, serial, gauge
        self.bdf, self.cap_w, self.temperature = bdf, cap_w, temperature


class FakeAmdsmi(types.SimpleNamespace):
    """The few amdsmi calls the meter makes, answering as amdsmi 6.x does (``"N/A"`` where unsupported)."""

    def __init__(self, gpus: list[FakeGpu]):
        super().__init__()
        self.gpus, self.t, self.fail, self.inits, self.shutdowns, self.init_error = gpus, 0.0, False, 0, 0, None
        self.AmdSmiException, self.AmdSmiLibraryException = AmdSmiException, AmdSmiLibraryException
        self.AmdSmiTemperatureType = types.SimpleNamespace(HOTSPOT=1)
        self.AmdSmiTemperatureMetric = types.SimpleNamespace(CURRENT=0)

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def amdsmi_init(self):
        if self.init_error:
            raise AmdSmiLibraryException(self.init_error)
        self.inits += 1

    def amdsmi_shut_down(self):
        self.shutdowns += 1

    def amdsmi_get_processor_handles(self):
        return [("gpu", i) for i in range(len(self.gpus))]

    def _gpu(self, handle) -> FakeGpu:
        if self.fail:
            raise AmdSmiLibraryException("AMDSMI_STATUS_NO_PERM / device lost")
        return self.gpus[handle[1]]

    def amdsmi_get_gpu_asic_info(self, handle):
        gpu = self._gpu(handle)
        serial = f"0x{gpu.serial:016X}" if gpu.serial is not None else "N/A"
        return {"market_name": gpu.name, "asic_serial": serial, "device_id": "0x74a1"}

    def amdsmi_get_power_info(self, handle):
        gpu = self._gpu(handle)
        info = {key: "N/A" for key in ("current_socket_power", "average_socket_power", "gfx_voltage")}
        info[gpu.gauge] = gpu.watts
        return info

    def amdsmi_get_energy_count(self, handle):
        gpu = self._gpu(handle)
        if gpu.counter is None:
            raise AmdSmiLibraryException("AMDSMI_STATUS_NOT_SUPPORTED")
        ticks = 0xFFFFFFFF if gpu.counter == "invalid" else gpu.counter.ticks(self.t)
        return {"power": ticks, "energy_accumulator": ticks, "counter_resolution": FLOAT32_15_3,
                "timestamp": int(self.t * 1e9) + 1}

    def amdsmi_get_power_cap_info(self, handle):
        return {"power_cap": int(self._gpu(handle).cap_w * 1e6), "default_power_cap": 750_000_000}

    def amdsmi_get_temp_metric(self, handle, kind, metric):
        return self._gpu(handle).temperature

    def amdsmi_get_gpu_driver_info(self, handle):
        return {"driver_name": "amdgpu", "driver_version": "6.7.0", "driver_date": "2015/01/01 00:00"}


def sriov_guest() -> FakeAmdsmi:
    """The 4 MI300X VFs of rocm-smi -a: one counter for all of them, each its own socket power."""
    shared = None
    gpus = []
    for index, gpu in sorted(rocm_smi_all().items()):
        watts = float(gpu["Current Socket Graphics Package Power (W)"])
        if shared is None:
            shared = Counter(int(gpu["Energy counter"]), 528.0)  # built: one counter moving for all four
        gpus.append(FakeGpu(concise_name(), watts, shared, serial=int(gpu["Unique ID"], 16), bdf=gpu["PCI Bus"],
                            cap_w=float(gpu["Max Graphics Package Power (W)"]),
                            temperature=int(float(gpu["Temperature (Sensor junction) (C)"]))))
    return FakeAmdsmi(gpus)


def mi300x_x8() -> FakeAmdsmi:
    watts = monitor_watts("amd-smi_monitor_-ptumv_MI300X_x8_rocm6.1.0_amdsmi-changelog.txt")
    return FakeAmdsmi([FakeGpu("AMD Instinct MI300X", w, Counter(5104503354501 + 7919 * i, w), serial=0x1000 + i)
                       for i, w in enumerate(watts)])


def create(fake: FakeAmdsmi, monkeypatch, arg: str | None = None, environ: dict | None = None, **kwargs):
    monkeypatch.setitem(sys.modules, "amdsmi", fake)
    return amd.create(PROFILES["mi300x"], arg=arg, sleep=fake.advance, environ=environ or {}, clock=lambda: fake.t,
                      **kwargs)


def window(meter: AmdSmiMeter, fake: FakeAmdsmi, seconds: float):
    with meter.window() as handle:
        fake.advance(seconds)
    return handle.measurement


# --------------------------------------------------------------------------- tests


def test_eight_mi300x_counters_one_part_each(monkeypatch):
    fake = mi300x_x8()
    meter = create(fake, monkeypatch, arg="all")
    assert meter.uses_counter and meter.update_period_s == amd.COUNTER_PERIOD_S
    m = window(meter, fake, 2.0)
    watts = monitor_watts("amd-smi_monitor_-ptumv_MI300X_x8_rocm6.1.0_amdsmi-changelog.txt")
    assert [p.joules for p in m.parts] == [pytest.approx(2.0 * w, abs=2e-5) for w in watts]  # one tick is 15.3 µJ
    assert m.joules == pytest.approx(2.0 * sum(watts), abs=2e-4)
    assert m.provenance == MEASURED and m.domain == "gpu" and m.flags == ()
    assert all(p.extra["counter_seconds"] == pytest.approx(2.0) for p in m.parts)  # the firmware's own clock
    assert m.parts[3].sensor == "amdsmi: GPU3 AMD Instinct MI300X (energy counter)"
    info = meter.describe()
    assert info["gpu_indices"] == list(range(8)) and info["energy_counter"] and info["provenance"] == MEASURED
    assert info["power_limit_w"] == [750.0] * 8 and info["driver_version"] == "6.7.0"
    assert info["update_period_s"] == amd.COUNTER_PERIOD_S
    meter.close()
    assert fake.shutdowns == 1


def test_sriov_guest_shares_one_counter_so_each_gpu_is_measured_by_its_gauge(monkeypatch):
    fake = sriov_guest()
    meter = create(fake, monkeypatch, arg="all")
    assert not meter.uses_counter and meter.update_period_s == amd.GAUGE_PERIOD_S
    assert all("identical on GPUs 0, 1, 2, 3" in g.why_not_counter for g in meter.gpus)
    m = window(meter, fake, 0.0)  # the gauge is sampled in real time; its figure is constant
    assert [p.watts for p in m.parts] == [pytest.approx(w) for w in (133.0, 130.0, 131.0, 136.0)]
    assert "current_socket_power gauge, integrated" in m.parts[0].sensor
    assert m.parts[0].extra["temperature_c_start"] == 35
    info = meter.describe()
    assert info["power_limit_w"] == [750.0] * 4 and info["device_name"] == "AMD Instinct MI300X"


def test_one_gpu_by_default_and_by_index(monkeypatch):
    fake = mi300x_x8()
    monkeypatch.setitem(sys.modules, "amdsmi", fake)
    assert amd.create(PROFILES["mi300x"], device_index=5, sleep=fake.advance, environ={}).index == 5
    meter = amd.create(PROFILES["mi300x"], arg="2", sleep=fake.advance, environ={})
    assert meter.index == 2 and window(meter, fake, 1.0).joules == pytest.approx(177.0, abs=2e-5)
    with pytest.raises(MeterUnavailable, match="amdsmi:first is not understood"):
        amd.create(PROFILES["mi300x"], arg="first")
    with pytest.raises(MeterUnavailable, match="AMD SMI has no GPU 9"):
        amd.create(PROFILES["mi300x"], arg="9", sleep=fake.advance, environ={})


def test_partitioned_sockets_are_measured_once(monkeypatch):
    # 32 logical GPUs, 4 per socket; AMD SMI repeats the socket's power on each. The capture has no unique ids:
    # the fake gives the 4 partitions of a socket the socket's one id and one counter (built).
    watts = monitor_watts("amd-smi_monitor_-p_-t_-v_MI300X_32-logical-GPUs_rocm6.3.0_amdsmi-changelog.txt")
    counters = [Counter(9_000_000_000_000 + s, watts[4 * s]) for s in range(8)]
    fake = FakeAmdsmi([FakeGpu("AMD Instinct MI300X", w, counters[i // 4], serial=0x2000 + i // 4)
                       for i, w in enumerate(watts)])
    meter = create(fake, monkeypatch, arg="all")
    assert [g.index for g in meter.gpus] == [0, 4, 8, 12, 16, 20, 24, 28] and meter.uses_counter
    m = window(meter, fake, 1.0)
    assert m.joules == pytest.approx(sum(watts[::4]), abs=1e-3)  # not sum(watts): that counts each socket 4 times
    assert sum(watts) > 3.9 * m.joules
    assert "socket of logical GPUs 4, 5, 6, 7" in m.parts[1].sensor and FLAG_WHOLE_SOCKET not in m.flags
    # two partitions of socket 0 visible: measured once, and the figure covers the whole socket
    meter = create(fake, monkeypatch, arg="all", environ={"HIP_VISIBLE_DEVICES": "0,1"})
    m = window(meter, fake, 1.0)
    assert [g.partitions for g in meter.gpus] == [[0, 1]] and FLAG_WHOLE_SOCKET in m.flags
    assert m.joules == pytest.approx(watts[0], abs=1e-4)


def test_gpus_without_a_usable_counter_use_the_average_gauge(monkeypatch):
    # amd-smi metric --power on Navi2x/Navi3x/MI1x: 11 W and 17 W. The counters are built: newer kernels give
    # the 0xFFFFFFFF "invalid" value on RDNA3/RDNA4, and a GPU may not support the call at all.
    low, high = metric_socket_watts()
    fake = FakeAmdsmi([FakeGpu("AMD Radeon RX 7900 XTX", low, "invalid", serial=1, gauge="average_socket_power"),
                       FakeGpu("AMD Instinct MI100", high, None, serial=2, gauge="average_socket_power")])
    meter = create(fake, monkeypatch, arg="all")
    m = window(meter, fake, 0.0)
    assert [p.watts for p in m.parts] == [pytest.approx(11.0), pytest.approx(17.0)]
    assert all("average_socket_power gauge, integrated; no energy counter" in p.sensor for p in m.parts)
    assert meter.update_period_s == amd.GAUGE_PERIOD_S


@pytest.mark.parametrize("counter, reason", [
    (Counter(8_152_136, 36.0, moving=False), "did not move in 0.25 s while the gauge read 36 W"),  # amdsmi#38
    (Counter(0, 36.0, moving=False), "did not move"),  # RDNA3 on older kernels: the field is left at 0
    (Counter(8_152_136, 3600.0), "gave 900 J in 0.25 s while the gauge read 36 W"),  # 100x the gauge
])
def test_a_counter_that_disagrees_with_the_gauge_is_not_used(monkeypatch, counter, reason):
    fake = FakeAmdsmi([FakeGpu("AMD Instinct MI100", 36.0, counter, serial=7, gauge="average_socket_power")])
    meter = create(fake, monkeypatch)
    assert not meter.uses_counter and reason in meter.gpus[0].why_not_counter
    assert window(meter, fake, 0.0).watts == pytest.approx(36.0)


def test_second_die_of_an_mi250_is_flagged_and_not_counted(monkeypatch):
    # built from the driver's rule (aldebaran: only the primary die fills socket power and the accumulator)
    fake = FakeAmdsmi([FakeGpu("AMD Instinct MI250X", 310.0, Counter(7_000_000_000_000, 310.0), serial=11,
                               gauge="average_socket_power"),
                       FakeGpu("AMD Instinct MI250X", 0, Counter(0, 0.0), serial=12, gauge="average_socket_power")])
    meter = create(fake, monkeypatch, arg="all")
    m = window(meter, fake, 1.0)
    assert m.joules == pytest.approx(310.0, abs=2e-5) and m.extra == {"gpus_reporting": 1}
    assert m.parts[1].joules == 0 and FLAG_DIE_NO_POWER in m.parts[1].flags and FLAG_DIE_NO_POWER in m.flags
    assert "reports 0 W" in m.parts[1].sensor and m.samples == m.parts[0].samples
    assert meter.describe()["gpus"][1]["reports_no_power"] is True
    with pytest.raises(MeterUnavailable, match=r"GPU1 AMD Instinct MI250X reports 0 W.*amdsmi:0"):
        create(fake, monkeypatch, arg="1")
    choice = select_meter(PROFILES["mi300x"], 1, sleep=fake.advance, environ={})
    assert choice.meter.name == "estimate" and "first die (GCD)" in choice.fallback_reason


def test_accumulator_width():
    assert accumulator_delta(100, 250) == (150, None)
    assert accumulator_delta(WRAP_32 - 10, 5) == (15, None)  # a 32-bit firmware accumulator wrapped
    assert accumulator_delta(2**40, 5) == (5, FLAG_COUNTER_RESET)  # a 64-bit one cannot have: reset


def test_a_32_bit_counter_wraps_inside_a_window(monkeypatch):
    # Navi/MI100 keep 32 bits: start 1000 ticks below the wrap, run 1 s at 300 W (about 19.6 million ticks)
    before_check = round(300.0 * amd.VALIDATE_S * 1e6 / FLOAT32_15_3)  # ticks counted while the meter checks it
    fake = FakeAmdsmi([FakeGpu("AMD Radeon RX 6900 XT", 300.0, Counter(WRAP_32 - 1000 - before_check, 300.0, width=32),
                               serial=3, gauge="average_socket_power", cap_w=300.0)])
    meter = create(fake, monkeypatch)
    start = fake.gpus[0].counter.ticks(fake.t)
    m = window(meter, fake, 1.0)
    assert fake.gpus[0].counter.ticks(fake.t) < start  # it did wrap
    assert m.joules == pytest.approx(300.0, abs=2e-5) and FLAG_COUNTER_RESET not in m.flags
    # a window long enough to wrap twice at the power limit (65.7 kJ at 300 W: 219 s) is flagged
    meter.gpus[0].begin()
    fake.advance(1.0)
    assert FLAG_MAY_HAVE_WRAPPED in meter.gpus[0].end(300.0, 300.0).flags


def test_visible_devices_order_rocr_then_hip(monkeypatch):
    fake = sriov_guest()  # the real unique ids of the capture, for ROCr's GPU-<id> UUIDs
    ids = [f"GPU-{g.serial:016x}" for g in fake.gpus]
    assert ids[1] == "GPU-b4fa34630e85d42a"
    cases = [
        ({}, [0, 1, 2, 3]),
        ({"ROCR_VISIBLE_DEVICES": "2"}, [2]),
        ({"ROCR_VISIBLE_DEVICES": "3,1"}, [3, 1]),
        ({"ROCR_VISIBLE_DEVICES": "1,2,3", "HIP_VISIBLE_DEVICES": "0"}, [1]),  # HIP indexes what ROCr left
        ({"ROCR_VISIBLE_DEVICES": "1,2,3", "HIP_VISIBLE_DEVICES": "2,0"}, [3, 1]),
        ({"HIP_VISIBLE_DEVICES": "1,3"}, [1, 3]),
        ({"CUDA_VISIBLE_DEVICES": "2"}, [2]),  # HIP reads CUDA_VISIBLE_DEVICES when HIP_VISIBLE_DEVICES is unset
        ({"HIP_VISIBLE_DEVICES": "0", "CUDA_VISIBLE_DEVICES": "3"}, [0]),
        ({"ROCR_VISIBLE_DEVICES": ids[1].upper()}, [1]),
        ({"ROCR_VISIBLE_DEVICES": f"{ids[3]},0"}, [3, 0]),
        ({"ROCR_VISIBLE_DEVICES": "GPU-ffff"}, []),
        ({"ROCR_VISIBLE_DEVICES": "0,9,2"}, [0]),  # an invalid entry ends the list
        ({"HIP_VISIBLE_DEVICES": ""}, []),
        ({"ROCR_VISIBLE_DEVICES": "1,1"}, [1]),
    ]
    for environ, expected in cases:
        assert visible_gpu_indices(fake, environ) == expected, environ
    with pytest.raises(IPWUsageError, match="no AMD GPU is visible.*HIP_VISIBLE_DEVICES"):
        monkeypatch.setitem(sys.modules, "amdsmi", fake)
        monkeypatch.setenv("HIP_VISIBLE_DEVICES", "")
        select_meter(PROFILES["mi300x"], requested="amdsmi:all", sleep=fake.advance)


def test_without_amdsmi_the_profile_falls_back_with_the_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # import amdsmi -> ImportError
    assert PROFILES["mi300x"].meter == "amdsmi" and PROFILES["amd-gpu"].meter == "amdsmi"
    choice = select_meter(PROFILES["mi300x"], 0)
    assert choice.meter.name == "estimate"
    assert "amdsmi: the amdsmi package is not installed: install the one that matches your ROCm" \
        in choice.fallback_reason
    with pytest.raises(IPWUsageError, match="--ipw-meter=amdsmi cannot measure here"):
        select_meter(PROFILES["mi300x"], 0, requested="amdsmi")
    fake = mi300x_x8()
    fake.init_error = "AMDSMI_STATUS_DRIVER_NOT_LOADED"
    monkeypatch.setitem(sys.modules, "amdsmi", fake)
    with pytest.raises(MeterUnavailable, match="AMD SMI could not start .*DRIVER_NOT_LOADED"):
        amd.create(PROFILES["mi300x"])


def test_natural_meter_of_the_mi300x_profile(monkeypatch):
    fake = mi300x_x8()
    monkeypatch.setitem(sys.modules, "amdsmi", fake)
    choice = select_meter(PROFILES["mi300x"], 4, sleep=fake.advance, environ={})
    assert isinstance(choice.meter, AmdSmiMeter) and choice.fallback_reason is None and choice.meter.index == 4


def test_gpu_lost_mid_run_is_a_clear_failure(monkeypatch):
    fake = mi300x_x8()
    meter = create(fake, monkeypatch)
    meter.start()
    fake.fail = True
    with pytest.raises(MeterFailure, match="GPU0 AMD Instinct MI300X stopped reporting its energy counter during "
                                           "the run; check `amd-smi list`"):
        meter.stop()
    gauge = FakeAmdsmi([FakeGpu("AMD Instinct MI100", 36.0, None, serial=1, gauge="average_socket_power")])
    meter = create(gauge, monkeypatch)
    meter.start()
    gauge.fail = True
    with pytest.raises(MeterFailure, match="reading GPU energy failed .*device lost.* during the run"):
        meter.stop()  # raised in the sampler thread, re-raised here with the fix


def test_detection_lists_amd_gpus_with_their_profile(monkeypatch):
    fake = mi300x_x8()
    fake.gpus[7].name = "AMD Radeon RX 7900 XTX"
    monkeypatch.setitem(sys.modules, "amdsmi", fake)
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "6,7")
    found = amd_devices()
    assert found == [(6, "AMD Instinct MI300X"), (7, "AMD Radeon RX 7900 XTX")] and fake.shutdowns == 1
    devices = detect_devices(PROFILES, gpu_names=[], brand="AMD EPYC 9654 96-Core Processor", amd_gpus=found)
    assert [(d.profile.name, d.index) for d in devices] == [("mi300x", 6), ("amd-gpu", 7), ("cpu", None)]
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    assert amd_devices() == []
