"""Merging runs made on different machines (one accelerator per host, or shards of one query set) into
one results document, the input of a cross-accelerator report (``pytest-ipw merge RUN...``).

Each record keeps its own meter, provenance and energy domain, and gains ``run`` (where it came from)
and ``host``; the merged document lists every source run under ``runs`` with its machine, meters and
commit, so nothing about where a figure came from is lost. Summaries and coverage are recomputed over
the merged records. A query answered by the same model × accelerator in two runs would be counted twice:
that is refused, with the fix.
"""

from __future__ import annotations

import os
import time
from typing import Any, Mapping, Sequence

from pytest_ipw import __version__
from pytest_ipw.analysis.study import check_records, summaries_of
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.core.systems import assign_systems
from pytest_ipw.analysis.failures import run_query_errors
from pytest_ipw.analysis.metrics import accuracy_by_domain_rows, combine_provenance, coverage
from pytest_ipw.analysis.model_info import ModelInfo, model_info_to_json

SCHEMA_VERSION = 1


def _host(document: Mapping[str, Any]) -> str:
    return str((document.get("machine_info") or {}).get("node") or "unknown-host")


def _run_entry(source: str, document: Mapping[str, Any]) -> dict[str, Any]:
    records = document.get("records") or []
    settings = document.get("settings") or {}
    return {
        "source": source,
        "host": _host(document),
        "machine_id": document.get("machine_id"),
        "machine_info": document.get("machine_info"),
        "created_at": document.get("created_at"),
        "commit": (document.get("commit_info") or {}).get("id"),
        "pytest_ipw_version": document.get("pytest_ipw_version"),
        "partial": bool(document.get("partial")),
        "records": len(records),
        "accelerators": sorted({str(r["accelerator"]) for r in records}),
        "models": sorted({str(r["model"]) for r in records}),
        "provenance": sorted({str(r.get("provenance")) for r in records}),
        "meters": settings.get("meters") or {},
        "comparability": document.get("comparability") or {},
        "settings": {k: v for k, v in settings.items() if k not in ("meters",)},
    }


def merge_documents(sources: Sequence[tuple[str, Mapping[str, Any]]], *, label_by_host: bool = False,
                    model_info: Mapping[str, ModelInfo] | None = None) -> dict[str, Any]:
    """One results document from several (``(source label, document)`` pairs, as read by ``load_run``).

    ``label_by_host`` renames each accelerator to ``ACCELERATOR:HOST``, which keeps apart the same
    accelerator on several machines (two CPU hosts, say) instead of pooling them.
    """
    if not sources:
        raise IPWUsageError("merge needs at least one run")
    records: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []  # --ipw-on-error=skip: each run's queries left out, kept apart here too
    seen: dict[tuple[str, str, str], str] = {}
    runs = []
    notes: list[str] = []
    for source, document in sources:
        items = document.get("records") or []
        if not isinstance(items, list):
            raise IPWUsageError(f"{source} has no list of records; it is not a pytest-ipw results file")
        check_records(items, source)
        host = _host(document)
        runs.append(_run_entry(source, document))
        if document.get("partial"):
            notes.append(f"{source} is a PARTIAL run (fewer queries finished than were collected)")
        for record in items:
            merged = dict(record)
            merged.setdefault("run", source)
            merged.setdefault("host", host)
            if label_by_host:
                merged["accelerator"] = f"{record['accelerator']}:{host}"
            key = (str(merged["model"]), str(merged["accelerator"]), str(merged["query_id"]))
            if key in seen:
                earlier = seen[key]
                hint = ("they look like the same run twice, or overlapping shards: merge one of them"
                        if earlier == source or _host_of_source(runs, earlier) == host else
                        "merge one of them, or pass --label-by-host to keep the machines apart (ACCELERATOR:HOST)")
                raise IPWUsageError(f"{earlier} and {source} both answer query {key[2]} with {key[0]}@{key[1]}; "
                                    f"a merged report would count it twice: {hint}")
            seen[key] = source
            records.append(merged)
        for record in document.get("skipped_queries") or []:
            merged = {**record, "run": record.get("run", source), "host": record.get("host", host)}
            if label_by_host:
                merged["accelerator"] = f"{record['accelerator']}:{host}"
            skipped.append(merged)
    notes += _setting_differences(sources)
    everything = assign_systems(records + skipped)  # per benchmark where the merged runs hold several
    records, skipped = everything[:len(records)], everything[len(records):]
    summaries = summaries_of(records) if records else []
    per_domain = accuracy_by_domain_rows(records)
    hosts = sorted({run["host"] for run in runs})
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "pytest_ipw_version": __version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "merged": True,
        "runs": runs,
        "machine_info": {"node": "merged: " + ", ".join(hosts), "hosts": hosts},
        "settings": {"merged_from": [run["source"] for run in runs], "meters": {}},
        "records": records,
        "skipped_queries": skipped,
        "query_errors": run_query_errors(records, skipped),
        "summary": [s.to_dict() for s in summaries],
        "accuracy_by_domain": per_domain,
        "coverage": coverage(records).to_dict(),
        "provenance": combine_provenance(str(r.get("provenance")) for r in records),
        "threshold_failures": [],
        "merge_notes": notes,
    }
    if model_info:
        document["model_info"] = model_info_to_json(model_info)
    return document


def _host_of_source(runs: Sequence[Mapping[str, Any]], source: str) -> str | None:
    return next((run["host"] for run in runs if run["source"] == source), None)


def _setting_differences(sources: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Notes where runs were made with different generation settings or query sets (accuracy may differ)."""
    notes = []
    first_source, first = sources[0]
    first_settings = first.get("settings") or {}
    for source, document in sources[1:]:
        settings = document.get("settings") or {}
        generation_a, generation_b = first_settings.get("generation") or {}, settings.get("generation") or {}
        changed = sorted(k for k in set(generation_a) | set(generation_b)
                         if k not in ("threads",) and generation_a.get(k) != generation_b.get(k))
        if changed:
            detail = ", ".join(f"{k} {generation_a.get(k)!r} vs {generation_b.get(k)!r}" for k in changed)
            notes.append(f"{first_source} and {source} differ in generation settings ({detail}): accuracy may not be comparable")
        dataset_a, dataset_b = (os.path.basename(str(s.get("dataset") or "")) for s in (first_settings, settings))
        if dataset_a != dataset_b:
            notes.append(f"{first_source} and {source} used different query sets ({dataset_a} vs {dataset_b})")
    return notes
