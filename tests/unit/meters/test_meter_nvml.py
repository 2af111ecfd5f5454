"""NVML beyond one GPU: every visible GPU (CUDA_VISIBLE_DEVICES by index, UUID or MIG UUID), clocks,
temperatures, driver and power limit recorded; failures mid-run are clear. pynvml's functions are replaced."""

from __future__ import annotations

import sys

import pytest

from pytest_ipw.hardware.profiles import detect_devices, load_profiles
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.meters import nvml
from pytest_ipw.meters.base import FLAG_NO_UPDATE, FLAG_SHARED_DEVICE, MEASURED, MeterFailure
from pytest_ipw.meters.nvml import NvmlMeter, cuda_ordinal, visible_gpu_indices
from pytest_ipw.meters.registry import MeterUnavailable, select_meter
from support import H100x4, FakeNvml

PROFILES = load_profiles()




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
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    devices = detect_devices(PROFILES, brand="Intel(R) Xeon(R)")
    assert [(d.profile.name, d.index) for d in devices] == [("l4", 2), ("h100", 1), ("cpu", None)]
    # CUDA's default order ranks different models by an undocumented heuristic: "2,1" names unknown GPUs
    monkeypatch.delenv("CUDA_DEVICE_ORDER")
    with pytest.raises(IPWUsageError, match="CUDA_DEVICE_ORDER=PCI_BUS_ID, or list GPU UUIDs"):
        detect_devices(PROFILES, brand="Intel(R) Xeon(R)")


# --------------------------------------------------------------------------- NVML index -> CUDA ordinal

# NVML enumerates these four in this order; their PCI bus ids are not in that order
PCI = ["00000000:3B:00.0", "00000000:1A:00.0", "00000000:DB:00.0", "00000000:86:00.0"]
UUIDS = [f"GPU-{i}{i}{i}{i}aaaa-1111-2222-3333-444455556666" for i in range(4)]
BY_PCI = [1, 0, 3, 2]  # NVML indices in PCI bus order


@pytest.mark.parametrize("visible, order, expected", [
    (None, "PCI_BUS_ID", BY_PCI),  # CUDA ordinal k = k-th GPU by PCI bus id
    ("1", "PCI_BUS_ID", [BY_PCI[1]]),  # CUDA_VISIBLE_DEVICES=1: the 2nd by bus id is CUDA device 0
    ("3,0", "PCI_BUS_ID", [BY_PCI[3], BY_PCI[0]]),
    ("2,0", None, [BY_PCI[2], BY_PCI[0]]),  # FASTEST_FIRST with identical GPUs: ties keep the bus order
    (f"{UUIDS[3]},{UUIDS[0]}", None, [3, 0]),  # UUIDs name GPUs whatever the order
    ("GPU-2222", None, [2]),  # a unique UUID prefix
    ("MIG-abc", None, [2]),  # a MIG instance: CUDA device 0, measured through its parent GPU
    ("1,9,0", "PCI_BUS_ID", [BY_PCI[1]]),  # like CUDA: an invalid entry ends the list
])
def test_nvml_index_to_cuda_ordinal_under_permutations(visible, order, expected):
    fake = FakeNvml(H100x4, uuids=UUIDS, pci=PCI, mig={"MIG-abc": 2})
    for ordinal, index in enumerate(expected):
        assert cuda_ordinal(fake, index, visible, order) == ordinal
    hidden = [i for i in range(4) if i not in expected]
    for index in hidden:
        with pytest.raises(IPWUsageError, match=f"NVML GPU {index} is not visible to CUDA"):
            cuda_ordinal(fake, index, visible, order)


def test_the_issue_example_nvml_gpu_1_is_cuda_device_0():
    fake = FakeNvml(H100x4)  # NVML order is the PCI order here
    assert cuda_ordinal(fake, 1, "1", None) == 0
    assert cuda_ordinal(fake, 1, None, None) == 1


def test_cuda_order_of_different_models_needs_pci_bus_id_or_uuids():
    fake = FakeNvml(["NVIDIA A100-SXM4-80GB", "NVIDIA L4"], pci=["0000:1A:00.0", "0000:3B:00.0"])
    for visible in (None, "1"):
        with pytest.raises(IPWUsageError, match="CUDA_DEVICE_ORDER=PCI_BUS_ID"):
            cuda_ordinal(fake, 1, visible, "FASTEST_FIRST")
    assert cuda_ordinal(fake, 1, "1", "PCI_BUS_ID") == 0
    assert cuda_ordinal(fake, 1, "GPU-00000001", None) == 0  # UUIDs need no order


def test_meter_records_both_numberings(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{UUIDS[3]},{UUIDS[1]}")
    meter = NvmlMeter(FakeNvml(H100x4, uuids=UUIDS, pci=PCI), [1, 3])
    info = meter.describe()
    assert info["gpu_indices"] == [1, 3] and info["cuda_ordinals"] == [1, 0]
    assert info["gpu_uuids"] == [UUIDS[1], UUIDS[3]]


# --------------------------------------------------------------------------- MIG, stale counter, readings


def test_a_mig_gpu_is_named_whole_and_flagged_shared():
    fake = FakeNvml(H100x4, mig_mode={0: (1, 1)})
    meter = NvmlMeter(fake, 0)
    with meter.window() as w:
        pass
    assert "WHOLE GPU" in w.measurement.sensor and "MIG" in w.measurement.sensor
    assert FLAG_SHARED_DEVICE in w.measurement.flags
    plain = NvmlMeter(FakeNvml(H100x4, mig_mode={0: (0, 0)}), 0)
    with plain.window() as w:
        pass
    assert "WHOLE" not in w.measurement.sensor and FLAG_SHARED_DEVICE not in w.measurement.flags


def test_counter_readings_and_a_counter_that_did_not_move(monkeypatch):
    fake = FakeNvml(H100x4[:2], step_mj=[0, 1000])
    meter = NvmlMeter(fake, [0, 1])
    meter.update_period_s = 0.0  # so that an instant window counts as long enough to see an update
    with meter.window() as w:
        pass
    m = w.measurement
    assert m.readings.kind == "counter" and len(m.readings.values[0]) == 2  # a series per GPU
    assert [b - a for a, b in zip(*m.readings.values)] == [0.0, 1.0]
    assert FLAG_NO_UPDATE in m.parts[0].flags and FLAG_NO_UPDATE not in m.flags  # GPU 1 moved
