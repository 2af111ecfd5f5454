"""Hooks pytest-ipw adds, for conftest files and other plugins (as pytest-benchmark documents its own).

Implement them in a ``conftest.py`` or a plugin; pytest-ipw registers the specifications at start-up.
"""

from __future__ import annotations

from typing import Any

import pytest


def pytest_ipw_record(config: pytest.Config, record: dict[str, Any]) -> None:
    """Called for every finished query's record, as soon as the run holds it (on the xdist controller when
    running with ``-n``), before any aggregate exists. The record is the one ``--ipw-json`` writes; treat
    it as read-only.

    Example: stream each answer's energy to a live dashboard::

        # conftest.py
        def pytest_ipw_record(config, record):
            print(f"{record['query_id']}: {record['joules']:.2f} J ({record['provenance']})")
    """


def pytest_ipw_results(config: pytest.Config, results: dict[str, Any]) -> None:
    """Called once at the end of a session that recorded IPW results.

    ``results`` is the document ``--ipw-json`` writes (docs/results-schema.md): exporters, dashboards and
    custom gates can read it here without a file.

    Example: a custom gate that fails the run when any figure was estimated rather than measured::

        # conftest.py
        def pytest_ipw_results(config, results):
            if any(s["provenance"] != "measured" for s in results["summary"]):
                config.pluginmanager.get_plugin("terminalreporter").write_line("energy not measured")
                pytest.exit("this gate needs measured energy", returncode=1)
    """
