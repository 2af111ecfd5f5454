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
    assert document["records"][7] == whole["records"][7]  # a failed query: kept whole for its error
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


def with_parquet(tmp_path: Path, document: dict, created_at: str = "2026-11-30T10:00:00Z") -> Path:
    from pytest_ipw.core.files import results_stamp, write_parquet

    # as a run writes it: when and how long before the records (the stamp is read before them)
    document = {"created_at": created_at, "duration_s": 12.5, **document,
                "settings": {**document["settings"], "options": {"ipw_parquet": {"value": "run.parquet"}}}}
    path = write(document, tmp_path / "run.json")
    write_parquet(tmp_path / "run.parquet", document["records"], stamp=results_stamp(document))
    return path


@pytest.mark.parametrize("layout", ["run", "no key after the records"])
def test_records_come_from_the_runs_parquet_copy_when_it_names_the_same_run(tmp_path, monkeypatch, layout):
    pytest.importorskip("pyarrow")
    document = results(157, seed=6)
    if layout != "run":  # the end of the records is then found by searching forward
        del document["skipped_queries"]
    from pytest_ipw.core import files

    monkeypatch.setattr(files, "PARQUET_ROW_GROUP", 16)  # whole records come from several row groups
    document["records"][10]["judge"] = {"judge": "j", "joules": 1.5, "cached": False}
    path = with_parquet(tmp_path, document)
    used = []
    original = storage._table_from_parquet
    monkeypatch.setattr(storage, "_table_from_parquet", lambda *a: used.append(a) or original(*a))
    read, table = load_run_table(path, keep_first=3)
    assert used, "the Parquet copy was not read"
    whole = load_run(path)
    assert {k: v for k, v in read.items() if k != "records"} == {k: v for k, v in whole.items() if k != "records"}
    expected = RecordTable(whole["records"])
    assert [s.to_dict() for s in summarize_systems(table)] == [s.to_dict() for s in summarize_systems(expected)]
    assert coverage(table) == coverage(expected)
    from pytest_ipw.analysis.quality import judge_cost

    assert judge_cost(table) == judge_cost(expected)
    from pytest_ipw.report.terminal import provenance_notes

    assert provenance_notes(table, {}) == provenance_notes(expected, {})  # energy parts, flags: columns too
    for position in (0, 2, 7, 14):  # the first ones and the failed queries: whole, nested objects decoded
        original_record = {k: v for k, v in whole["records"][position].items() if v is not None or k == "ttft_s"}
        assert read["records"][position] == original_record


def test_a_parquet_file_of_another_run_is_not_used(tmp_path, monkeypatch):
    pytest.importorskip("pyarrow")
    path = with_parquet(tmp_path, results(40, seed=7))
    stale = json.loads(path.read_text())
    stale["created_at"] = "2026-11-30T11:00:00Z"  # the JSON of a later run beside the older Parquet file
    write(stale, path)
    monkeypatch.setattr(storage, "_table_from_parquet", lambda *a: pytest.fail("read another run's Parquet"))
    read, table = load_run_table(path)
    assert len(table) == 40 and read["created_at"] == "2026-11-30T11:00:00Z"


def test_the_standard_parser_and_the_fast_one_read_the_same(tmp_path, monkeypatch):
    path = write(results(120, seed=8), tmp_path / "run.json")
    fast_document, fast_table = load_run_table(path)  # orjson where the [fast] extra is installed
    monkeypatch.setattr(storage, "_orjson", None)
    plain_document, plain_table = load_run_table(path)
    assert {k: v for k, v in fast_document.items() if k != "records"} == \
        {k: v for k, v in plain_document.items() if k != "records"}
    assert [s.to_dict() for s in summarize_systems(fast_table)] == [s.to_dict() for s in summarize_systems(plain_table)]
    assert list(fast_document["records"][:10]) == list(plain_document["records"][:10])


def test_an_unreadable_parquet_copy_falls_back_to_the_json(tmp_path, monkeypatch):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = with_parquet(tmp_path, results(60, seed=9))

    def damaged(*args, **kwargs):
        raise pa.ArrowInvalid("Parquet magic bytes not found in footer")  # what pyarrow says of a damaged file

    monkeypatch.setattr(pq, "ParquetFile", damaged)
    read, table = load_run_table(path)
    expected = RecordTable(load_run(path)["records"])
    assert [s.to_dict() for s in summarize_systems(table)] == [s.to_dict() for s in summarize_systems(expected)]
