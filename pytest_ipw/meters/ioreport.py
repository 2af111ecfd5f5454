"""Apple Silicon energy without sudo: IOReport "Energy Model" counters via ``zeus-apple-silicon``.

The optional package (``pip install 'pytest-ipw[apple]'``, macOS only, imported only there) exposes
``AppleEnergyMonitor().begin_window(label)`` / ``end_window(label) -> AppleEnergyMetrics`` with
``cpu_total_mj``, ``gpu_mj``, ``ane_mj``, ``dram_mj``, ``gpu_sram_mj`` (mJ, ``None`` where the chip does not
report one). Per its documentation these counters are Apple's *energy model*: believed to be estimates
from utilisation, frequency and voltage rather than rail sensors, the same source powermetrics reads,
resolution 1 mJ, and windows under ~10 ms dominated by quantisation. The sensor name says so.

Summed: CPU + GPU + ANE (as powermetrics' combined figure) plus DRAM where reported. ``gpu_sram_mj`` is
kept in ``extra`` but not added, because whether "GPU Energy" already contains it is undocumented.
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any

from pytest_ipw.hardware.profiles import AcceleratorProfile
from .base import MEASURED, Measurement, Meter, MeterFailure
from .base import MeterUnavailable

MODEL_NOTE = "Apple's IOReport energy model, documented as model-based estimates"
#: (AppleEnergyMetrics field, part label, energy domain), in the order parts are reported
FIELDS = (("cpu_total_mj", "CPU", "cpu"), ("gpu_mj", "GPU", "gpu"), ("ane_mj", "ANE", "soc"), ("dram_mj", "DRAM", "dram"))


def _on_macos() -> bool:
    return sys.platform == "darwin"


class IOReportMeter(Meter):
    name = "ioreport"
    provenance = MEASURED
    domain = "soc"
    update_period_s = 0.01  # 1 mJ resolution: shorter windows are mostly quantisation

    def __init__(self, monitor: Any):
        super().__init__()
        self._monitor = monitor
        self._labels = (f"pytest-ipw-{n}" for n in itertools.count())
        self._label: str | None = None
        self._t0 = 0.0

    @property
    def sensor(self) -> str:
        return f"ioreport (zeus-apple-silicon): CPU+GPU+ANE(+DRAM) energy counters ({MODEL_NOTE})"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "package": "zeus-apple-silicon", "model_based": True}

    def _begin(self) -> None:
        self._label = next(self._labels)  # a fresh label: a window left open by a crash cannot collide
        self._monitor.begin_window(self._label)
        self._t0 = time.perf_counter()

    def _end(self) -> Measurement:
        try:
            metrics = self._monitor.end_window(self._label)
        except Exception as exc:  # the extension raises plain RuntimeErrors
            raise MeterFailure(f"ioreport: zeus-apple-silicon failed to end a window ({exc})") from None
        seconds = time.perf_counter() - self._t0
        parts = []
        for field, label, domain in FIELDS:
            value = getattr(metrics, field, None)
            if value is not None:
                parts.append(Measurement(joules=float(value) / 1000.0, seconds=seconds, sensor=f"ioreport: {label}",
                                         provenance=MEASURED, domain=domain, samples=2))
        if not parts:
            raise MeterFailure("ioreport: zeus-apple-silicon reported no CPU, GPU, ANE or DRAM energy on this Mac")
        sram = getattr(metrics, "gpu_sram_mj", None)
        domain = "soc+dram" if any(p.domain == "dram" for p in parts) else "soc"
        return Measurement(joules=sum(p.joules for p in parts), seconds=seconds, sensor=self.sensor,
                           provenance=MEASURED, domain=domain, samples=2, parts=tuple(parts),
                           extra={"gpu_sram_j_not_summed": None if sram is None else float(sram) / 1000.0})


def create(profile: AcceleratorProfile, device_index: int | None = None, arg: str | None = None,
           zeus: Any = None, **_: Any) -> IOReportMeter:
    """``zeus`` is the ``zeus_apple_silicon`` module (tests pass a stand-in); imported here only on macOS."""
    if zeus is None:
        if not _on_macos():
            raise MeterUnavailable("IOReport energy counters exist on Apple Silicon Macs only")
        from pytest_ipw.core.extras import require

        zeus = require("zeus_apple_silicon", "sudo-less Apple Silicon energy (IOReport)", error=MeterUnavailable)
    try:
        monitor = zeus.AppleEnergyMonitor()
    except Exception as exc:
        raise MeterUnavailable(f"zeus-apple-silicon could not open IOReport ({exc})") from None
    return IOReportMeter(monitor)
