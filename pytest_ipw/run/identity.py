"""This machine's id, as a run would save it: from the accelerators and meters a run would use.

``pytest-ipw machine-id`` prints it, so a CI job can key its history cache on it before running pytest.
"""

from __future__ import annotations

from typing import Any

from pytest_ipw.hardware.machine import machine_info
from pytest_ipw.hardware.profiles import detect_devices, load_profiles, resolve_accelerators
from pytest_ipw.history.storage import machine_id, machine_identity
from pytest_ipw.meters.registry import select_meter


def current_machine(accelerators: list[str] | None = None, meter: str | None = None,
                    profiles_file: str | None = None, override: str | None = None) -> tuple[str, dict[str, Any]]:
    """(machine id, identity facts) for a run with these ``--ipw-accelerator``/``--ipw-meter`` choices."""
    profiles = load_profiles(profiles_file)
    devices = resolve_accelerators(accelerators, profiles, detect_devices(profiles))
    meters: dict[str, dict[str, Any]] = {}
    for device in devices:
        choice = select_meter(device.profile, device.index, requested=meter)
        try:
            meters[device.profile.name] = choice.meter.describe()
        finally:
            choice.meter.close()
    info = machine_info(devices)
    return override or machine_id(info, meters), machine_identity(info, meters)
