"""The --ipw-meter syntax, sums of meters (each part kept, provenance never upgraded), and the idle baseline."""

from __future__ import annotations

import pytest

from pytest_ipw.hardware.profiles import load_profiles
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.meters.base import ESTIMATED, MEASURED, Measurement, Meter, MeterFailure, sample_interval_s
from pytest_ipw.meters.combined import SumMeter, sum_measurements
from pytest_ipw.meters.registry import MeterSpec, create_meter, parse_meter_spec, select_meter

PROFILES = load_profiles()


@pytest.mark.parametrize("text, expected", [
    ("nvml", [("nvml", None)]),
    ("nvml:all", [("nvml", "all")]),
    ("nvml+rapl", [("nvml", None), ("rapl", None)]),
    ("nvml,rapl", [("nvml", None), ("rapl", None)]),
    ("nvml:1 + rapl:psys", [("nvml", "1"), ("rapl", "psys")]),
    ("prometheus+http://gpu-host:9400/metrics", [("prometheus", "http://gpu-host:9400/metrics")]),
    ("prometheus+https://h/metrics#gpu=0&Hostname=a+b", [("prometheus", "https://h/metrics#gpu=0&Hostname=a+b")]),
    ("prometheus+http://h:9400/metrics+rapl", [("prometheus", "http://h:9400/metrics"), ("rapl", None)]),
    ("rapl,prometheus+http://h:9400/metrics", [("rapl", None), ("prometheus", "http://h:9400/metrics")]),
    ("prometheus:http://h:9100/metrics", [("prometheus", "http://h:9100/metrics")]),
    ("replay:/data/run+2/trace.csv", [("replay", "/data/run+2/trace.csv")]),
    ("replay:a.csv+nvml", [("replay", "a.csv"), ("nvml", None)]),
    ("RAPL", [("rapl", None)]),
])
def test_meter_spec_syntax(text, expected):
    assert [(s.name, s.arg) for s in parse_meter_spec(text)] == expected


@pytest.mark.parametrize("text, message", [
    ("wattmeter", "unknown meter 'wattmeter'"),
    ("nvml++rapl", "unknown meter"),
    ("nvml,", "empty part"),
    ("prometheus", "needs an endpoint"),
    ("prometheus+ftp://h/metrics", "unknown meter"),
    ("replay", "needs a trace file"),
    ("rapl+rapl", "names rapl twice"),
])
def test_meter_spec_errors(text, message):
    with pytest.raises(IPWUsageError, match=message):
        parse_meter_spec(text)


class ConstantMeter(Meter):
    """A fake sensor: ``watts`` constant over a window of ``seconds``."""

    def __init__(self, watts: float, domain: str, provenance: str = MEASURED, seconds: float = 2.0, name: str = "c"):
        super().__init__()
        self.watts, self.domain, self.provenance, self.seconds, self.name = watts, domain, provenance, seconds, name
        self.events: list[str] = []

    @property
    def sensor(self) -> str:
        return f"{self.name}: {self.watts} W"

    def _begin(self) -> None:
        self.events.append("begin")

    def _end(self) -> Measurement:
        self.events.append("end")
        return Measurement(joules=self.watts * self.seconds, seconds=self.seconds, sensor=self.sensor,
                           provenance=self.provenance, domain=self.domain, samples=2)

    def close(self) -> None:
        self.events.append("close")


def test_sum_keeps_parts_and_adds_energy():
    gpu, cpu = ConstantMeter(300.0, "gpu", name="g"), ConstantMeter(40.0, "cpu+dram", name="c")
    meter = SumMeter([gpu, cpu])
    assert meter.domain == "gpu+cpu+dram" and meter.provenance == MEASURED
    with meter.window() as w:
        pass
    m = w.measurement
    assert m.joules == pytest.approx(680.0)
    assert [p.sensor for p in m.parts] == ["g: 300.0 W", "c: 40.0 W"]
    assert m.sensor == "g: 300.0 W + c: 40.0 W" and m.provenance == MEASURED
    assert [p["joules"] for p in m.to_dict()["parts"]] == [600.0, 80.0]
    meter.close()
    assert gpu.events == cpu.events == ["begin", "end", "close"]


def test_sum_with_an_estimated_part_is_an_estimate():
    meter = SumMeter([ConstantMeter(300.0, "gpu"), ConstantMeter(40.0, "cpu", ESTIMATED)])
    assert meter.provenance == ESTIMATED
    with meter.window() as w:
        pass
    assert w.measurement.provenance == ESTIMATED
    assert [p.provenance for p in w.measurement.parts] == [MEASURED, ESTIMATED]


def test_system_domain_cannot_be_summed():
    with pytest.raises(IPWUsageError, match="whole system .* twice"):
        SumMeter([ConstantMeter(10.0, "system"), ConstantMeter(5.0, "gpu")])


def test_sum_closes_every_part_even_when_one_fails():
    class Failing(ConstantMeter):
        def _end(self) -> Measurement:
            self.events.append("end")
            raise MeterFailure("sensor gone")

    good, bad = ConstantMeter(1.0, "gpu"), Failing(1.0, "cpu")
    meter = SumMeter([good, bad])
    meter.start()
    with pytest.raises(MeterFailure, match="sensor gone"):
        meter.stop()
    assert good.events == ["begin", "end"]
    meter.start()  # no window left open on any part
    assert good.events[-1] == "begin"


def test_sum_measurements_merges_flags_once():
    a = Measurement(joules=1.0, seconds=1.0, sensor="a", provenance=MEASURED, domain="gpu", flags=("x",))
    b = Measurement(joules=2.0, seconds=1.0, sensor="b", provenance=MEASURED, domain="gpu", flags=("x", "y"))
    total = sum_measurements([a, b], 1.0)
    assert total.flags == ("x", "y") and total.domain == "gpu" and total.joules == 3.0


def test_create_meter_sums_real_meters(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("# provenance: measured\n# domain: gpu\ntimestamp,watts\n0,100\n100,100\n")
    meter = create_meter(f"replay:{trace},estimate", PROFILES["cpu"])
    assert isinstance(meter, SumMeter)
    assert meter.provenance == ESTIMATED  # the estimate part makes the whole an estimate
    with meter.window() as w:
        pass
    assert [p.provenance for p in w.measurement.parts] == [MEASURED, ESTIMATED]
    assert w.measurement.domain == "gpu+cpu"


def test_failed_part_closes_the_parts_already_made(tmp_path, monkeypatch):
    closed = []
    from pytest_ipw.meters import estimate

    real_create = estimate.create

    def tracking_create(*args, **kwargs):
        meter = real_create(*args, **kwargs)
        meter.close = lambda: closed.append("estimate")
        return meter

    monkeypatch.setattr(estimate, "create", tracking_create)
    with pytest.raises(IPWUsageError, match="does not exist"):
        create_meter(f"estimate+replay:{tmp_path / 'missing.csv'}", PROFILES["cpu"])
    assert closed == ["estimate"]


def test_idle_baseline_is_measured_by_the_same_meter():
    meter = ConstantMeter(25.0, "gpu", seconds=4.0)
    slept = []
    idle = meter.measure_idle(2.0, sleep=slept.append)
    assert slept == [2.0] and idle.watts == 25.0
    meter.watts = 100.0
    with meter.window() as w:
        pass
    assert w.measurement.idle_watts == 25.0
    assert w.measurement.joules_active == pytest.approx(400.0 - 100.0)
    assert w.measurement.to_dict()["joules_active"] == pytest.approx(300.0)


def test_no_baseline_means_no_active_energy():
    m = Measurement(joules=5.0, seconds=1.0, sensor="x", provenance=MEASURED, domain="cpu")
    assert m.joules_active is None and "joules_active" not in m.to_dict()


def test_sample_interval_honours_the_sensor():
    assert sample_interval_s(20.0) == 0.05
    assert sample_interval_s(100.0, min_interval_s=0.02) == 0.02
    with pytest.raises(IPWUsageError, match="--ipw-sample-hz"):
        sample_interval_s(0.0)


def test_requested_sum_through_select_meter(tmp_path):
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"provenance": "measured", "domain": "gpu"}\n{"timestamp": 0, "joules": 0}\n'
                     '{"timestamp": 1000, "joules": 50000}\n')
    choice = select_meter(PROFILES["cpu"], requested=f"estimate+replay:{trace}")
    assert choice.requested == f"estimate+replay:{trace}" and choice.fallback_reason is None
    assert isinstance(choice.meter, SumMeter)
    assert MeterSpec("replay", str(trace), f"replay:{trace}") in parse_meter_spec(choice.requested)


def test_estimate_takes_no_argument():
    with pytest.raises(IPWUsageError, match="the estimate meter takes no argument"):
        select_meter(PROFILES["cpu"], requested="estimate:fast")


# --------------------------------------------------------------------------- one device named twice


@pytest.mark.parametrize("text, refused", [
    ("nvml+nvml:0", True),  # the detected GPU is NVML 0: the same GPU under two names
    ("nvml:all+nvml:1", True),
    ("nvml:0+nvml:1", False),
    ("estimate+estimate", False),  # caught earlier: the same text twice
])
def test_a_device_named_twice_is_refused_by_what_it_resolves_to(monkeypatch, text, refused):
    import sys

    from support import H100x4, FakeNvml

    fake = FakeNvml(H100x4[:2])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    if text == "estimate+estimate":
        with pytest.raises(IPWUsageError, match="names estimate twice"):
            select_meter(PROFILES["h100"], 0, requested=text)
        return
    if refused:
        with pytest.raises(IPWUsageError, match=r"measure the same device \(nvml:GPU-0000000") as info:
            select_meter(PROFILES["h100"], 0, requested=text)
        assert "counted twice" in str(info.value)
        assert fake.shutdowns == 2  # both parts were closed
    else:
        meter = select_meter(PROFILES["h100"], 0, requested=text).meter
        assert isinstance(meter, SumMeter)


def test_a_sum_of_counters_keeps_each_series_readings():
    from pytest_ipw.meters.base import COUNTER, counter_readings

    a = Measurement(joules=2.0, seconds=1.0, sensor="a", provenance=MEASURED, domain="gpu",
                    readings=counter_readings((10.0, [100.0]), (11.0, [102.0]), 0.1))
    b = Measurement(joules=3.0, seconds=1.0, sensor="b", provenance=MEASURED, domain="cpu",
                    readings=counter_readings((10.2, [7.0]), (11.2, [10.0]), 0.001, [262143.3]))
    total = sum_measurements([a, b], 1.0)
    assert total.readings.kind == COUNTER and total.readings.values == ((100.0, 7.0), (102.0, 10.0))
    assert total.readings.times == (pytest.approx(10.1), pytest.approx(11.1))
    assert total.readings.wrap_j == (None, 262143.3) and total.readings.period_s == 0.1
    gauge = Measurement(joules=1.0, seconds=1.0, sensor="g", provenance=MEASURED, domain="soc")
    assert sum_measurements([a, gauge], 1.0).readings is None  # nothing that adds up: the fallback applies
