"""Tests of pytest_ipw.analysis.table: records as columns, and tables read a chunk at a time."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_ipw.analysis.metrics import (
    accuracy_by,
    coverage,
    energy_columns,
    phase_energy,
    record_energy,
    summarize_systems,
)
from pytest_ipw.analysis.quality import judge_cost, quality_summary
from pytest_ipw.report.terminal import provenance_notes
from pytest_ipw.analysis.study import coverage_analysis, routing_analysis
from pytest_ipw.analysis.table import RecordTable, as_table, concatenate
from pytest_ipw.meters.base import FLAG_COUNTER_RESET, FLAG_SHORT_WINDOW

OPTIONAL_NUMBERS = ("ttft_s", "joules_active", "idle_watts", "prefill_joules", "decode_joules", "prefill_s",
                    "decode_s", "decode_tokens", "tokens_in")


@st.composite
def records(draw, min_size=1, max_size=40):
    """Records as a run writes them, with the fields older files or other backends lack left out at random."""
    n = draw(st.integers(min_size, max_size))
    models = draw(st.lists(st.sampled_from(["m1", "m2", "m3"]), min_size=1, max_size=3, unique=True))
    out = []
    for i in range(n):
        joules = draw(st.floats(0.0, 500.0))
        seconds = draw(st.floats(0.01, 20.0))
        record = {
            "query_id": f"q{draw(st.integers(0, n // 2 + 1))}",
            "domain": draw(st.sampled_from(["math", "code", "chat"])),
            "split": draw(st.sampled_from(["reasoning", "chat", None])),
            "model": models[i % len(models)], "accelerator": draw(st.sampled_from(["cpu", "gpu"])),
            "benchmark": "b.py::test_answer",
            "correct": draw(st.booleans()), "unscorable": draw(st.booleans()),
            "truncated": draw(st.booleans()), "tokens_out": draw(st.integers(0, 300)),
            "latency_s": seconds, "seconds": seconds, "joules": joules, "watts": joules / seconds,
            "meter": draw(st.sampled_from(["rapl", "estimate"])),
            "provenance": draw(st.sampled_from(["measured", "estimated"])),
            "energy_domain": "cpu",
            "meter_flags": draw(st.sampled_from([[], [], [FLAG_COUNTER_RESET], [FLAG_SHORT_WINDOW]])),
        }
        for name in OPTIONAL_NUMBERS:
            if draw(st.booleans()):
                record[name] = draw(st.one_of(st.none(), st.floats(0.0, 100.0)))
        if draw(st.booleans()):
            record["energy_basis"] = "total"
        if draw(st.integers(0, 3)) == 0:
            record["judge"] = {"judge": draw(st.sampled_from(["j1", "j2"])), "cached": draw(st.booleans()),
                               "joules": draw(st.one_of(st.none(), st.floats(0.0, 50.0))), "tokens_in": 30,
                               "tokens_out": 2, "latency_s": 0.2, "energy_provenance": "estimated"}
        if draw(st.integers(0, 3)) == 0:
            record["energy_parts"] = [{"sensor": draw(st.sampled_from(["rapl", "nvml"])), "provenance": "measured",
                                       "domain": "cpu", "joules": 1.0}]
        out.append(record)
    return out


@given(records())
def test_columns_hold_each_records_values(rows):
    table = RecordTable(rows)
    joules = table.numbers("ttft_s")
    for value, record in zip(joules.tolist(), rows):
        expected = record.get("ttft_s")
        assert (math.isnan(value) if expected is None else value == expected)
    codes, labels = table.codes("split", "?")
    assert [labels[c] for c in codes.tolist()] == [r["split"] if r["split"] is not None else "?" for r in rows]
    assert table.flags("correct").tolist() == [r["correct"] for r in rows]
    assert table.present("ttft_s").tolist() == ["ttft_s" in r for r in rows]
    assert table.distinct("model") == [(m,) for m in dict.fromkeys(r["model"] for r in rows)]


@given(records(), st.data())
@settings(max_examples=60)
def test_a_table_read_in_chunks_gives_the_same_figures_as_one_read_whole(rows, data):
    """The reader of large files makes one table from many small ones: every aggregate must come out the
    same, to the last bit (sums are correctly rounded, so the grouping of records cannot change them)."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(rows)), max_size=4)))
    bounds = [0, *cuts, len(rows)]
    chunked = concatenate(RecordTable(rows[a:b]) for a, b in zip(bounds, bounds[1:]))
    whole = RecordTable(rows)
    assert len(chunked) == len(rows)
    assert [s.to_dict() for s in summarize_systems(chunked)] == [s.to_dict() for s in summarize_systems(whole)]
    assert coverage(chunked) == coverage(whole)
    assert accuracy_by(chunked, "domain") == accuracy_by(whole, "domain")
    assert quality_summary(chunked, 64) == quality_summary(whole, 64)
    assert coverage_analysis(chunked).to_dict() == coverage_analysis(whole).to_dict()
    assert judge_cost(chunked) == judge_cost(whole)
    assert provenance_notes(chunked, {}) == provenance_notes(whole, {})


def test_records_of_a_chunked_table_are_whole_where_kept_and_rebuilt_elsewhere():
    rows = [{"query_id": f"q{i}", "model": "m", "accelerator": "cpu", "domain": "d", "correct": i % 2 == 0,
             "joules": 1.0 + i, "watts": 2.0, "latency_s": 0.5, "response": f"answer {i}",
             "meter_flags": ["counter-reset"] if i == 7 else []} for i in range(10)]
    rows[8]["error"] = {"kind": "timeout", "message": "slow"}
    table = concatenate([RecordTable(rows[:4]), RecordTable(rows[4:])], keep_first=2)
    assert table.records[0] is rows[0] and table.records[8] is rows[8]  # the first ones, and a failed query
    rebuilt = table.records[5]
    assert rebuilt["query_id"] == "q5" and rebuilt["joules"] == 6.0 and "response" not in rebuilt
    assert table.records[7]["meter_flags"] == ["counter-reset"]  # nested fields are columns too
    assert as_table(table.records) is table


def test_a_field_outside_the_lists_is_a_clear_error_on_a_chunked_table():
    table = concatenate([RecordTable([{"query_id": "q", "model": "m", "accelerator": "a", "correct": True,
                                       "joules": 1.0, "watts": 1.0, "latency_s": 1.0}])])
    try:
        table.numbers("joules_window")
    except LookupError as exc:
        assert "joules_window" in str(exc)
    else:
        raise AssertionError("an unknown column must not read as all-NaN")


@given(records(max_size=5))
def test_per_record_energy_rules_are_the_column_rules(rows):
    joules, watts = energy_columns(rows)
    for i, record in enumerate(rows):
        assert record_energy(record) == (joules[i], watts[i]) or all(map(math.isnan, record_energy(record)))
        phases = phase_energy(record)
        split = record.get("prefill_joules") is not None and record.get("decode_joules") is not None
        assert (phases is not None) == split


def test_routing_is_seeded_and_the_oracle_picks_the_cheapest_right_answer():
    rows = []
    for q in range(200):
        for model, joules in (("small", 1.0), ("large", 5.0)):
            rows.append({"query_id": f"q{q}", "model": model, "accelerator": "cpu", "domain": "d",
                         "correct": model == "large" or q % 3 == 0, "joules": joules, "watts": 1.0,
                         "latency_s": 1.0, "provenance": "measured"})
    one = routing_analysis(rows, router_accuracies=(0.5,), seed=4)
    two = routing_analysis(RecordTable(rows), router_accuracies=(0.5,), seed=4)
    assert one.to_dict() == two.to_dict()
    oracle = one.results[1]
    # small answers every third query right and costs less: the oracle sends exactly those there
    assert oracle.assignments == {"large@cpu": 133, "small@cpu": 67}
    assert oracle.correct == 200


@given(records(), st.data())
@settings(max_examples=40)
def test_a_table_that_takes_records_as_they_come_gives_the_same_figures(rows, data):
    """A run's table reads each record as it arrives; a record replaced at the end (its energy shared out)
    and a field set in place (each record's system) are read again."""
    growing = RecordTable(capture=True)
    for i, record in enumerate(rows):
        growing.append(record)
        if i == len(rows) // 2:
            summarize_systems(growing)  # columns made mid-way are made again after later records
    index = data.draw(st.integers(0, len(rows) - 1))
    changed = {**rows[index], "joules": rows[index]["joules"] / 2, "meter_flags": [FLAG_COUNTER_RESET]}
    growing.replace(index, changed)
    for record in growing.records:
        record["system"] = f"{record['model']}@{record['accelerator']}"
    growing.reread("system")
    expected = RecordTable([*rows[:index], changed, *rows[index + 1:]])
    assert [s.to_dict() for s in summarize_systems(growing)] == [s.to_dict() for s in summarize_systems(expected)]
    assert coverage(growing) == coverage(expected)
    assert judge_cost(growing) == judge_cost(expected)
    assert provenance_notes(growing, {}) == provenance_notes(expected, {})
