"""The work the benchmarks (perf/test_scale.py) and perf/table.py measure, defined once, through public entry
points only, so that the same figures can be taken before and after a rewrite of the internals."""

from __future__ import annotations

from typing import Any, Sequence

from pytest_ipw.analysis import metrics, quality, study

#: the synthetic runs' largest model (perf/synthetic.py), the reference of local-vs-reference
REFERENCE_MODEL = "model-3"


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the end of a run computes from its records for the results document and the terminal summary:
    one summary per system, accuracy per domain, coverage, the output-quality summary and the judge's cost."""
    return {"summary": metrics.summarize_systems(records), "by_domain": metrics.accuracy_by(records, "domain"),
            "coverage": metrics.coverage(records), "quality": quality.quality_summary(records, 64),
            "judge_cost": quality.judge_cost(records)}


def analyses(records: Sequence[dict[str, Any]]) -> tuple[Any, ...]:
    """The report's study analyses: coverage of systems and of models, local models against the largest as
    a reference, routing (oracle, simulated routers, always the largest model), the Pareto frontier."""
    return (study.coverage_analysis(records), study.coverage_analysis(records, unit="model"),
            study.local_vs_reference(records, reference=[REFERENCE_MODEL]), study.routing_analysis(records),
            study.pareto_frontier(metrics.summarize_systems(records)))
