"""Accelerator profiles (data in ``data/accelerators.json``) and detection of the local ones."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.core.files import read_json

PROFILES_FILE = Path(__file__).resolve().parent.parent / "data" / "accelerators.json"
KINDS = ("cpu", "gpu", "soc")
_FIELDS = ("name", "label", "vendor", "kind", "memory_gb", "tdp_w", "idle_w", "release_year", "meter", "offload", "detect")


@dataclass(frozen=True)
class AcceleratorProfile:
    name: str
    label: str
    vendor: str
    kind: str  # "cpu" | "gpu" | "soc"
    memory_gb: float | None
    tdp_w: float
    idle_w: float
    release_year: int | None
    meter: str  # the natural meter for this device: "nvml", "rapl", "powermetrics", "estimate"
    offload: bool  # whether the model runs on the accelerator (llama.cpp GPU layers) rather than the CPU
    detect: str | None  # regex over the local device name

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _profile_from_mapping(entry: Mapping[str, Any], source: str) -> AcceleratorProfile:
    missing = [f for f in ("name", "kind", "tdp_w", "idle_w") if entry.get(f) in (None, "")]
    if missing:
        raise IPWUsageError(f"accelerator profile in {source} lacks {', '.join(missing)}: {dict(entry)!r}")
    unknown = sorted(set(entry) - set(_FIELDS))
    if unknown:
        raise IPWUsageError(f"accelerator profile {entry['name']!r} in {source} has unknown field(s) {', '.join(unknown)}; "
                            f"known fields: {', '.join(_FIELDS)}")
    if entry["kind"] not in KINDS:
        raise IPWUsageError(f"accelerator profile {entry['name']!r} in {source}: kind must be one of {', '.join(KINDS)}")
    try:
        tdp, idle = float(entry["tdp_w"]), float(entry["idle_w"])
    except (TypeError, ValueError):
        raise IPWUsageError(f"accelerator profile {entry['name']!r} in {source}: tdp_w and idle_w must be numbers") from None
    if not 0 <= idle <= tdp:
        raise IPWUsageError(f"accelerator profile {entry['name']!r} in {source}: need 0 <= idle_w <= tdp_w, got {idle} and {tdp}")
    detect = entry.get("detect")
    if detect is not None:
        try:
            re.compile(detect)
        except (re.error, TypeError) as exc:
            raise IPWUsageError(f"accelerator profile {entry['name']!r} in {source}: 'detect' is not a valid regular "
                                f"expression ({exc})") from None
    return AcceleratorProfile(
        name=str(entry["name"]).lower(),
        label=str(entry.get("label") or entry["name"]),
        vendor=str(entry.get("vendor") or "unknown"),
        kind=entry["kind"],
        memory_gb=entry.get("memory_gb"),
        tdp_w=tdp,
        idle_w=idle,
        release_year=entry.get("release_year"),
        meter=str(entry.get("meter") or "estimate"),
        offload=bool(entry.get("offload", entry["kind"] != "cpu")),
        detect=detect,
    )


def _read_profile_file(source: Path) -> list[AcceleratorProfile]:
    data = read_json(source, "accelerator profile file")
    entries = data.get("profiles") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise IPWUsageError(f'accelerator profile file {source} must hold {{"profiles": [ {{...}}, ... ]}}')
    if not all(isinstance(entry, dict) for entry in entries):
        raise IPWUsageError(f"accelerator profile file {source}: each profile must be a JSON object")
    return [_profile_from_mapping(entry, str(source)) for entry in entries]


def load_profiles(extra_file: str | Path | None = None) -> dict[str, AcceleratorProfile]:
    """The built-in registry, plus the profiles of a user's JSON file.

    A user profile replaces a built-in one of the same name, and user profiles come first, so that
    their ``detect`` patterns win over the built-in ones during detection.
    """
    user = {p.name: p for p in _read_profile_file(Path(extra_file))} if extra_file else {}
    built_in = {p.name: p for p in _read_profile_file(PROFILES_FILE) if p.name not in user}
    return {**user, **built_in}


@dataclass(frozen=True)
class LocalDevice:
    """One accelerator found on this machine."""

    profile: AcceleratorProfile
    device_name: str
    index: int | None  # NVML index for NVIDIA GPUs, AMD SMI index for AMD GPUs


def nvidia_devices() -> list[tuple[int, str]]:
    """(NVML index, name) of the NVIDIA GPUs this process may use (CUDA_VISIBLE_DEVICES honoured), or []
    when there is no driver/GPU (pynvml imported lazily)."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound / DriverNotLoaded on machines without a GPU
        return []
    try:
        from pytest_ipw.hardware.nvidia import visible_gpu_indices

        found = []
        for index in visible_gpu_indices(pynvml, os.environ.get("CUDA_VISIBLE_DEVICES")):
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(index))
            found.append((index, name.decode() if isinstance(name, bytes) else str(name)))
        return found
    finally:
        pynvml.nvmlShutdown()


def amd_devices() -> list[tuple[int, str]]:
    """(AMD SMI index, name) of the AMD GPUs this process may use (ROCR_/HIP_VISIBLE_DEVICES honoured), or []
    when the amdsmi package, the amdgpu driver or a GPU is missing (amdsmi imported lazily)."""
    try:
        from pytest_ipw.core.errors import MeterUnavailable
        from pytest_ipw.hardware.amd import import_amdsmi, visible_gpus

        amdsmi = import_amdsmi()
    except MeterUnavailable:
        return []
    try:
        amdsmi.amdsmi_init()
    except Exception:  # AmdSmiLibraryException: no driver or GPU
        return []
    try:
        return visible_gpus(amdsmi)
    except Exception:  # AmdSmiException while listing: treat as no AMD GPU rather than failing the run
        return []
    finally:
        try:
            amdsmi.amdsmi_shut_down()
        except Exception:
            pass


def nvidia_device_names() -> list[str]:
    """Names of the NVIDIA GPUs this process may use, or [] when there is no driver/GPU."""
    return [name for _, name in nvidia_devices()]


#: Arm CPU implementers and cores by the ids Linux shows in /proc/cpuinfo ("CPU implementer", "CPU part"),
#: from the Arm and vendors' technical reference manuals (the ids util-linux's lscpu also decodes)
ARM_IMPLEMENTERS = {"0x41": "ARM", "0x42": "Broadcom", "0x46": "Fujitsu", "0x48": "HiSilicon", "0x4e": "NVIDIA",
                    "0x51": "Qualcomm", "0x61": "Apple", "0xc0": "Ampere"}
ARM_PARTS = {
    ("0x41", "0xd03"): "Cortex-A53", ("0x41", "0xd05"): "Cortex-A55", ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72", ("0x41", "0xd0b"): "Cortex-A76", ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd40"): "Neoverse-V1", ("0x41", "0xd41"): "Cortex-A78", ("0x41", "0xd42"): "Cortex-A78AE",
    ("0x41", "0xd44"): "Cortex-X1", ("0x41", "0xd46"): "Cortex-A510", ("0x41", "0xd47"): "Cortex-A710",
    ("0x41", "0xd48"): "Cortex-X2", ("0x41", "0xd49"): "Neoverse-N2", ("0x41", "0xd4d"): "Cortex-A715",
    ("0x41", "0xd4e"): "Cortex-X3", ("0x41", "0xd4f"): "Neoverse-V2", ("0x41", "0xd84"): "Neoverse-V3",
    ("0x41", "0xd8e"): "Neoverse-N3", ("0x46", "0x001"): "A64FX", ("0x48", "0xd01"): "Kunpeng-920",
    ("0x4e", "0x004"): "Carmel", ("0xc0", "0xac3"): "AmpereOne",
}


def arm_cpu_name(cpuinfo: str) -> str | None:
    """An Arm CPU named from /proc/cpuinfo's implementer and part ids ("ARM Neoverse-V2" on NVIDIA Grace
    and AWS Graviton4, where Linux gives no model name); each kind of core once, in order, for big.LITTLE
    chips; None when the text holds no Arm ids."""
    names: list[str] = []
    implementer = None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip().lower(), value.strip().lower()
        if key == "cpu implementer":
            implementer = value
        elif key == "cpu part" and implementer is not None:
            vendor = ARM_IMPLEMENTERS.get(implementer, f"implementer {implementer}")
            core = ARM_PARTS.get((implementer, value), f"part {value}")
            name = f"{vendor} {core}"
            if name not in names:
                names.append(name)
    return " + ".join(names) or None


def lscpu_model(text: str) -> str | None:
    """``Vendor ID`` and ``Model name`` from lscpu's output ("ARM Neoverse-V2"), or None without a model name."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("Vendor ID", "Model name") and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    model, vendor = fields.get("Model name"), fields.get("Vendor ID")
    if not model or model == "-":
        return None
    return model if not vendor or model.lower().startswith(vendor.lower()) else f"{vendor} {model}"


def _lscpu() -> str:
    try:
        return subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5, check=True,
                              env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def cpu_brand_from(cpuinfo: str, lscpu: Any = _lscpu) -> str | None:
    """The CPU's name from /proc/cpuinfo's text: its model name (x86, some Arm kernels), else the Arm core
    from its implementer and part ids, else lscpu's model name (``lscpu`` is called only then), else the
    board's "Hardware" line (32-bit Arm); None when nothing names it."""
    lines = cpuinfo.splitlines()
    for line in lines:
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    name = arm_cpu_name(cpuinfo)
    if name and "part 0x" not in name:
        return name
    from_lscpu = lscpu_model(lscpu())
    if from_lscpu:
        return from_lscpu
    if name:
        return name  # raw ids: better than "aarch64", and two generations stay apart
    for line in lines:
        if line.lower().startswith("hardware"):
            return line.split(":", 1)[1].strip()
    return None


def cpu_brand() -> str:
    """The CPU's marketing name (macOS sysctl; Linux /proc/cpuinfo, Arm core ids, lscpu), or the platform
    string."""
    if sys.platform == "darwin":
        try:
            return subprocess.run(
                ["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True, timeout=5, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    return cpu_brand_from(cpuinfo) or platform.processor() or platform.machine()


def match_profile(device_name: str, profiles: Iterable[AcceleratorProfile]) -> AcceleratorProfile | None:
    for profile in profiles:
        if profile.detect and re.search(profile.detect, device_name, re.IGNORECASE):
            return profile
    return None


def detect_devices(
    profiles: Mapping[str, AcceleratorProfile],
    gpu_names: list[str] | None = None,
    brand: str | None = None,
    gpu_indices: list[int] | None = None,
    amd_gpus: list[tuple[int, str]] | None = None,
) -> list[LocalDevice]:
    """Accelerators present here, best first (GPUs, then an Apple SoC), always ending with ``cpu``.

    A GPU's ``index`` is its NVML index (what the nvml meter reads), for the GPUs that
    CUDA_VISIBLE_DEVICES leaves visible; ``gpu_indices`` gives them when ``gpu_names`` is passed in.
    AMD GPUs follow, with their AMD SMI index (``amd_gpus``, found through amdsmi when nothing is passed in).
    """
    if gpu_names is None:
        visible = nvidia_devices()
        gpu_names, gpu_indices = [name for _, name in visible], [index for index, _ in visible]
        amd_gpus = amd_devices() if amd_gpus is None else amd_gpus
    gpu_indices = list(range(len(gpu_names))) if gpu_indices is None else gpu_indices
    brand = cpu_brand() if brand is None else brand
    found: list[LocalDevice] = []
    gpu_profiles = [p for p in profiles.values() if p.kind == "gpu" or p.vendor == "nvidia"]
    for index, name in zip(gpu_indices, gpu_names):
        # An NVIDIA GPU without a profile of its own is still measured (NVML), under a generic profile.
        profile = match_profile(name, gpu_profiles) or profiles.get("nvidia-gpu")
        if profile is not None:
            found.append(LocalDevice(profile, name, index))
    amd_profiles = [p for p in profiles.values() if p.vendor == "amd" and p.kind == "gpu"]
    for index, name in amd_gpus or []:
        # like NVIDIA's, an AMD GPU without a profile of its own is measured (amdsmi) under a generic one
        profile = match_profile(name, amd_profiles) or profiles.get("amd-gpu")
        if profile is not None:
            found.append(LocalDevice(profile, name, index))
    soc = match_profile(brand, [p for p in profiles.values() if p.kind == "soc" and p.vendor == "apple"])
    if soc is not None:
        found.append(LocalDevice(soc, brand, None))
    found.append(LocalDevice(profiles["cpu"], brand, None))
    return found


def resolve_accelerators(
    requested: list[str] | None,
    profiles: Mapping[str, AcceleratorProfile],
    local: list[LocalDevice],
) -> list[LocalDevice]:
    """Map ``--ipw-accelerator`` names to local devices; without names, the best one detected.

    Asking for an accelerator that is not here is an error: measuring a "h100" run on a laptop would
    mislabel every figure.
    """
    if not requested:
        return [local[0]]
    chosen: list[LocalDevice] = []
    for name in requested:
        key = name.strip().lower()
        if key not in profiles:
            raise IPWUsageError(
                f"unknown accelerator {name!r} for --ipw-accelerator; known: {', '.join(sorted(profiles))} "
                "(add your own with --ipw-profiles=FILE)"
            )
        device = next((d for d in local if d.profile.name == key), None)
        if device is None:
            here = ", ".join(f"{d.profile.name} ({d.device_name})" for d in local)
            raise IPWUsageError(
                f"--ipw-accelerator={key}: this machine has no {profiles[key].label}. "
                f"Accelerators found here: {here}. Run on a machine that has it, or choose one of those."
            )
        if device not in chosen:
            chosen.append(device)
    return chosen
