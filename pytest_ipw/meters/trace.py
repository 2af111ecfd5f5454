"""Pure maths over power and energy traces: integrate part of a trace, and split it among concurrent queries.

A *power trace* is samples (t_i, P_i) at non-decreasing times; between samples power is taken to change
linearly, which is what the trapezoid rule assumes, so integrating a sub-window here agrees exactly with
:func:`~pytest_ipw.meters.base.integrate_trapezoid` on whole windows. An *energy trace* is a cumulative
counter (t_i, E_i), interpolated linearly the same way.
"""

from __future__ import annotations

import bisect
import math
from typing import Sequence


def _check(times: Sequence[float], values: Sequence[float]) -> None:
    if len(times) != len(values):
        raise ValueError("times and values must have the same length")
    for i in range(1, len(times)):
        if times[i] < times[i - 1]:
            raise ValueError("sample timestamps must not decrease")


def interpolate(times: Sequence[float], values: Sequence[float], t: float) -> float:
    """Value at ``t`` by linear interpolation, held constant beyond either end (needs >= 1 sample)."""
    if not times:
        raise ValueError("cannot interpolate an empty trace")
    if t <= times[0]:
        return float(values[0])
    if t >= times[-1]:
        return float(values[-1])
    i = bisect.bisect_right(times, t)  # times[i-1] <= t < times[i]
    t0, t1 = times[i - 1], times[i]
    if t1 == t0:
        return float(values[i])
    return values[i - 1] + (values[i] - values[i - 1]) * (t - t0) / (t1 - t0)


def _piece(times: Sequence[float], watts: Sequence[float], a: float, b: float) -> float:
    """Energy over [a, b], a piece lying inside one sampling interval (so a step at a sample is honoured)."""
    j = bisect.bisect_right(times, a) - 1  # last sample at or before a: the interval that starts there
    j = min(max(j, 0), len(times) - 2)
    t0, t1 = times[j], times[j + 1]
    if t1 <= t0:
        return 0.0
    # fractions of the interval rather than a slope: no overflow on tiny intervals
    pa = watts[j] + (watts[j + 1] - watts[j]) * ((a - t0) / (t1 - t0))
    pb = watts[j] + (watts[j + 1] - watts[j]) * ((b - t0) / (t1 - t0))
    return 0.5 * (pa + pb) * (b - a)


def integrate_between(times: Sequence[float], watts: Sequence[float], start: float, end: float) -> float:
    """Joules of the piecewise-linear power trace over [start, end], clipped to the trace's span.

    Outside the span there is no data, so nothing is counted there; callers that care (replay) check
    coverage themselves.
    """
    _check(times, watts)
    if len(times) < 2 or end <= start:
        return 0.0
    lo, hi = max(start, times[0]), min(end, times[-1])
    if hi <= lo:
        return 0.0
    total = 0.0
    # cut points: the clipped window's ends and every sample strictly inside it
    first = bisect.bisect_right(times, lo)
    last = bisect.bisect_left(times, hi)
    points = [lo, *times[first:last], hi]
    for a, b in zip(points, points[1:]):
        if b > a:
            total += _piece(times, watts, a, b)
    return total


def split_energy(times: Sequence[float], watts: Sequence[float],
                 windows: Sequence[tuple[float, float]]) -> list[float]:
    """Share a power trace's energy among possibly overlapping query windows.

    The timeline is cut at every sample and every window edge; the energy of each piece is divided
    equally among the windows open during it, so concurrent queries (xdist workers, a batched server)
    are each charged their share rather than the whole device's energy once per query. Properties:
    the shares sum to the trace's energy over the union of the windows, a lone window gets exactly
    :func:`integrate_between` over it, and time with no open window is charged to nobody.
    """
    _check(times, watts)
    for start, end in windows:
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ValueError(f"a window must have finite start <= end, got ({start}, {end})")
    shares = [0.0] * len(windows)
    if len(times) < 2 or not windows:
        return shares
    cuts = sorted({*times, *(t for w in windows for t in w)})
    cuts = [t for t in cuts if times[0] <= t <= times[-1]]
    for a, b in zip(cuts, cuts[1:]):
        if b <= a:
            continue
        open_windows = [k for k, (s, e) in enumerate(windows) if s <= a and b <= e]
        if not open_windows:
            continue
        energy = _piece(times, watts, a, b)
        for k in open_windows:
            shares[k] += energy / len(open_windows)
    return shares


def union_energy(times: Sequence[float], watts: Sequence[float], windows: Sequence[tuple[float, float]]) -> float:
    """Joules of the trace over the union of the windows (overlaps counted once)."""
    merged: list[list[float]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return sum(integrate_between(times, watts, a, b) for a, b in merged)


def split_overlapping_windows(windows: Sequence[tuple[float, float, float]]) -> tuple[list[float], list[int]]:
    """Share the energy of overlapping measured windows (start, end, joules) among their queries.

    Without a common power trace (each xdist worker metered its own windows), the device's power over a
    piece of time is estimated as the mean power of the windows open during it (each of them saw the
    whole device); that piece's energy is then split equally among those windows, as
    :func:`split_energy` does. A window that overlaps nothing keeps its joules exactly. Returns the
    shares and, per window, the most windows open at once during it.
    """
    for start, end, joules in windows:
        if not (math.isfinite(start) and math.isfinite(end)) or end < start or not math.isfinite(joules):
            raise ValueError(f"a window must have finite start <= end and finite joules, got ({start}, {end}, {joules})")
    power = [joules / (end - start) if end > start else 0.0 for start, end, joules in windows]
    shares = [0.0] * len(windows)
    most = [1] * len(windows)
    order = sorted(range(len(windows)), key=lambda k: windows[k][0])
    cuts = sorted({t for start, end, _ in windows for t in (start, end)})
    open_now: list[int] = []
    next_start = 0
    for a, b in zip(cuts, cuts[1:]):
        while next_start < len(order) and windows[order[next_start]][0] <= a:
            open_now.append(order[next_start])
            next_start += 1
        open_now = [k for k in open_now if windows[k][1] > a]
        active = [k for k in open_now if windows[k][0] <= a and b <= windows[k][1]]
        if not active:
            continue
        energy = (b - a) * sum(power[k] for k in active) / len(active)
        for k in active:
            shares[k] += energy / len(active)
            most[k] = max(most[k], len(active))
    for k, (start, end, joules) in enumerate(windows):
        if end == start:
            shares[k] = joules  # an instantaneous window has nothing to share
    return shares, most
