"""The study's analyses on hand-computed cases, and their properties (hypothesis)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ipw.analysis.study import (
    check_records,
    coverage_analysis,
    coverage_by_release,
    local_vs_reference,
    pareto_frontier,
    release_trends,
    routing_analysis,
    summaries_of,
)
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.analysis.model_info import load_model_info, parse_model_info

QUERIES = {"q1": ("d1", "chat"), "q2": ("d1", "reasoning"), "q3": ("d2", "chat"), "q4": ("d2", "reasoning")}


def record(model: str, query_id: str, correct: bool, joules: float, latency: float = 1.0, accelerator: str = "cpu",
           provenance: str = "measured") -> dict:
    domain, split = QUERIES.get(query_id, ("d", "chat"))
    return {"query_id": query_id, "domain": domain, "split": split, "model": model, "accelerator": accelerator,
            "correct": correct, "unscorable": False, "joules": joules, "watts": joules / latency, "seconds": latency,
            "latency_s": latency, "tokens_out": 5, "provenance": provenance, "meter": "test meter",
            "energy_domain": "system"}


def hand_records() -> list[dict]:
    """small (A) answers q1 q2 at 1 J; mid (B) q2 q3 at 2 J; big (C) q1 q2 q3 at 10 J; nobody q4."""
    right = {"A": {"q1", "q2"}, "B": {"q2", "q3"}, "C": {"q1", "q2", "q3"}}
    cost = {"A": (1.0, 0.1), "B": (2.0, 0.2), "C": (10.0, 1.0)}
    return [record(m, q, q in right[m], *cost[m]) for m in ("A", "B", "C") for q in QUERIES]


PARAMETERS = {"A": 1e9, "B": 2e9, "C": 10e9}


def test_coverage_overall_per_domain_per_split_and_marginal():
    cov = coverage_analysis(hand_records())
    assert (cov.overall.covered, cov.overall.queries) == (3, 4)
    assert {d: (c.covered, c.queries) for d, c in cov.by_domain.items()} == {"d1": (2, 2), "d2": (1, 2)}
    assert {s: (c.covered, c.queries) for s, c in cov.by_split.items()} == {"chat": (2, 2), "reasoning": (1, 2)}
    assert cov.marginal == {"A@cpu": 0, "B@cpu": 0, "C@cpu": 0}  # C answers everything the others do
    assert [(m, c.covered) for m, c in cov.cumulative] == [("C@cpu", 3), ("A@cpu", 3), ("B@cpu", 3)]
    assert cov.accuracy["B@cpu"].share == 0.5
    assert cov.accuracy_by_domain[("B@cpu", "d2")].share == 0.5


def test_coverage_of_a_subset_keeps_the_whole_denominator():
    cov = coverage_analysis(hand_records(), members=["A@cpu", "B@cpu"])
    assert (cov.overall.covered, cov.overall.queries) == (3, 4)
    assert cov.marginal == {"A@cpu": 1, "B@cpu": 1}  # q1 only A, q3 only B
    alone = coverage_analysis(hand_records(), members=["A@cpu"])
    assert (alone.overall.covered, alone.overall.queries) == (2, 4)


def test_coverage_by_model_pools_accelerators_and_names_unknown_members():
    records = [record("A", "q1", True, 1), record("A", "q2", False, 1),
               record("A", "q2", True, 1, accelerator="h100"), record("A", "q1", False, 1, accelerator="h100")]
    by_model = coverage_analysis(records, unit="model")
    assert by_model.members == ("A",) and by_model.overall.covered == 2
    with pytest.raises(IPWUsageError, match=r"member\(s\) 'Z@cpu' not in these records; they have: A@cpu, A@h100"):
        coverage_analysis(records, members=["Z@cpu"])


def test_local_vs_reference_counts_each_query_once():
    records = hand_records() + [record("R", q, q in {"q1", "q4"}, 5.0, accelerator="cloud") for q in QUERIES]
    versus = local_vs_reference(records, reference=["R"])
    v = versus.overall
    assert (v.queries, v.both, v.local_only, v.reference_only, v.neither) == (4, 1, 2, 1, 0)
    assert v.win_or_tie_rate == 0.75 and v.local_coverage == 0.75 and v.reference_accuracy == 0.5
    assert v.share_of_reference == 0.5
    assert versus.by_domain["d2"].reference_only == 1
    with pytest.raises(IPWUsageError, match="reference model"):
        local_vs_reference(records, reference=["nope"])


def test_oracle_routing_by_hand():
    routing = routing_analysis(hand_records(), parameters=PARAMETERS, router_accuracies=(1.0,))
    assert routing.baseline == "C@cpu" and "largest model by parameter count (10B)" in routing.baseline_reason
    assert routing.fallback == "C@cpu"  # no reference model: what nobody answers goes to the baseline
    base, oracle, perfect = routing.results
    assert (base.joules, base.correct) == (40.0, 3)
    # q1 -> A (1 J), q2 -> A (1 J), q3 -> B (2 J), q4 -> fallback C (10 J, wrong)
    assert dict(oracle.choices) == {"q1": "A@cpu", "q2": "A@cpu", "q3": "B@cpu", "q4": "C@cpu"}
    assert (oracle.joules, oracle.correct) == (14.0, 3)
    assert routing.energy_saving(oracle) == pytest.approx(0.65)
    assert routing.latency_saving(oracle) == pytest.approx(1 - 1.4 / 4.0)
    assert routing.accuracy_change(oracle) == 0
    assert perfect.choices == oracle.choices  # a 100%-accurate router is the oracle
    assert oracle.provenance == "measured"


def test_routing_falls_back_to_the_reference_and_never_routes_to_it_otherwise():
    records = hand_records() + [record("R", q, q in {"q1", "q4"}, 5.0, accelerator="cloud") for q in QUERIES]
    routing = routing_analysis(records, parameters=PARAMETERS, reference=["R"], router_accuracies=())
    assert routing.fallback == "R@cloud" and "R@cloud" not in routing.candidates
    oracle = routing.results[1]
    assert dict(oracle.choices)["q1"] == "A@cpu" and dict(oracle.choices)["q4"] == "R@cloud"
    assert (oracle.joules, oracle.correct) == (9.0, 4)


def test_baseline_without_parameter_counts_says_how_it_was_chosen():
    routing = routing_analysis(hand_records(), router_accuracies=())
    assert routing.baseline == "C@cpu"
    assert "no parameter counts" in routing.baseline_reason


def test_router_mistakes_are_seeded_and_cost_accuracy():
    records = hand_records()
    one = routing_analysis(records, parameters=PARAMETERS, router_accuracies=(0.5,), seed=3)
    two = routing_analysis(records, parameters=PARAMETERS, router_accuracies=(0.5,), seed=3)
    assert one.results[2].choices == two.results[2].choices
    never = routing_analysis(records, parameters=PARAMETERS, router_accuracies=(0.0,), on_mistake="baseline")
    assert never.results[2].joules == never.results[0].joules  # every mistake goes to the baseline
    with pytest.raises(IPWUsageError, match="router accuracy must lie in 0..1"):
        routing_analysis(records, router_accuracies=(80,))


def test_routing_mixed_provenance_is_reported_as_mixed():
    records = hand_records()
    records[0] = {**records[0], "provenance": "estimated"}  # A on q1, which the oracle picks
    oracle = routing_analysis(records, parameters=PARAMETERS, router_accuracies=()).results[1]
    assert oracle.provenance == "mixed"


def test_pareto_frontier_by_hand():
    points = {p.system: p for p in pareto_frontier(summaries_of(hand_records()))}
    # A: acc 0.5 at 1 J; B: 0.5 at 2 J (dominated by A); C: 0.75 at 10 J
    assert {s for s, p in points.items() if p.on_frontier} == {"A@cpu", "C@cpu"}
    assert [p.system for p in pareto_frontier(summaries_of(hand_records()))] == ["A@cpu", "B@cpu", "C@cpu"]


def test_release_trends_and_coverage_by_release():
    infos = parse_model_info({"A": {"release_date": "2023-03", "parameters": "1B"},
                              "B": {"release_date": "2024"}, "C": {"release_date": "2025-06-30"}}, "test")
    points, undated = release_trends(summaries_of(hand_records()), infos)
    assert [(p.model, p.release_date) for p in points] == [("A", dt.date(2023, 3, 1)), ("B", dt.date(2024, 1, 1)),
                                                          ("C", dt.date(2025, 6, 30))]
    assert points[0].ipw == pytest.approx(0.5 / 10.0) and undated == []
    steps = coverage_by_release(hand_records(), infos)
    assert [(m, c.covered) for _, m, c in steps] == [("A", 2), ("B", 3), ("C", 3)]
    _, undated = release_trends(summaries_of(hand_records()), {"A": infos["A"]})
    assert undated == ["B", "C"]


def test_model_info_parsing_and_errors(tmp_path):
    infos = parse_model_info({"m": {"parameters": "135M", "role": "reference"}, "n": {"parameters": 6.7e9}}, "x")
    assert infos["m"].parameters == 135e6 and infos["m"].role == "reference" and infos["n"].role == "local"
    for bad, message in [({"m": {"role": "cloud"}}, "role must be 'local' or 'reference'"),
                         ({"m": {"release": "2024"}}, "unknown field.*release"),
                         ({"m": {"release_date": "July 2024"}}, "not YYYY, YYYY-MM or YYYY-MM-DD"),
                         ({"m": {"parameters": "lots"}}, "not a count like"),
                         ([1, 2], "must be a JSON object")]:
        with pytest.raises(IPWUsageError, match=message):
            parse_model_info(bad, "x")
    broken = tmp_path / "info.json"
    broken.write_text("{oops")
    with pytest.raises(IPWUsageError, match=r"info.json is not valid JSON \(line 1"):
        load_model_info(broken)
    with pytest.raises(IPWUsageError, match="does not exist"):
        load_model_info(tmp_path / "missing.json")


def test_records_without_the_fields_the_analyses_read_are_named():
    with pytest.raises(IPWUsageError, match="run.json: record 1 lacks joules"):
        check_records([record("A", "q1", True, 1), {k: v for k, v in record("A", "q2", True, 1).items() if k != "joules"}],
                      "run.json")


# -- properties ------------------------------------------------------------------------------------

SYSTEMS = [f"m{i}" for i in range(4)]


@st.composite
def runs(draw):
    """Random runs: every system answers every query, right or wrong, at a random positive energy."""
    n_queries = draw(st.integers(1, 12))
    records = []
    for system in SYSTEMS[:draw(st.integers(1, len(SYSTEMS)))]:
        for q in range(n_queries):
            records.append(record(system, f"q{q}", draw(st.booleans()), draw(st.floats(0.01, 100.0)),
                                  draw(st.floats(0.01, 5.0))))
    for r in records:
        r["domain"] = f"d{int(r['query_id'][1:]) % 3}"
    return records


@settings(max_examples=60, deadline=None)
@given(runs(), st.data())
def test_coverage_is_monotone_in_the_model_set(records, data):
    members = sorted({f"{r['model']}@cpu" for r in records})
    bigger = data.draw(st.lists(st.sampled_from(members), unique=True, min_size=1))
    smaller = data.draw(st.lists(st.sampled_from(bigger), unique=True, min_size=1))
    small, big = coverage_analysis(records, members=smaller), coverage_analysis(records, members=bigger)
    assert small.overall.queries == big.overall.queries
    assert small.overall.covered <= big.overall.covered
    for domain, cell in small.by_domain.items():
        assert cell.covered <= big.by_domain[domain].covered
    curve = [c.covered for _, c in big.cumulative]
    assert curve == sorted(curve) and curve[-1] == big.overall.covered
    assert sum(big.marginal.values()) <= big.overall.covered


@settings(max_examples=60, deadline=None)
@given(runs())
def test_oracle_never_costs_more_than_a_single_model_at_the_same_accuracy(records):
    routing = routing_analysis(records, router_accuracies=(1.0,))
    oracle = routing.results[1]
    choice = dict(oracle.choices)
    energy = {(r["query_id"], f"{r['model']}@cpu"): r["joules"] for r in records}
    for system in routing.candidates:
        solved = [r["query_id"] for r in records if f"{r['model']}@cpu" == system and r["correct"]]
        # on exactly the queries this model answers, the oracle answers them too, for no more energy
        assert sum(energy[(q, choice[q])] for q in solved) <= sum(energy[(q, system)] for q in solved) + 1e-9
        assert all(energy[(q, choice[q])] <= energy[(q, system)] for q in solved)
        single = sum(1 for r in records if f"{r['model']}@cpu" == system and r["correct"])
        assert oracle.correct >= single
    assert routing.results[2].choices == oracle.choices


@settings(max_examples=60, deadline=None)
@given(runs())
def test_pareto_frontier_points_are_undominated_and_cover_the_rest(records):
    points = pareto_frontier(summaries_of(records))
    frontier = [p for p in points if p.on_frontier]
    assert frontier

    def dominates(a, b):
        return a.accuracy >= b.accuracy and a.mean_joules <= b.mean_joules and (a.accuracy > b.accuracy or a.mean_joules < b.mean_joules)

    for p in frontier:
        assert not any(dominates(q, p) for q in points)
    for p in points:
        if not p.on_frontier:
            assert any(dominates(q, p) for q in frontier)
