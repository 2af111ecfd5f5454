"""compare_documents: the one comparison behind --ipw-compare and pytest-ipw compare (machine ids, pairing,
coverage of the pairs, gates with nothing to compare)."""

from __future__ import annotations

import pytest

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.core.warnings import UnpairedGateWarning
from pytest_ipw.history.compare import Gate
from pytest_ipw.history.comparison import CLI_FLAGS, compare_documents, parse_pairs


def document(model: str, ids: range, correct: bool = True, machine: str = "box") -> dict:
    records = [{"query_id": f"q{i}", "model": model, "accelerator": "cpu", "domain": "d", "correct": correct,
                "joules": 1.0, "watts": 2.0, "latency_s": 0.1, "tokens_out": 2} for i in ids]
    return {"machine_id": machine, "records": records, "summary": [{"provenance": "measured"}]}


def test_other_machine_ids_are_refused_naming_the_callers_flag():
    with pytest.raises(IPWUsageError, match="Pass --across-machines to compare anyway"):
        compare_documents(document("m", range(5)), document("m", range(5), machine="other"), baseline_label="a",
                          flags=CLI_FLAGS)
    crossed = compare_documents(document("m", range(5)), document("m", range(5), machine="other"), baseline_label="a",
                                across_machines=True)
    assert crossed.notes[0] == "comparing ACROSS MACHINES: baseline box, now other"


def test_an_explicit_pair_compares_old_with_new_and_keeps_same_name_pairs():
    baseline = {**document("old", range(10)), "records": document("old", range(10))["records"]
                + document("keep", range(4))["records"]}
    current = {**document("new", range(6), correct=False), "records": document("new", range(6), correct=False)["records"]
               + document("keep", range(4))["records"]}
    result = compare_documents(baseline, current, baseline_label="b", gates=[Gate.parse("accuracy:2pt")],
                               pairs=parse_pairs(["new=old"]))
    rows = {s.label: (s.paired, s.in_baseline, s.in_current, s.how) for s in result.systems}
    assert rows == {"keep@cpu": (4, 4, 4, "same name"), "new@cpu vs old@cpu": (6, 10, 6, "--pair")}
    assert [f.change.scope for f in result.failures] == ["new@cpu"]
    assert "--ipw-compare-fail=accuracy:2pt on new@cpu vs old@cpu: gate judged on 6 paired queries of 10 " \
           "(10 in the baseline, 6 in this run)" in result.notes
    with pytest.raises(IPWUsageError, match="has no model 'newer'"):
        compare_documents(baseline, current, baseline_label="b", pairs={"newer": "old"})
    with pytest.raises(IPWUsageError, match="b has no model 'older'"):
        compare_documents(baseline, current, baseline_label="b", pairs={"new": "older"})


def test_a_gate_with_no_system_in_both_runs_is_a_warning_and_under_require_an_error():
    gates = [Gate.parse("ipw:5%")]
    loose = compare_documents(document("v1", range(5)), document("v2", range(5)), baseline_label="b", gates=gates)
    assert not loose.changes and not loose.failures and not loose.errors
    ((category, message),) = loose.warnings
    assert category is UnpairedGateWarning and "--pair v2=v1" in message and "b has v1@cpu; this run has v2@cpu" in message
    strict = compare_documents(document("v1", range(5)), document("v2", range(5)), baseline_label="b", gates=gates,
                               require_baseline=True)
    assert strict.errors == [strict.warnings[0][1] + " (and --ipw-require-baseline is set)"]


def test_a_pair_keeps_each_benchmark_its_own_system():
    def two_benchmarks(model: str, correct: bool) -> dict:
        records = []
        for bench in ("test_single", "test_vote"):
            for record in document(model, range(10), correct)["records"]:
                records.append({**record, "benchmark": f"b.py::{bench}", "system": f"{model}@cpu[{bench}]"})
        return {"machine_id": "box", "records": records, "summary": []}

    result = compare_documents(two_benchmarks("v1", True), two_benchmarks("v2", False), baseline_label="b",
                               gates=[Gate.parse("accuracy:2pt")], pairs={"v2": "v1"})
    assert [(s.label, s.paired) for s in result.systems] == [("v2@cpu[test_single] vs v1@cpu[test_single]", 10),
                                                             ("v2@cpu[test_vote] vs v1@cpu[test_vote]", 10)]
    assert sorted(f.change.scope for f in result.failures) == ["v2@cpu[test_single]", "v2@cpu[test_vote]"]
