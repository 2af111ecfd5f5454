"""Merging runs from several machines into one cross-accelerator results file and report."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from pytest_ipw.cli import main as cli_main
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.history.merge import merge_documents
from pytest_ipw.options import RunOptions
from pytest_ipw.history.storage import load_run

# The idle baseline measured before each model (2 s by default, where the option exists) only slows these runs.
IDLE_OFF = ["--ipw-idle-seconds=0"] if "idle_seconds" in {f.name for f in dataclasses.fields(RunOptions)} else []


def run_document(host: str, accelerator: str, provenance: str, joules: float, queries=("q0", "q1", "q2", "q3"),
                 right=("q0", "q1"), model: str = "small", max_tokens: int = 64) -> dict:
    records = [{"query_id": q, "domain": "math" if i % 2 else "geo", "split": "chat", "model": model,
                "accelerator": accelerator, "correct": q in right, "unscorable": False, "joules": joules,
                "watts": joules / 0.5, "seconds": 0.5, "latency_s": 0.5, "tokens_out": 4, "provenance": provenance,
                "meter": f"{provenance} sensor on {host}", "energy_domain": "gpu", "prompt": "p", "response": "r"}
               for i, q in enumerate(queries)]
    return {"schema_version": 1, "created_at": "2025-01-01T00:00:00Z", "machine_info": {"node": host},
            "machine_id": f"{host}-{accelerator}-0123456789", "commit_info": {"id": "abc123"},
            "settings": {"generation": {"temperature": 0.0, "max_tokens": max_tokens}, "dataset": "/x/queries.jsonl",
                         "meters": {f"{model}-{accelerator}": {"meter": "m", "provenance": provenance}}},
            "records": records}


def test_merge_keeps_each_records_provenance_and_lists_the_runs():
    cpu = run_document("host-a", "cpu", "estimated", 10.0)
    gpu = run_document("host-b", "h100", "measured", 2.0, right=("q0", "q1", "q2"))
    merged = merge_documents([("a.json", cpu), ("b.json", gpu)])
    assert len(merged["records"]) == 8
    by_accelerator = {r["accelerator"]: r for r in merged["records"]}
    assert (by_accelerator["cpu"]["provenance"], by_accelerator["cpu"]["host"], by_accelerator["cpu"]["run"]) == \
        ("estimated", "host-a", "a.json")
    assert (by_accelerator["h100"]["provenance"], by_accelerator["h100"]["meter"]) == ("measured", "measured sensor on host-b")
    assert [(r["source"], r["host"], r["accelerators"], r["provenance"]) for r in merged["runs"]] == [
        ("a.json", "host-a", ["cpu"], ["estimated"]), ("b.json", "host-b", ["h100"], ["measured"])]
    assert merged["runs"][1]["meters"] == {"small-h100": {"meter": "m", "provenance": "measured"}}
    summaries = {s["accelerator"]: s for s in merged["summary"]}
    assert (summaries["cpu"]["provenance"], summaries["cpu"]["accuracy"]) == ("estimated", 0.5)
    assert (summaries["h100"]["provenance"], summaries["h100"]["accuracy"]) == ("measured", 0.75)
    assert merged["provenance"] == "mixed"
    assert merged["coverage"]["covered"] == 3 and merged["merge_notes"] == []
    assert cpu["records"][0].get("host") is None  # the inputs are not modified


def test_the_same_query_twice_is_refused_with_the_fix():
    one = run_document("host-a", "cpu", "estimated", 10.0)
    with pytest.raises(IPWUsageError, match=r"a.json and b.json both answer query q0 with small@cpu.*same run twice"):
        merge_documents([("a.json", one), ("b.json", copy.deepcopy(one))])
    other_host = run_document("host-b", "cpu", "estimated", 12.0)
    with pytest.raises(IPWUsageError, match="pass --label-by-host"):
        merge_documents([("a.json", one), ("b.json", other_host)])
    merged = merge_documents([("a.json", one), ("b.json", other_host)], label_by_host=True)
    assert {s["accelerator"] for s in merged["summary"]} == {"cpu:host-a", "cpu:host-b"}


def test_shards_of_one_query_set_merge_and_differences_are_noted():
    first = run_document("host-a", "cpu", "estimated", 10.0, queries=("q0", "q1"))
    second = run_document("host-a", "cpu", "estimated", 10.0, queries=("q2", "q3"), max_tokens=128)
    second["partial"] = True
    merged = merge_documents([("s1.json", first), ("s2.json", second)])
    assert merged["summary"][0]["queries"] == 4
    assert any("PARTIAL" in note for note in merged["merge_notes"])
    assert any("max_tokens 64 vs 128" in note for note in merged["merge_notes"])


def test_cli_merge_writes_a_loadable_file_and_a_cross_accelerator_report(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps(run_document("host-a", "cpu", "estimated", 10.0)))
    (tmp_path / "b.json").write_text(json.dumps(run_document("host-b", "h100", "measured", 2.0, model="large",
                                                             right=("q0", "q1", "q2"))))
    info = tmp_path / "info.json"
    info.write_text(json.dumps({"small": {"parameters": "135M"}, "large": {"parameters": "1.7B", "release_date": "2025"}}))
    out = tmp_path / "merged.json"
    code = cli_main(["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(out),
                     "--report", str(tmp_path / "rep"), "--model-info", str(info)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "merged 2 runs, 8 records: small@cpu (estimated), large@h100 (measured)" in printed
    document = load_run(out)
    assert document["merged"] and document["model_info"]["large"]["parameters"] == 1.7e9
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "host-a" in page and "host-b" in page
    assert "energy MIXED: measured and estimated figures" in page
    analysis = json.loads((tmp_path / "rep" / "analysis.json").read_text())
    assert analysis["routing"]["baseline"] == "large@h100"  # by parameter count, from the merged model info
    # the merged file reports again on its own, with its stored model info
    assert cli_main(["report", str(out), "-o", str(tmp_path / "rep2")]) == 0
    assert json.loads((tmp_path / "rep2" / "analysis.json").read_text())["release_trends"][0]["model"] == "large"


def test_cli_merge_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps(run_document("host-a", "cpu", "estimated", 10.0)))
    assert cli_main(["merge", str(tmp_path / "a.json"), str(tmp_path / "a.json"), "-o", str(tmp_path / "m.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pytest-ipw: ") and "both answer query q0" in err and "Traceback" not in err
    (tmp_path / "bad.json").write_text("{not json")
    assert cli_main(["merge", str(tmp_path / "bad.json"), "-o", str(tmp_path / "m.json")]) == 2
    assert "corrupt or truncated" in capsys.readouterr().err
    assert not (tmp_path / "m.json").exists()


def test_a_real_run_merges_with_another_machines_run(pytester: pytest.Pytester, tmp_path, capsys):
    query = {"id": "q0", "prompt": "What is 2 + 2? Answer with just the number.", "answer": "4", "domain": "geo",
             "split": "chat", "scorer": "numeric"}
    (pytester.path / "queries.jsonl").write_text(json.dumps(query) + "\n")
    (pytester.path / "small.jsonl").write_text(json.dumps({"prompt": query["prompt"], "response": "4"}) + "\n")
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", *IDLE_OFF,
                                "--ipw-model=recorded:small.jsonl", "--ipw-json=local.json")
    assert result.ret == 0
    (tmp_path / "gpu.json").write_text(json.dumps(run_document("gpu-host", "h100", "measured", 2.0, queries=("q0",))))
    out = tmp_path / "merged.json"
    assert cli_main(["merge", str(pytester.path / "local.json"), str(tmp_path / "gpu.json"), "-o", str(out)]) == 0
    merged = load_run(out)
    assert {(r["accelerator"], r["provenance"]) for r in merged["records"]} == {("cpu", "estimated"), ("h100", "measured")}


def test_merge_keeps_each_runs_skipped_and_failed_queries():
    """Queries a run left out (--ipw-on-error=skip) stay out of the merged figures and listed, like in a run."""
    cpu = run_document("host-a", "cpu", "estimated", 10.0)
    failure = {"kind": "timeout", "message": "slow"}
    cpu["records"][3] = {**cpu["records"][3], "correct": False, "error": failure}
    gpu = run_document("host-b", "h100", "measured", 2.0, queries=("q0", "q1", "q2"))
    gpu["skipped_queries"] = [{**gpu["records"][0], "query_id": "q3", "correct": False, "error": failure}]
    merged = merge_documents([("a.json", cpu), ("b.json", gpu)])
    assert len(merged["records"]) == 7 and [r["query_id"] for r in merged["skipped_queries"]] == ["q3"]
    assert merged["skipped_queries"][0]["run"] == "b.json" and merged["skipped_queries"][0]["system"] == "small@h100"
    rows = {(row["system"], row["counted"]): row["query_ids"] for row in merged["query_errors"]}
    assert rows == {("small@cpu", "wrong"): ["q3"], ("small@h100", "skipped"): ["q3"]}
    assert {s["system"]: s["queries"] for s in merged["summary"]} == {"small@cpu": 4, "small@h100": 3}
