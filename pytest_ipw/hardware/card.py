"""The comparability card: what an energy figure of a run depends on, in every results file.

Energy figures from two machines compare only when their sensors measure the same scope the same way.
One card per model × accelerator (``comparability`` in ``--ipw-json``) says: the sensor and its scope
(device, package, SoC or whole system), how it is read (counter or sampled gauge), its update period and the
sampling rate, the idle floor, power limit, clocks and driver, the permissions the run had, the thermal state
at the start and end, and the runtime build (llama.cpp's CPU features or its CUDA/Metal/HIP backend). A fact
the sensor or runtime does not report is None, never guessed. ``pytest-ipw calibrate`` prints one too.
"""

from __future__ import annotations

import os
import platform
from typing import Any, Iterable, Mapping

#: energy domain -> the scope a reader compares: a GPU's own sensor measures the device, RAPL the package...
SCOPES = {"gpu": "device", "cpu": "package", "dram": "dram", "soc": "soc", "system": "system"}
#: backend facts that say how the runtime was built and which version answered
_RUNTIME_KEYS = ("backend", "runtime_version", "system_info", "gpu_offload_supported", "gpu_offload", "gpu_layers",
                 "threads", "threads_batch", "server_version", "served_model", "engine", "engine_version", "device",
                 "cuda", "hip", "blas", "tf32")


def scope_of(domain: str | None) -> str | None:
    """``gpu`` -> ``device``, ``cpu+dram`` -> ``package+dram``; None for an unknown domain."""
    if not domain:
        return None
    return "+".join(SCOPES.get(part, part) for part in str(domain).split("+"))


def _find(info: Mapping[str, Any], key: str) -> Any:
    """``key`` in a meter description, or in the descriptions of its summed parts (nvml+rapl)."""
    if info.get(key) is not None:
        return info[key]
    found = [part.get(key) for part in info.get("parts") or () if isinstance(part, Mapping) and part.get(key) is not None]
    if not found:
        return None
    return found[0] if len(found) == 1 else found


def permissions_used(meter_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Whether the run had root, ran under sudo, or neither; and whether a meter called sudo itself."""
    euid = os.geteuid() if hasattr(os, "geteuid") else None
    under_sudo = bool(os.environ.get("SUDO_USER"))
    level = "sudo" if under_sudo and euid == 0 else "root" if euid == 0 else "none"
    command = str(_find(meter_info or {}, "command") or "")
    return {"level": level, "euid": euid, "meter_runs_sudo": command.startswith("sudo ")}


def host_state() -> dict[str, Any]:
    """CPU clocks and the hottest CPU temperature now (psutil; None where the OS does not say)."""
    state: dict[str, Any] = {"cpu_mhz": None, "cpu_max_mhz": None, "cpu_temperature_c": None}
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a dependency
        return state
    try:
        frequency = psutil.cpu_freq()
    except (OSError, RuntimeError, NotImplementedError):
        frequency = None
    if frequency is not None:
        state["cpu_mhz"] = round(frequency.current, 1) if frequency.current else None
        state["cpu_max_mhz"] = round(frequency.max, 1) if frequency.max else None
    reader = getattr(psutil, "sensors_temperatures", None)
    try:
        sensors = reader() if reader is not None else {}
    except (OSError, RuntimeError):
        sensors = {}
    readings = [entry.current for entries in (sensors or {}).values() for entry in entries if entry.current]
    state["cpu_temperature_c"] = max(readings) if readings else None
    return state


def runtime_build(backend_info: Mapping[str, Any] | None) -> dict[str, Any]:
    """The facts of the backend (or calibration workload) that say how its runtime was built."""
    info = backend_info or {}
    return {key: info[key] for key in _RUNTIME_KEYS if info.get(key) is not None}


def comparability_card(meter_info: Mapping[str, Any], backend_info: Mapping[str, Any] | None = None, *,
                       sample_hz: float | None = None) -> dict[str, Any]:
    """The card of one model × accelerator, from the meter's description (``settings.meters``: what
    :meth:`~pytest_ipw.meters.base.Meter.describe` said, the idle baseline, thermal state) and the
    backend's ``info()``."""
    reading = meter_info.get("reading")
    idle = meter_info.get("idle_baseline") or {}
    host_start, host_end = meter_info.get("host_start") or {}, meter_info.get("host_end") or {}
    clocks = _find(meter_info, "clocks_mhz")
    if clocks is None and host_start.get("cpu_mhz") is not None:
        clocks = {"cpu_mhz": host_start.get("cpu_mhz"), "cpu_max_mhz": host_start.get("cpu_max_mhz")}
    driver = _find(meter_info, "driver_version")
    return {
        "sensor": meter_info.get("sensor"),
        "meter": meter_info.get("meter"),
        "provenance": meter_info.get("provenance"),
        "domain": meter_info.get("domain"),
        "scope": scope_of(meter_info.get("domain")),
        "reading": reading,
        "update_period_s": meter_info.get("update_period_s"),
        # counters are read at window ends (and at the first token); only gauges are sampled
        "sampling_hz": sample_hz if reading == "gauge" else None,
        "idle_floor_w": idle.get("watts"),
        "power_limit_w": _find(meter_info, "power_limit_w"),
        "clocks": clocks,
        "driver": driver if driver is not None else f"{platform.system()} {platform.release()}",
        "permissions": permissions_used(meter_info),
        "thermal": {"start": meter_info.get("thermal_start") or None, "end": meter_info.get("thermal_end") or None,
                    "cpu_temperature_c_start": host_start.get("cpu_temperature_c"),
                    "cpu_temperature_c_end": host_end.get("cpu_temperature_c")},
        "runtime_build": runtime_build(backend_info),
        "fallback_reason": meter_info.get("fallback_reason"),
    }


def run_cards(meter_info: Mapping[str, Mapping[str, Any]], model_info: Mapping[str, Mapping[str, Any]],
              sample_hz: float | None) -> dict[str, dict[str, Any]]:
    """A card per model × accelerator (target id) of the run."""
    return {target: comparability_card(info, model_info.get(target), sample_hz=sample_hz)
            for target, info in sorted(meter_info.items())}


def _close(a: Any, b: Any, tolerance: float = 0.1) -> bool:
    if a is None or b is None:
        return a is b
    return abs(float(a) - float(b)) <= tolerance * max(abs(float(a)), abs(float(b)))


def card_differences(cards: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Warnings when cards that are compared measured different scopes, or with sensors of different update
    periods (more than 10% apart): their energy figures are then not like for like."""
    cards = list(cards)
    warnings = []
    scopes = {label: card.get("scope") for label, card in cards}
    if len(set(scopes.values())) > 1:
        listed = ", ".join(f"{label}: {scope}" for label, scope in scopes.items())
        warnings.append(f"the runs measured different scopes ({listed}): device, package, SoC and system energy are "
                        "not comparable figures")
    periods = [(label, card.get("update_period_s")) for label, card in cards]
    first_label, first = periods[0] if periods else ("", None)
    if any(not _close(first, period) for _, period in periods[1:]):
        listed = ", ".join(f"{label}: {'unknown' if p is None else f'{p:g} s'}" for label, p in periods)
        warnings.append(f"the sensors update at different periods ({listed}): short windows and the prefill/decode "
                        "split are resolved differently")
    return warnings
