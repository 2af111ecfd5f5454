"""Queries that could not be answered (records whose ``error`` is set): counted by model × accelerator and
kind, for the terminal report, the results document and comparisons. Pure functions over records, so they
read a saved results file the same way (records written before ``error`` existed have none).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_ipw.analysis.table import RecordTable

if TYPE_CHECKING:
    from pytest_ipw.analysis.table import RecordTable


def failed(record: Mapping[str, Any]) -> bool:
    """Whether the query could not be answered (its record counts as wrong, never as unscorable)."""
    return bool(record.get("error"))


def query_errors(records: "Iterable[Mapping[str, Any]] | RecordTable", counted: str = "wrong") -> list[dict[str, Any]]:
    """One row per system (model × accelerator, per benchmark where several ran) and error kind: how many
    queries, which, and what the runtime said.

    ``counted`` says how accuracy treated them: "wrong" (``--ipw-on-error=record``) or "skipped".
    """
    import numpy as np

    from pytest_ipw.analysis.metrics import system_codes
    from pytest_ipw.analysis.table import as_table

    table = as_table(records)
    codes, systems = system_codes(table)
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for position in np.flatnonzero(table.flags("error")).tolist():  # failed(): a record with an error
        record = table.records[position]
        groups.setdefault((systems[codes[position]], record["error"]["kind"]), []).append(record)
    rows = []
    for (system, kind), group in groups.items():
        windows = {r["error"].get("context_window") for r in group} - {None}
        prompt_tokens = [r["tokens_in"] for r in group if r.get("tokens_in") is not None]
        rows.append({
            "system": system, "model": group[0]["model"], "accelerator": group[0]["accelerator"], "kind": kind,
            "queries": len(group), "counted": counted,
            "query_ids": [r["query_id"] for r in group],
            "context_window": windows.pop() if len(windows) == 1 else None,
            "longest_prompt_tokens": max(prompt_tokens) if prompt_tokens else None,
            "example": group[0]["error"].get("message"),
        })
    return rows


def run_query_errors(records: "Iterable[Mapping[str, Any]] | RecordTable",
                     skipped: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The results document's ``query_errors``: the failed queries counted as wrong, then those left out
    (``--ipw-on-error=skip``). One definition for runs and merges."""
    return query_errors(records) + query_errors(list(skipped), counted="skipped")


def error_counts(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Kind -> how many of ``records`` failed that way (empty when none did)."""
    counts: dict[str, int] = {}
    for record in records:
        if failed(record):
            kind = record["error"]["kind"]
            counts[kind] = counts.get(kind, 0) + 1
    return counts
