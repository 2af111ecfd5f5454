"""The zeus-apple-silicon adapter, with a stand-in for the ``zeus_apple_silicon`` module (API per its README:
AppleEnergyMonitor().begin_window(label) / end_window(label) -> AppleEnergyMetrics, fields in mJ or None)."""

from __future__ import annotations

import sys
import types

import pytest

from pytest_ipw.hardware.profiles import load_profiles
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.meters import ioreport
from pytest_ipw.meters.base import MEASURED, MeterFailure
from pytest_ipw.meters.ioreport import IOReportMeter
from pytest_ipw.meters.registry import MeterUnavailable, select_meter

PROFILES = load_profiles()


def stand_in(results: list[dict], fail_init: bool = False) -> types.ModuleType:
    """A module object shaped like zeus_apple_silicon; each end_window returns the next result."""
    module = types.ModuleType("zeus_apple_silicon")
    module.calls = []
    pending = iter(results)

    class AppleEnergyMetrics(types.SimpleNamespace):
        pass

    class AppleEnergyMonitor:
        def __init__(self):
            if fail_init:
                raise RuntimeError("IOReport channels not found")
            self.open = set()

        def begin_window(self, label):
            if label in self.open:
                raise RuntimeError(f"window {label} already active")
            self.open.add(label)
            module.calls.append(("begin", label))

        def end_window(self, label):
            if label not in self.open:
                raise RuntimeError(f"no active window {label}")
            self.open.remove(label)
            module.calls.append(("end", label))
            fields = {"cpu_total_mj": None, "gpu_mj": None, "ane_mj": None, "dram_mj": None, "gpu_sram_mj": None}
            return AppleEnergyMetrics(**{**fields, **next(pending)})

    module.AppleEnergyMonitor = AppleEnergyMonitor
    module.AppleEnergyMetrics = AppleEnergyMetrics
    return module


def test_window_sums_cpu_gpu_ane_dram_and_labels_the_model():
    zeus = stand_in([{"cpu_total_mj": 4200, "gpu_mj": 1800, "ane_mj": 0, "dram_mj": 350, "gpu_sram_mj": 40}])
    meter = ioreport.create(PROFILES["m4max"], zeus=zeus)
    with meter.window() as w:
        pass
    m = w.measurement
    assert m.joules == pytest.approx(6.35)
    assert m.provenance == MEASURED and m.domain == "soc+dram"
    assert [(p.sensor, p.domain, p.joules) for p in m.parts] == [
        ("ioreport: CPU", "cpu", 4.2), ("ioreport: GPU", "gpu", 1.8), ("ioreport: ANE", "soc", 0.0),
        ("ioreport: DRAM", "dram", 0.35)]
    assert m.extra == {"gpu_sram_j_not_summed": 0.04}
    assert "energy model" in m.sensor and "estimates" in m.sensor
    assert meter.describe()["model_based"] is True


def test_fields_the_chip_lacks_are_left_out():
    zeus = stand_in([{"cpu_total_mj": 1000, "gpu_mj": 500}])
    meter = ioreport.create(PROFILES["m1max"], zeus=zeus)
    with meter.window() as w:
        pass
    assert w.measurement.joules == pytest.approx(1.5)
    assert w.measurement.domain == "soc"
    assert [p.sensor for p in w.measurement.parts] == ["ioreport: CPU", "ioreport: GPU"]


def test_each_window_gets_a_fresh_label():
    zeus = stand_in([{"cpu_total_mj": 1}, {"cpu_total_mj": 2}])
    meter = ioreport.create(PROFILES["m4max"], zeus=zeus)
    for _ in range(2):
        with meter.window():
            pass
    labels = [label for kind, label in zeus.calls if kind == "begin"]
    assert len(set(labels)) == 2
    assert zeus.calls == [("begin", labels[0]), ("end", labels[0]), ("begin", labels[1]), ("end", labels[1])]


def test_nothing_reported_is_a_failure_not_zero():
    meter = ioreport.create(PROFILES["m4max"], zeus=stand_in([{}]))
    meter.start()
    with pytest.raises(MeterFailure, match="no CPU, GPU, ANE or DRAM energy"):
        meter.stop()


def test_monitor_that_cannot_start():
    with pytest.raises(MeterUnavailable, match="could not open IOReport"):
        ioreport.create(PROFILES["m4max"], zeus=stand_in([], fail_init=True))


def test_imported_only_on_macos(monkeypatch):
    monkeypatch.setitem(sys.modules, "zeus_apple_silicon", stand_in([]))
    monkeypatch.setattr(ioreport, "_on_macos", lambda: False)
    with pytest.raises(MeterUnavailable, match="Apple Silicon Macs only"):
        ioreport.create(PROFILES["m4max"])
    monkeypatch.setattr(ioreport, "_on_macos", lambda: True)
    assert isinstance(ioreport.create(PROFILES["m4max"]), IOReportMeter)


def test_not_installed_names_the_extra(monkeypatch):
    monkeypatch.setattr(ioreport, "_on_macos", lambda: True)
    monkeypatch.setitem(sys.modules, "zeus_apple_silicon", None)  # makes the import raise ImportError
    with pytest.raises(MeterUnavailable, match=r'needs zeus-apple-silicon \(the core install on macOS\): pip install "zeus-apple-silicon"'):
        ioreport.create(PROFILES["m4max"])


def test_preferred_over_powermetrics_when_installed(monkeypatch):
    monkeypatch.setattr(ioreport, "_on_macos", lambda: True)
    monkeypatch.setitem(sys.modules, "zeus_apple_silicon", stand_in([]))
    choice = select_meter(PROFILES["m4max"])
    assert isinstance(choice.meter, IOReportMeter)
    assert choice.fallback_reason is None
    # naming powermetrics explicitly is honoured (and fails off macOS with its own reason)
    from pytest_ipw.meters import powermetrics

    monkeypatch.setattr(powermetrics.sys, "platform", "linux")
    with pytest.raises(IPWUsageError, match="--ipw-meter=powermetrics cannot measure here: powermetrics exists on macOS"):
        select_meter(PROFILES["m4max"], requested="powermetrics")
