"""Hooks pytest-ipw adds, for conftest files and other plugins."""

from __future__ import annotations

from typing import Any

import pytest


def pytest_ipw_results(config: pytest.Config, results: dict[str, Any]) -> None:
    """Called once at the end of a session that recorded IPW results.

    ``results`` is the document ``--ipw-json`` writes (schema in README): exporters, dashboards and
    custom gates can read it here without a file.
    """
