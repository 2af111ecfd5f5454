"""Tests of pytest_ipw.accelerators: the profile registry, user profile files, detection and resolution."""

from __future__ import annotations

import json

import pytest

from pytest_ipw.hardware.profiles import (
    KINDS,
    LocalDevice,
    detect_devices,
    load_profiles,
    match_profile,
    resolve_accelerators,
)
from pytest_ipw.core.errors import IPWUsageError

PROFILES = load_profiles()

# Real device names, copied from the sample captures in the shared real-samples folder (not read at run time):
H100 = "NVIDIA H100 80GB HBM3"  # nvidia-smi_-q_H100-80GB-HBM3-SXM_x8_drv565.57.01.txt, "Product Name"
A100 = "NVIDIA A100-SXM4-80GB"  # nvidia-smi_-q_A100-SXM4-80GB_x4_drv555.42.02.txt, "Product Name"
RTX4090 = "NVIDIA GeForce RTX 4090"  # nvidia-smi_-q_RTX4090_x8_drv550.127.05.txt, "Product Name"
RTX5090 = "NVIDIA GeForce RTX 5090"  # nvidia-smi_-q_RTX5090_drv570.124.06.txt, "Product Name"
GH200 = "NVIDIA GH200 480GB"  # nvidia-smi_-q_GH200-480GB_drv550.127.05.txt, "Product Name" (Hopper, 900 W module)
L4 = "NVIDIA L4"  # dcgm-exporter_L4_1gpu_kops.prom, modelName label
L40S = "NVIDIA L40S"  # dcgm-exporter_L40S_1gpu_upcloud.prom, modelName label

INTEL_BRAND = "Intel(R) Xeon(R) Platinum 8480+"

EXPECTED = [
    "cpu", "m4max", "h100", "h200", "b200", "a100", "l4", "l40s", "rtx4090", "rtx5090", "mi300x", "jetson-orin",
    "m1pro", "m1max", "m2pro", "m2max", "m3pro", "m3max", "m4pro",
]


# --------------------------------------------------------------------------- the built-in registry


@pytest.mark.parametrize("name", EXPECTED)
def test_registry_has_profile(name):
    profile = PROFILES[name]
    assert profile.name == name
    assert profile.vendor and profile.vendor != "unknown"
    assert profile.kind in KINDS
    assert 0 <= profile.idle_w <= profile.tdp_w
    assert profile.label
    if name != "cpu":  # the generic CPU profile has no single release year
        assert isinstance(profile.release_year, int) and 2015 <= profile.release_year <= 2030
        assert profile.detect


def test_registry_kinds_and_vendors():
    assert PROFILES["cpu"].kind == "cpu" and not PROFILES["cpu"].offload
    assert PROFILES["h100"].vendor == "nvidia" and PROFILES["h100"].kind == "gpu" and PROFILES["h100"].meter == "nvml"
    assert PROFILES["mi300x"].vendor == "amd"
    assert PROFILES["m4max"].vendor == "apple" and PROFILES["m4max"].kind == "soc"
    assert all(p.to_dict()["name"] == p.name for p in PROFILES.values())


# --------------------------------------------------------------------------- detection


def names(devices):
    return [d.profile.name for d in devices]


@pytest.mark.parametrize("device_name, expected", [
    (H100, "h100"), (A100, "a100"), (RTX4090, "rtx4090"), (RTX5090, "rtx5090"), (L4, "l4"), (L40S, "l40s"),
])
def test_detects_real_nvidia_names(device_name, expected):
    devices = detect_devices(PROFILES, gpu_names=[device_name], brand=INTEL_BRAND)
    assert names(devices) == [expected, "cpu"]
    assert devices[0].device_name == device_name and devices[0].index == 0
    assert devices[-1].device_name == INTEL_BRAND and devices[-1].index is None


def test_l4_and_l40s_are_not_confused():
    assert match_profile(L4, PROFILES.values()).name == "l4"
    assert match_profile(L40S, PROFILES.values()).name == "l40s"
    assert names(detect_devices(PROFILES, gpu_names=[L40S, L4], brand="")) == ["l40s", "l4", "cpu"]


def test_gh200_is_not_silently_mislabelled():
    # GH200's GPU is a Hopper part in a 900-1000 W module: calling it "h200" or "h100" would mislabel every figure.
    devices = detect_devices(PROFILES, gpu_names=[GH200], brand="Neoverse-V2")
    assert not {"h200", "h100"} & set(names(devices))
    assert names(devices) == ["gh200", "cpu"]


def test_unknown_nvidia_gpu_is_kept_under_the_generic_profile():
    devices = detect_devices(PROFILES, gpu_names=["NVIDIA GB200"], brand="Neoverse-V2")
    assert names(devices) == ["nvidia-gpu", "cpu"]
    assert devices[0].profile.meter == "nvml" and devices[0].device_name == "NVIDIA GB200"


def test_user_profile_detect_pattern_wins_over_built_in(tmp_path):
    path = write(tmp_path, {"profiles": [{**GOOD, "name": "h100-pcie", "kind": "gpu", "vendor": "nvidia",
                                          "detect": "H100 PCIe"}]})
    profiles = load_profiles(path)
    assert names(detect_devices(profiles, gpu_names=["NVIDIA H100 PCIe"], brand="")) == ["h100-pcie", "cpu"]


def test_several_gpus_keep_their_nvml_indices():
    # NVML lists NVIDIA GPUs only; one without a profile of its own keeps its place and index
    devices = detect_devices(PROFILES, gpu_names=[H100, "NVIDIA GB200", H100], brand=INTEL_BRAND)
    assert names(devices) == ["h100", "nvidia-gpu", "h100", "cpu"]
    assert [d.index for d in devices] == [0, 1, 2, None]


@pytest.mark.parametrize("brand, expected", [
    ("Apple M4 Max", "m4max"), ("Apple M4 Pro", "m4pro"), ("Apple M1 Max", "m1max"), ("Apple M3 Pro", "m3pro"),
])
def test_apple_brand_detection(brand, expected):
    assert names(detect_devices(PROFILES, gpu_names=[], brand=brand)) == [expected, "cpu"]


@pytest.mark.parametrize("brand", ["Apple M4", INTEL_BRAND, "AMD EPYC 9654 96-Core Processor", ""])
def test_plain_cpus_give_only_cpu(brand):
    devices = detect_devices(PROFILES, gpu_names=[], brand=brand)
    assert names(devices) == ["cpu"]


def test_cpu_is_always_last():
    devices = detect_devices(PROFILES, gpu_names=[RTX4090, A100], brand="Apple M2 Max")
    assert names(devices) == ["rtx4090", "a100", "m2max", "cpu"]


def test_real_detection_here_ends_with_cpu():
    devices = detect_devices(PROFILES)
    assert devices and devices[-1].profile.name == "cpu"


# --------------------------------------------------------------------------- resolution


def test_resolve_default_is_best_detected():
    local = detect_devices(PROFILES, gpu_names=[H100], brand=INTEL_BRAND)
    assert resolve_accelerators(None, PROFILES, local) == [local[0]]
    assert resolve_accelerators([], PROFILES, local) == [local[0]]


def test_resolve_names_case_insensitively_and_deduplicates():
    local = detect_devices(PROFILES, gpu_names=[H100], brand=INTEL_BRAND)
    chosen = resolve_accelerators([" H100 ", "cpu", "h100"], PROFILES, local)
    assert names(chosen) == ["h100", "cpu"]


def test_resolve_unknown_name_lists_known_ones():
    local = detect_devices(PROFILES, gpu_names=[], brand=INTEL_BRAND)
    with pytest.raises(IPWUsageError) as info:
        resolve_accelerators(["tpu-v5"], PROFILES, local)
    message = str(info.value)
    assert "tpu-v5" in message
    for name in ("cpu", "h100", "m4max", "l40s"):
        assert name in message


def test_resolve_absent_accelerator_names_what_is_here():
    local = detect_devices(PROFILES, gpu_names=[], brand=INTEL_BRAND)
    with pytest.raises(IPWUsageError) as info:
        resolve_accelerators(["h100"], PROFILES, local)
    message = str(info.value)
    assert "h100" in message.lower()
    assert f"cpu ({INTEL_BRAND})" in message


def test_resolve_h100_on_this_machine_is_refused():
    local = detect_devices(PROFILES)  # real detection
    if "h100" in names(local):
        pytest.skip("this machine has an H100")
    with pytest.raises(IPWUsageError) as info:
        resolve_accelerators(["h100"], PROFILES, local)
    assert "cpu (" in str(info.value)


# --------------------------------------------------------------------------- user profile files


def write(tmp_path, content, name="profiles.json"):
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


GOOD = {"name": "MyNPU", "label": "My NPU", "vendor": "acme", "kind": "soc", "tdp_w": 15, "idle_w": 2,
        "release_year": 2025, "detect": "Acme NPU"}


def test_user_file_adds_and_overrides_profiles(tmp_path):
    override = {"name": "h100", "kind": "gpu", "tdp_w": 350, "idle_w": 40, "vendor": "nvidia", "detect": r"\bH100\b"}
    path = write(tmp_path, {"profiles": [GOOD, override]})
    profiles = load_profiles(path)
    assert set(PROFILES) < set(profiles)
    npu = profiles["mynpu"]  # names are lower-cased
    assert (npu.label, npu.vendor, npu.kind, npu.tdp_w, npu.idle_w) == ("My NPU", "acme", "soc", 15.0, 2.0)
    assert npu.meter == "estimate" and npu.offload  # defaults
    assert profiles["h100"].tdp_w == 350.0
    assert names(detect_devices(profiles, gpu_names=[H100], brand="Acme NPU rev 2")) == ["h100", "cpu"]


@pytest.mark.parametrize("content, needle", [
    ('{"profiles": [ {"name": "x", }', "not valid JSON"),
    ({"profiles": [{"name": "x", "kind": "gpu", "tdp_w": 100}]}, "idle_w"),
    ({"profiles": [{"kind": "gpu", "tdp_w": 100, "idle_w": 10}]}, "lacks name"),
    ({"profiles": [{"name": "x", "kind": "gpu", "tdp_w": 100, "idle_w": 150}]}, "idle_w <= tdp_w"),
    ({"profiles": [{"name": "x", "kind": "gpu", "tdp_w": 100, "idle_w": 10, "tdp": 5}]}, "unknown field"),
    ({"profiles": [{"name": "x", "kind": "tpu", "tdp_w": 100, "idle_w": 10}]}, "kind must be one of"),
    ({"profiles": [{"name": "x", "kind": "gpu", "tdp_w": "lots", "idle_w": 10}]}, "must be numbers"),
    ({"profiles": [{"name": "x", "kind": "gpu", "tdp_w": 100, "idle_w": -1}]}, "idle_w"),
    ([GOOD], "must hold"),
    ({"profiles": ["h100"]}, "JSON object"),
])
def test_malformed_profile_files_name_the_file(tmp_path, content, needle):
    path = write(tmp_path, content)
    with pytest.raises(IPWUsageError) as info:
        load_profiles(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_missing_profile_file(tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(IPWUsageError, match="does not exist") as info:
        load_profiles(path)
    assert str(path) in str(info.value)


def test_invalid_detect_regex_is_a_usage_error_naming_the_file(tmp_path):
    path = write(tmp_path, {"profiles": [{**GOOD, "kind": "gpu", "vendor": "nvidia", "detect": "Acme (X1"}]})
    with pytest.raises(IPWUsageError) as info:
        profiles = load_profiles(path)
        detect_devices(profiles, gpu_names=["Acme X1"], brand="")  # today: re.error, a traceback
    assert str(path) in str(info.value)


def test_local_device_is_hashable_value():
    device = LocalDevice(PROFILES["cpu"], "x", None)
    assert device == LocalDevice(PROFILES["cpu"], "x", None)
