"""The last-resort meter: an *estimate* from CPU utilisation × the accelerator profile's power figures.

Model: P(t) = idle_w + (tdp_w - idle_w) × u(t), with u the share of all CPUs busy. Because the model is
linear, its energy over a window needs only the busy time, which psutil's cumulative CPU times give at
the window's two ends: no sampling thread. Every figure it yields is labelled ``estimated``.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from pytest_ipw.hardware.profiles import AcceleratorProfile
from pytest_ipw.core.errors import IPWUsageError
from .base import ESTIMATED, Measurement, Meter

CpuTimes = Callable[[], tuple[float, float]]  # -> (busy seconds, total seconds), summed over all CPUs


def busy_and_total(times: Any) -> tuple[float, float]:
    """(busy, total) CPU seconds from psutil's ``cpu_times()``. On Linux ``guest`` and ``guest_nice`` are
    already inside ``user`` and ``nice`` (the kernel counts a guest's time twice), so they are not added again."""
    total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
    idle = times.idle + getattr(times, "iowait", 0.0)
    return total - idle, total


def psutil_cpu_times() -> tuple[float, float]:
    import psutil

    return busy_and_total(psutil.cpu_times())


def estimate_joules(profile: AcceleratorProfile, seconds: float, utilisation: float) -> float:
    """Energy of the linear utilisation model over ``seconds`` at mean ``utilisation`` (clamped to [0, 1])."""
    utilisation = min(1.0, max(0.0, utilisation))
    return seconds * (profile.idle_w + (profile.tdp_w - profile.idle_w) * utilisation)


class EstimateMeter(Meter):
    name = "estimate"
    provenance = ESTIMATED
    update_period_s = 0.01  # psutil CPU times move in clock ticks
    reading = "counter"  # cumulative CPU times, read at the window's ends

    def __init__(self, profile: AcceleratorProfile, cpu_times: CpuTimes = psutil_cpu_times,
                 clock: Callable[[], float] = time.perf_counter):
        super().__init__()
        self.profile = profile
        self.domain = profile.kind
        self._cpu_times = cpu_times
        self._clock = clock
        self._start: tuple[float, float, float] | None = None

    @property
    def sensor(self) -> str:
        return (f"estimate: psutil CPU utilisation × {self.profile.name} profile "
                f"({self.profile.idle_w:g} W idle .. {self.profile.tdp_w:g} W TDP)")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "profile": self.profile.name, "idle_w": self.profile.idle_w, "tdp_w": self.profile.tdp_w}

    def _begin(self) -> None:
        busy, total = self._cpu_times()
        self._start = (self._clock(), busy, total)

    def _utilisation_since_start(self) -> tuple[float, float]:
        """(seconds, mean CPU utilisation) from the window's start to now."""
        assert self._start is not None
        started, busy0, total0 = self._start
        seconds = self._clock() - started
        busy1, total1 = self._cpu_times()
        cpu_seconds = total1 - total0
        return seconds, (busy1 - busy0) / cpu_seconds if cpu_seconds > 0 else 0.0

    def _mark(self, label: str) -> Any:
        return self._utilisation_since_start()

    def _split(self, label: str, point: Any, measurement: Measurement) -> tuple[float, float, str]:
        seconds, utilisation = point
        return seconds, estimate_joules(self.profile, seconds, utilisation), "CPU times read at the mark (estimate)"

    def probe(self) -> float:
        """Busy CPU seconds so far, for ``pytest-ipw calibrate``'s update-period check."""
        return self._cpu_times()[0]

    def _end(self) -> Measurement:
        seconds, utilisation = self._utilisation_since_start()
        return Measurement(
            joules=estimate_joules(self.profile, seconds, utilisation),
            seconds=seconds,
            sensor=self.sensor,
            provenance=ESTIMATED,
            domain=self.domain,
            samples=2,
            extra={"cpu_utilisation": round(min(1.0, max(0.0, utilisation)), 4)},
        )


def create(profile: AcceleratorProfile, device_index: int | None = None, arg: str | None = None,
           **_: Any) -> EstimateMeter:
    if arg is not None:
        raise IPWUsageError(f"the estimate meter takes no argument (got estimate:{arg}); its figures come from the "
                            "accelerator profile, chosen with --ipw-accelerator or --ipw-profiles")
    return EstimateMeter(profile)
