"""pytest-ipw's warning categories, so a project can turn any of them into a failing run.

Each is a :class:`pytest.PytestWarning` and appears in pytest's warnings summary; the report lines that say
the same stay. ``-W error::pytest_ipw.NoBaselineWarning`` (or ``filterwarnings = error::pytest_ipw.IPWWarning``
in the ini file) makes the run fail when it is issued.
"""

from __future__ import annotations

import pytest


class IPWWarning(pytest.PytestWarning):
    """Base of every pytest-ipw warning: ``error::pytest_ipw.IPWWarning`` turns them all into failures."""


class EstimatedEnergyWarning(IPWWarning):
    """Energy figures of this run come from a power model, not a sensor."""


class NoBaselineWarning(IPWWarning):
    """``--ipw-compare`` found no baseline to compare with, so no gate was judged."""


class TruncatedAnswersWarning(IPWWarning):
    """Many answers hit ``--ipw-max-tokens`` and were cut off; accuracy is understated."""


class SharedEnergyWarning(IPWWarning):
    """Windows overlapped on one sensor (xdist workers), so their energy was shared out among them."""


class MeterFallbackWarning(IPWWarning):
    """The accelerator's natural meter could not be used; another one (often the estimate) measured."""


class UnpairedGateWarning(IPWWarning):
    """A ``--ipw-compare-fail`` gate found no model × accelerator present in both runs, so it judged nothing
    (a model release under a new name: pair it with an alias, ``--ipw-model=NAME=SPEC``)."""


class PartialBaselineWarning(IPWWarning):
    """The baseline named for the comparison is a partial run (interrupted): it covers only part of the queries."""


class QueryErrorsWarning(IPWWarning):
    """Some queries could not be answered (context overflow, rejected, timeout, runtime error): counted wrong, or
    left out with ``--ipw-on-error=skip``."""


WARNINGS = (IPWWarning, EstimatedEnergyWarning, NoBaselineWarning, TruncatedAnswersWarning, SharedEnergyWarning,
            MeterFallbackWarning, UnpairedGateWarning, PartialBaselineWarning, QueryErrorsWarning)
