"""Properties of trace integration and of splitting a power trace among concurrent query windows."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pytest_ipw.meters.base import integrate_trapezoid
from pytest_ipw.meters.trace import integrate_between, interpolate, split_energy, union_energy


@st.composite
def traces(draw, min_size: int = 2):
    steps = draw(st.lists(st.floats(min_value=0.0, max_value=5.0), min_size=min_size - 1, max_size=40))
    times = list(itertools.accumulate([draw(st.floats(min_value=-100, max_value=100))] + steps))
    assume(times[-1] > times[0])
    watts = draw(st.lists(st.floats(min_value=0.0, max_value=1000.0), min_size=len(times), max_size=len(times)))
    return times, watts


@st.composite
def windows_in(draw, times, max_windows: int = 6):
    lo, hi = times[0] - 2.0, times[-1] + 2.0  # windows may stick out of the trace
    count = draw(st.integers(min_value=1, max_value=max_windows))
    result = []
    for _ in range(count):
        a = draw(st.floats(min_value=lo, max_value=hi))
        b = draw(st.floats(min_value=lo, max_value=hi))
        result.append((min(a, b), max(a, b)))
    return result


@given(traces())
def test_whole_span_equals_trapezoid(trace):
    times, watts = trace
    assert integrate_between(times, watts, times[0], times[-1]) == pytest.approx(
        integrate_trapezoid(times, watts), rel=1e-9, abs=1e-9)


@given(traces(), st.data())
def test_integration_is_additive(trace, data):
    times, watts = trace
    a, b, c = sorted(data.draw(st.floats(min_value=times[0] - 1, max_value=times[-1] + 1)) for _ in range(3))
    whole = integrate_between(times, watts, a, c)
    assert integrate_between(times, watts, a, b) + integrate_between(times, watts, b, c) == pytest.approx(
        whole, rel=1e-9, abs=1e-6)
    assert whole >= 0


@given(traces(), st.data())
def test_shares_sum_to_the_energy_over_the_union_of_windows(trace, data):
    times, watts = trace
    windows = data.draw(windows_in(times))
    shares = split_energy(times, watts, windows)
    assert len(shares) == len(windows)
    assert all(share >= -1e-9 for share in shares)
    assert sum(shares) == pytest.approx(union_energy(times, watts, windows), rel=1e-9, abs=1e-6)
    # never more than each window would be charged alone: sharing only ever lowers a charge
    for share, (start, end) in zip(shares, windows):
        assert share <= integrate_between(times, watts, start, end) + 1e-6


@given(traces(), st.data())
def test_a_single_window_gets_all_of_it(trace, data):
    times, watts = trace
    [(start, end)] = data.draw(windows_in(times, max_windows=1))
    assert split_energy(times, watts, [(start, end)]) == [pytest.approx(integrate_between(times, watts, start, end),
                                                                       rel=1e-9, abs=1e-9)]


@given(traces(), st.data(), st.integers(min_value=2, max_value=5))
def test_identical_windows_share_equally(trace, data, copies):
    times, watts = trace
    [window] = data.draw(windows_in(times, max_windows=1))
    shares = split_energy(times, watts, [window] * copies)
    alone = integrate_between(times, watts, *window)
    assert all(share == pytest.approx(alone / copies, rel=1e-9, abs=1e-9) for share in shares)


def test_worked_example_constant_power():
    # 100 W for 10 s; A open 0-6 s, B open 4-10 s: 4 s alone each, 2 s shared
    times, watts = [0.0, 10.0], [100.0, 100.0]
    a, b = split_energy(times, watts, [(0.0, 6.0), (4.0, 10.0)])
    assert (a, b) == (pytest.approx(500.0), pytest.approx(500.0))
    # counted once per query instead, the same run would claim 1200 J for 1000 J drawn
    assert integrate_between(times, watts, 0, 6) + integrate_between(times, watts, 4, 10) == pytest.approx(1200.0)
    assert split_energy(times, watts, [(20.0, 30.0)]) == [0.0]  # no data there: nothing charged
    assert split_energy(times, watts, []) == []


def test_step_inside_one_sample_instant():
    times, watts = [0.0, 1.0, 1.0, 2.0], [10.0, 10.0, 50.0, 50.0]
    assert integrate_between(times, watts, 0.0, 2.0) == integrate_trapezoid(times, watts) == 60.0
    assert integrate_between(times, watts, 0.5, 1.5) == pytest.approx(30.0)
    assert interpolate(times, watts, 0.5) == 10.0 and interpolate(times, watts, 5.0) == 50.0


def test_bad_input():
    with pytest.raises(ValueError):
        split_energy([0.0, 1.0], [1.0], [(0.0, 1.0)])
    with pytest.raises(ValueError, match="start <= end"):
        split_energy([0.0, 1.0], [1.0, 1.0], [(1.0, 0.0)])
    with pytest.raises(ValueError, match="must not decrease"):
        integrate_between([0.0, 2.0, 1.0], [1.0, 1.0, 1.0], 0.0, 1.0)
    with pytest.raises(ValueError):
        interpolate([], [], 0.0)
