"""Intel/AMD CPU energy from Linux powercap sysfs (RAPL): package and DRAM counters.

Both layouts are read: the flat ``/sys/class/powercap/intel-rapl:0``, ``intel-rapl:0:0`` (links, side by
side) and the nested ``/sys/devices/virtual/powercap/intel-rapl/intel-rapl:0/intel-rapl:0:0``. Zones are
told apart by their directory name, so a zone reached both ways is read once.

What is summed, and why:
- ``package-N`` (domain cpu) and ``dram`` (domain dram): DRAM is outside the package, so they add up.
- ``core``/``uncore`` (and ``gpu`` on client parts) are *inside* the package: never added to it.
- ``psys`` (domain system) covers the package, DRAM and more of the platform: it is measured only when
  asked for (``--ipw-meter=rapl:psys``), alone, because adding it to the others would count them twice.
- ``intel-rapl-mmio`` zones mirror the package counter through another interface: skipped.

``energy_uj`` counts µJ and wraps to 0 after ``max_energy_range_uj`` (about 262 kJ: 46 min at 95 W);
a window reads it at both ends and corrects one wrap. Windows long enough to wrap twice are flagged.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pytest_ipw.hardware.profiles import AcceleratorProfile
from .base import (
    FLAG_MAY_HAVE_WRAPPED,
    MEASURED,
    Measurement,
    Meter,
    MeterFailure,
    counter_delta,
    counter_readings,
    timed_read,
)
from .base import MeterUnavailable

DEFAULT_ROOTS = (Path("/sys/class/powercap"), Path("/sys/devices/virtual/powercap"))
#: the RAPL counters update about every millisecond (2^-10 s on Intel)
RAPL_UPDATE_S = 0.001
_SUBZONES_INSIDE_PACKAGE = ("core", "uncore", "gpu")
SELECTIONS = {"package": ("cpu",), "dram": ("dram",), "psys": ("system",)}

Reader = Callable[[Path], str]


def read_sysfs(path: Path) -> str:
    with open(path, "r", encoding="ascii") as handle:
        return handle.read()


@dataclass(frozen=True)
class RaplZone:
    zone_id: str  # directory name, e.g. "intel-rapl:0:2"
    path: Path
    name: str  # contents of "name": "package-0", "dram", "psys", "core", ...
    domain: str | None  # cpu | dram | system, or None for subzones already inside a package
    max_range_uj: int | None
    max_power_w: float | None

    @property
    def energy_file(self) -> Path:
        return self.path / "energy_uj"


def _domain_of(name: str) -> str | None:
    if name.startswith("package"):
        return "cpu"
    if name == "dram":
        return "dram"
    if name == "psys":
        return "system"
    return None  # core, uncore, gpu: parts of the package's energy


def _find_zone_dirs(root: Path) -> dict[str, Path]:
    """Zone id -> directory, searching ``intel-rapl*`` directories (links followed) below ``root``."""
    found: dict[str, Path] = {}
    pending = [root]
    while pending:
        directory = pending.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            if not entry.name.startswith("intel-rapl") or entry.name.startswith("intel-rapl-mmio"):
                continue
            try:
                if not entry.is_dir():
                    continue
            except OSError:
                continue
            path = Path(entry.path)
            if ":" in entry.name and entry.name not in found:
                found[entry.name] = path
            if len(found) < 256:  # a sysfs tree has a handful of zones; guard against link loops
                pending.append(path)
    return found


def _optional_int(reader: Reader, path: Path) -> int | None:
    try:
        text = reader(path).strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None  # real sysfs answers ENODATA/EIO for some attributes; copies hold empty files


def _permission_message(path: Path) -> str:
    return (f"{path} exists but is not readable (permission denied). Since Linux 5.10 (CVE-2020-8694) RAPL "
            "energy counters are readable by root only: run as root, or grant read access, e.g. "
            "`sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj` (until reboot) or a udev rule; "
            "or choose another meter with --ipw-meter")


def discover_zones(root: Path, reader: Reader = read_sysfs) -> list[RaplZone]:
    """Every RAPL zone under ``root`` with an ``energy_uj`` counter, subzones included (domain None)."""
    zones = []
    for zone_id, path in sorted(_find_zone_dirs(root).items()):
        if not (path / "energy_uj").exists():
            continue
        try:
            name = reader(path / "name").strip()
        except OSError:
            name = zone_id
        max_power = _optional_int(reader, path / "constraint_0_max_power_uw")
        zones.append(RaplZone(
            zone_id=zone_id, path=path, name=name, domain=_domain_of(name),
            max_range_uj=_optional_int(reader, path / "max_energy_range_uj"),
            max_power_w=max_power / 1e6 if max_power else None,
        ))
    return zones


def choose_zones(zones: list[RaplZone], selection: str | None) -> list[RaplZone]:
    """Zones to add up: packages and DRAM by default; one kind when ``selection`` names it."""
    if selection is None:
        return [z for z in zones if z.domain in ("cpu", "dram")]
    if selection not in SELECTIONS:
        raise MeterUnavailable(f"unknown RAPL selection {selection!r}; use rapl, rapl:package, rapl:dram or rapl:psys")
    return [z for z in zones if z.domain in SELECTIONS[selection]]


class RaplMeter(Meter):
    name = "rapl"
    provenance = MEASURED
    update_period_s = RAPL_UPDATE_S
    reading = "counter"

    def __init__(self, zones: list[RaplZone], reader: Reader = read_sysfs, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        if not zones:
            raise ValueError("a RAPL meter needs at least one zone")
        self.zones = zones
        self._read = reader
        self._clock = clock
        self.domain = "+".join(dict.fromkeys(z.domain or "cpu" for z in zones))
        self._start: tuple[float, tuple[float, list[int]]] | None = None
        self.read_counters()  # fail now, with the fix, rather than in the first query

    @property
    def sensor(self) -> str:
        names = ", ".join(f"{z.name} ({z.zone_id})" for z in self.zones)
        return f"rapl: {names} energy counters"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "zones": [
            {"zone": z.zone_id, "name": z.name, "domain": z.domain, "path": str(z.path),
             "max_energy_range_uj": z.max_range_uj, "max_power_w": z.max_power_w} for z in self.zones]}

    def read_counters(self) -> list[int]:
        values = []
        for zone in self.zones:
            try:
                values.append(int(self._read(zone.energy_file).strip()))
            except PermissionError:
                raise MeterUnavailable(_permission_message(zone.energy_file)) from None
            except OSError as exc:
                if exc.errno in (errno.EACCES, errno.EPERM):
                    raise MeterUnavailable(_permission_message(zone.energy_file)) from None
                raise MeterUnavailable(f"cannot read {zone.energy_file} ({exc.strerror or exc})") from None
            except ValueError:
                raise MeterUnavailable(f"{zone.energy_file} does not hold a number") from None
        return values

    def _begin(self) -> None:
        self._start = (self._clock(), timed_read(self._counters))

    def _counters(self) -> list[int]:
        try:
            return self.read_counters()
        except MeterUnavailable as exc:
            raise MeterFailure(f"rapl: {exc}") from None

    def _mark(self, label: str) -> Any:
        return self._clock(), self._counters()  # one extra read of each zone

    def _split(self, label: str, point: Any, measurement: Measurement) -> tuple[float, float, str]:
        assert self._start is not None
        started, (_, before) = self._start
        at, counters = point
        joules = sum(counter_delta(b, m, z.max_range_uj) for z, b, m in zip(self.zones, before, counters)) / 1e6
        return at - started, joules, "counter read at the mark"

    def probe(self) -> float:
        """Sum of the zones' raw counters now (µJ), for ``pytest-ipw calibrate``."""
        return float(sum(self._counters()))

    def _end(self) -> Measurement:
        assert self._start is not None
        started, (read_at, before) = self._start
        ended_at, after = timed_read(self._counters)
        seconds = self._clock() - started
        parts, flags = [], []
        for zone, b, a in zip(self.zones, before, after):
            try:
                joules = counter_delta(b, a, zone.max_range_uj) / 1e6
            except ValueError:
                raise MeterFailure(f"rapl: {zone.energy_file} went backwards ({b} -> {a}) and its "
                                   "max_energy_range_uj is unreadable, so the wrap cannot be corrected") from None
            if zone.max_range_uj and seconds * (zone.max_power_w or 1000.0) * 1e6 >= zone.max_range_uj:
                flags.append(FLAG_MAY_HAVE_WRAPPED)  # two wraps look like one: this window is too long to trust
            parts.append(Measurement(joules=joules, seconds=seconds, sensor=f"rapl: {zone.name} ({zone.zone_id})",
                                     provenance=MEASURED, domain=zone.domain or "cpu", samples=2))
        readings = counter_readings((read_at, [v / 1e6 for v in before]), (ended_at, [v / 1e6 for v in after]),
                                    self.update_period_s, [z.max_range_uj / 1e6 if z.max_range_uj else None
                                                           for z in self.zones])
        return Measurement(joules=sum(p.joules for p in parts), seconds=seconds, sensor=self.sensor,
                           provenance=MEASURED, domain=self.domain, samples=2, flags=tuple(dict.fromkeys(flags)),
                           parts=tuple(parts) if len(parts) > 1 else (), readings=readings)

    def resolved_devices(self) -> set[str]:
        return {f"rapl:{z.zone_id}" for z in self.zones}


def create(profile: AcceleratorProfile, device_index: int | None = None, arg: str | None = None,
           root: str | Path | None = None, reader: Reader | None = None, **_: Any) -> RaplMeter:
    """``root`` and ``reader`` are for tests (a fake sysfs tree, an injected EACCES)."""
    reader = reader or read_sysfs
    roots = [Path(root)] if root is not None else list(DEFAULT_ROOTS)
    for candidate in roots:
        zones = discover_zones(candidate, reader)
        if zones:
            break
    else:
        where = " or ".join(str(r) for r in roots)
        raise MeterUnavailable(
            f"no RAPL energy counters under {where}. RAPL needs an Intel CPU, or an AMD Zen CPU with Linux >= 5.8, "
            "and the powercap driver (`sudo modprobe intel_rapl_msr`); virtual machines and containers usually "
            "hide it (bind-mount /sys/class/powercap). Arm CPUs have no RAPL.")
    chosen = choose_zones(zones, arg)
    if not chosen:
        present = ", ".join(sorted({z.name for z in zones}))
        wanted = arg or "package or dram"
        raise MeterUnavailable(f"no RAPL {wanted} zone under {candidate} (zones present: {present})")
    return RaplMeter(chosen, reader)
