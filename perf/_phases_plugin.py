"""A pytest plugin for perf/harness_overhead.py (``-p perf._phases_plugin``): when the run's phases happen,
and how long the model load and its warm-up take. The figures go to the file named by IPW_PHASES_FILE."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import pytest

STARTED = time.perf_counter()  # imported at pytest's start-up, before collection
PHASES: dict[str, float] = {"plugin_loaded": 0.0}


def _mark(name: str) -> None:
    PHASES[name] = time.perf_counter() - STARTED


def _add(name: str, seconds: float) -> None:
    PHASES[name] = PHASES.get(name, 0.0) + seconds


def pytest_collection(session: pytest.Session) -> None:
    _mark("collection_start")


def pytest_collection_finish(session: pytest.Session) -> None:
    _mark("collection_end")


def pytest_configure(config: pytest.Config) -> None:
    """Time pytest_ipw.backends.load_backend (the ``ipw_model`` fixture imports it when it runs), and the
    backend's first ``--ipw-warmup`` generations."""
    from pytest_ipw import backends
    from pytest_ipw.plugin import OPTIONS_KEY

    load = backends.load_backend

    def timed_load(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        backend = load(*args, **kwargs)
        _add("model_load_s", time.perf_counter() - began)
        generate = backend.generate
        warmups = [config.stash[OPTIONS_KEY].warmup]

        def timed_generate(prompt: str, *more: Any, **options: Any) -> Any:
            if warmups[0] <= 0:
                return generate(prompt, *more, **options)
            warmups[0] -= 1
            began = time.perf_counter()
            try:
                return generate(prompt, *more, **options)
            finally:
                _add("warmup_s", time.perf_counter() - began)

        backend.generate = timed_generate
        return backend

    backends.load_backend = timed_load


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish(nodeid: str, location: object) -> None:
    _mark("last_test_end")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    _mark("sessionfinish_start")


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    _mark("unconfigure_end")
    target = os.environ.get("IPW_PHASES_FILE")
    if target:
        with open(target, "w") as handle:
            json.dump(PHASES, handle)
