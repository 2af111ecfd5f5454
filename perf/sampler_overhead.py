"""Cost of the power-sampling thread, and the integration error of sampling a power gauge.

1. CPU overhead: the process's CPU time (user + system, all threads) while the main thread sleeps for
   ``--seconds``, with no sampler (baseline, measured before and after) and with a ``PowerSampler`` at
   20 Hz and 100 Hz reading a sysfs-like file (what a RAPL/hwmon read costs; NVML and HTTP gauges cost
   more per read, the thread's own wake-ups the same). Overhead = extra CPU seconds / wall seconds, in
   percent of one core.
2. Integration error: analytic power signals (constant, ramp, step, sine) sampled at 20 Hz and 100 Hz over
   a 5 s window that does not start on a sample, integrated with the trapezoid rule exactly as the meters
   do, against the exact energy.

Run from the repository root:  python perf/sampler_overhead.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

from pytest_ipw.meters.base import PowerSampler, integrate_trapezoid


def cpu_seconds_while_idle(seconds: float, hz: float | None, sensor: Path | None) -> tuple[float, int]:
    """Process CPU seconds spent over ``seconds`` of wall time, with a sampler at ``hz`` (None: none),
    reading ``sensor`` (None: a constant, to separate the thread's own cost from the read's)."""
    def read() -> float:
        return int(sensor.read_text()) / 1e6 if sensor is not None else 1.0

    sampler = PowerSampler(read, interval_s=1.0 / hz) if hz else None
    start = time.process_time()
    if sampler is not None:
        sampler.begin()
    time.sleep(seconds)
    samples = sampler.end()[2] if sampler is not None else 0
    return time.process_time() - start, samples


def overhead(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sensor = Path(tmp) / "energy_uj"
        sensor.write_text("52649883221\n")
        base_before, _ = cpu_seconds_while_idle(seconds, None, sensor)
        runs = {(hz, what): cpu_seconds_while_idle(seconds, hz, path)
                for hz in (20.0, 100.0) for what, path in (("sysfs-like file read", sensor), ("no-op read", None))}
        base_after, _ = cpu_seconds_while_idle(seconds, None, sensor)
    baseline = (base_before + base_after) / 2
    print(f"sampler CPU overhead over {seconds:g} s (percent of one core; baseline {baseline / seconds * 100:.3f}%)")
    for (hz, what), (cpu, samples) in runs.items():
        extra = max(0.0, cpu - baseline)
        print(f"  {hz:5.0f} Hz, {what:20s}: {extra / seconds * 100:.3f}% of one core  ({samples} samples, "
              f"{extra / max(samples, 1) * 1e6:.0f} µs CPU per sample)")


PERIOD = 1.3  # s, a sine that is not a multiple of the sampling period


SIGNALS = {
    "constant 50 W": (lambda t: 50.0, lambda t: 50.0 * t),
    "ramp 10+5t W": (lambda t: 10.0 + 5.0 * t, lambda t: 10.0 * t + 2.5 * t * t),
    "step 20->80 W at 2.01 s": (lambda t: 20.0 if t < 2.01 else 80.0,
                                lambda t: 20.0 * t if t < 2.01 else 20.0 * 2.01 + 80.0 * (t - 2.01)),
    "sine 100+50sin(2πt/1.3 s) W": (lambda t: 100 + 50 * math.sin(2 * math.pi * t / PERIOD),
                                     lambda t: 100 * t + 50 * PERIOD / (2 * math.pi) * (1 - math.cos(2 * math.pi * t / PERIOD))),
}


def integration_errors(start: float = 0.013, length: float = 5.0) -> None:
    print(f"trapezoid integration error over a {length:g} s window (relative to the exact energy)")
    for name, (power, energy) in SIGNALS.items():
        cells = []
        for hz in (20.0, 100.0):
            n = int(length * hz)
            times = [start + i / hz for i in range(n + 1)]
            joules = integrate_trapezoid(times, [power(t) for t in times])
            exact = energy(times[-1]) - energy(times[0])
            cells.append(f"{hz:.0f} Hz {abs(joules - exact) / exact * 100:.4f}%")
        print(f"  {name:30s} " + "   ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="wall seconds per measurement (default 10)")
    args = parser.parse_args()
    overhead(args.seconds)
    integration_errors()


if __name__ == "__main__":
    main()
