"""RAPL against fake sysfs trees built from real captures: both layouts, wrap-around, unreadable counters."""

from __future__ import annotations

import errno
import os
import tarfile
from pathlib import Path

import pytest
from support import REAL_SAMPLES

from pytest_ipw.hardware.profiles import load_profiles
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.meters import rapl
from pytest_ipw.meters.base import FLAG_MAY_HAVE_WRAPPED, MEASURED, MeterFailure
from pytest_ipw.meters.rapl import RaplMeter, choose_zones, discover_zones
from pytest_ipw.meters.registry import MeterUnavailable, select_meter

SAMPLES = REAL_SAMPLES
PROFILES = load_profiles()
RANGE_UJ = 262143328850  # max_energy_range_uj in both captures


def unpack_codecarbon(dest: Path) -> Path:
    """The nested /sys/devices/virtual/powercap/intel-rapl tree of a real Intel laptop, with the links
    that stay inside it (``device -> ../../intel-rapl``); links pointing outside the tree are skipped."""
    with tarfile.open(SAMPLES / "rapl_sysfs_intel-laptop_codecarbon2020.tar.gz") as archive:
        members = []
        for member in archive.getmembers():
            if member.issym():
                target = os.path.normpath(os.path.join(os.path.dirname(member.name), member.linkname))
                if target.startswith(".."):
                    continue
            members.append(member)
        archive.extractall(dest, members=members, filter="fully_trusted")
    return dest


def unpack_ttar(archive: Path, dest: Path) -> Path:
    """prometheus/procfs's text archive format: Path:/Directory:, Lines: N, content, Mode:."""
    lines = archive.read_text().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("Directory: "):
            (dest / line[len("Directory: "):]).mkdir(parents=True, exist_ok=True)
        elif line.startswith("Path: "):
            target = dest / line[len("Path: "):]
            count = int(lines[i + 1].split(":")[1])
            content = lines[i + 2:i + 2 + count]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text("".join(c + "\n" for c in content))
            i += 1 + count
        i += 1
    return dest


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    return unpack_codecarbon(tmp_path / "devices-virtual-powercap")


@pytest.fixture
def flat(tmp_path: Path) -> Path:
    return unpack_ttar(SAMPLES / "rapl_sysfs_class-powercap_procfs-fixture.ttar", tmp_path) / "fixtures/sys/class/powercap"


def set_energy(zone_dir: Path, value: int) -> None:
    (zone_dir / "energy_uj").write_text(f"{value}\n")


def test_nested_layout_zones_and_domains(nested: Path):
    zones = {z.zone_id: z for z in discover_zones(nested)}
    assert {z: (v.name, v.domain) for z, v in zones.items()} == {
        "intel-rapl:0": ("package-0", "cpu"),
        "intel-rapl:0:0": ("core", None),
        "intel-rapl:0:1": ("uncore", None),
        "intel-rapl:0:2": ("dram", "dram"),
        "intel-rapl:1": ("psys", "system"),
    }
    assert zones["intel-rapl:0"].max_range_uj == RANGE_UJ
    assert zones["intel-rapl:0"].max_power_w == 15.0
    assert zones["intel-rapl:0:2"].max_power_w is None  # empty file in the capture (ENODATA in real sysfs)
    chosen = [z.zone_id for z in choose_zones(list(zones.values()), None)]
    assert chosen == ["intel-rapl:0", "intel-rapl:0:2"]  # core/uncore are inside the package, psys holds all
    assert [z.zone_id for z in choose_zones(list(zones.values()), "psys")] == ["intel-rapl:1"]


def test_nested_layout_energy_is_package_plus_dram_only(nested: Path):
    clock = iter([100.0, 102.0])
    meter = rapl.create(PROFILES["cpu"], root=nested)
    meter._clock = lambda: next(clock)
    package, dram = nested / "intel-rapl/intel-rapl:0", nested / "intel-rapl/intel-rapl:0/intel-rapl:0:2"
    core, psys = package / "intel-rapl:0:0", nested / "intel-rapl/intel-rapl:1"
    meter.start()
    set_energy(package, 52649883221 + 30_000_000)  # +30 J
    set_energy(dram, 10642772192 + 4_500_000)  # +4.5 J
    set_energy(core, 36233947890 + 25_000_000)  # inside the package: must not be added
    set_energy(psys, 117870082040 + 90_000_000)  # contains everything: must not be added
    m = meter.stop()
    assert m.joules == pytest.approx(34.5)
    assert m.seconds == 2.0 and m.watts == pytest.approx(17.25)
    assert m.provenance == MEASURED and m.domain == "cpu+dram"
    assert [(p.domain, p.joules) for p in m.parts] == [("cpu", pytest.approx(30.0)), ("dram", pytest.approx(4.5))]
    assert "package-0" in m.sensor and "dram" in m.sensor and "core" not in m.sensor


def test_psys_alone_is_system_domain(nested: Path):
    meter = rapl.create(PROFILES["cpu"], arg="psys", root=nested)
    assert meter.domain == "system"
    psys = nested / "intel-rapl/intel-rapl:1"
    meter.start()
    set_energy(psys, 117870082040 + 12_000_000)
    assert meter.stop().joules == pytest.approx(12.0)


def test_flat_layout_from_procfs_fixture(flat: Path):
    zones = {z.zone_id: z for z in discover_zones(flat)}
    # intel-rapl:a is the fixture's synthetic second package (hex index); the control dir "intel-rapl" has no counter
    assert sorted(zones) == ["intel-rapl:0", "intel-rapl:0:0", "intel-rapl:a"]
    assert zones["intel-rapl:0"].max_power_w == 95.0
    meter = rapl.create(PROFILES["cpu"], root=flat)
    assert [z.zone_id for z in meter.zones] == ["intel-rapl:0", "intel-rapl:a"]
    assert meter.domain == "cpu"
    meter.start()
    set_energy(flat / "intel-rapl:0", 240422366267 + 7_000_000)
    set_energy(flat / "intel-rapl:0:0", 118821284256 + 6_000_000)
    m = meter.stop()
    assert m.joules == pytest.approx(7.0)
    with pytest.raises(MeterUnavailable, match="no RAPL dram zone"):
        rapl.create(PROFILES["cpu"], arg="dram", root=flat)


def test_flat_links_into_nested_tree_are_read_once(nested: Path, tmp_path: Path):
    """The real /sys/class/powercap holds links to the nested tree, subzones included: no zone twice."""
    klass = tmp_path / "class-powercap"
    klass.mkdir()
    base = nested / "intel-rapl"
    for link, target in [("intel-rapl", base), ("intel-rapl:0", base / "intel-rapl:0"),
                         ("intel-rapl:0:2", base / "intel-rapl:0/intel-rapl:0:2"), ("intel-rapl:1", base / "intel-rapl:1")]:
        (klass / link).symlink_to(target, target_is_directory=True)
    ids = [z.zone_id for z in discover_zones(klass)]
    assert sorted(ids) == ["intel-rapl:0", "intel-rapl:0:0", "intel-rapl:0:1", "intel-rapl:0:2", "intel-rapl:1"]
    assert len(ids) == len(set(ids))


def test_wrap_around_uses_max_energy_range(nested: Path):
    meter = rapl.create(PROFILES["cpu"], arg="package", root=nested)
    package = nested / "intel-rapl/intel-rapl:0"
    set_energy(package, RANGE_UJ - 2_000_000)  # 2 J before the wrap
    meter.start()
    set_energy(package, 3_000_000)  # 3 J after it
    m = meter.stop()
    assert m.joules == pytest.approx(5.0)
    assert FLAG_MAY_HAVE_WRAPPED not in m.flags


def test_window_long_enough_to_wrap_twice_is_flagged(nested: Path):
    meter = rapl.create(PROFILES["cpu"], arg="package", root=nested)
    clock = iter([0.0, 6 * 3600.0])  # 6 h at the 15 W limit is more than the 262 kJ range
    meter._clock = lambda: next(clock)
    with meter.window() as w:
        pass
    assert FLAG_MAY_HAVE_WRAPPED in w.measurement.flags


def test_unreadable_energy_uj_says_root_is_needed(nested: Path):
    """Tests run as root here, where chmod 000 does not stop reads: EACCES comes from the injected reader."""
    energy = nested / "intel-rapl/intel-rapl:0/energy_uj"
    os.chmod(energy, 0)

    def reader(path: Path) -> str:
        if path.name == "energy_uj" and os.stat(path).st_mode & 0o777 == 0:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return path.read_text()

    with pytest.raises(MeterUnavailable) as info:
        rapl.create(PROFILES["cpu"], root=nested, reader=reader)
    message = str(info.value)
    assert str(energy) in message and "root" in message and "permission denied" in message
    assert info.value.__suppress_context__  # one clear message, no chained traceback


def test_unreadable_counter_is_an_error_never_a_silent_fallback(nested: Path, monkeypatch):
    def denied(path: Path) -> str:
        if path.name == "energy_uj":
            raise OSError(errno.EACCES, "Permission denied")
        return path.read_text()

    monkeypatch.setattr(rapl, "DEFAULT_ROOTS", (nested,))
    monkeypatch.setattr(rapl, "read_sysfs", denied)
    with pytest.raises(IPWUsageError, match="--ipw-meter=rapl cannot measure here: .*root"):
        select_meter(PROFILES["cpu"], requested="rapl")
    # as the natural meter, the estimate is used and the reason (root) reaches the report
    choice = select_meter(PROFILES["cpu"])
    assert choice.meter.name == "estimate"
    assert "rapl:" in choice.fallback_reason and "root" in choice.fallback_reason


def test_counter_that_becomes_unreadable_mid_run_fails_clearly(nested: Path):
    state = {"deny": False}

    def reader(path: Path) -> str:
        if state["deny"] and path.name == "energy_uj":
            raise PermissionError(errno.EACCES, "Permission denied")
        return path.read_text()

    meter = rapl.create(PROFILES["cpu"], root=nested, reader=reader)
    meter.start()
    state["deny"] = True
    with pytest.raises(MeterFailure, match="root"):
        meter.stop()


def test_no_powercap_tree_names_the_fix(tmp_path: Path):
    with pytest.raises(MeterUnavailable, match="no RAPL energy counters under .*modprobe intel_rapl_msr"):
        rapl.create(PROFILES["cpu"], root=tmp_path)


def test_unknown_selection(nested: Path):
    with pytest.raises(MeterUnavailable, match="unknown RAPL selection 'gpu'"):
        rapl.create(PROFILES["cpu"], arg="gpu", root=nested)


def test_meter_needs_zones():
    with pytest.raises(ValueError):
        RaplMeter([])


def test_describe_lists_zones(nested: Path):
    info = rapl.create(PROFILES["cpu"], root=nested).describe()
    assert info["provenance"] == MEASURED and info["domain"] == "cpu+dram"
    assert [z["name"] for z in info["zones"]] == ["package-0", "dram"]
    assert info["zones"][0]["max_energy_range_uj"] == RANGE_UJ
