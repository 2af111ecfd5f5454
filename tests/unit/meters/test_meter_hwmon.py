"""The hwmon meter on sysfs trees.

Real trees: the hwmon directories of 19 AMD GPUs from LACT's sysfs snapshots (tests/data/real-samples,
``amdgpu_sysfs_hwmon-power_gpu_metrics_LACT-snapshots``), read as they are, NUL padding included.
Built trees: no capture of a Jetson INA3221 hwmon directory exists, so the Jetson trees are built from the rail
names and mW values of 8 real tegrastats lines (same file there) at 5000 mV per rail, with the ina3221 driver's
file layout (``inN_label``, ``inN_input`` mV, ``currN_input`` mA, unlabelled shunt channels, ``update_interval``).
The energy-counter trees (an ``xe``-style chip with ``energyN_input``) are built too: no capture exists.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest
from support import REAL_SAMPLES

from pytest_ipw.hardware.profiles import load_profiles
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.meters import hwmon
from pytest_ipw.meters.base import FLAG_COUNTER_RESET, FLAG_NO_UPDATE, MEASURED
from pytest_ipw.meters.combined import SumMeter
from pytest_ipw.meters.hwmon import HwmonMeter, choose_channels, discover
from pytest_ipw.meters.registry import MeterUnavailable, parse_meter_spec, select_meter

SAMPLES = REAL_SAMPLES
LACT = SAMPLES / "amdgpu_sysfs_hwmon-power_gpu_metrics_LACT-snapshots"
TEGRASTATS = SAMPLES / "tegrastats_8-boards_TX1-TX2-Nano-AGXXavier-XavierNX-OrinNX-AGXOrin_datadog.txt"
PROFILES = load_profiles()


def window(meter):
    with meter.window() as handle:
        pass
    return handle.measurement


# --------------------------------------------------------------------------- real amdgpu hwmon directories


def snapshot_chip(gpu: str) -> Path:
    return next((LACT / gpu).glob("card*/device/hwmon/hwmon*"))


def class_hwmon(tmp_path: Path, *gpus: str) -> Path:
    """A /sys/class/hwmon of links to the snapshots' chip directories, as sysfs has it."""
    root = tmp_path / "class-hwmon"
    root.mkdir(parents=True)
    for gpu in gpus:
        chip = snapshot_chip(gpu)
        (root / chip.name).symlink_to(chip.resolve(), target_is_directory=True)
    return root


def file_value(path: Path) -> str:
    return path.read_bytes().replace(b"\0", b"").decode().strip()


@pytest.mark.parametrize("gpu", sorted(p.name for p in LACT.iterdir()))
def test_every_real_amdgpu_snapshot(tmp_path, gpu):
    chip = snapshot_chip(gpu)
    files = {f.name: file_value(f) for f in chip.iterdir()}
    reading = files.get("power1_input") or files.get("power1_average")
    root = class_hwmon(tmp_path, gpu)
    if reading is None:  # radeon (hd7870) has no power files; r7-240 and r9-280 a PPT label and no reading
        with pytest.raises(MeterUnavailable, match="no hwmon power or energy channel"):
            hwmon.create(PROFILES["amd-gpu"], root=root)
        return
    meter = hwmon.create(PROFILES["amd-gpu"], root=root)
    [channel] = meter.channels
    assert (channel.chip, channel.label, meter.domain) == ("amdgpu", files["power1_label"], "gpu")
    assert channel.kind == ("power_input" if "power1_input" in files else "power_average")
    m = window(meter)  # the file does not change, so the integrated power is the file's value
    assert m.watts == pytest.approx(int(reading) / 1e6) and m.provenance == MEASURED and m.domain == "gpu"
    assert m.sensor == f"hwmon: {channel.label} (amdgpu {chip.name}, {channel.files[0].name} µW gauge, integrated)"


def test_what_the_snapshots_say(tmp_path):
    def meter(gpu: str) -> HwmonMeter:
        return hwmon.create(PROFILES["amd-gpu"], root=class_hwmon(tmp_path / gpu, gpu))

    assert window(meter("rx6900xt")).watts == pytest.approx(36.0)  # 4096-byte NUL-padded files
    assert window(meter("phoenix")).watts == pytest.approx(3.142)  # power1_input preferred to the 3.103 average
    vangogh = meter("vangogh")
    assert vangogh.channels[0].label == "slowPPT" and window(vangogh).watts == pytest.approx(4.057)
    info = vangogh.describe()
    assert info["update_period_s"] == 0.1 and info["channels"][0]["update_period_source"] == "assumed"
    assert info["provenance"] == MEASURED and info["domain"] == "gpu" and "slowPPT" in info["rule"]
    assert meter("rx9070xt").describe()["channels"][0]["update_period_s"] == 1.0  # an average: 1 s assumed


def test_a_laptop_with_two_amd_gpus_must_choose(tmp_path):
    root = class_hwmon(tmp_path, "rx6900xt", "phoenix")  # hwmon5 (dGPU) and hwmon6 (iGPU)
    with pytest.raises(MeterUnavailable, match=r"2 chips have power or energy channels; choose one with "
                                               r"hwmon:hwmonN or hwmon:LABEL \(found: hwmon5 \(amdgpu\): PPT; "
                                               r"hwmon6 \(amdgpu\): PPT\)"):
        hwmon.create(PROFILES["amd-gpu"], root=root)
    with pytest.raises(MeterUnavailable, match="choose one: hwmon:hwmon5:PPT, hwmon:hwmon6:PPT"):
        hwmon.create(PROFILES["amd-gpu"], arg="PPT", root=root)
    with pytest.raises(MeterUnavailable, match="no hwmon channel, chip or hwmonN is called 'VDD_IN'"):
        hwmon.create(PROFILES["amd-gpu"], arg="VDD_IN", root=root)
    assert window(hwmon.create(PROFILES["amd-gpu"], arg="hwmon6", root=root)).watts == pytest.approx(3.142)
    assert window(hwmon.create(PROFILES["amd-gpu"], arg="hwmon5:ppt", root=root)).watts == pytest.approx(36.0)
    both = select_meter(PROFILES["amd-gpu"], requested="hwmon:hwmon5+hwmon:hwmon6", root=root).meter
    assert isinstance(both, SumMeter) and [p.watts for p in window(both).parts] == [pytest.approx(36.0),
                                                                                    pytest.approx(3.142)]
    with pytest.raises(IPWUsageError, match="--ipw-meter=hwmon:PPT cannot measure here"):
        select_meter(PROFILES["amd-gpu"], requested="hwmon:PPT", root=root)


# --------------------------------------------------------------------------- Jetson rails (built trees)

RAIL = re.compile(r"(\S+) (\d+)(?:mW)?/(\d+)(?:mW)?(?=\s|$)")  # "VDD_IN 5299mW/5299mW" or "VDD_IN 2532/2698"
BOARDS = ["TX1", "TX2", "Nano", "AGX Xavier", "Xavier NX", "Orin NX", "AGX Orin r36", "AGX Orin"]
MILLIVOLTS = 5000


def tegrastats_rails() -> list[dict[str, int]]:
    """Each board's rails: name -> the current mW (the first of tegrastats' ``now/average``)."""
    return [{name: int(now) for name, now, _ in RAIL.findall(line)} for line in TEGRASTATS.read_text().splitlines()]


def test_tegrastats_rail_names():
    assert [list(r) for r in tegrastats_rails()] == [
        ["VDD_IN", "VDD_CPU", "VDD_GPU"],
        ["VDD_SYS_GPU", "VDD_SYS_SOC", "VDD_4V0_WIFI", "VDD_IN", "VDD_SYS_CPU", "VDD_SYS_DDR"],
        ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"],
        ["GPU", "CPU", "SOC", "CV", "VDDRQ", "SYS5V"],
        ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"],
        ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"],
        ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"],
        ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"],
    ]


def milliamps(milliwatts: int) -> int:
    return round(milliwatts * 1000 / MILLIVOLTS)


def build_ina3221(root: Path, rails: dict[str, int], extra_chip: bool = False) -> Path:
    """INA3221 chips of 3 channels holding ``rails``; with ``extra_chip``, one more with an NC channel and a
    disabled one, like AGX Orin's second INA3221 (built)."""
    root.mkdir(parents=True, exist_ok=True)
    names = list(rails)
    chips = [names[i:i + 3] for i in range(0, len(names), 3)]
    if extra_chip:
        chips.append(["NC", "VDD_DISABLED", "NC"])
    for number, labels in enumerate(chips, start=1):
        chip = root / f"hwmon{number}"
        chip.mkdir()
        (chip / "name").write_text("ina3221\n")
        (chip / "update_interval").write_text("140\n")
        (chip / "curr4_input").write_text(f"{sum(milliamps(rails.get(x, 0)) for x in labels)}\n")  # sum channel
        for channel, label in enumerate(labels, start=1):
            (chip / f"in{channel}_label").write_text(f"{label}\n")
            (chip / f"in{channel}_enable").write_text("0\n" if label == "VDD_DISABLED" else "1\n")
            (chip / f"in{channel}_input").write_text(f"{MILLIVOLTS}\n")
            (chip / f"curr{channel}_input").write_text(f"{milliamps(rails.get(label, 500))}\n")
            (chip / f"in{channel + 3}_input").write_text("2480\n")  # shunt voltage (µV), no label
    return root


@pytest.mark.parametrize("board, rails", list(zip(BOARDS, tegrastats_rails())), ids=BOARDS)
def test_jetson_rule_input_rail_else_the_sum(tmp_path, board, rails):
    root = build_ina3221(tmp_path / "hwmon", rails, extra_chip=board.startswith("AGX Orin"))
    meter = hwmon.create(PROFILES["jetson-orin"], root=root)
    inputs = [name for name in rails if name in ("VDD_IN", "POM_5V_IN")]
    chosen = inputs or list(rails)  # the input rail contains the others; without one (AGX boards) the sum
    assert [ch.label for ch in meter.channels] == chosen
    m = window(meter)
    watts = sum(p.watts for p in m.parts) if m.parts else m.watts  # each rail sampled over its own stretch
    assert m.joules == pytest.approx(sum(p.joules for p in m.parts) if m.parts else m.joules)
    assert watts == pytest.approx(sum(milliamps(rails[name]) * MILLIVOLTS for name in chosen) / 1e6)
    assert abs(watts - sum(rails[name] for name in chosen) / 1000) <= 0.0025 * len(chosen)  # tegrastats' mW
    assert m.domain == "soc" and m.provenance == MEASURED and meter.update_period_s == pytest.approx(0.14)
    info = meter.describe()
    assert ("module input rail" in info["rule"]) == bool(inputs)
    assert all(c["update_period_source"] == "update_interval" for c in info["channels"])
    if len(chosen) > 1:
        assert [p.sensor.split(" (")[0] for p in m.parts] == [f"hwmon: {name}" for name in chosen]
        assert "carrier board is not included" in m.sensor
    for name, milliwatts in rails.items():  # every rail alone, by its label
        alone = hwmon.create(PROFILES["jetson-orin"], arg=name, root=root)
        assert window(alone).watts == pytest.approx(milliamps(milliwatts) * MILLIVOLTS / 1e6)


def test_agx_orin_rails_summed_through_the_registry(tmp_path):
    rails = tegrastats_rails()[7]  # AGX Orin 64 GB: VDD_GPU_SOC 4940, VDD_CPU_CV 988, VIN_SYS_5V0 4442 mW
    root = build_ina3221(tmp_path / "hwmon", rails, extra_chip=True)
    assert [s.text for s in parse_meter_spec("hwmon:VDD_GPU_SOC+hwmon:VDD_CPU_CV")] == [
        "hwmon:VDD_GPU_SOC", "hwmon:VDD_CPU_CV"]
    choice = select_meter(PROFILES["jetson-orin"], requested="hwmon:VDD_GPU_SOC+hwmon:VDD_CPU_CV", root=root)
    m = window(choice.meter)
    assert [p.watts for p in m.parts] == [pytest.approx(milliamps(mw) * MILLIVOLTS / 1e6) for mw in (4940, 988)]
    with pytest.raises(MeterUnavailable, match="no hwmon channel, chip or hwmonN is called 'NC'"):
        hwmon.create(PROFILES["jetson-orin"], arg="NC", root=root)  # unconnected channels are not rails
    natural = select_meter(PROFILES["jetson-orin"], 0, root=root)
    assert natural.fallback_reason is None and isinstance(natural.meter, HwmonMeter)
    assert [ch.label for ch in natural.meter.channels] == ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"]


def test_jetson_without_hwmon_rails_falls_back_with_the_reason(tmp_path):
    (tmp_path / "empty" / "hwmon0").mkdir(parents=True)
    (tmp_path / "empty" / "hwmon0" / "name").write_text("thermal\n")
    assert PROFILES["jetson-orin"].meter == "hwmon"  # NVML answers NOT_SUPPORTED for power on Jetson
    choice = select_meter(PROFILES["jetson-orin"], 0, root=tmp_path / "empty")
    assert choice.meter.name == "estimate"
    assert choice.fallback_reason.startswith("hwmon: no hwmon power or energy channel under")
    assert "JetPack 5" in choice.fallback_reason


# --------------------------------------------------------------------------- energy counters (built trees)


def build_xe(root: Path) -> Path:
    chip = root / "hwmon0"
    chip.mkdir(parents=True)
    (chip / "name").write_text("xe\n")
    for number, label, microjoules in ((1, "card", 5_000_000), (2, "pkg", 3_000_000)):
        (chip / f"energy{number}_label").write_text(f"{label}\n")
        (chip / f"energy{number}_input").write_text(f"{microjoules}\n")
    (chip / "power1_label").write_text("card\n")  # the same rail as energy1: read from the counter
    (chip / "power1_average").write_text("45000000\n")
    return root


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_energy_counters(tmp_path):
    root = build_xe(tmp_path / "hwmon")
    [chip] = discover(root)
    assert [(ch.label, ch.kind) for ch in chip.channels] == [("card", "energy"), ("pkg", "energy")]
    with pytest.raises(MeterUnavailable, match=r"hwmon0 \(xe\) has several channels that may contain each other; "
                                               r"choose one with hwmon:LABEL \(found: hwmon0 \(xe\): card, pkg\)"):
        hwmon.create(PROFILES["cpu"], root=root)
    channels, rule = choose_channels([chip], "card")
    clock = Clock()
    meter = HwmonMeter(channels, rule, clock=clock)
    assert meter.update_period_s == 0.1 and meter.domain == "gpu"
    energy = root / "hwmon0" / "energy1_input"
    meter.start()
    energy.write_text("7500000\n")
    clock.t += 1.0
    m = meter.stop()
    assert m.joules == pytest.approx(2.5) and m.flags == () and m.samples == 2
    assert m.sensor == "hwmon: card (xe hwmon0, energy1_input µJ counter)"
    meter.start()
    energy.write_text("1000000\n")  # went back: reset (no documented wrap range)
    clock.t += 1.0
    m = meter.stop()
    assert m.joules == pytest.approx(1.0) and FLAG_COUNTER_RESET in m.flags
    meter.start()
    clock.t += 1.0
    assert FLAG_NO_UPDATE in meter.stop().flags  # still for a second: stale


def test_unreadable_counter_names_the_fix(tmp_path):
    root = build_xe(tmp_path / "hwmon")

    def reader(path: Path) -> str:
        if path.name.startswith(("energy", "power")) and not path.name.endswith("_label"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return path.read_text()

    with pytest.raises(MeterUnavailable, match=r"energy1_input is not readable \(permission denied\).*chmod a\+r"):
        hwmon.create(PROFILES["cpu"], root=root, reader=reader)
