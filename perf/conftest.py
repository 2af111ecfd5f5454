"""pytest-ipw's own performance as pytest-benchmark benchmarks (docs/performance.md). Not part of the test
suite (``python -m pytest tests/``); run them by naming this folder:

    python -m pytest perf/ --benchmark-only -p no:cacheprovider                 # 10,000 records: CI
    python -m pytest perf/ --benchmark-only --perf-sizes=10000,100000,1000000   # the million is opt-in
    python -m pytest perf/ --benchmark-only --benchmark-autosave                # keep this commit's figures
    python -m pytest perf/ --benchmark-only --benchmark-compare --benchmark-compare-fail=median:20%

The synthetic runs are seeded (perf/synthetic.py) and their files cached (``IPW_PERF_CACHE``); the first
use of a size writes them, which at a million records takes minutes and several GB of memory.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `perf.synthetic` from any working folder

from perf import synthetic

DEFAULT_SIZES = "10000"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--perf-sizes", default=DEFAULT_SIZES, metavar="N[,N...]",
                     help="records per synthetic run, comma-separated (default 10000; larger sizes are opt-in, "
                          "e.g. --perf-sizes=10000,100000,1000000)")


SIZES_KEY = pytest.StashKey[list]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[SIZES_KEY] = parse_sizes(config.getoption("--perf-sizes"))  # a bad value stops before collection


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise pytest.UsageError(f"--perf-sizes={text!r}: give positive record counts separated by commas, "
                                "e.g. --perf-sizes=10000,100000")
    return sizes


def size_id(size: int) -> str:
    return f"{size // 1000}k" if size >= 1000 and size % 1000 == 0 else str(size)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "size" in metafunc.fixturenames:
        sizes = metafunc.config.stash[SIZES_KEY]
        metafunc.parametrize("size", sizes, ids=[size_id(n) for n in sizes], scope="session")


def rounds_for(size: int) -> int:
    """Fewer rounds for larger runs: a million-record report takes a minute."""
    return 5 if size <= 10_000 else 3 if size <= 100_000 else 1


@pytest.fixture(scope="session")
def records(size: int) -> list[dict[str, Any]]:
    """The records of the synthetic run of that size, as a run keeps them (a list of dicts)."""
    return synthetic.synthetic_records(size)


@pytest.fixture(scope="session")
def results_file(size: int) -> Path:
    return synthetic.results_file(size)


@pytest.fixture(scope="session")
def second_results_file(size: int) -> Path:
    return synthetic.second_results_file(size)


@pytest.fixture(scope="session")
def parquet_results_file(size: int) -> Path:
    """A results file whose run also wrote its records as Parquet (``--ipw-parquet``): the loaders read that."""
    pytest.importorskip("pyarrow")
    return synthetic.results_file(size, parquet=True)


@pytest.fixture
def run(benchmark: Any, size: int) -> Callable[..., Any]:
    """``run(function, *args)``: benchmark it with rounds suited to the size; returns its result."""
    def measure(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        benchmark.extra_info["records"] = size
        return benchmark.pedantic(function, args=args, kwargs=kwargs, rounds=rounds_for(size), iterations=1,
                                  warmup_rounds=0)

    return measure
