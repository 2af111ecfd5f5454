"""``pytest-ipw calibrate`` on this machine's CPU (properties, never timings), its parts on replayed traces with a
fake clock (exact figures), and the command's import path: no optional package may load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.hardware.card import card_differences, comparability_card, scope_of
from pytest_ipw.hardware.profiles import LocalDevice, load_profiles
from pytest_ipw.meters.replay import ReplayMeter, load_trace
from pytest_ipw.run.calibrate import Workload, calibrate, choose_workload, measure_workload, observed_update_period

ROOT = REPO
PROFILES = load_profiles()
OPTIONAL = ("llama_cpp", "datasets", "matplotlib", "pyarrow")


def test_calibrate_on_the_cpu_reports_consistent_figures():
    report = calibrate(meter="estimate", accelerators=["cpu"], size=64, count=6, idle_seconds=0.2, probe_seconds=0.2)
    work, load = report["workload"], report["load"]
    assert (work["engine"], work["device"], work["size"], work["count"]) == ("numpy", "cpu", 64, 6)
    assert work["gflop"] == pytest.approx(2 * 64 ** 3 * 6 / 1e9)
    assert report["provenance"] == "estimated" and report["sensor"].startswith("estimate:")
    profile = PROFILES["cpu"]
    assert profile.idle_w <= report["idle"]["watts"] <= profile.tdp_w
    assert load["joules"] > 0 and load["joules_per_gflop"] == pytest.approx(load["joules"] / work["gflop"])
    assert load["joules_per_product"] == pytest.approx(load["joules"] / 6)
    assert load["joules_active"] == pytest.approx(max(0.0, load["joules"] - report["idle"]["watts"] * load["seconds"]))
    halves = load["halves"]
    assert halves["products"] == [3, 3] and sum(halves["joules"]) == pytest.approx(load["joules"])
    assert "one kind of sensor" in load["counter_vs_gauge"]["note"]
    assert report["declared_update_period_s"] == 0.01
    assert report["observed_update_period"]["reads"] > 0
    card = report["card"]
    assert (card["scope"], card["reading"], card["provenance"]) == ("package", "counter", "estimated")
    assert card["runtime_build"]["engine"] == "numpy" and card["idle_floor_w"] == pytest.approx(report["idle"]["watts"])
    json.dumps(report)  # the --json output


def write_trace(path: Path, column: str, watts: float) -> Path:
    rows = ["# provenance: measured", "# sensor: test", "# domain: gpu", f"timestamp,{column}"]
    rows += [f"{t},{watts * t if column == 'joules' else watts}" for t in range(0, 101)]
    path.write_text("\n".join(rows) + "\n")
    return path


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_counter_and_gauge_of_the_same_work_are_compared(tmp_path):
    clock = FakeClock()
    counter = ReplayMeter(load_trace(write_trace(tmp_path / "c.csv", "joules", 100.0)), clock=clock)
    gauge = ReplayMeter(load_trace(write_trace(tmp_path / "g.csv", "watts", 110.0)), clock=clock)

    def run(products: int) -> None:
        clock.now += 0.5 * products  # half a second per product

    result = measure_workload(counter, run, Workload("numpy", "cpu", size=100, count=8), twin=gauge)
    assert result["joules"] == pytest.approx(400.0) and result["seconds"] == pytest.approx(4.0)
    assert result["joules_per_gflop"] == pytest.approx(400.0 / (2 * 100 ** 3 * 8 / 1e9))
    assert result["counter_vs_gauge"]["relative_difference"] == pytest.approx(0.10)
    assert result["halves"]["joules"] == [pytest.approx(200.0), pytest.approx(200.0)]
    assert result["halves"]["relative_difference"] == pytest.approx(0.0)


def test_observed_update_period_is_the_median_gap_between_changes():
    clock = FakeClock()

    def probe() -> float:
        return float(int(clock.now / 0.1))  # a counter that moves every 100 ms

    def sleep(seconds: float) -> None:
        clock.now += 0.01

    period = observed_update_period(probe, 2.0, clock=clock, sleep=sleep)
    assert period["median_s"] == pytest.approx(0.1) and period["changes"] >= 18
    assert observed_update_period(lambda: None, 1.0, clock=clock, sleep=sleep)["median_s"] is None


def test_a_gpu_without_torch_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    device = LocalDevice(PROFILES["h100"], "NVIDIA H100 80GB HBM3", 0)
    with pytest.raises(IPWUsageError, match=r"through torch.*pip install torch.*--accelerator=cpu"):
        choose_workload(device, None, None)


def test_too_little_work_is_refused():
    with pytest.raises(IPWUsageError, match="--count at least 2"):
        choose_workload(LocalDevice(PROFILES["cpu"], "cpu", None), 16, 1)


def test_card_scopes_and_differences():
    assert scope_of("gpu") == "device" and scope_of("cpu+dram") == "package+dram" and scope_of(None) is None
    gpu = comparability_card({"domain": "gpu", "update_period_s": 0.1, "reading": "counter",
                              "parts": [{"power_limit_w": 700.0}]}, {"backend": "llama-cpp", "system_info": "CUDA : 1"})
    assert gpu["power_limit_w"] == 700.0 and gpu["sampling_hz"] is None
    assert gpu["runtime_build"] == {"backend": "llama-cpp", "system_info": "CUDA : 1"}
    cpu = comparability_card({"domain": "cpu", "update_period_s": 0.001, "reading": "counter"})
    warnings = card_differences([("a", gpu), ("b", cpu)])
    assert len(warnings) == 2 and "device" in warnings[0] and "package" in warnings[0] and "0.1 s" in warnings[1]
    assert card_differences([("a", gpu), ("b", dict(gpu, update_period_s=0.105))]) == []


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {optional!r}:
            raise ImportError(f"{{name}} must not be imported by this command")
sys.meta_path.insert(0, Block())
sys.argv = ["pytest-ipw", *{argv!r}]
import runpy
runpy.run_module("pytest_ipw", run_name="__main__")
"""


def test_the_calibrate_command_imports_no_optional_package():
    """What perf/gpu_check.sh runs on a GPU machine without llama-cpp-python, datasets, matplotlib or pyarrow."""
    argv = ["calibrate", "--meter=estimate", "--accelerator=cpu", "--size=32", "--count=2", "--idle-seconds=0.05",
            "--probe-seconds=0.05", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", BLOCKER.format(optional=OPTIONAL, argv=argv)], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["workload"]["count"] == 2 and report["provenance"] == "estimated"


def test_the_calibrate_command_names_a_bad_meter():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "pytest_ipw", "calibrate", "--meter=nosuch", "--accelerator=cpu"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "unknown meter 'nosuch'" in done.stderr and "Traceback" not in done.stderr
