"""Saving runs, comparing with a baseline and regression gates, through pytester and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import BENCHMARK, addition_queries, fixed_meter_conftest, recorded_answers

from pytest_ipw.cli import main as cli_main
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.history.storage import Storage, check_save_name, load_run, machine_id

N_QUERIES = 30

def queries() -> list[dict]:
    return addition_queries(N_QUERIES, domains=("more-math", "math"))


def answers_file(path: Path, wrong_every: int | None) -> str:
    """Recorded answers, all right, or wrong on every ``wrong_every``-th query."""
    return recorded_answers(path, queries(), wrong_every)


@pytest.fixture
def project(pytester: pytest.Pytester):
    (pytester.path / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries()) + "\n")
    pytester.makeconftest(fixed_meter_conftest(2.0))
    pytester.makepyfile(test_bench=BENCHMARK)
    good = answers_file(pytester.path / "model.jsonl", None)
    return pytester, good


def run(pytester: pytest.Pytester, model: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", f"--ipw-model=recorded:{model}",
                              "--ipw-idle-seconds=0", *args)


def saved_runs(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / ".ipw").glob("*/*.json"))


def test_first_run_without_baseline_saves_and_passes_with_a_note(project):
    pytester, good = project
    result = run(pytester, good, "--ipw-autosave", "--ipw-compare", "--ipw-compare-fail=ipw:5%")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*compare: no saved run matches --ipw-compare=latest*this run is saved as the baseline*",
                                 "saved: *.ipw*0001_*.json"])
    (saved,) = saved_runs(pytester)
    document = load_run(saved)
    assert document["machine_id"] == saved.parent.name
    assert document["commit_info"]["id"]
    assert len(document["records"]) == N_QUERIES


def test_first_run_can_be_required_to_have_a_baseline(project):
    pytester, good = project
    result = run(pytester, good, "--ipw-compare", "--ipw-require-baseline")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*IPW COMPARE FAILED: no saved run matches*--ipw-require-baseline*"])


def test_rerun_of_the_same_model_passes_the_gate(project):
    pytester, good = project
    run(pytester, good, "--ipw-autosave")
    result = run(pytester, good, "--ipw-autosave", "--ipw-compare", "--ipw-compare-fail=ipw:5%",
                 "--ipw-compare-fail=accuracy:2pt", "--ipw-compare-fail=joules:10%", "--ipw-compare-fail=coverage:1pt")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["compared with *0001_*", "*model@cpu*accuracy*1*1*+0.0 pt*within noise*"])
    assert "IPW REGRESSION" not in result.stdout.str()
    assert len(saved_runs(pytester)) == 2


def test_degraded_model_fails_the_gate_with_one_line_per_gate(project):
    pytester, good = project
    run(pytester, good, "--ipw-autosave")
    worse = answers_file(pytester.path / "model.jsonl", wrong_every=2)  # same model name, half wrong now
    result = run(pytester, worse, "--ipw-compare", "--ipw-compare-fail=ipw:5%", "--ipw-compare-fail=accuracy:2pt")
    assert result.ret == 1
    result.stdout.fnmatch_lines([
        "*IPW REGRESSION: model@cpu: ipw 0.25 -> 0.125 (-50.0%, 95% interval *) breaks --ipw-compare-fail=ipw:5%",
        "*IPW REGRESSION: model@cpu: accuracy 1 -> 0.5 (-50.0 points, p=*) breaks --ipw-compare-fail=accuracy:2pt",
    ])
    assert "Traceback" not in result.stdout.str()


def test_more_energy_fails_a_joules_gate_but_not_an_accuracy_gate(project):
    pytester, good = project
    run(pytester, good, "--ipw-autosave")
    pytester.makeconftest(fixed_meter_conftest(3.0))  # 50% more energy per query
    result = run(pytester, good, "--ipw-compare", "--ipw-compare-fail=accuracy:2pt")
    assert result.ret == 0
    result = run(pytester, good, "--ipw-compare", "--ipw-compare-fail=joules:10%")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*IPW REGRESSION: model@cpu: joules 2 -> 3 (+50.0%*breaks --ipw-compare-fail=joules:10%"])


def test_another_machine_id_is_refused_unless_asked(project):
    pytester, good = project
    run(pytester, good, "--ipw-autosave")
    (saved,) = saved_runs(pytester)
    foreign = saved.parent.parent / "other-host-cpu-0123456789"
    foreign.mkdir()
    document = json.loads(saved.read_text())
    document["machine_id"] = foreign.name
    (foreign / saved.name).write_text(json.dumps(document))
    saved.unlink()
    result = run(pytester, good, "--ipw-compare")
    assert result.ret == 0  # no baseline for this machine: nothing to compare, says why
    result.stdout.fnmatch_lines(["*nearest saved machine id is other-host-cpu-0123456789, which differs: the same "
                                 "hardware and meter, saved under another id*--ipw-compare-across-machines*"])
    result = run(pytester, good, "--ipw-compare", "--ipw-compare-across-machines", "--ipw-compare-fail=accuracy:2pt")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*comparing ACROSS MACHINES*"])


@pytest.mark.parametrize("damage", ["truncated", "not-json", "wrong-schema", "no-records"])
def test_corrupt_history_file_is_named_and_the_new_run_is_still_saved(project, damage):
    pytester, good = project
    run(pytester, good, "--ipw-autosave")
    (saved,) = saved_runs(pytester)
    text = saved.read_text()
    damaged = {"truncated": text[: len(text) // 2], "not-json": "<html>",
               "wrong-schema": json.dumps({**json.loads(text), "schema_version": 99}),
               "no-records": json.dumps({"schema_version": 1})}[damage]
    saved.write_text(damaged)
    result = run(pytester, good, "--ipw-autosave", "--ipw-compare")
    assert result.ret == 1
    result.stdout.fnmatch_lines([f"*IPW COMPARE FAILED: saved run *{saved.parent.name}/{saved.name}*"])
    assert "Traceback" not in result.stdout.str()
    assert len(saved_runs(pytester)) == 2  # the new run survived


def test_bad_gate_expressions_and_save_names_are_usage_errors(project):
    pytester, good = project
    for args, message in [
        (["--ipw-compare", "--ipw-compare-fail=ipw:5"], "*is not METRIC:N% or METRIC:Npt*"),
        (["--ipw-compare", "--ipw-compare-fail=speed:5%"], "*unknown metric 'speed'*"),
        (["--ipw-compare", "--ipw-compare-fail=ipw:2pt"], "*ipw takes a change in %*"),
        (["--ipw-compare-fail=ipw:5%"], "*--ipw-compare-fail needs --ipw-compare*"),
        (["--ipw-save=../../etc/evil"], "*--ipw-save='../../etc/evil': a name is 1-64 letters*"),
    ]:
        result = run(pytester, good, *args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, args
        result.stderr.fnmatch_lines([message])


def test_compare_by_save_name_and_number(project):
    pytester, good = project
    run(pytester, good, "--ipw-save=release-1")
    run(pytester, good, "--ipw-autosave")
    result = run(pytester, good, "--ipw-compare=release-1")
    result.stdout.fnmatch_lines(["compared with *0001_*_release-1*"])
    result = run(pytester, good, "--ipw-compare=2")
    result.stdout.fnmatch_lines(["compared with *0002_*"])


def test_junit_and_pytest_benchmark_carry_the_figures(project):
    pytester, good = project
    pytester.makepyfile(test_bench="""
        def test_answer(ipw_bench, benchmark):
            benchmark.pedantic(ipw_bench, rounds=1, iterations=1)
    """)
    result = run(pytester, good, "--ipw-limit=2", "--junitxml=junit.xml", "--benchmark-json=bench.json")
    assert result.ret == 0
    junit = (pytester.path / "junit.xml").read_text()
    assert 'name="ipw_correct" value="True"' in junit
    assert 'name="ipw_joules" value="2.0"' in junit
    assert 'name="ipw_provenance" value="measured"' in junit
    bench = json.loads((pytester.path / "bench.json").read_text())
    extra = bench["benchmarks"][0]["extra_info"]
    assert extra["ipw_joules"] == 2.0 and extra["ipw_correct"] is True and extra["ipw_provenance"] == "measured"


# -- storage and CLI --------------------------------------------------------------------------------

def test_concurrent_saves_both_survive(tmp_path):
    storage = Storage(tmp_path)
    document = {"schema_version": 1, "records": []}
    first = storage.save(document, machine="m", commit="abc", dirty=False)
    # a second writer that already picked number 1 (stale listing) must not overwrite the first
    storage.runs = lambda machine=None: []  # type: ignore[method-assign]
    second = storage.save(document, machine="m", commit="abc", dirty=True)
    assert first.path != second.path and first.path.exists() and second.path.exists()
    assert (first.number, second.number) == (1, 2) and second.dirty
    assert not list(tmp_path.glob("m/.saving-*"))


def test_save_names_cannot_escape_the_storage():
    for bad in ("../x", "a/b", ".hidden", "", "x" * 65, "a\\b"):
        with pytest.raises(IPWUsageError):
            check_save_name(bad)
    assert check_save_name("release-1.2_rc") == "release-1.2_rc"


def test_machine_id_separates_hardware_and_meters():
    base = {"node": "box", "system": "Linux", "machine": "x86_64", "cpu": "Xeon",
            "accelerators": [{"profile": "h100", "device_name": "NVIDIA H100 80GB HBM3"}]}
    meters = {"m-h100": {"meter": "nvml", "sensor": "nvml: GPU0", "provenance": "measured", "power_limit_w": 700.0}}
    same = machine_id(base, meters)
    assert same == machine_id(dict(base), dict(meters))
    assert same.startswith("h100-xeon-")
    assert machine_id({**base, "node": "runner-42"}, meters) == same  # ephemeral CI runners: same hardware, same id
    assert machine_id(base, {"m": {**meters["m-h100"], "power_limit_w": 500.0}}) != same
    assert machine_id({**base, "accelerators": [{"profile": "a100", "device_name": "A100"}]}, meters) != same
    assert machine_id(base, {"m": {**meters["m-h100"], "provenance": "estimated"}}) != same


def test_cli_list_compare_and_trend(project, capsys, monkeypatch):
    pytester, good = project
    run(pytester, good, "--ipw-autosave")
    answers_file(pytester.path / "model.jsonl", wrong_every=3)
    run(pytester, good, "--ipw-autosave")
    monkeypatch.chdir(pytester.path)
    assert cli_main(["list"]) == 0
    assert "0001_" in capsys.readouterr().out
    assert cli_main(["compare", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "worse" in out
    assert cli_main(["compare", "1", "2", "--fail=accuracy:2pt"]) == 1
    assert "IPW REGRESSION: model@cpu: accuracy 1 -> 0.6667 (-33.3 points" in capsys.readouterr().err
    assert cli_main(["compare", "1", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changes"]
    assert cli_main(["compare", "1", "2", "--markdown"]) == 0
    assert "| scope" in capsys.readouterr().out
    assert cli_main(["compare", "1", "2", "--csv"]) == 0
    assert capsys.readouterr().out.startswith("scope,metric,")
    assert cli_main(["trend", "--metric", "accuracy"]) == 0
    out = capsys.readouterr().out
    assert "model@cpu" in out and "0.6667" in out
    assert cli_main(["compare", "1", "nope"]) == 2
    assert "no saved run matches 'nope'" in capsys.readouterr().err


def test_cli_runs_as_a_console_script(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pytest_ipw.cli", "--storage", str(tmp_path), "list"],
                            capture_output=True, text=True, env={**os.environ})
    assert result.returncode == 0 and "no saved runs" in result.stdout


# --------------------------------------------------------------------------- energy basis and pairing in compare


def document(records: list[dict], basis: str = "total") -> dict:
    return {"settings": {"energy": {"basis": basis}}, "records": records}


def energy_record(query_id: str, *, benchmark: str = "test_bench.py::test_answer", correct: bool = True,
                  joules: float = 100.0, active: float = 20.0, basis: str = "total", flags: tuple = ()) -> dict:
    return {"query_id": query_id, "benchmark": benchmark, "model": "m", "accelerator": "cpu", "domain": "math",
            "correct": correct, "joules": joules, "watts": joules / 2.0, "seconds": 2.0, "joules_active": active,
            "idle_watts": (joules - active) / 2.0, "energy_basis": basis, "latency_s": 2.0, "tokens_out": 10,
            "meter_flags": list(flags)}


def test_compare_reads_energy_on_the_runs_recorded_basis():
    from pytest_ipw.history.compare import changes_table, compare_runs

    # the same total energy, but the queries' own (active) energy tripled: an active-energy run must see it
    before = [energy_record(f"q{i}", active=20.0 + i % 3, basis="active") for i in range(30)]
    after = [energy_record(f"q{i}", active=60.0 + i % 3, basis="active") for i in range(30)]
    changes = compare_runs(document(before, "active"), document(after, "active"), resamples=200)
    joules = next(c for c in changes if c.metric == "joules" and c.scope == "m@cpu")
    assert joules.baseline == pytest.approx(21.0) and joules.current == pytest.approx(61.0)
    assert joules.basis == "active" and joules.verdict == "worse"
    assert "joules (active energy)" in changes_table(changes)
    total = compare_runs(document([{**r, "energy_basis": "total"} for r in before]),
                         document([{**r, "energy_basis": "total"} for r in after]), resamples=200)
    assert next(c for c in total if c.metric == "joules").relative == 0.0


def test_runs_on_different_energy_bases_are_not_compared():
    from pytest_ipw.history.compare import compare_runs

    records = [energy_record(f"q{i}") for i in range(5)]
    with pytest.raises(IPWUsageError, match="baseline's energy figures use TOTAL energy and this run's use ACTIVE"):
        compare_runs(document(records, "total"), document([{**r, "energy_basis": "active"} for r in records], "active"))


def test_the_same_query_in_two_benchmark_functions_is_two_pairs():
    from pytest_ipw.history.compare import compare_runs

    def run(shift: float) -> list[dict]:
        # test_fast answers every query right, test_slow every query wrong, in both runs
        return [energy_record(f"q{i}", benchmark=f"test_bench.py::{name}", correct=name == "test_fast",
                              joules=(10.0 if name == "test_fast" else 90.0) * shift)
                for i in range(20) for name in ("test_fast", "test_slow")]

    changes = compare_runs(document(run(1.0)), document(run(1.0)), resamples=200)
    accuracy = next(c for c in changes if c.metric == "accuracy" and c.scope == "m@cpu")
    joules = next(c for c in changes if c.metric == "joules" and c.scope == "m@cpu")
    assert accuracy.queries == 40 and (accuracy.baseline, accuracy.current) == (0.5, 0.5) and not accuracy.significant
    assert joules.baseline == joules.current == pytest.approx(50.0) and joules.relative == 0.0


def test_windows_of_unknown_energy_stay_out_of_compared_energy():
    from pytest_ipw.history.compare import compare_runs

    before = [energy_record(f"q{i}") for i in range(20)]
    after = [energy_record(f"q{i}", joules=0.0, active=0.0, flags=("sensor-did-not-update",)) if i < 5
             else energy_record(f"q{i}") for i in range(20)]
    changes = compare_runs(document(before), document(after), resamples=200)
    joules = next(c for c in changes if c.metric == "joules" and c.scope == "m@cpu")
    accuracy = next(c for c in changes if c.metric == "accuracy" and c.scope == "m@cpu")
    assert joules.queries == 15 and joules.relative == 0.0  # a stale counter's 0 J is no saving
    assert accuracy.queries == 20


def test_a_run_compared_with_a_baseline_on_another_basis_fails_with_the_fix(project):
    pytester, good = project
    # the fixed meter, with an idle baseline (--ipw-energy=active needs one)
    pytester.makeconftest(fixed_meter_conftest(2.0).replace("    return meter\n",
                                                            "    meter.measure_idle(0.0, sleep=lambda s: None)\n"
                                                            "    return meter\n"))
    assert run(pytester, good, "--ipw-autosave", "--ipw-idle-seconds=0.2").ret == 0
    result = run(pytester, good, "--ipw-compare", "--ipw-idle-seconds=0.2", "--ipw-energy=active")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*IPW COMPARE FAILED: the baseline's energy figures use TOTAL energy and this run's "
                                 "use ACTIVE energy (--ipw-energy)*Rerun with --ipw-energy=total*"])
