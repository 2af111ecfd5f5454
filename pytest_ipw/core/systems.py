"""What a "system" is, named once: a model on an accelerator, and the benchmark that ran it where more than
one benchmark answered the same queries (single-shot and a 3-sample vote are different systems).

Summaries, coverage members, routing candidates, comparisons and gates all key by :func:`system_key`, and
every table and line names a system by :func:`system_label`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

SystemKey = tuple[str, str, str]  # (model, accelerator, benchmark; "" where one benchmark ran)


def benchmark_name(benchmark: str | None) -> str:
    """The short name of a benchmark (its test function): ``benchmarks/test_answer.py::test_answer`` -> ``test_answer``."""
    return (benchmark or "").rsplit("::", 1)[-1]


def distinct_benchmarks(records: Iterable[Mapping[str, Any]]) -> bool:
    """Whether the records come from more than one benchmark function (then each is its own system)."""
    seen: set[str] = set()
    for record in records:
        seen.add(str(record.get("benchmark") or ""))
        if len(seen) > 1:
            return True
    return False


def system_key(row: Mapping[str, Any], by_benchmark: bool = False) -> SystemKey:
    """The system of a record or summary row; the benchmark takes part only when ``by_benchmark``."""
    bench = benchmark_name(row.get("benchmark")) if by_benchmark else ""
    return (str(row["model"]), str(row["accelerator"]), bench)


def system_label(model: str, accelerator: str, benchmark: str | None = None) -> str:
    """``model@accelerator``, or ``model@accelerator[benchmark]`` for one benchmark among several."""
    name = benchmark_name(benchmark)
    return f"{model}@{accelerator}" + (f"[{name}]" if name else "")


def label_of(row: Mapping[str, Any], by_benchmark: bool = False) -> str:
    """:func:`system_label` of a record or summary row."""
    return system_label(*system_key(row, by_benchmark))


def record_system(row: Mapping[str, Any]) -> str:
    """The system label a record or summary row carries (``system``), else ``model@accelerator``."""
    return str(row.get("system") or system_label(str(row["model"]), str(row["accelerator"])))


def assign_systems(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give every record its ``system`` label: per benchmark where more than one benchmark ran, else
    ``model@accelerator``. Called once the run (or a merge) holds all of its records."""
    records = list(records)
    by_benchmark = distinct_benchmarks(records)
    for record in records:
        record["system"] = label_of(record, by_benchmark)
    return records
