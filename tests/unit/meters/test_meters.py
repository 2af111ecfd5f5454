"""Tests of the meters: integration maths, the sampler, the Meter contract, estimate, NVML (faked) and the registry."""

from __future__ import annotations

import itertools
import math
import sys
import threading
import types

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_ipw.hardware.profiles import load_profiles, nvidia_device_names
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.meters import estimate, nvml, registry
from pytest_ipw.meters.base import (
    ESTIMATED,
    FLAG_SHORT_WINDOW,
    MEASURED,
    Measurement,
    Meter,
    PowerSampler,
    counter_delta,
    integrate_trapezoid,
)
from pytest_ipw.meters.estimate import EstimateMeter, estimate_joules
from pytest_ipw.meters.nvml import NvmlMeter
from pytest_ipw.meters.registry import MeterUnavailable, select_meter

PROFILES = load_profiles()


@pytest.fixture
def no_nvidia_gpu():
    if nvidia_device_names():
        pytest.skip("an NVIDIA GPU is visible here; this test is about machines without one")


# --------------------------------------------------------------------------- integrate_trapezoid


def _grid(start, stop, n):
    return [start + (stop - start) * i / (n - 1) for i in range(n)]


def test_trapezoid_constant_power():
    times = _grid(0.0, 10.0, 10_001)
    assert integrate_trapezoid(times, [50.0] * len(times)) == pytest.approx(500.0, rel=1e-12)


def test_trapezoid_ramp_power():
    times = _grid(0.0, 4.0, 1_001)
    watts = [10.0 + 5.0 * t for t in times]  # energy = 10*4 + 5*16/2 = 80 J
    assert integrate_trapezoid(times, watts) == pytest.approx(80.0, rel=1e-12)


def test_trapezoid_sine_power_within_a_tenth_of_a_percent():
    period, end = 1.0, 2.3
    times = _grid(0.0, end, 20_001)
    watts = [100.0 + 50.0 * math.sin(2 * math.pi * t / period) for t in times]
    exact = 100.0 * end + 50.0 * period / (2 * math.pi) * (1 - math.cos(2 * math.pi * end / period))
    assert abs(integrate_trapezoid(times, watts) - exact) / exact <= 1e-3
    # and coarse sampling really is worse: the assertion above is not vacuous
    coarse = _grid(0.0, end, 4)
    coarse_watts = [100.0 + 50.0 * math.sin(2 * math.pi * t / period) for t in coarse]
    assert abs(integrate_trapezoid(coarse, coarse_watts) - exact) / exact > 1e-3


@given(
    st.lists(st.floats(min_value=1e-3, max_value=10.0), min_size=1, max_size=50),
    st.floats(min_value=0.0, max_value=500.0),
    st.floats(min_value=-20.0, max_value=20.0),
)
def test_trapezoid_is_exact_for_linear_power_at_uneven_sampling(steps, intercept, slope):
    times = list(itertools.accumulate([0.0] + steps))
    watts = [intercept + slope * t for t in times]
    end = times[-1]
    exact = intercept * end + slope * end * end / 2
    assert integrate_trapezoid(times, watts) == pytest.approx(exact, rel=1e-9, abs=1e-6)


def test_trapezoid_edge_cases():
    assert integrate_trapezoid([], []) == 0.0
    assert integrate_trapezoid([1.0], [100.0]) == 0.0
    with pytest.raises(ValueError):
        integrate_trapezoid([0.0, 1.0], [1.0])
    with pytest.raises(ValueError):
        integrate_trapezoid([0.0, 2.0, 1.0], [1.0, 1.0, 1.0])


# --------------------------------------------------------------------------- counter_delta

RAPL_RANGE_UJ = 262143328850  # max_energy_range_uj of an Intel package domain


def test_counter_delta_plain():
    assert counter_delta(1_000, 5_500, RAPL_RANGE_UJ) == 4_500
    assert counter_delta(7, 7, None) == 0


def test_counter_delta_wraps_around():
    before = RAPL_RANGE_UJ - 1_000
    assert counter_delta(before, 500, RAPL_RANGE_UJ) == 1_500


@given(st.integers(min_value=0, max_value=RAPL_RANGE_UJ - 1), st.integers(min_value=0, max_value=RAPL_RANGE_UJ - 1))
def test_counter_delta_property(start, increase):
    after = (start + increase) % RAPL_RANGE_UJ
    assert counter_delta(start, after, RAPL_RANGE_UJ) == increase


def test_counter_delta_backwards_without_range_is_an_error():
    with pytest.raises(ValueError, match="backwards"):
        counter_delta(100, 50, None)
    with pytest.raises(ValueError):
        counter_delta(100, 50, 0)


# --------------------------------------------------------------------------- PowerSampler


class FakeRampSensor:
    """Sample k is read at t = k*dt with power a + b*t; sets ``enough`` after ``target`` reads."""

    def __init__(self, a=100.0, b=3.0, dt=0.5, target=500):
        self.a, self.b, self.dt, self.target = a, b, dt, target
        self.k = 0
        self.enough = threading.Event()

    def read(self):
        self.k += 1
        if self.k >= self.target:
            self.enough.set()
        return self.a + self.b * self.k * self.dt

    def clock(self):
        return self.k * self.dt


def test_power_sampler_keeps_every_sample_and_integrates_them():
    sensor = FakeRampSensor(target=800)
    sampler = PowerSampler(sensor.read, interval_s=1e-5, clock=sensor.clock)
    sampler.begin()
    assert sensor.enough.wait(timeout=30), "sampler thread never produced enough samples"
    joules, seconds, samples = sampler.end()
    assert samples == sensor.k >= 800  # nothing dropped or decimated, however long the window
    t0, t1 = sensor.dt, sensor.k * sensor.dt
    assert seconds == pytest.approx(t1 - t0)
    exact = sensor.a * (t1 - t0) + sensor.b * (t1 * t1 - t0 * t0) / 2
    assert joules == pytest.approx(exact, rel=1e-9)


def test_power_sampler_second_window_starts_afresh():
    sensor = FakeRampSensor(a=40.0, b=0.0, dt=1.0, target=3)
    sampler = PowerSampler(sensor.read, interval_s=1e-4, clock=sensor.clock)
    sampler.begin()
    sensor.enough.wait(timeout=30)
    sampler.end()
    reads_before = sensor.k
    sensor.enough.clear()
    sensor.target = reads_before + 5
    sampler.begin()
    sensor.enough.wait(timeout=30)
    joules, seconds, samples = sampler.end()
    assert samples == sensor.k - reads_before
    assert joules == pytest.approx(40.0 * seconds)
    assert seconds == pytest.approx((samples - 1) * 1.0)


def test_power_sampler_rejects_bad_interval():
    with pytest.raises(ValueError):
        PowerSampler(lambda: 1.0, interval_s=0)


# --------------------------------------------------------------------------- Meter contract


class FakeMeter(Meter):
    name = "fake"
    update_period_s = 1.0

    def __init__(self, seconds=2.0, fail_on_end=False):
        super().__init__()
        self.seconds = seconds
        self.fail_on_end = fail_on_end
        self.begun = self.ended = 0

    def _begin(self):
        self.begun += 1

    def _end(self):
        self.ended += 1
        if self.fail_on_end:
            raise OSError("sensor vanished")
        return Measurement(joules=3.0 * self.seconds, seconds=self.seconds, sensor="fake", provenance=MEASURED,
                           domain="system", samples=2)


def test_window_sets_measurement():
    meter = FakeMeter(seconds=2.0)
    with meter.window() as w:
        assert w.measurement is None
    assert w.measurement.joules == 6.0
    assert w.measurement.watts == 3.0
    assert FLAG_SHORT_WINDOW not in w.measurement.flags


def test_window_stops_the_meter_when_the_block_raises():
    meter = FakeMeter()
    with pytest.raises(KeyError):
        with meter.window() as w:
            raise KeyError("generation failed")
    assert meter.ended == 1
    assert w.measurement is not None and w.measurement.seconds == 2.0
    # the meter is usable again: no window left open
    with meter.window() as again:
        pass
    assert again.measurement is not None


def test_start_twice_raises_and_stop_without_start_raises():
    meter = FakeMeter()
    meter.start()
    with pytest.raises(RuntimeError, match="already has an open window"):
        meter.start()
    meter.stop()
    with pytest.raises(RuntimeError, match="no open window"):
        meter.stop()


def test_failing_end_still_closes_the_window():
    meter = FakeMeter(fail_on_end=True)
    meter.start()
    with pytest.raises(OSError):
        meter.stop()
    meter.fail_on_end = False
    meter.start()  # would raise "already has an open window" if stop() had left it open
    assert meter.stop().joules == 6.0


@pytest.mark.parametrize("seconds, flagged", [(0.5, True), (0.999, True), (1.0, False), (2.0, False)])
def test_short_windows_are_flagged(seconds, flagged):
    meter = FakeMeter(seconds=seconds)
    with meter.window() as w:
        pass
    assert (FLAG_SHORT_WINDOW in w.measurement.flags) is flagged
    assert w.measurement.to_dict()["flags"] == ([FLAG_SHORT_WINDOW] if flagged else [])


def test_measurement_validates_provenance_and_serialises():
    with pytest.raises(ValueError, match="provenance"):
        Measurement(joules=1.0, seconds=1.0, sensor="x", provenance="guessed", domain="cpu")
    empty = Measurement(joules=0.0, seconds=0.0, sensor="x", provenance=ESTIMATED, domain="cpu")
    assert empty.watts == 0.0
    part = Measurement(joules=1.0, seconds=2.0, sensor="a", provenance=MEASURED, domain="gpu")
    whole = Measurement(joules=3.0, seconds=2.0, sensor="a+b", provenance=MEASURED, domain="cpu+gpu",
                        parts=(part,), extra={"k": 1})
    data = whole.to_dict()
    assert data["watts"] == 1.5
    assert data["parts"][0]["watts"] == 0.5
    assert data["extra"] == {"k": 1}
    assert "parts" not in part.to_dict() and "extra" not in part.to_dict()


# --------------------------------------------------------------------------- EstimateMeter


def _scripted(values):
    iterator = iter(values)
    return lambda: next(iterator)


def test_estimate_meter_exact_energy():
    profile = PROFILES["cpu"]  # 10 W idle, 65 W TDP
    # clock 10 s -> 12 s; busy 100 -> 103 CPU-seconds out of 200 -> 208: utilisation 3/8
    meter = EstimateMeter(profile, cpu_times=_scripted([(100.0, 200.0), (103.0, 208.0)]),
                          clock=_scripted([10.0, 12.0]))
    with meter.window() as w:
        pass
    m = w.measurement
    utilisation = 3.0 / 8.0
    assert m.seconds == 2.0
    assert m.joules == 2.0 * (profile.idle_w + (profile.tdp_w - profile.idle_w) * utilisation) == 61.25
    assert m.provenance == ESTIMATED
    assert m.domain == "cpu"
    assert m.extra["cpu_utilisation"] == 0.375
    assert "estimate" in m.sensor and "estimate" in meter.sensor
    assert FLAG_SHORT_WINDOW not in m.flags
    info = meter.describe()
    assert info["provenance"] == ESTIMATED and info["tdp_w"] == 65 and info["idle_w"] == 10


def test_estimate_meter_clamps_utilisation_and_idles_without_cpu_time():
    profile = PROFILES["h100"]
    over = EstimateMeter(profile, cpu_times=_scripted([(0.0, 0.0), (50.0, 10.0)]), clock=_scripted([0.0, 1.0]))
    with over.window() as w:
        pass
    assert w.measurement.joules == profile.tdp_w
    assert w.measurement.domain == "gpu" and w.measurement.provenance == ESTIMATED
    still = EstimateMeter(profile, cpu_times=_scripted([(5.0, 9.0), (5.0, 9.0)]), clock=_scripted([0.0, 4.0]))
    with still.window() as w:
        pass
    assert w.measurement.joules == 4.0 * profile.idle_w


def test_estimate_meter_short_window_is_flagged():
    meter = EstimateMeter(PROFILES["cpu"], cpu_times=_scripted([(0.0, 0.0), (0.0, 0.0)]), clock=_scripted([0.0, 0.005]))
    with meter.window() as w:
        pass
    assert FLAG_SHORT_WINDOW in w.measurement.flags


@given(st.floats(min_value=0.0, max_value=1e4), st.floats(min_value=-1.0, max_value=2.0))
def test_estimate_joules_between_idle_and_tdp(seconds, utilisation):
    profile = PROFILES["m4max"]
    joules = estimate_joules(profile, seconds, utilisation)
    assert seconds * profile.idle_w - 1e-9 <= joules <= seconds * profile.tdp_w + 1e-9


def test_estimate_create_and_real_psutil_window():
    meter = estimate.create(PROFILES["cpu"])
    assert isinstance(meter, EstimateMeter)
    with meter.window() as w:
        sum(range(10_000))
    m = w.measurement
    assert m.provenance == ESTIMATED and m.seconds >= 0
    assert m.seconds * 10 - 1e-9 <= m.joules <= m.seconds * 65 + 1e-9


# --------------------------------------------------------------------------- NvmlMeter with a fake pynvml


class FakeNVMLError(Exception):
    pass


def fake_pynvml(*, energy_mj=None, power_mw=250_000, counter=True, name="NVIDIA H100 80GB HBM3",
                init_error=False, handle_error=False, limit_error=False):
    """A stand-in for the pynvml module; ``calls`` records what the meter did."""
    calls = []
    energies = iter(energy_mj or [])

    def init():
        calls.append("init")
        if init_error:
            raise FakeNVMLError("Driver Not Loaded")

    def handle(index):
        calls.append(("handle", index))
        if handle_error:
            raise FakeNVMLError("Invalid Argument")
        return f"handle{index}"

    def total_energy(h):
        calls.append("energy")
        if not counter:
            raise FakeNVMLError("Not Supported")
        return next(energies)

    def power(h):
        calls.append("power")
        return power_mw

    def limit(h):
        if limit_error:
            raise FakeNVMLError("Not Supported")
        return 700_000

    return types.SimpleNamespace(
        NVMLError=FakeNVMLError,
        NVML_TEMPERATURE_GPU=0,
        calls=calls,
        nvmlInit=init,
        nvmlDeviceGetHandleByIndex=handle,
        nvmlDeviceGetName=lambda h: name.encode(),  # older pynvml returns bytes
        nvmlDeviceGetTotalEnergyConsumption=total_energy,
        nvmlDeviceGetPowerUsage=power,
        nvmlDeviceGetTemperature=lambda h, sensor: 41,
        nvmlSystemGetDriverVersion=lambda: "565.57.01",
        nvmlDeviceGetEnforcedPowerLimit=limit,
        nvmlShutdown=lambda: calls.append("shutdown"),
    )


def test_nvml_counter_path():
    # one read when probing for the counter, then one at each end of the window
    fake = fake_pynvml(energy_mj=[5_000_000, 5_000_000, 5_012_345])
    meter = NvmlMeter(fake, 0)
    assert meter.uses_counter
    assert meter.device_name == "NVIDIA H100 80GB HBM3"
    assert "total-energy counter" in meter.sensor and "GPU0" in meter.sensor
    with meter.window() as w:
        pass
    m = w.measurement
    assert m.joules == pytest.approx(12.345)
    assert m.provenance == MEASURED and m.domain == "gpu" and m.samples == 2
    assert m.extra == {"temperature_c_start": 41, "temperature_c_end": 41}
    assert "power" not in fake.calls  # no sampling thread on the counter path
    info = meter.describe()
    assert info["driver_version"] == "565.57.01" and info["power_limit_w"] == 700.0 and info["energy_counter"]
    meter.close()
    meter.close()  # safe twice
    assert fake.calls.count("shutdown") == 1


def test_nvml_power_gauge_path_samples_and_integrates():
    fake = fake_pynvml(counter=False, power_mw=250_000, limit_error=True)
    meter = NvmlMeter(fake, 1, sample_interval_s=0.001)
    assert not meter.uses_counter
    assert meter.update_period_s == 1.0
    assert "power gauge" in meter.sensor and "GPU1" in meter.sensor
    with meter.window() as w:
        pass
    m = w.measurement
    assert m.provenance == MEASURED and m.domain == "gpu"
    assert m.samples >= 2  # a read at each end at least
    assert fake.calls.count("power") == m.samples
    assert m.joules == pytest.approx(250.0 * m.seconds, rel=1e-9, abs=1e-12)
    assert (FLAG_SHORT_WINDOW in m.flags) is (0 < m.seconds < 1.0)
    assert meter.describe()["power_limit_w"] is None  # NVMLError from one query does not break describe()


def test_nvml_create_with_fake_module(monkeypatch):
    fake = fake_pynvml(energy_mj=[0, 0, 1_000])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    meter = nvml.create(PROFILES["h100"])
    assert isinstance(meter, NvmlMeter) and meter.index == 0
    assert fake.calls[:2] == ["init", ("handle", 0)]


def test_nvml_create_unavailable_when_init_fails(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(init_error=True))
    with pytest.raises(MeterUnavailable, match="NVML could not start"):
        nvml.create(PROFILES["h100"])


def test_nvml_create_unavailable_for_missing_gpu_index(monkeypatch):
    fake = fake_pynvml(handle_error=True)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with pytest.raises(MeterUnavailable, match="no GPU 3"):
        nvml.create(PROFILES["h100"], device_index=3)
    assert fake.calls[-1] == "shutdown"


def test_real_pynvml_without_gpu_is_meter_unavailable(no_nvidia_gpu):
    import pynvml  # the real nvidia-ml-py

    assert sys.modules["pynvml"] is pynvml
    with pytest.raises(MeterUnavailable, match="NVML") as info:
        nvml.create(PROFILES["h100"])
    assert not isinstance(info.value, pynvml.NVMLError)
    assert info.value.__suppress_context__  # raised "from None": no NVMLError traceback chained on


# --------------------------------------------------------------------------- registry.select_meter


@pytest.fixture
def no_readable_rapl():
    from pytest_ipw.meters import rapl

    try:
        rapl.create(PROFILES["cpu"]).close()
    except MeterUnavailable:
        return
    pytest.skip("RAPL is readable here; this test is about machines without it")


def test_cpu_profile_falls_back_to_estimate_with_a_reason(no_readable_rapl):
    choice = select_meter(PROFILES["cpu"])
    assert isinstance(choice.meter, EstimateMeter)
    assert choice.meter.provenance == ESTIMATED
    assert choice.requested is None
    assert choice.fallback_reason  # never silent
    assert PROFILES["cpu"].meter in choice.fallback_reason


def test_gpu_profile_without_nvml_falls_back_with_the_nvml_reason(no_nvidia_gpu):
    choice = select_meter(PROFILES["h100"])
    assert isinstance(choice.meter, EstimateMeter)
    assert choice.fallback_reason.startswith("nvml:")
    assert choice.meter.domain == "gpu"


def test_requesting_nvml_here_is_a_usage_error(no_nvidia_gpu):
    with pytest.raises(IPWUsageError, match="NVML") as info:
        select_meter(PROFILES["cpu"], requested="nvml")
    assert "--ipw-meter=nvml" in str(info.value)


def test_requesting_estimate_is_not_a_fallback():
    choice = select_meter(PROFILES["cpu"], requested="estimate")
    assert isinstance(choice.meter, EstimateMeter)
    assert choice.requested == "estimate" and choice.fallback_reason is None


def test_unknown_meter_lists_known_ones():
    with pytest.raises(IPWUsageError) as info:
        select_meter(PROFILES["cpu"], requested="wattmeter")
    message = str(info.value)
    assert "wattmeter" in message
    for known in registry.METER_MODULES:
        assert known in message


def test_select_meter_uses_nvml_when_it_works(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(energy_mj=[0, 0, 0]))
    choice = select_meter(PROFILES["h100"])
    assert isinstance(choice.meter, NvmlMeter)
    assert choice.fallback_reason is None


# --------------------------------------------------------------------------- read timing and CPU accounting


def test_gauge_samples_are_stamped_at_the_middle_of_their_read():
    clock = {"now": 0.0}

    def slow_read():  # a 40 ms scrape
        clock["now"] += 0.040
        return 100.0

    sampler = PowerSampler(slow_read, interval_s=1e-3, clock=lambda: clock["now"])
    sampler._sample()
    sampler._sample()
    assert sampler._times == [pytest.approx(0.020), pytest.approx(0.060)]


def test_estimate_does_not_count_guest_time_twice():
    from collections import namedtuple

    from pytest_ipw.meters.estimate import busy_and_total

    # Linux accounts a guest's time in user (and guest_nice in nice) AND in guest: 10 s busy of 40, not 16 of 46
    Times = namedtuple("scputimes", "user nice system idle iowait irq softirq steal guest guest_nice")
    busy, total = busy_and_total(Times(user=8.0, nice=1.0, system=1.0, idle=28.0, iowait=2.0, irq=0.0, softirq=0.0,
                                       steal=0.0, guest=5.0, guest_nice=1.0))
    assert (busy, total) == (10.0, 40.0)
    Mac = namedtuple("scputimes", "user nice system idle")  # no guest fields elsewhere
    assert busy_and_total(Mac(3.0, 0.0, 1.0, 4.0)) == (4.0, 8.0)
