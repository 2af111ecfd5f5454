"""Pure maths over power and energy traces: integrate part of a trace, and split it among concurrent queries.

A *power trace* is samples (t_i, P_i) at non-decreasing times; between samples power is taken to change
linearly, which is what the trapezoid rule assumes, so integrating a sub-window here agrees exactly with
:func:`~pytest_ipw.meters.base.integrate_trapezoid` on whole windows. An *energy trace* is a cumulative
counter (t_i, E_i), interpolated linearly the same way.
"""

from __future__ import annotations

import bisect
import itertools
import math
from typing import Any, Sequence


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


def _check_windows(windows: Sequence[tuple[float, float]]) -> None:
    for start, end in windows:
        if not (math.isfinite(start) and math.isfinite(end)) or end < start:
            raise ValueError(f"a window must have finite start <= end, got ({start}, {end})")


def split_pieces(cuts: Sequence[float], energies: Sequence[float], windows: Sequence[tuple[float, float]],
                 weights: Sequence[float] | None = None) -> tuple[list[float], list[float]]:
    """THE sharing rule: piece k = [cuts[k], cuts[k+1]] used ``energies[k]`` joules; it is divided among the
    windows open over the whole piece in proportion to their weights (the queries each stands for: 1, or N
    for a batch of N run in one engine call). ``cuts`` must be increasing and hold every window edge that
    lies inside them. Returns each window's share and the most weight open at once during it.

    Properties (property-tested): the shares add up to the energy of the pieces covered by some window;
    a window's share never exceeds the energy of its own pieces; a window alone gets all of it.
    """
    weights = [1.0] * len(windows) if weights is None else list(weights)
    if len(cuts) < 2 or not windows:
        return [0.0] * len(windows), [0.0] * len(windows)
    ranges = [(bisect.bisect_left(cuts, start), bisect.bisect_left(cuts, end)) for start, end in windows]
    load = [0.0] * len(cuts)
    for (lo, hi), weight in zip(ranges, weights):
        if hi > lo:
            load[lo] += weight
            load[hi] -= weight
    load = list(itertools.accumulate(load))[:len(energies)]
    rate = [e / w if w > 0 else 0.0 for e, w in zip(energies, load)]
    shares, most = [], []
    for (lo, hi), weight in zip(ranges, weights):
        shares.append(weight * math.fsum(rate[lo:hi]) if hi > lo else 0.0)
        most.append(max(load[lo:hi]) if hi > lo else weight)
    return shares, most


def concurrency(windows: Sequence[tuple[float, float]], weights: Sequence[float] | None = None) -> list[float]:
    """Per window, the most weight (queries) open at once during it, itself included."""
    _check_windows(windows)
    cuts = sorted({t for w in windows for t in w})
    return split_pieces(cuts, [0.0] * max(0, len(cuts) - 1), windows, weights)[1]


def split_energy(times: Sequence[float], watts: Sequence[float],
                 windows: Sequence[tuple[float, float]], weights: Sequence[float] | None = None) -> list[float]:
    """Share a power trace's energy among possibly overlapping query windows.

    The timeline is cut at every sample and every window edge; the energy of each piece is divided
    equally among the windows open during it (:func:`split_pieces`), so concurrent queries (xdist workers,
    a batched server) are each charged their share rather than the whole device's energy once per query.
    Properties: the shares sum to the trace's energy over the union of the windows, a lone window gets
    exactly :func:`integrate_between` over it, and time with no open window is charged to nobody.
    """
    _check(times, watts)
    _check_windows(windows)
    if len(times) < 2 or not windows:
        return [0.0] * len(windows)
    cuts = sorted({*times, *(t for w in windows for t in w)})
    cuts = [t for t in cuts if times[0] <= t <= times[-1]]
    energies = [_piece(times, watts, a, b) if b > a else 0.0 for a, b in zip(cuts, cuts[1:])]
    # a window sticking out of the trace is cut to it: no data there, nothing charged there
    clipped = [(min(max(s, times[0]), times[-1]), min(max(e, times[0]), times[-1])) for s, e in windows]
    return split_pieces(cuts, energies, clipped, weights)[0]


def union_energy(times: Sequence[float], watts: Sequence[float], windows: Sequence[tuple[float, float]]) -> float:
    """Joules of the trace over the union of the windows (overlaps counted once)."""
    return sum(integrate_between(times, watts, a, b) for a, b in _merge(windows))


def _merge(windows: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[list[float]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


# -- counters read by many windows ----------------------------------------------------------------------

#: readings of one counter taken less than this apart (by different processes) may come in either order
READ_JITTER_S = 0.05
#: from this update period on, a counter is *coarse*: a reading says what the counter was at its last
#: update, somewhere in the period before the read, not what it is at the read (dcgm-exporter: 30 s)
COARSE_PERIOD_S = 1.0


class InconsistentReadings(ValueError):
    """Readings of one counter that no single monotone counter explains (a reset, or a wrap of unknown range)."""


class CounterTimeline:
    """A cumulative energy counter E(t) (joules) rebuilt from the readings of every window of one sensor.

    ``points`` are (time, E) *knots*, increasing in time, non-decreasing in E; between knots E is taken
    as linear (constant power), and outside them it is unknown (``at`` gives None).
    """

    def __init__(self, times: Sequence[float], joules: Sequence[float], coarse: bool):
        self.times = list(times)
        self.joules = list(joules)
        self.coarse = coarse

    def at(self, t: float) -> float | None:
        if not self.times or t < self.times[0] or t > self.times[-1]:
            return None
        return interpolate(self.times, self.joules, t)


def unwrap_readings(readings: Sequence[tuple[float, Sequence[float]]],
                    wrap_j: Sequence[float | None]) -> list[tuple[float, float]]:
    """(time, raw value of each series) readings, in any order -> (time, total joules), time-sorted.

    Each series is unwrapped along the merged timeline: a drop of more than half its range is a wrap
    (``wrap_j``, RAPL's ``max_energy_range_uj``); a drop between readings taken within
    :data:`READ_JITTER_S` of each other is two processes reading in the other order (the later value
    stands); any other drop raises :class:`InconsistentReadings`.
    """
    ordered = sorted(readings, key=lambda r: r[0])
    if not ordered:
        return []
    series = len(ordered[0][1])
    wraps = list(wrap_j) + [None] * (series - len(wrap_j))
    base = [0.0] * series
    last_raw = list(ordered[0][1])
    last_time = ordered[0][0]
    best = [float(v) for v in ordered[0][1]]  # unwrapped value of each series so far (never decreasing)
    out = [(ordered[0][0], math.fsum(best))]
    for t, values in ordered[1:]:
        if len(values) != series:
            raise InconsistentReadings("readings with different numbers of series")
        for k, raw in enumerate(values):
            raw = float(raw)
            if raw < last_raw[k]:
                wrap = wraps[k]
                if wrap and last_raw[k] - raw > wrap / 2:
                    base[k] += wrap
                elif t - last_time >= READ_JITTER_S:
                    raise InconsistentReadings(f"counter went backwards ({last_raw[k]} -> {raw}) at {t}")
                else:
                    continue  # jitter: keep the larger, later-read value
            last_raw[k] = raw
            best[k] = max(best[k], base[k] + raw)
        last_time = t
        out.append((t, math.fsum(best)))
    return out


def counter_timeline(readings: Sequence[tuple[float, Sequence[float]]], wrap_j: Sequence[float | None],
                     period_s: float) -> CounterTimeline:
    """E(t) of one counter from all its readings (see :func:`unwrap_readings`).

    A fine counter (update period < :data:`COARSE_PERIOD_S`) is taken at face value: each reading is E at
    the moment it was read. A coarse one only says E at its last update, somewhere in the period before
    the read: each *new* value becomes a knot in the middle of the span where it can have appeared (after
    the previous reading, at most one period before this one), and E is interpolated between knots, so an
    update's increment is spread over the time since the previous update instead of landing on whichever
    window happened to see it. Before the first and after the last observed change E is unknown.
    """
    points = unwrap_readings(readings, wrap_j)
    if period_s < COARSE_PERIOD_S:
        times: list[float] = []
        joules: list[float] = []
        for t, e in points:
            if times and t <= times[-1]:
                joules[-1] = max(joules[-1], e)  # two reads at one instant
            else:
                times.append(t)
                joules.append(e)
        return CounterTimeline(times, joules, coarse=False)
    knots_t: list[float] = []
    knots_e: list[float] = []
    previous_time: float | None = None
    previous_value: float | None = None
    for t, e in points:
        # only an observed change places an update (between the previous read and this one): the first value
        # may have been a whole period old when it was read, so it is no knot
        if previous_value is not None and previous_time is not None and e > previous_value:
            earliest = max(previous_time, t - period_s)
            knot = (earliest + t) / 2
            if knots_t and knot <= knots_t[-1]:
                knot = knots_t[-1] + (t - knots_t[-1]) / 2  # never before the previous knot
            knots_t.append(knot)
            knots_e.append(e)
        if previous_value is None or e > previous_value:
            previous_value = e
        previous_time = t
    return CounterTimeline(knots_t, knots_e, coarse=True)


def split_counter(timeline: CounterTimeline, windows: Sequence[tuple[float, float]],
                  weights: Sequence[float] | None = None) -> tuple[list[float | None], list[float]]:
    """Each window's share of the counter's energy (:func:`split_pieces` over E's increments between the
    windows' edges), or None for a window with an edge where E is unknown (that window takes no part).
    Where E is known at every edge, the split is exact: shares add up to E's increase over the union of
    the windows, and no share exceeds E(end) - E(start) of its own window."""
    _check_windows(windows)
    weights = [1.0] * len(windows) if weights is None else list(weights)
    known = [timeline.at(s) is not None and timeline.at(e) is not None for s, e in windows]
    chosen = [k for k, ok in enumerate(known) if ok]
    cuts = sorted({t for k in chosen for t in windows[k]})
    values = [timeline.at(t) for t in cuts]
    energies = [max(0.0, b - a) for a, b in zip(values, values[1:])]  # type: ignore[operator]
    shares, most = split_pieces(cuts, energies, [windows[k] for k in chosen], [weights[k] for k in chosen])
    out: list[float | None] = [None] * len(windows)
    concurrency = [float(w) for w in weights]
    for k, share, load in zip(chosen, shares, most):
        out[k], concurrency[k] = share, load
    return out, concurrency


def counter_union_energy(timeline: CounterTimeline, windows: Sequence[tuple[float, float]]) -> float:
    """E's increase over the union of the windows (overlaps counted once)."""
    total = []
    for a, b in _merge(windows):
        ea, eb = timeline.at(a), timeline.at(b)
        if ea is None or eb is None:
            raise ValueError(f"the counter is unknown at an edge of ({a}, {b})")
        total.append(eb - ea)
    return math.fsum(total)


# -- windows without readings ------------------------------------------------------------------------------

def split_overlapping_windows(windows: Sequence[tuple[float, float, float]], weights: Sequence[float] | None = None,
                              iterations: int = 2000, tolerance: float = 1e-9) -> tuple[list[float], list[float]]:
    """Share the energy of overlapping windows (start, end, joules) that carry no readings of their sensor.

    Only each window's total is known, and each saw the whole device. The device's energy in every piece
    between window edges is estimated as a non-negative set of piece energies that reproduces every
    window's total (iterative proportional fitting from the windows' mean powers: where the totals are
    consistent it converges to such a set), then split as :func:`split_pieces` does. A share never exceeds
    its window's joules (capped where the totals contradict each other), and a window that overlaps
    nothing keeps its joules exactly. Returns the shares and, per window, the most weight open at once.
    Prefer readings (:func:`split_counter`, :func:`split_energy`): this is the fallback.
    """
    import numpy as np

    for start, end, joules in windows:
        if not (math.isfinite(start) and math.isfinite(end)) or end < start or not math.isfinite(joules) or joules < 0:
            raise ValueError(f"a window must have finite start <= end and finite joules >= 0, got ({start}, {end}, {joules})")
    weights = [1.0] * len(windows) if weights is None else list(weights)
    if not windows:
        return [], []
    cuts = sorted({t for start, end, _ in windows for t in (start, end)})
    n_pieces = len(cuts) - 1
    if n_pieces < 1:
        return [float(j) for _, _, j in windows], [float(w) for w in weights]
    lo = np.array([bisect.bisect_left(cuts, s) for s, _, _ in windows])
    hi = np.array([bisect.bisect_left(cuts, e) for _, e, _ in windows])
    joules = np.array([j for _, _, j in windows], dtype=float)
    length = np.diff(np.array(cuts, dtype=float))
    live = hi > lo  # zero-length windows constrain nothing

    def per_piece(values: Any) -> Any:
        """Sum over the windows open during each piece of a per-window value."""
        diff = np.zeros(n_pieces + 1)
        np.add.at(diff, lo[live], values[live])
        np.add.at(diff, hi[live], -values[live])
        return np.cumsum(diff)[:n_pieces]

    def per_window(values: Any) -> Any:
        """Sum over each window's pieces of a per-piece value."""
        prefix = np.concatenate([[0.0], np.cumsum(values)])
        return prefix[hi] - prefix[lo]

    open_count = per_piece(np.ones(len(windows)))
    power = np.where(live, joules / np.where(live, per_window(length), 1.0), 0.0)
    x = np.where(open_count > 0, length * per_piece(power) / np.maximum(open_count, 1), 0.0)
    zero = per_piece(np.where(live & (joules <= 0), 1.0, 0.0)) > 0
    x[zero] = 0.0  # a window that used nothing: nobody used anything while it was open
    with np.errstate(all="ignore"):  # extreme inputs (subnormal joules) are clipped below, not warned about
        for _ in range(iterations):
            have = per_window(x)
            fit = live & (joules > 0) & (have > 0)
            ratio = np.clip(np.where(fit, joules / np.where(fit, have, 1.0), 1.0), 1e-300, 1e300)
            log_ratio = np.clip(np.where(fit, np.log(ratio), 0.0), -50.0, 50.0)
            if not fit.any() or np.max(np.abs(log_ratio[fit])) < tolerance:
                break
            counted = per_piece(fit.astype(float))
            x = x * np.exp(np.where(counted > 0, per_piece(log_ratio) / np.maximum(counted, 1), 0.0))
            x = np.where(np.isfinite(x), x, 0.0)
    weight = np.array(weights, dtype=float)
    load = per_piece(np.where(live, weight, 0.0))
    rate = np.where(load > 0, x / np.where(load > 0, load, 1.0), 0.0)
    shares, most = [], []
    for k, (start, end, j) in enumerate(windows):
        if not live[k]:
            shares.append(float(j))  # an instantaneous window has nothing to share
            most.append(float(weights[k]))
            continue
        pieces = slice(int(lo[k]), int(hi[k]))
        concurrency = float(load[pieces].max())
        alone = concurrency <= weights[k]
        share = float(j) if alone else min(float(j), weights[k] * math.fsum(rate[pieces].tolist()))
        shares.append(share)
        most.append(concurrency)
    return shares, most
