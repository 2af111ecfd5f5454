"""Which meters exist, and choosing one for an accelerator.

Meter modules are imported only when chosen (pynvml and friends are slow or absent). Each module has
``create(profile, device_index=None, **options) -> Meter`` and raises :class:`MeterUnavailable` with the
reason when its sensor is not usable here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ..accelerators import AcceleratorProfile
from ..errors import IPWUsageError

METER_MODULES: dict[str, str] = {
    "nvml": "pytest_ipw.meters.nvml",
    "estimate": "pytest_ipw.meters.estimate",
}


class MeterUnavailable(Exception):
    """The sensor is not usable on this machine; the message says why and what would fix it."""


@dataclass
class MeterChoice:
    meter: Any  # Meter; typed loosely to keep this module free of import cycles
    requested: str | None
    fallback_reason: str | None  # why the natural/requested meter was not used, shown in the report


def create_meter(name: str, profile: AcceleratorProfile, device_index: int | None = None, **options: Any):
    module_name = METER_MODULES.get(name)
    if module_name is None:
        raise IPWUsageError(f"unknown meter {name!r} for --ipw-meter; known: {', '.join(sorted(METER_MODULES))}")
    return importlib.import_module(module_name).create(profile, device_index=device_index, **options)


def select_meter(profile: AcceleratorProfile, device_index: int | None = None, requested: str | None = None,
                 **options: Any) -> MeterChoice:
    """The requested meter (an error when unusable), else the profile's natural meter, else the estimate.

    Falling back is never silent: the reason travels with the choice and reaches the report.
    """
    if requested:
        try:
            return MeterChoice(create_meter(requested, profile, device_index, **options), requested, None)
        except MeterUnavailable as exc:
            raise IPWUsageError(f"--ipw-meter={requested} cannot measure here: {exc}") from None
    reason = None
    if profile.meter != "estimate":
        if profile.meter not in METER_MODULES:
            reason = f"no {profile.meter} meter is available in this version"
        else:
            try:
                return MeterChoice(create_meter(profile.meter, profile, device_index, **options), None, None)
            except MeterUnavailable as exc:
                reason = f"{profile.meter}: {exc}"
    return MeterChoice(create_meter("estimate", profile, device_index), None, reason)
