"""NVML beyond one GPU: every visible GPU (CUDA_VISIBLE_DEVICES by index, UUID or MIG UUID), clocks,
temperatures, driver and power limit recorded; failures mid-run are clear. pynvml's functions are replaced."""

from __future__ import annotations

import sys
import types

import pytest

from pytest_ipw.hardware.profiles import detect_devices, load_profiles
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.meters import nvml
from pytest_ipw.meters.base import MEASURED, MeterFailure
from pytest_ipw.meters.nvml import NvmlMeter, visible_gpu_indices
from pytest_ipw.meters.registry import MeterUnavailable, select_meter

PROFILES = load_profiles()


class NVMLError(Exception):
    pass


class FakeNvml(types.SimpleNamespace):
    """Several GPUs; GPU i's counter rises by ``step_mj[i]`` on every read; ``fail`` breaks reads."""

    def __init__(self, names, step_mj=None, counters=True, power_mw=None, uuids=None, mig=None):
        super().__init__()
        self.names = names
        self.step_mj = step_mj or [1000 * (i + 1) for i in range(len(names))]
        self.power_mw = power_mw or [100_000 * (i + 1) for i in range(len(names))]
        self.uuids = uuids or [f"GPU-{i:08d}-aaaa-bbbb-cccc-dddddddddddd" for i in range(len(names))]
        self.mig = mig or {}  # MIG uuid -> parent index
        self.counters, self.reads, self.fail, self.shutdowns = counters, [0] * len(names), False, 0
        self.NVMLError = NVMLError
        self.NVML_TEMPERATURE_GPU, self.NVML_CLOCK_SM, self.NVML_CLOCK_MEM = 0, 1, 2

    def nvmlInit(self):
        pass

    def nvmlShutdown(self):
        self.shutdowns += 1

    def nvmlDeviceGetCount(self):
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, index):
        if not 0 <= index < len(self.names):
            raise NVMLError("Invalid Argument")
        return ("gpu", index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid in self.mig:
            return ("mig", uuid)
        raise NVMLError("Not Found")

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):
        return ("gpu", self.mig[handle[1]])

    def nvmlDeviceGetIndex(self, handle):
        return handle[1]

    def nvmlDeviceGetUUID(self, handle):
        return self.uuids[handle[1]].encode()

    def nvmlDeviceGetName(self, handle):
        return self.names[handle[1]]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        if not self.counters:
            raise NVMLError("Not Supported")
        if self.fail:
            raise NVMLError("GPU is lost")
        i = handle[1]
        self.reads[i] += 1
        return 7_000_000 + self.reads[i] * self.step_mj[i]

    def nvmlDeviceGetPowerUsage(self, handle):
        if self.fail:
            raise NVMLError("GPU is lost")
        return self.power_mw[handle[1]]

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 40 + handle[1]

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return {1: 1980, 2: 2619}[clock]

    def nvmlSystemGetDriverVersion(self):
        return "565.57.01"

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000


H100x4 = ["NVIDIA H100 80GB HBM3"] * 4


@pytest.mark.parametrize("env, expected", [
    (None, [0, 1, 2, 3]),
    ("2", [2]),
    ("3,1", [3, 1]),
    ("1,1", [1]),
    ("0,7,2", [0]),  # like CUDA: an invalid entry ends the list
    ("", []),
    ("-1", []),
    ("GPU-00000002", [2]),  # a UUID prefix, as CUDA accepts
    ("GPU-0000000", []),  # ambiguous prefix
    ("MIG-abc", [1]),  # a MIG instance is measured through its parent GPU
    ("MIG-nope,0", []),
])
def test_visible_gpu_indices(env, expected):
    fake = FakeNvml(H100x4, mig={"MIG-abc": 1})
    assert visible_gpu_indices(fake, env) == expected


def test_all_visible_gpus_are_summed_with_a_part_each(monkeypatch):
    fake = FakeNvml(H100x4)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,3")
    meter = nvml.create(PROFILES["h100"], arg="all")
    assert [g.index for g in meter.gpus] == [1, 3]
    with meter.window() as w:
        pass
    m = w.measurement
    # each counter read once at each end: GPU1 rises 2 J, GPU3 rises 4 J per read
    assert [(p.sensor.split(" ")[1], p.joules) for p in m.parts] == [("GPU1", 2.0), ("GPU3", 4.0)]
    assert m.joules == pytest.approx(6.0) and m.domain == "gpu" and m.provenance == MEASURED
    assert "GPUs 1, 3" in m.sensor
    assert m.parts[1].extra == {"temperature_c_start": 43, "temperature_c_end": 43,
                                "sm_clock_mhz": 1980, "mem_clock_mhz": 2619}
    info = meter.describe()
    assert info["gpu_indices"] == [1, 3] and info["power_limit_w"] == [700.0, 700.0]
    assert info["driver_version"] == "565.57.01" and info["cuda_visible_devices"] == "1,3"
    assert meter.thermal() == {"temperature_c": [41, 43]}


def test_default_is_the_detected_gpu_and_nvml_n_picks_one(monkeypatch):
    fake = FakeNvml(H100x4)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    assert nvml.create(PROFILES["h100"], device_index=2).index == 2
    assert nvml.create(PROFILES["h100"], arg="3").index == 3
    with pytest.raises(MeterUnavailable, match="nvml:first is not understood"):
        nvml.create(PROFILES["h100"], arg="first")
    with pytest.raises(MeterUnavailable, match="NVML has no GPU 9"):
        nvml.create(PROFILES["h100"], arg="9")


def test_nothing_visible(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(H100x4))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(IPWUsageError, match="no GPU is visible to this process .*CUDA_VISIBLE_DEVICES"):
        select_meter(PROFILES["h100"], requested="nvml:all")


def test_single_gpu_records_clocks_temperature_and_limit():
    meter = NvmlMeter(FakeNvml(H100x4), 0)
    with meter.window() as w:
        pass
    assert w.measurement.joules == pytest.approx(1.0)
    assert w.measurement.extra == {"temperature_c_start": 40, "temperature_c_end": 40,
                                   "sm_clock_mhz": 1980, "mem_clock_mhz": 2619}
    info = meter.describe()
    assert info["power_limit_w"] == 700.0 and info["clocks_mhz"] == {"sm_clock_mhz": 1980, "mem_clock_mhz": 2619}
    assert meter.thermal() == {"temperature_c": 40}


def test_power_gauges_of_several_gpus_are_sampled(monkeypatch):
    fake = FakeNvml(H100x4[:2], counters=False, power_mw=[150_000, 250_000])
    meter = NvmlMeter(fake, [0, 1], sample_interval_s=0.001)
    assert not meter.uses_counter and meter.update_period_s == 1.0
    with meter.window() as w:
        pass
    m = w.measurement
    assert [p.watts for p in m.parts] == [pytest.approx(150.0), pytest.approx(250.0)]


def test_sample_rate_reaches_the_sampler(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(H100x4, counters=False))
    meter = select_meter(PROFILES["h100"], requested="nvml", sample_hz=100.0).meter
    assert meter.gpus[0].sampler.interval_s == pytest.approx(0.01)


def test_gpu_lost_mid_run_is_a_clear_failure():
    fake = FakeNvml(H100x4)
    meter = NvmlMeter(fake, 0)
    meter.start()
    fake.fail = True
    with pytest.raises(MeterFailure, match="GPU is lost.*nvidia-smi"):
        meter.stop()
    gauge = FakeNvml(H100x4, counters=False)
    meter = NvmlMeter(gauge, 0, sample_interval_s=0.001)
    meter.start()
    gauge.fail = True
    with pytest.raises(Exception, match="GPU is lost"):  # raised by the sampler thread, re-raised here
        meter.stop()


def test_detection_lists_only_visible_gpus_with_their_nvml_index(monkeypatch):
    fake = FakeNvml(["NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3", "NVIDIA L4"])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,1")
    devices = detect_devices(PROFILES, brand="Intel(R) Xeon(R)")
    assert [(d.profile.name, d.index) for d in devices] == [("l4", 2), ("h100", 1), ("cpu", None)]
