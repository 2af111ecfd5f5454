"""Scale and reliability: shards, batched items, the journal and resume after kill -9, partial runs,
Parquet output, and fuzzed bad input that must end in one clear error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import fixed_meter_conftest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.run.journal import Journal, read_journal
from pytest_ipw.queries.schema import load_queries
from pytest_ipw.run.session import shard_of
from pytest_ipw.history.storage import load_run

N = 24
BENCHMARK = "def test_answer(ipw_bench):\n    ipw_bench()\n"


def queries() -> list[dict]:
    domains = ("alpha", "beta", "gamma")
    return [{"id": f"q-{i:03d}", "prompt": f"What is {i} + 1?", "answer": str(i + 1), "domain": domains[i % 3],
             "split": "reasoning", "scorer": "numeric"} for i in range(N)]


def write_project(root: Path, latency: float = 0.0, missing: set[int] = frozenset()) -> str:
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries()) + "\n")
    with (root / "answers.jsonl").open("w") as handle:
        for i, query in enumerate(queries()):
            if i not in missing:
                handle.write(json.dumps({"prompt": query["prompt"], "response": str(i + 1 if i % 4 else i),
                                         "latency_s": latency}) + "\n")
    (root / "conftest.py").write_text(fixed_meter_conftest())
    (root / "test_bench.py").write_text(BENCHMARK)
    return "--ipw-model=recorded:answers.jsonl"


def base_args(model: str) -> list[str]:
    return ["-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-idle-seconds=0", model]


def test_shards_partition_the_queries_stably():
    ids = [f"q-{i}" for i in range(500)]
    shards = [{q for q in ids if shard_of(q, 4) == k} for k in range(4)]
    assert set().union(*shards) == set(ids)
    assert sum(len(s) for s in shards) == len(ids)
    assert all(60 < len(s) < 190 for s in shards)  # roughly balanced
    assert shard_of("q-7", 4) == shard_of("q-7", 4)


def test_shard_option_runs_a_disjoint_part(pytester: pytest.Pytester):
    model = write_project(pytester.path)
    seen = []
    for k in (1, 2, 3):
        result = pytester.runpytest(*base_args(model), "--collect-only", "-q", f"--ipw-shard={k}/3")
        seen.append({line.split("-cpu-")[1].rstrip("]") for line in result.outlines if "-cpu-" in line})
    assert set().union(*seen) == {q["id"] for q in queries()}
    assert sum(len(s) for s in seen) == N
    result = pytester.runpytest(*base_args(model), "--ipw-shard=4/3")
    result.stderr.fnmatch_lines(["*--ipw-shard=4/3: need 1 <= K <= N*"])


@pytest.mark.parametrize("granularity, items", [("domain", 3), ("model", 1)])
def test_batched_granularity_gives_the_same_records(pytester: pytest.Pytester, granularity, items):
    model = write_project(pytester.path)
    per_query = pytester.runpytest(*base_args(model), "--ipw-json=per-query.json")
    per_query.assert_outcomes(passed=N)
    batched = pytester.runpytest(*base_args(model), f"--ipw-granularity={granularity}", "--ipw-json=batched.json")
    batched.assert_outcomes(passed=items)
    a = json.loads((pytester.path / "per-query.json").read_text())
    b = json.loads((pytester.path / "batched.json").read_text())
    key = lambda r: r["query_id"]  # noqa: E731
    strip = lambda rs: [(r["query_id"], r["correct"], r["response"], r["joules"]) for r in sorted(rs, key=key)]  # noqa: E731
    assert strip(a["records"]) == strip(b["records"])
    assert a["summary"][0]["accuracy"] == b["summary"][0]["accuracy"] and not b["partial"]


def test_journal_has_a_header_and_one_line_per_query(pytester: pytest.Pytester):
    model = write_project(pytester.path)
    pytester.runpytest(*base_args(model), "--ipw-journal=run.journal.jsonl")
    lines = (pytester.path / "run.journal.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["pytest_ipw_journal"] == 1
    assert len(lines) == 1 + N
    assert {json.loads(line)["query_id"] for line in lines[1:]} == {q["id"] for q in queries()}


def test_kill_9_then_resume_gives_the_uninterrupted_aggregate(pytester: pytest.Pytester):
    model = write_project(pytester.path, latency=0.15)
    reference = pytester.runpytest(*base_args(model), "--ipw-json=reference.json", "--ipw-journal=ref.jsonl")
    reference.assert_outcomes(passed=N)
    journal = pytester.path / "killed.jsonl"
    command = [sys.executable, "-m", "pytest", *base_args(model), "--ipw-journal=killed.jsonl", "--ipw-json=never.json"]
    process = subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if journal.exists() and len(journal.read_text().splitlines()) >= 1 + 6:
            break
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished = len(journal.read_text().splitlines()) - 1
    assert 6 <= finished < N, "the run should have died part-way"
    assert not (pytester.path / "never.json").exists()

    started = time.monotonic()
    resumed = pytester.runpytest(*base_args(model), "--ipw-journal=killed.jsonl", "--ipw-resume", "--ipw-json=resumed.json")
    elapsed = time.monotonic() - started
    resumed.assert_outcomes(passed=N)
    a = json.loads((pytester.path / "reference.json").read_text())
    b = json.loads((pytester.path / "resumed.json").read_text())
    assert b["settings"]["resumed_records"] == finished
    assert sorted(r["query_id"] for r in b["records"]) == sorted(r["query_id"] for r in a["records"])
    for field in ("queries", "correct", "accuracy", "mean_joules", "mean_watts", "ipw", "ipj"):
        assert a["summary"][0][field] == b["summary"][0][field], field
    assert elapsed < (N - finished) * 0.15 + 15  # finished queries were not run again
    lines = journal.read_text().splitlines()[1:]
    assert len({json.loads(line)["query_id"] for line in lines}) == len(lines) == N  # nothing twice


def test_resume_under_other_settings_is_refused(pytester: pytest.Pytester):
    model = write_project(pytester.path)
    pytester.runpytest(*base_args(model), "--ipw-journal=j.jsonl")
    result = pytester.runpytest(*base_args(model), "--ipw-journal=j.jsonl", "--ipw-resume", "--ipw-max-tokens=32")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*j.jsonl was written by a run with other settings (ipw_max_tokens differ)*"
                                 "Rerun without --ipw-resume*"])
    result = pytester.runpytest(*base_args(model), "--ipw-journal=none.jsonl", "--ipw-resume")
    result.stderr.fnmatch_lines(["*--ipw-resume: no journal at none.jsonl*"])


def test_interrupted_run_still_reports_what_finished_marked_partial(pytester: pytest.Pytester):
    model = write_project(pytester.path)
    (pytester.path / "test_bench.py").write_text(
        "def test_answer(ipw_bench, ipw_query):\n"
        "    ipw_bench()\n"
        "    if ipw_query.id == 'q-004':\n"
        "        raise KeyboardInterrupt\n")
    result = pytester.runpytest(*base_args(model), "--ipw-json=partial.json", no_reraise_ctrlc=True)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*PARTIAL RUN: 5 of 24 queries finished*"])
    document = json.loads((pytester.path / "partial.json").read_text())
    assert document["partial"] is True and len(document["records"]) == 5


def test_backend_failure_mid_run_stops_cleanly_and_keeps_results(pytester: pytest.Pytester):
    model = write_project(pytester.path, missing={7})  # the recorded backend has no answer for q-007
    result = pytester.runpytest(*base_args(model), "--ipw-json=out.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*pytest-ipw: answers: recorded answers answers.jsonl have no answer for the prompt*"])
    assert "Traceback" not in result.stdout.str()
    document = json.loads((pytester.path / "out.json").read_text())
    assert document["partial"] is True and len(document["records"]) == 7


def test_parquet_records(pytester: pytest.Pytester):
    import pyarrow.parquet as pq

    model = write_project(pytester.path)
    pytester.runpytest(*base_args(model), "--ipw-parquet=records.parquet")
    table = pq.read_table(pytester.path / "records.parquet")
    assert table.num_rows == N
    assert {"query_id", "correct", "joules", "provenance"} <= set(table.column_names)


# -- fuzzed bad input: a clear IPWUsageError, never another exception --------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                           max_leaves=6)
row_strategy = st.dictionaries(
    st.sampled_from(["id", "prompt", "answer", "domain", "split", "scorer", "choices", "tolerance", "aliases", "x"]),
    json_values, max_size=10)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(row_strategy, min_size=1, max_size=4), junk=st.sampled_from(["", "{", "[1]", "\x00", "null"]))
def test_fuzzed_query_files_fail_cleanly(tmp_path, rows, junk):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n" + junk + "\n")
    try:
        load_queries(path)
    except IPWUsageError as exc:
        assert str(path) in str(exc)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=json_values, cut=st.integers(0, 200))
def test_fuzzed_history_files_fail_cleanly(tmp_path, document, cut):
    path = tmp_path / "0001_abc_20260101T000000.json"
    text = json.dumps({"schema_version": 1, "records": document}) if cut % 2 else json.dumps(document)[:cut]
    path.write_text(text)
    try:
        load_run(path)
    except IPWUsageError as exc:
        assert str(path) in str(exc)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.text(max_size=30), max_size=5))
def test_fuzzed_journals_fail_cleanly(tmp_path, lines):
    path = tmp_path / "j.jsonl"
    header = json.dumps({"pytest_ipw_journal": 1, "fingerprint": {"f": 1}})
    path.write_text("\n".join([header, *lines]) + "\n")
    try:
        read_journal([path], {"f": 1})
    except IPWUsageError as exc:
        assert str(path) in str(exc)


def test_journal_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path, {"f": 1}, append=False)
    record = {"benchmark": "b", "model": "m", "accelerator": "cpu", "query_id": "q1", "correct": True}
    journal.append(record)
    journal.close()
    with path.open("a") as handle:
        handle.write('{"benchmark": "b", "mod')  # killed while writing
    assert list(read_journal([path], {"f": 1})) == [("b", "m", "cpu", "q1", 1)]


def test_xdist_workers_are_pinned_one_gpu_each():
    from pytest_ipw.hardware.profiles import LocalDevice, load_profiles
    from pytest_ipw.run.session import pin_to_worker

    profiles = load_profiles()
    gpus = [LocalDevice(profiles["h100"], "NVIDIA H100 80GB HBM3", i) for i in range(4)]
    local = gpus + [LocalDevice(profiles["cpu"], "Xeon", None)]
    chosen = [gpus[0]]
    assert pin_to_worker(chosen, local, None) == chosen
    assert [pin_to_worker(chosen, local, f"gw{k}")[0].index for k in range(6)] == [0, 1, 2, 3, 0, 1]
    cpu = [local[-1]]
    assert pin_to_worker(cpu, local, "gw3") == cpu  # one device of its kind: nothing to pin


def test_xdist_workers_on_one_sensor_share_energy_instead_of_double_counting(pytester: pytest.Pytester):
    model = write_project(pytester.path, latency=0.2)
    queries_file = pytester.path / "queries.jsonl"
    queries_file.write_text("\n".join(queries_file.read_text().splitlines()[:8]) + "\n")
    result = pytester.runpytest_subprocess(*base_args(model), "-n", "2", "-p", "no:benchmark", "--ipw-json=run.json")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["*energy: * query window(s) overlapped others on the same sensor (2 xdist workers)*"])
    records = json.loads((pytester.path / "run.json").read_text())["records"]
    shared = [r for r in records if "energy-shared:2" in r["meter_flags"]]
    assert len(shared) >= 6  # two workers, each always busy: nearly every window overlaps another
    raw = sum(r.get("joules_window", r["joules"]) for r in records)
    assert raw == pytest.approx(16.0)  # the fixed meter's 2 J per window, unchanged in joules_window
    assert sum(r["joules"] for r in records) < 0.75 * raw  # the overlap is no longer counted twice


def test_split_of_overlapping_windows_by_hand():
    from pytest_ipw.meters.trace import split_overlapping_windows

    assert split_overlapping_windows([(0, 1, 10.0), (2, 3, 5.0)]) == ([10.0, 5.0], [1, 1])
    # two 10 W windows overlapping for 1 s: the device drew 30 J over [0, 3], split 15 / 15
    assert split_overlapping_windows([(0, 2, 20.0), (1, 3, 20.0)]) == ([15.0, 15.0], [2, 2])


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(0.001, 10), st.floats(0, 500)), min_size=1, max_size=12))
def test_shares_never_exceed_the_raw_windows_and_lone_windows_keep_theirs(raw):
    from pytest_ipw.meters.trace import split_overlapping_windows

    windows = [(start, start + length, joules) for start, length, joules in raw]
    shares, most = split_overlapping_windows(windows)
    assert sum(shares) <= sum(j for _, _, j in windows) * (1 + 1e-9) + 1e-9
    for share, concurrency, (_, _, joules) in zip(shares, most, windows):
        assert share >= -1e-9
        if concurrency == 1:
            assert share == pytest.approx(joules, rel=1e-9, abs=1e-9)
