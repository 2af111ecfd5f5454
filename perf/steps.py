"""The work the benchmarks (perf/test_scale.py) and perf/table.py measure, defined once, through public entry
points only, so that the same figures can be taken before and after a rewrite of the internals."""

from __future__ import annotations

from typing import Any, Sequence

from pytest_ipw.analysis import metrics, quality, study
from pytest_ipw.analysis.table import as_table

#: the synthetic runs' largest model (perf/synthetic.py), the reference of local-vs-reference
REFERENCE_MODEL = "model-3"


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What the end of a run computes from its records for the results document and the terminal summary:
    one summary per system, accuracy per domain, coverage, the output-quality summary and the judge's cost,
    all from one table of columns, as the run does (IPWSession.finish; a run's table has read each record's
    fields as it arrived, a list of records is read here)."""
    table = as_table(records)
    return {"summary": metrics.summarize_systems(table), "by_domain": metrics.accuracy_by(table, "domain"),
            "coverage": metrics.coverage(table), "quality": quality.quality_summary(table, 64),
            "judge_cost": quality.judge_cost(table)}


def analyses(records: Sequence[dict[str, Any]]) -> tuple[Any, ...]:
    """The report's study analyses: coverage of systems and of models, local models against the largest as
    a reference, routing (oracle, simulated routers, always the largest model), the Pareto frontier."""
    table = as_table(records)  # the report reads one table (a file's records read as columns already are one)
    return (study.coverage_analysis(table), study.coverage_analysis(table, unit="model"),
            study.local_vs_reference(table, reference=[REFERENCE_MODEL]), study.routing_analysis(table),
            study.pareto_frontier(metrics.summarize_systems(table)))
