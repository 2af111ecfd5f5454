"""Pure computations over records: ``metrics`` (accuracy intervals, IPW, IPJ, summaries, coverage),
``stats`` (McNemar, bootstrap), ``quality`` (strict vs flexible accuracy, truncation, judge cost),
``failures`` (queries that could not be answered, by kind), ``model_info`` (release dates, sizes, roles) and ``study`` (coverage, local vs reference, routing, release
trends, Pareto). Nothing here measures or writes files. May import scoring, queries and the layers below.

The study analyses are public API: ``from pytest_ipw.analysis import coverage_analysis``.
"""

from __future__ import annotations

from typing import Any

_STUDY = ("coverage_analysis", "local_vs_reference", "routing_analysis", "release_trends", "coverage_by_release",
          "pareto_frontier")


def __getattr__(name: str) -> Any:
    # The study functions are re-exported lazily, so importing a small module of this package stays cheap.
    if name in _STUDY:
        from . import study

        return getattr(study, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
