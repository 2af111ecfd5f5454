"""Which meters exist, and choosing one for an accelerator.

Meter modules are imported only when chosen (pynvml and friends are slow or absent). Each module has
``create(profile, device_index=None, arg=None, sample_hz=20.0, **options) -> Meter`` (``arg`` is what follows
``NAME:`` in ``--ipw-meter``) and raises :class:`MeterUnavailable` with the reason when its sensor is not
usable here. Several meters given together are summed by :class:`~pytest_ipw.meters.combined.SumMeter`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from pytest_ipw.hardware.profiles import AcceleratorProfile
from pytest_ipw.core.errors import IPWUsageError

from .base import MeterUnavailable  # noqa: F401  (raised by every sensor module; re-exported here)

METER_MODULES: dict[str, str] = {
    "nvml": "pytest_ipw.meters.nvml",
    "amdsmi": "pytest_ipw.meters.amdsmi",
    "hwmon": "pytest_ipw.meters.hwmon",
    "rapl": "pytest_ipw.meters.rapl",
    "powermetrics": "pytest_ipw.meters.powermetrics",
    "ioreport": "pytest_ipw.meters.ioreport",
    "prometheus": "pytest_ipw.meters.prometheus",
    "replay": "pytest_ipw.meters.replay",
    "estimate": "pytest_ipw.meters.estimate",
}

#: natural meter -> meters tried in order: the sudo-less IOReport counters win over powermetrics when installed
NATURAL_CHOICES: dict[str, tuple[str, ...]] = {"powermetrics": ("ioreport", "powermetrics")}

#: a prometheus part is ``prometheus+URL`` (or ``prometheus:URL``); the "+" before a URL scheme belongs to it
_URL_SCHEMES = ("http://", "https://")


@dataclass(frozen=True)
class MeterSpec:
    """One part of ``--ipw-meter``: a meter name and its argument (``replay:PATH`` -> "replay", "PATH")."""

    name: str
    arg: str | None
    text: str


def _starts_with_meter(text: str) -> bool:
    """Whether ``text`` begins with a known meter name followed by its end, ":" or "+"."""
    for name in METER_MODULES:
        if text.startswith(name) and (len(text) == len(name) or text[len(name)] in ":+"):
            return True
    return False


def _split_sum(text: str) -> list[str]:
    """Split on "," always, and on "+" only where a known meter name follows (so URLs and paths keep theirs)."""
    pieces: list[str] = []
    for chunk in text.split(","):
        current = ""
        i = 0
        while i < len(chunk):
            char = chunk[i]
            rest = chunk[i + 1:]
            if char == "+" and current.strip() == "prometheus" and rest.startswith(_URL_SCHEMES):
                current += char  # prometheus+http://... is one part
            elif char == "+" and _starts_with_meter(rest.lstrip().lower()) and current.strip():
                pieces.append(current)
                current = ""
            else:
                current += char
            i += 1
        pieces.append(current)
    return [piece.strip() for piece in pieces]


def parse_meter_spec(text: str) -> list[MeterSpec]:
    """Parse ``--ipw-meter``: one part, or several to be summed, joined by "," or "+".

    ``nvml``, ``nvml:all``, ``nvml:1``, ``amdsmi``, ``amdsmi:all``, ``hwmon``, ``hwmon:VDD_GPU_SOC``, ``rapl``,
    ``rapl:psys``, ``powermetrics``, ``ioreport``,
    ``prometheus+http://host:9400/metrics#gpu=0``, ``replay:trace.csv``, ``estimate``;
    ``nvml+rapl`` and ``nvml,rapl`` are the same sum.
    """
    specs: list[MeterSpec] = []
    for piece in _split_sum(text):
        if not piece:
            raise IPWUsageError(f"--ipw-meter={text}: empty part; join meters with ',' or '+', e.g. nvml+rapl")
        if piece.startswith("prometheus+") and piece[len("prometheus+"):].startswith(_URL_SCHEMES):
            name, arg = "prometheus", piece[len("prometheus+"):]
        elif ":" in piece:
            name, arg = piece.split(":", 1)
        else:
            name, arg = piece, None
        name = name.strip().lower()
        if name not in METER_MODULES:
            raise IPWUsageError(f"unknown meter {name!r} in --ipw-meter={text}; known: {', '.join(sorted(METER_MODULES))} "
                                "(several are summed with ',' or '+'; a remote one is prometheus+http://HOST:PORT/metrics)")
        if name == "prometheus" and not (arg or "").startswith(_URL_SCHEMES):
            raise IPWUsageError(f"--ipw-meter={text}: the prometheus meter needs an endpoint, "
                                "e.g. prometheus+http://gpu-host:9400/metrics")
        if name == "replay" and not arg:
            raise IPWUsageError(f"--ipw-meter={text}: the replay meter needs a trace file, e.g. replay:trace.csv")
        specs.append(MeterSpec(name, arg or None, piece))
    seen = [s.text for s in specs]
    duplicates = sorted({t for t in seen if seen.count(t) > 1})
    if duplicates:
        raise IPWUsageError(f"--ipw-meter={text} names {', '.join(duplicates)} twice; its energy would be counted twice")
    return specs


@dataclass
class MeterChoice:
    meter: Any  # Meter; typed loosely to keep this module free of import cycles
    requested: str | None
    fallback_reason: str | None  # why the natural/requested meter was not used, shown in the report


def create_meter(name: str, profile: AcceleratorProfile, device_index: int | None = None, **options: Any):
    """One meter from a ``--ipw-meter`` text (a part, or a sum of parts)."""
    specs = parse_meter_spec(name)
    meters = []
    try:
        for spec in specs:
            module = importlib.import_module(METER_MODULES[spec.name])
            meters.append(module.create(profile, device_index=device_index, arg=spec.arg, **options))
    except BaseException:
        for meter in meters:
            meter.close()
        raise
    if len(meters) == 1:
        return meters[0]
    from .combined import SumMeter

    try:
        return SumMeter(meters)
    except BaseException:
        for meter in meters:
            meter.close()
        raise


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
    reasons = []
    if profile.meter != "estimate":
        if profile.meter not in METER_MODULES:
            reasons.append(f"no {profile.meter} meter is available in this version")
        else:
            for name in NATURAL_CHOICES.get(profile.meter, (profile.meter,)):
                try:
                    return MeterChoice(create_meter(name, profile, device_index, **options), None, None)
                except MeterUnavailable as exc:
                    reasons.append(f"{name}: {exc}")
    return MeterChoice(create_meter("estimate", profile, device_index, **options), None, "; ".join(reasons) or None)
