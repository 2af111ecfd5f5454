"""Reading a results file a few megabytes at a time into columns (history.storage.load_run_table): the same
document, the same figures and the same comparison as reading it whole, and one clear error for a damaged file."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from pytest_ipw.analysis.metrics import coverage, summarize_systems
from pytest_ipw.analysis.table import RecordTable
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.core.files import dump_json
from pytest_ipw.history import storage
from pytest_ipw.history.compare import compare_runs
from pytest_ipw.history.storage import load_run, load_run_table


def results(n: int, seed: int, shift: float = 1.0) -> dict:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        joules = rng.uniform(0.5, 2.0) * shift
        record = {"query_id": f"q{i // 2}", "model": ("a", "b")[i % 2], "accelerator": "cpu", "domain": "d",
                  "correct": rng.random() < 0.6, "unscorable": False, "joules": joules, "watts": joules / 0.5,
                  "seconds": 0.5, "latency_s": 0.5, "tokens_out": 7, "provenance": "estimated",
                  "meter": "estimate", "energy_domain": "cpu", "meter_flags": [],
                  "response": "text with \"quotes\", braces } ] and\na newline", "ttft_s": None if i % 5 else 0.1,
                  "energy_parts": [{"sensor": "s", "provenance": "estimated", "domain": "cpu"}] if i == 3 else []}
        if i % 7 == 0:
            record["error"] = {"kind": "timeout", "message": "slow"}
        records.append(record)
    return {"schema_version": 1, "settings": {"energy": {"basis": "total"}}, "records": records,
            "skipped_queries": [], "summary": [], "partial": False}


def write(document: dict, path: Path) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        dump_json(document, handle)
    return path


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch):
    monkeypatch.setattr(storage, "_CHUNK_BYTES", 2048)  # many chunks, boundaries at every place


def test_reading_in_chunks_gives_the_document_and_the_figures_of_reading_whole(tmp_path):
    path = write(results(301, seed=1), tmp_path / "run.json")
    whole = load_run(path)
    document, table = load_run_table(path, keep_first=5)
    assert {k: v for k, v in document.items() if k != "records"} == {k: v for k, v in whole.items() if k != "records"}
    assert len(document["records"]) == len(whole["records"]) == len(table)
    assert document["records"][:5] == whole["records"][:5]  # kept whole
    assert document["records"][3] == whole["records"][3]  # energy parts: kept whole for the notes
    expected = RecordTable(whole["records"])
    assert [s.to_dict() for s in summarize_systems(table)] == [s.to_dict() for s in summarize_systems(expected)]
    assert coverage(table) == coverage(expected)
    assert table.present("ttft_s").all()


def test_a_comparison_of_runs_read_in_chunks_is_the_comparison_of_runs_read_whole(tmp_path):
    old = write(results(240, seed=1), tmp_path / "old.json")
    new = write(results(240, seed=2, shift=1.3), tmp_path / "new.json")
    whole = compare_runs(load_run(old), load_run(new))
    chunked = compare_runs(load_run_table(old)[0], load_run_table(new)[0])
    assert [c.to_dict() for c in chunked] == [c.to_dict() for c in whole]
    assert any(c.metric == "joules" and c.significant for c in chunked)


def test_a_file_in_another_layout_is_read_whole(tmp_path):
    document = results(20, seed=3)
    path = tmp_path / "compact.json"
    path.write_text(json.dumps(document))
    read, table = load_run_table(path)
    assert len(table) == 20 and list(read["records"]) == document["records"]


@pytest.mark.parametrize("damage", ["truncated", "bad-json", "missing-field"])
def test_a_damaged_file_is_one_error_naming_it(tmp_path, damage):
    document = results(50, seed=4)
    if damage == "missing-field":
        del document["records"][31]["joules"]
    path = write(document, tmp_path / "run.json")
    text = path.read_text()
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "bad-json":
        path.write_text(text.replace('"correct": true', '"correct": tru', 1))
    with pytest.raises(IPWUsageError) as error:
        load_run_table(path)
    assert str(path) in str(error.value)
    if damage == "missing-field":
        assert "record 31 lacks joules" in str(error.value)


def test_a_run_without_records_reads_as_an_empty_table(tmp_path):
    document = results(0, seed=5)
    buffer = io.StringIO()
    dump_json(document, buffer)
    path = tmp_path / "empty.json"
    path.write_text(buffer.getvalue())
    read, table = load_run_table(path)
    assert len(table) == 0 and len(read["records"]) == 0
