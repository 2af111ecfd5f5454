"""Properties of the comparison statistics: exact values, a run never fails against itself, and the
false-alarm rate on identically distributed runs stays near the chosen level."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ipw.history.compare import Gate, compare_records, failed_gates
from pytest_ipw.analysis.stats import mcnemar_exact_p, mean_statistic, paired_bootstrap, ratio_statistic, relative_change

ALL_GATES = [Gate.parse(text) for text in ("ipw:0.1%", "ipj:0.1%", "accuracy:0.1pt", "joules:0.1%", "watts:0.1%",
                                           "latency_p50:0.1%", "latency_p95:0.1%", "tokens_per_s:0.1%")]


def test_mcnemar_exact_values():
    assert mcnemar_exact_p(0, 0) == 1.0
    assert math.isclose(mcnemar_exact_p(0, 10), 2 * 0.5**10)
    assert math.isclose(mcnemar_exact_p(1, 9), 2 * 11 * 0.5**10)
    assert mcnemar_exact_p(5, 5) == 1.0
    assert mcnemar_exact_p(3000, 3100) > 0.05  # large n stays finite and sensible


@given(st.integers(0, 300), st.integers(0, 300))
def test_mcnemar_is_a_symmetric_probability(b, c):
    p = mcnemar_exact_p(b, c)
    assert 0.0 <= p <= 1.0
    assert p == mcnemar_exact_p(c, b)


def test_relative_change_edges():
    assert relative_change(2.0, 3.0) == 0.5
    assert relative_change(0.0, 0.0) == 0.0
    assert relative_change(0.0, 1.0) == math.inf
    assert relative_change(-2.0, -1.0) == 0.5


def test_bootstrap_interval_contains_the_estimate_and_detects_a_real_shift():
    rng = random.Random(1)
    base = [rng.uniform(1, 2) for _ in range(80)]
    same = paired_bootstrap(80, mean_statistic(base, base), resamples=300)
    assert same.estimate == 0.0 and not same.excludes_zero()
    shifted = [x * 1.3 for x in base]
    interval = paired_bootstrap(80, mean_statistic(base, shifted), resamples=300)
    assert interval.low <= interval.estimate <= interval.high
    assert math.isclose(interval.estimate, 0.3) and interval.excludes_zero() and interval.low > 0


record_strategy = st.fixed_dictionaries({
    "correct": st.booleans(),
    "joules": st.floats(0.01, 1000, allow_nan=False),
    "watts": st.floats(0.01, 1000, allow_nan=False),
    "latency_s": st.floats(0.001, 100, allow_nan=False),
    "tokens_out": st.integers(0, 500),
})


@settings(max_examples=40, deadline=None)
@given(st.lists(record_strategy, min_size=1, max_size=40))
def test_a_run_compared_with_itself_never_fails_any_gate(rows):
    records = [{**row, "query_id": f"q{i}", "domain": "d"} for i, row in enumerate(rows)]
    changes = compare_records("m@cpu", records, records, resamples=50)
    assert changes and not failed_gates(changes, ALL_GATES)
    assert all(not c.significant for c in changes)


def synthetic_run(rng: random.Random, base_energy: list[float], p_right: list[float]) -> list[dict]:
    """One run of a model whose per-query energy has 5% noise and whose answers are random draws."""
    records = []
    for i, (energy, p) in enumerate(zip(base_energy, p_right)):
        joules = energy * rng.gauss(1.0, 0.05)
        records.append({"query_id": f"q{i}", "domain": "d", "correct": rng.random() < p, "joules": joules,
                        "watts": joules / 0.5, "latency_s": 0.5, "tokens_out": 10})
    return records


def test_false_alarm_rate_on_identical_distributions_stays_near_alpha():
    rng = random.Random(2025)
    n_queries, trials, alpha = 60, 150, 0.05
    base_energy = [rng.lognormvariate(0, 0.5) for _ in range(n_queries)]
    p_right = [rng.uniform(0.2, 0.9) for _ in range(n_queries)]
    gates = [Gate.parse("ipw:0%"), Gate.parse("joules:0%"), Gate.parse("accuracy:0pt")]
    alarms = {gate.metric: 0 for gate in gates}
    for trial in range(trials):
        before = synthetic_run(rng, base_energy, p_right)
        after = synthetic_run(rng, base_energy, p_right)
        changes = compare_records("m@cpu", before, after, alpha=alpha, resamples=200, seed=trial,
                                  metrics=("accuracy", "joules", "ipw"))
        for failure in failed_gates(changes, gates):
            alarms[failure.gate.metric] += 1
    # A one-sided alarm ("worse") should fire at most about alpha/2 of the time; allow sampling error.
    for metric, count in alarms.items():
        assert count / trials <= 0.08, (metric, count)


def test_ratio_statistic_is_ipw():
    correct_b, watts_b = [1, 1, 0, 1], [2.0, 2.0, 2.0, 2.0]
    correct_a, watts_a = [1, 0, 0, 1], [2.0, 2.0, 2.0, 2.0]
    base, cur = ratio_statistic(correct_b, watts_b, correct_a, watts_a)(range(4))
    assert math.isclose(base, (3 / 4) / 2.0) and math.isclose(cur, (2 / 4) / 2.0)
