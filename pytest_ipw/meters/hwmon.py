"""Linux hwmon power and energy channels (``/sys/class/hwmon``): Jetson INA3221 rails, amdgpu PPT and others.

A chip (``hwmonN``, its driver in ``name``) has channels, in the units of the kernel's hwmon sysfs ABI:
- ``energyN_input``: a µJ counter, read at both ends of a window (a fall is a reset, flagged);
- ``powerN_input`` (instantaneous) or ``powerN_average``: a µW gauge, sampled and integrated;
- on chips with neither, labelled voltage/current pairs: ``inN_input`` (mV) × ``currN_input`` (mA), sampled
  and integrated. These are the INA3221 rails of Jetson boards (JetPack 5 and later; L4T r32 exposes them
  through an IIO driver instead, which this meter does not read).
A channel is named by its label (``powerN_label``, ``energyN_label``, ``inN_label``), else ``power1`` etc.;
a label with both a counter and a gauge is read from the counter. Unconnected INA3221 channels (label ``NC``,
or ``inN_enable`` 0) are skipped.

Which channels:
- ``hwmon`` — on a Jetson (INA3221 rails present): the module's input rail (``VDD_IN``, ``POM_5V_IN``) alone
  when it has one, since the other rails are inside it; else (AGX Orin, AGX Xavier) the sum of every rail,
  which leaves out the carrier board. Elsewhere: the only chip with power or energy channels, if it has one
  channel (amdgpu: its first, ``PPT``); anything ambiguous is refused with the choices.
- ``hwmon:LABEL`` — the channel with that label (case-insensitive): ``hwmon:VDD_GPU_SOC``, ``hwmon:PPT``;
  ``hwmon:CHIP`` or ``hwmon:hwmonN`` — that chip, by the rules above; ``hwmon:hwmonN:LABEL`` — one channel of
  one chip. Rails are summed with ``+``: ``hwmon:VDD_GPU_SOC+hwmon:VDD_CPU_CV``.

Update period: the chip's ``update_interval`` (ms; INA3221 conversion time × averaging) or the channel's
``powerN_average_interval`` where the driver gives one, else assumed (0.1 s for counters and instantaneous
gauges, 1 s for averages) and said so in the meter's description. ``/sys/class/hwmon`` is overridable
(``root``) for tests, like the RAPL meter's powercap root.
"""

from __future__ import annotations

import errno
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from pytest_ipw.hardware.profiles import AcceleratorProfile
from .base import (
    DEFAULT_SAMPLE_HZ,
    FLAG_COUNTER_RESET,
    FLAG_NO_UPDATE,
    MEASURED,
    Measurement,
    Meter,
    MeterFailure,
    PowerSampler,
    sample_interval_s,
)
from .base import MeterUnavailable

DEFAULT_ROOT = Path("/sys/class/hwmon")
#: Jetson rails that carry the whole module's input: measured alone, the other rails being inside them
INPUT_RAILS = ("VDD_IN", "POM_5V_IN")
#: a driver's channels measure this scope; an unknown driver's scope is not known, so it is called "system"
#: and never added to other meters (combined.SumMeter refuses a "system" part)
CHIP_DOMAINS = {"ina3221": "soc", "amdgpu": "gpu", "radeon": "gpu", "nouveau": "gpu", "i915": "gpu", "xe": "gpu",
                "amd_energy": "cpu", "power_meter": "system"}
ASSUMED_PERIOD_S = {"energy": 0.1, "power_input": 0.1, "power_average": 1.0, "rail": 0.1}
_ATTRIBUTE = re.compile(r"^(energy|power|in|curr)(\d+)_(input|average|label|enable|average_interval)$")

Reader = Callable[[Path], str]


def read_sysfs(path: Path) -> str:
    with open(path, "r", encoding="ascii", errors="replace") as handle:
        return handle.read()


def _integer(text: str) -> int:
    """A sysfs number; copies of sysfs files may carry NUL padding after the text."""
    return int(text.replace("\x00", "").strip())


def _text(reader: Reader, path: Path) -> str | None:
    try:
        return reader(path).replace("\x00", "").strip()
    except OSError:
        return None


@dataclass
class Channel:
    """One rail or sensor of a chip, and how it is read."""

    chip_dir: Path
    chip: str  # the driver's name: "ina3221", "amdgpu", ...
    label: str  # "VDD_GPU_SOC", "PPT", or "power1" when unlabelled
    kind: str  # "energy" | "power_input" | "power_average" | "rail"
    files: tuple[Path, ...]  # energy/power: one file; rail: (inN_input mV, currN_input mA)
    period_s: float = 0.0
    period_source: str = "assumed"

    @property
    def hwmon(self) -> str:
        return self.chip_dir.name

    @property
    def domain(self) -> str:
        return CHIP_DOMAINS.get(self.chip, "system")

    @property
    def how(self) -> str:
        if self.kind == "energy":
            return f"{self.files[0].name} µJ counter"
        if self.kind == "rail":
            return f"{self.files[0].name} mV × {self.files[1].name} mA, integrated"
        return f"{self.files[0].name} µW gauge, integrated"

    @property
    def sensor(self) -> str:
        return f"hwmon: {self.label} ({self.chip} {self.hwmon}, {self.how})"

    def read(self, reader: Reader) -> float:
        """µJ for a counter, W for a gauge."""
        if self.kind == "energy":
            return float(_integer(reader(self.files[0])))
        if self.kind == "rail":
            return _integer(reader(self.files[0])) * _integer(reader(self.files[1])) / 1e6  # mV × mA = µW
        return _integer(reader(self.files[0])) / 1e6

    def describe(self) -> dict[str, Any]:
        return {"hwmon": self.hwmon, "chip": self.chip, "label": self.label, "kind": self.kind, "domain": self.domain,
                "files": [str(f) for f in self.files], "update_period_s": self.period_s,
                "update_period_source": self.period_source}


@dataclass
class Chip:
    path: Path
    name: str
    channels: list[Channel] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)  # files refused for want of permission


def _period(reader: Reader, chip_dir: Path, kind: str, number: str) -> tuple[float, str]:
    if kind == "power_average":
        interval = _text(reader, chip_dir / f"power{number}_average_interval")
        if interval and interval.isdigit() and int(interval) > 0:
            return int(interval) / 1000.0, f"power{number}_average_interval"
    interval = _text(reader, chip_dir / "update_interval")
    if interval and interval.isdigit() and int(interval) > 0:
        return int(interval) / 1000.0, "update_interval"
    return ASSUMED_PERIOD_S[kind], "assumed"


def read_chip(chip_dir: Path, reader: Reader = read_sysfs) -> Chip:
    """A chip's readable power/energy channels (a channel that cannot be read now is left out)."""
    chip = Chip(chip_dir, _text(reader, chip_dir / "name") or chip_dir.name)
    try:
        names = sorted(os.listdir(chip_dir))
    except OSError:
        return chip
    attributes: dict[tuple[str, str], dict[str, Path]] = {}
    for name in names:
        match = _ATTRIBUTE.match(name)
        if match:
            kind, number, what = match.groups()
            attributes.setdefault((kind, number), {})[what] = chip_dir / name

    def usable(*paths: Path) -> bool:
        try:
            for path in paths:
                _integer(reader(path))
            return True
        except PermissionError:
            chip.unreadable.append(paths[0])
        except OSError as exc:
            if exc.errno in (errno.EACCES, errno.EPERM):
                chip.unreadable.append(paths[0])
        except ValueError:
            pass
        return False  # ENODATA/EIO/empty: the driver has no reading for it (r7-240, r9-280 label PPT only)

    def label_of(files: dict[str, Path], default: str) -> str:
        return (_text(reader, files["label"]) if "label" in files else None) or default

    by_label: dict[str, Channel] = {}
    for (kind, number), files in sorted(attributes.items(), key=lambda item: (item[0][0] != "energy", int(item[0][1]))):
        if kind == "energy" and "input" in files and usable(files["input"]):
            channel = Channel(chip_dir, chip.name, label_of(files, f"energy{number}"), "energy", (files["input"],))
        elif kind == "power" and ("input" in files or "average" in files):
            what = "input" if "input" in files and usable(files["input"]) else "average"
            if what not in files or (what == "average" and not usable(files["average"])):
                continue
            channel = Channel(chip_dir, chip.name, label_of(files, f"power{number}"), f"power_{what}", (files[what],))
        else:
            continue
        channel.period_s, channel.period_source = _period(reader, chip_dir, channel.kind, number)
        by_label.setdefault(channel.label.upper(), channel)  # a label's counter (read first) wins over its gauge
    if not by_label:  # voltage × current only where the chip gives no power of its own (INA3221)
        for (kind, number), files in sorted(attributes.items(), key=lambda item: int(item[0][1])):
            current = attributes.get(("curr", number), {}).get("input")
            if kind != "in" or "label" not in files or "input" not in files or current is None:
                continue
            label = label_of(files, "")
            enable = files.get("enable")
            if not label or label.upper() == "NC" or (enable is not None and _text(reader, enable) == "0"):
                continue
            if usable(files["input"], current):
                channel = Channel(chip_dir, chip.name, label, "rail", (files["input"], current))
                channel.period_s, channel.period_source = _period(reader, chip_dir, "rail", number)
                by_label.setdefault(label.upper(), channel)
    chip.channels = list(by_label.values())
    return chip


def discover(root: Path, reader: Reader = read_sysfs) -> list[Chip]:
    """Every ``hwmon*`` chip under ``root`` (links followed), in hwmon number order."""
    try:
        entries = [e for e in os.listdir(root) if e.startswith("hwmon")]
    except OSError:
        return []
    entries.sort(key=lambda e: (len(e), e))
    return [read_chip(root / entry, reader) for entry in entries]


def _is_jetson(chips: Sequence[Chip]) -> bool:
    return any(c.name == "ina3221" and any(ch.kind == "rail" for ch in c.channels) for c in chips)


def jetson_rails(chips: Sequence[Chip]) -> tuple[list[Channel], str]:
    """The module's input rail alone, else every rail summed; and the rule used, for the description."""
    rails = [ch for c in chips if c.name == "ina3221" for ch in c.channels]
    inputs = [ch for ch in rails if ch.label.upper() in INPUT_RAILS]
    if inputs:
        return inputs[:1], f"module input rail {inputs[0].label} (the other rails are inside it)"
    return rails, "sum of the module's rails (no input rail on this board; the carrier board is not included)"


def _listing(chips: Sequence[Chip]) -> str:
    found = [f"{c.path.name} ({c.name}): {', '.join(ch.label for ch in c.channels)}" for c in chips if c.channels]
    return "; ".join(found) or "none"


def _chip_rule(chips: Sequence[Chip], what: str) -> tuple[list[Channel], str]:
    if _is_jetson(chips):
        return jetson_rails(chips)
    with_channels = [c for c in chips if c.channels]
    if len(with_channels) != 1:
        raise MeterUnavailable(f"{what}: {len(with_channels)} chips have power or energy channels; choose one with "
                               f"hwmon:hwmonN or hwmon:LABEL (found: {_listing(chips)})")
    chip = with_channels[0]
    if len(chip.channels) == 1 or chip.name == "amdgpu":  # amdgpu's power1 is the package (PPT, slowPPT on APUs)
        return chip.channels[:1], f"{chip.name} {chip.path.name} channel {chip.channels[0].label}"
    raise MeterUnavailable(f"{what}: {chip.path.name} ({chip.name}) has several channels that may contain each other; "
                           f"choose one with hwmon:LABEL (found: {_listing([chip])})")


def choose_channels(chips: Sequence[Chip], arg: str | None) -> tuple[list[Channel], str]:
    """The channels ``--ipw-meter=hwmon[:ARG]`` measures, and the rule, as the module text describes."""
    if arg is None:
        return _chip_rule(chips, "hwmon")
    by_dir = {c.path.name: c for c in chips}
    head, _, label = arg.partition(":")
    if head in by_dir and label:
        found = [ch for ch in by_dir[head].channels if ch.label.upper() == label.upper()]
        if not found:
            raise MeterUnavailable(f"hwmon:{arg}: {head} has no channel {label!r} (found: {_listing([by_dir[head]])})")
        return found, f"channel {found[0].label} of {head}"
    if arg in by_dir:
        return _chip_rule([by_dir[arg]], f"hwmon:{arg}")
    named = [c for c in chips if c.name == arg]
    if named:
        return _chip_rule(named, f"hwmon:{arg}")
    found = [ch for c in chips for ch in c.channels if ch.label.upper() == arg.upper()]
    if len(found) > 1:
        choices = ", ".join(f"hwmon:{ch.hwmon}:{ch.label}" for ch in found)
        raise MeterUnavailable(f"hwmon:{arg}: {len(found)} chips have a channel {arg!r}; choose one: {choices}")
    if not found:
        raise MeterUnavailable(f"hwmon:{arg}: no hwmon channel, chip or hwmonN is called {arg!r} "
                               f"(found: {_listing(chips)})")
    return found, f"channel {found[0].label} of {found[0].hwmon}"


class HwmonMeter(Meter):
    name = "hwmon"
    provenance = MEASURED

    def __init__(self, channels: Sequence[Channel], rule: str = "", reader: Reader = read_sysfs,
                 sample_hz: float = DEFAULT_SAMPLE_HZ, clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        if not channels:
            raise ValueError("an hwmon meter needs at least one channel")
        self.channels = list(channels)
        self.rule = rule
        self._read = reader
        self._clock = clock
        self.domain = "+".join(dict.fromkeys(ch.domain for ch in self.channels))
        self.update_period_s = max(ch.period_s for ch in self.channels)
        interval = sample_interval_s(sample_hz)
        self._samplers = {id(ch): PowerSampler(lambda ch=ch: self._value(ch), interval)
                          for ch in self.channels if ch.kind != "energy"}
        self._start: tuple[float, dict[int, float]] | None = None
        for channel in self.channels:  # fail now, with the fix, rather than in the first query
            self._value(channel, MeterUnavailable)

    @property
    def sensor(self) -> str:
        if len(self.channels) == 1:
            return self.channels[0].sensor
        return f"hwmon: sum of {', '.join(ch.label for ch in self.channels)} ({self.rule})"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "rule": self.rule, "update_period_s": self.update_period_s,
                "channels": [ch.describe() for ch in self.channels]}

    def _value(self, channel: Channel, error: type[Exception] = MeterFailure) -> float:
        try:
            return channel.read(self._read)
        except PermissionError:
            raise error(f"{channel.files[0]} is not readable (permission denied); run as root or grant read "
                        f"access (`sudo chmod a+r {channel.files[0]}`), or choose another meter") from None
        except OSError as exc:
            raise error(f"hwmon: cannot read {channel.files[0]} ({exc.strerror or exc}); the {channel.chip} "
                        "driver stopped answering") from None
        except ValueError:
            raise error(f"hwmon: {channel.files[0]} does not hold a number") from None

    def _begin(self) -> None:
        started = self._clock()  # the window spans every channel's reads
        counters = {id(ch): self._value(ch) for ch in self.channels if ch.kind == "energy"}
        for sampler in self._samplers.values():
            sampler.begin()
        self._start = (started, counters)

    def _end(self) -> Measurement:
        assert self._start is not None
        started, before = self._start
        traces = {key: sampler.end() for key, sampler in self._samplers.items()}
        after = {id(ch): self._value(ch) for ch in self.channels if ch.kind == "energy"}
        seconds = self._clock() - started
        parts = []
        for channel in self.channels:
            flags: list[str] = []
            if channel.kind == "energy":
                start, end = before[id(channel)], after[id(channel)]
                if end < start:
                    flags.append(FLAG_COUNTER_RESET)  # no documented wrap range: count what it gathered since
                    microjoules = end
                else:
                    microjoules = end - start
                if microjoules == 0 and seconds >= channel.period_s:
                    flags.append(FLAG_NO_UPDATE)
                joules, window, samples = microjoules / 1e6, seconds, 2
            else:
                joules, window, samples = traces[id(channel)]
            parts.append(Measurement(joules=joules, seconds=window, sensor=channel.sensor, provenance=MEASURED,
                                     domain=channel.domain, samples=samples, flags=tuple(flags)))
        if len(parts) == 1:
            return parts[0]
        return Measurement(joules=sum(p.joules for p in parts), seconds=seconds, sensor=self.sensor,
                           provenance=MEASURED, domain=self.domain, samples=sum(p.samples for p in parts),
                           flags=tuple(dict.fromkeys(f for p in parts for f in p.flags)), parts=tuple(parts))


def create(profile: AcceleratorProfile, device_index: int | None = None, arg: str | None = None,
           sample_hz: float = DEFAULT_SAMPLE_HZ, root: str | Path | None = None, reader: Reader | None = None,
           **_: Any) -> HwmonMeter:
    """``root`` and ``reader`` are for tests (a built or captured sysfs tree, an injected EACCES)."""
    reader = reader or read_sysfs
    where = Path(root) if root is not None else DEFAULT_ROOT
    sample_interval_s(sample_hz)  # a bad --ipw-sample-hz is a usage error here too
    chips = discover(where, reader)
    if not any(c.channels for c in chips):
        refused = [p for c in chips for p in c.unreadable]
        if refused:
            raise MeterUnavailable(f"{refused[0]} is not readable (permission denied); run as root or grant read "
                                   f"access (`sudo chmod a+r {refused[0]}`)")
        raise MeterUnavailable(
            f"no hwmon power or energy channel under {where} ({len(chips)} chips, none with energy*_input, power*_input, "
            "power*_average or labelled in*/curr* rails). On a Jetson the INA3221 rails appear there from JetPack 5 "
            "(driver ina3221); in a container, bind-mount /sys/class/hwmon")
    channels, rule = choose_channels(chips, arg)
    return HwmonMeter(channels, rule, reader, sample_hz)
