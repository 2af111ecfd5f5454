"""How energy provenance, the energy basis, flags and concurrency reach the summary and the report lines."""

from __future__ import annotations

import pytest

from pytest_ipw.hardware.profiles import load_profiles
from pytest_ipw.analysis.metrics import record_energy, summarize
from pytest_ipw.report.terminal import provenance_notes, summary_table


def record(**overrides):
    base = {"query_id": "q", "domain": "d", "model": "m", "accelerator": "cpu", "correct": True, "unscorable": False,
            "latency_s": 2.0, "tokens_out": 10, "joules": 100.0, "watts": 50.0, "seconds": 2.0,
            "meter": "rapl: package-0 (intel-rapl:0) energy counters", "provenance": "measured",
            "energy_domain": "cpu", "meter_flags": [], "joules_active": 60.0, "idle_watts": 20.0,
            "energy_basis": "total", "energy_parts": []}
    return {**base, **overrides}


def test_total_and_active_bases():
    assert record_energy(record()) == (100.0, 50.0)
    assert record_energy(record(energy_basis="active")) == (60.0, 30.0)
    with pytest.raises(ValueError, match="no idle baseline"):
        record_energy(record(energy_basis="active", joules_active=None))
    total = summarize([record(), record(correct=False)])
    active = summarize([record(energy_basis="active"), record(energy_basis="active", correct=False)])
    assert (total.mean_joules, total.mean_watts, total.energy_basis) == (100.0, 50.0, "total")
    assert (active.mean_joules, active.mean_watts, active.energy_basis) == (60.0, 30.0, "active")
    assert active.ipw == pytest.approx(0.5 / 30.0) and active.idle_watts == 20.0
    assert "MEASURED cpu (active)" in summary_table([active])
    assert "(active)" not in summary_table([total])


def test_lines_name_parts_basis_and_mixtures():
    parts = [{"sensor": "nvml: GPU0 H100", "provenance": "measured", "domain": "gpu", "joules": 80.0},
             {"sensor": "estimate: psutil", "provenance": "estimated", "domain": "cpu", "joules": 20.0}]
    lines = provenance_notes([record(meter="nvml: GPU0 H100 + estimate: psutil", provenance="estimated",
                                     energy_parts=parts)], {})
    assert lines[0] == "energy: ESTIMATED by nvml: GPU0 H100 + estimate: psutil"
    assert "energy:   part ESTIMATED cpu by estimate: psutil" in lines
    assert "energy:   part MEASURED gpu by nvml: GPU0 H100" in lines
    assert any("MIXES measured and estimated" in line for line in lines)
    assert any(line.startswith("energy: IPW, IPJ, J/query and W use TOTAL energy (idle baseline 20 W") for line in lines)
    active = provenance_notes([record(energy_basis="active")], {})
    assert any("use ACTIVE energy" in line for line in active)
    none = provenance_notes([record(idle_watts=None, joules_active=None)], {})
    assert any("no idle baseline (--ipw-idle-seconds=0)" in line for line in none)


def test_flags_are_counted_by_kind():
    records = [record(meter_flags=["window-shorter-than-sensor-period"]),
               record(meter_flags=["window-shorter-than-sensor-period", "below-idle-baseline"]),
               record(meter_flags=["counter-reset"]), record()]
    lines = provenance_notes(records, {})
    assert "energy: 2 window(s) were shorter than their sensor's update period; their figures are imprecise " \
           "(see meter_flags in --ipw-json)" in lines
    assert "energy: 1 window(s) used less than the idle baseline predicts; their active energy is 0" in lines
    assert "energy: 1 window(s) LEFT OUT of J/query, W, IPW and IPJ because their energy is unknown (1 counter-reset); " \
           "their queries still count for accuracy" in lines
    assert not any("flagged counter-reset" in line for line in lines)  # said once


def test_windows_of_unknown_energy_are_left_out_of_the_energy_means_only():
    from pytest_ipw.meters.base import EXCLUDED_FLAGS

    good = [record(joules=100.0, watts=50.0), record(joules=60.0, watts=30.0, correct=False)]
    for flag in EXCLUDED_FLAGS:  # a raw 0 of a stale counter, a post-wrap remainder, ...: never averaged in
        bad = record(joules=0.0, watts=0.0, meter_flags=[flag])
        summary = summarize(good + [bad])
        assert (summary.mean_joules, summary.mean_watts) == (80.0, 40.0), flag
        assert summary.queries == 3 and summary.accuracy == pytest.approx(2 / 3) and summary.energy_excluded == 1
        assert summary.ipw == pytest.approx((2 / 3) / 40.0)
    alone = summarize([record(meter_flags=["sensor-did-not-update"])])
    assert alone.mean_joules is None and alone.ipw is None and alone.energy_excluded == 1
    assert "n/a" in summary_table([alone])


@pytest.mark.parametrize("workers, said", [(0, False), (1, False), (4, True), ("auto", True)])
def test_concurrent_workers_are_reported(workers, said):
    lines = provenance_notes([record()], {}, workers=workers)
    assert any("xdist workers ran, and no two query windows overlapped" in line for line in lines) is said
    shared = {**record(), "meter_flags": ["energy-shared:3"]}
    lines = provenance_notes([shared, record()], {}, workers=workers)
    assert any(line.startswith("energy: 1 query window(s) overlapped others on the same sensor") for line in lines)


def test_profiles_have_their_natural_meters():
    profiles = load_profiles()
    required = ["cpu", "m1pro", "m1max", "m2pro", "m2max", "m3pro", "m3max", "m4pro", "m4max", "h100", "h200",
                "b200", "a100", "l4", "l40s", "rtx4090", "rtx5090", "mi300x", "jetson-orin"]
    assert set(required) <= set(profiles)
    for profile in profiles.values():
        if profile.vendor == "nvidia":  # Jetson boards: NVML reports no power there, their INA3221 rails do
            assert profile.meter == ("hwmon" if profile.kind == "soc" else "nvml"), profile.name
        elif profile.vendor == "amd":
            assert profile.meter == "amdsmi", profile.name
        elif profile.vendor == "apple":
            assert profile.meter == "powermetrics", profile.name
    assert profiles["cpu"].meter == "rapl"
