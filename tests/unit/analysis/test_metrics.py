"""Tests of pytest_ipw.metrics: the pure maths of intelligence per watt."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ipw.analysis.metrics import (
    combine_provenance,
    coverage,
    percentile,
    safe_ratio,
    summarize,
    wilson_interval,
)

# --------------------------------------------------------------------------- wilson_interval


@st.composite
def successes_and_trials(draw, max_trials=10_000):
    trials = draw(st.integers(min_value=1, max_value=max_trials))
    successes = draw(st.integers(min_value=0, max_value=trials))
    return successes, trials


@given(successes_and_trials())
def test_wilson_contains_point_estimate_and_stays_in_unit_interval(case):
    successes, trials = case
    low, high = wilson_interval(successes, trials)
    p = successes / trials
    assert 0.0 <= low <= high <= 1.0
    # exact containment at the edges 0/n and n/n is checked (and currently broken) below
    assert low <= p + 1e-12 and p - 1e-12 <= high
    if 0 < successes < trials:
        assert low < p < high


def test_wilson_contains_point_estimate_exactly_at_the_edges():
    bad_high = [n for n in range(1, 200) if wilson_interval(n, n)[1] < 1.0]
    bad_low = [n for n in range(1, 200) if wilson_interval(0, n)[0] > 0.0]
    assert bad_high == [] and bad_low == []


@given(successes_and_trials(max_trials=2_000), st.integers(min_value=2, max_value=50))
def test_wilson_narrows_as_trials_grow_at_same_proportion(case, factor):
    successes, trials = case
    low1, high1 = wilson_interval(successes, trials)
    low2, high2 = wilson_interval(successes * factor, trials * factor)
    assert high2 - low2 < high1 - low1


def test_wilson_known_value():
    # 8/10 at 95 %: the textbook Wilson interval is (0.4902, 0.9433)
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-4)
    assert high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_edges():
    low, high = wilson_interval(0, 20)
    assert low == pytest.approx(0.0, abs=1e-12) and 0 < high < 0.2
    low, high = wilson_interval(20, 20)
    assert high == pytest.approx(1.0, abs=1e-12) and 0.8 < low < 1
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
    with pytest.raises(ValueError):
        wilson_interval(-1, 4)


# --------------------------------------------------------------------------- percentile


def test_percentile_hand_computed():
    values = [15, 20, 35, 40, 50]
    assert percentile(values, 0) == 15
    assert percentile(values, 100) == 50
    assert percentile(values, 50) == 35
    # position = 4 * 0.4 = 1.6 -> 20 + 0.6 * (35 - 20) = 29
    assert percentile(values, 40) == pytest.approx(29.0)
    # position = 4 * 0.95 = 3.8 -> 40 + 0.8 * 10 = 48
    assert percentile(values, 95) == pytest.approx(48.0)
    # order of input does not matter
    assert percentile([50, 15, 40, 20, 35], 40) == pytest.approx(29.0)
    # two values: plain linear interpolation
    assert percentile([1.0, 3.0], 25) == pytest.approx(1.5)
    assert percentile([7.0], 95) == 7.0


def _numpy_linear(values, q):
    """Reference: numpy's default ('linear') percentile, written out independently."""
    xs = sorted(values)
    h = (len(xs) - 1) * q / 100.0
    lo = int(math.floor(h))
    hi = int(math.ceil(h))
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@given(st.lists(finite, min_size=1, max_size=20), st.floats(min_value=0, max_value=100))
def test_percentile_matches_numpy_linear(values, q):
    assert percentile(values, q) == pytest.approx(_numpy_linear(values, q), rel=1e-9, abs=1e-6)


@given(st.lists(finite, min_size=1, max_size=20), st.floats(min_value=0, max_value=100),
       st.floats(min_value=0, max_value=100))
def test_percentile_is_monotone_in_q_and_bounded(values, q1, q2):
    q1, q2 = sorted((q1, q2))
    a, b = percentile(values, q1), percentile(values, q2)
    assert a <= b + 1e-9 * max(1.0, abs(b))
    assert min(values) <= a and b <= max(values)


def test_percentile_empty_and_bad_q():
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1, 2], 101)
    with pytest.raises(ValueError):
        percentile([1, 2], -1)


# --------------------------------------------------------------------------- summarize


def record(i, *, correct, joules, seconds, latency=None, tokens_out=10, unscorable=False, model="m",
           accelerator="cpu", provenance="estimated", meter="estimate", domain="arith", energy_domain="cpu"):
    return {
        "query_id": f"q{i}",
        "model": model,
        "accelerator": accelerator,
        "domain": domain,
        "correct": correct,
        "unscorable": unscorable,
        "joules": joules,
        "seconds": seconds,
        "watts": joules / seconds,
        "latency_s": seconds if latency is None else latency,
        "tokens_out": tokens_out,
        "provenance": provenance,
        "meter": meter,
        "energy_domain": energy_domain,
    }


def test_summarize_hand_computed():
    records = [
        record(1, correct=True, joules=10.0, seconds=1.0, tokens_out=10),  # 10 W
        record(2, correct=False, joules=40.0, seconds=2.0, tokens_out=20),  # 20 W
        record(3, correct=True, joules=30.0, seconds=1.0, tokens_out=30),  # 30 W
        record(4, correct=False, unscorable=True, joules=20.0, seconds=4.0, tokens_out=40),  # 5 W
    ]
    s = summarize(records)
    assert (s.model, s.accelerator, s.queries) == ("m", "cpu", 4)
    assert s.correct == 2
    assert s.unscorable == 1
    assert s.accuracy == pytest.approx(0.5)  # the unscorable answer stays in the denominator
    assert s.mean_joules == pytest.approx(25.0)
    # mean of per-record watts (10, 20, 30, 5), NOT total joules / total seconds (100 / 8 = 12.5)
    assert s.mean_watts == pytest.approx(16.25)
    assert s.ipw == pytest.approx(0.5 / 16.25)
    assert s.ipj == pytest.approx(0.5 / 25.0)
    assert s.joules_per_correct == pytest.approx(100.0 / 2)
    assert s.tokens_per_s == pytest.approx(100 / 8.0)
    assert s.mean_tokens_out == pytest.approx(25.0)
    assert s.latency_p50_s == pytest.approx(1.5)
    assert s.latency_p95_s == pytest.approx(percentile([1.0, 2.0, 1.0, 4.0], 95))
    assert (s.accuracy_low, s.accuracy_high) == wilson_interval(2, 4)
    assert s.provenance == "estimated"
    assert s.meter == "estimate"
    assert s.domain == "cpu"
    assert s.to_dict()["ipw"] == s.ipw


def test_summarize_mixed_provenance_is_said():
    records = [
        record(1, correct=True, joules=10.0, seconds=1.0, provenance="measured", meter="nvml", energy_domain="gpu"),
        record(2, correct=True, joules=10.0, seconds=1.0, provenance="estimated", meter="estimate", energy_domain="cpu"),
    ]
    s = summarize(records)
    assert s.provenance == "mixed"
    assert s.meter == "estimate + nvml"
    assert s.domain == "cpu + gpu"


def test_summarize_no_correct_answers_and_no_energy():
    records = [record(1, correct=False, joules=0.0, seconds=1.0), record(2, correct=False, joules=0.0, seconds=1.0)]
    s = summarize(records)
    assert s.accuracy == 0.0
    assert s.joules_per_correct is None
    assert s.ipw is None and s.ipj is None  # no energy measured: undefined, not a division error


def test_summarize_rejects_mixed_models_and_empty():
    with pytest.raises(ValueError, match="one model"):
        summarize([record(1, correct=True, joules=1, seconds=1, model="a"),
                   record(2, correct=True, joules=1, seconds=1, model="b")])
    with pytest.raises(ValueError):
        summarize([record(1, correct=True, joules=1, seconds=1, accelerator="cpu"),
                   record(2, correct=True, joules=1, seconds=1, accelerator="h100")])
    with pytest.raises(ValueError):
        summarize([])


def test_safe_ratio():
    assert safe_ratio(1.0, 4.0) == 0.25
    assert safe_ratio(1.0, 0.0) is None
    assert safe_ratio(1.0, -1.0) is None
    assert safe_ratio(1.0, math.nan) is None
    assert safe_ratio(1.0, math.inf) is None


# --------------------------------------------------------------------------- coverage


def cov_record(query_id, model, correct, domain="arith", accelerator="cpu"):
    return {"query_id": query_id, "model": model, "accelerator": accelerator, "correct": correct, "domain": domain}


def test_coverage_hand_computed():
    records = [
        cov_record("q1", "a", True, "arith"),
        cov_record("q2", "a", False, "arith"),
        cov_record("q3", "a", False, "facts"),
        cov_record("q1", "b", False, "arith"),
        cov_record("q2", "b", True, "arith"),
        cov_record("q3", "b", False, "facts"),
        cov_record("q4", "b", False, "facts"),
    ]
    c = coverage(records)
    assert c.systems == ("a@cpu", "b@cpu")
    assert c.queries == 4
    assert c.covered == 2
    assert c.share == pytest.approx(0.5)
    assert c.by_domain == {"arith": (2, 2), "facts": (0, 2)}
    d = c.to_dict()
    assert d["coverage"] == pytest.approx(0.5)
    assert d["by_domain"]["arith"] == {"queries": 2, "covered": 2, "coverage": 1.0}
    assert d["by_domain"]["facts"]["coverage"] == 0.0
    # a single model's coverage is its accuracy
    assert coverage(records[:3]).share == pytest.approx(1 / 3)


def test_coverage_empty():
    c = coverage([])
    assert c.queries == 0 and c.covered == 0 and c.share == 0.0


QUERY_IDS = [f"q{i}" for i in range(12)]
DOMAINS = ["arith", "facts", "logic"]


def _domain(query_id):
    return DOMAINS[int(query_id[1:]) % len(DOMAINS)]


runs = st.lists(st.tuples(st.sampled_from(QUERY_IDS), st.booleans()), max_size=12)


@given(runs, runs)
def test_coverage_never_drops_when_another_model_is_added(first, second):
    base = [cov_record(q, "a", ok, _domain(q)) for q, ok in first]
    more = base + [cov_record(q, "b", ok, _domain(q)) for q, ok in second]
    before, after = coverage(base), coverage(more)
    assert after.covered >= before.covered
    assert after.queries >= before.queries
    # every query covered before is still covered: per-domain hits never drop
    for domain, (hit, _total) in before.by_domain.items():
        assert after.by_domain[domain][0] >= hit
    # at the same set of queries the share cannot fall
    if {q for q, _ in second} <= {q for q, _ in first}:
        assert after.share >= before.share


@given(runs, runs)
def test_coverage_domain_counts_sum_to_totals(first, second):
    records = [cov_record(q, "a", ok, _domain(q)) for q, ok in first]
    records += [cov_record(q, "b", ok, _domain(q)) for q, ok in second]
    c = coverage(records)
    assert sum(total for _, total in c.by_domain.values()) == c.queries == len({r["query_id"] for r in records})
    assert sum(hit for hit, _ in c.by_domain.values()) == c.covered
    assert all(0 <= hit <= total for hit, total in c.by_domain.values())
    solved = {r["query_id"] for r in records if r["correct"]}
    assert c.covered == len(solved)


# --------------------------------------------------------------------------- combine_provenance


def test_combine_provenance():
    assert combine_provenance([]) == "none"
    assert combine_provenance(["measured"]) == "measured"
    assert combine_provenance(["estimated", "estimated"]) == "estimated"
    assert combine_provenance(["measured", "estimated", "measured"]) == "mixed"
    assert combine_provenance(iter(["measured", "measured"])) == "measured"


@settings(max_examples=50)
@given(st.lists(st.sampled_from(["measured", "estimated"]), min_size=1))
def test_combine_provenance_property(values):
    result = combine_provenance(values)
    if len(set(values)) == 1:
        assert result == values[0]
    else:
        assert result == "mixed"
