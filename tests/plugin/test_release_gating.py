"""Gating a model release (issue 16) and partial runs as baselines (issue 17), through pytester, the recorded
backend and the ``pytest-ipw`` command: aliases pair a release with the model it replaces, ``--pair`` pairs saved
runs offline, a gate with nothing to compare is loud, a partial run is passed over by ``latest`` and said when
named, and every comparison states how many queries it paired."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import fixed_meter_conftest

from pytest_ipw.cli import main as cli_main
from pytest_ipw.history.storage import load_run

N = 30
BENCHMARK = """
def test_answer(ipw_bench):
    ipw_bench()
"""
GATES = ("--ipw-compare-fail=accuracy:2pt", "--ipw-compare-fail=ipw:5%")


def queries() -> list[dict]:
    return [{"id": f"q-{i:03d}", "prompt": f"What is {i} + 1? Answer with just the number.", "answer": str(i + 1),
             "domain": "math", "split": "reasoning", "scorer": "numeric"} for i in range(N)]


def answers(path: Path, wrong_every: int | None = None, latency: float = 0.0) -> str:
    """Recorded answers of one release: all right, or wrong on every ``wrong_every``-th query."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        for i, query in enumerate(queries()):
            right = wrong_every is None or i % wrong_every
            handle.write(json.dumps({"prompt": query["prompt"], "response": str(i + 1 if right else i + 9),
                                     "tokens_in": 10, "tokens_out": 2, "latency_s": latency}) + "\n")
    return str(path)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries()))
    pytester.makeconftest(fixed_meter_conftest(2.0))  # every query 2 J over 0.5 s: no measurement noise
    pytester.makepyfile(test_bench=BENCHMARK)
    answers(pytester.path / "releases" / "assistant-v1.jsonl")
    answers(pytester.path / "releases" / "assistant-v2.jsonl", wrong_every=2)  # the release is worse
    return pytester


def run(pytester: pytest.Pytester, model: str | None, *args: str) -> pytest.RunResult:
    chosen = [f"--ipw-model={model}"] if model else []
    return pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-idle-seconds=0",
                              *chosen, *args)


def saved(pytester: pytest.Pytester) -> list[Path]:
    return sorted((pytester.path / ".ipw").glob("*/*.json"))


def lines_with(text: str, marker: str) -> list[str]:
    return [line for line in text.splitlines() if marker in line]


# -- issue 16: model releases ---------------------------------------------------------------------------------

def test_aliased_worse_release_fails_the_accuracy_and_ipw_gates_with_one_line_each(project: pytest.Pytester):
    assert run(project, "assistant=recorded:releases/assistant-v1.jsonl", "--ipw-autosave").ret == 0
    # the candidate's alias is pinned in the ini file, as a project would
    project.makeini('[pytest]\nipw_model = assistant=recorded:releases/assistant-v2.jsonl\n')
    result = run(project, None, "--ipw-compare", *GATES, "--ipw-json=candidate.json", "--ipw-report=report")
    assert result.ret == 1, result.stdout.str()
    out = result.stdout.str()
    regressions = lines_with(out, "IPW REGRESSION:")
    assert len(regressions) == 2, regressions
    result.stdout.fnmatch_lines([
        "*IPW REGRESSION: assistant@cpu: accuracy 1 -> 0.5 (-50.0 points, p=*) breaks --ipw-compare-fail=accuracy:2pt",
        "*IPW REGRESSION: assistant@cpu: ipw 0.25 -> 0.125 (-50.0%, 95% interval *) breaks --ipw-compare-fail=ipw:5%",
    ])
    # the coverage row: paired by the alias, each side's file and hash named
    v1, v2 = (project.path / "releases" / f"assistant-v{i}.jsonl" for i in (1, 2))
    sha = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (v1, v2)}
    result.stdout.fnmatch_lines([f"assistant@cpu*30*30*30*alias*assistant-v2.jsonl (sha256 {sha[v2][:12]})*"
                                 f"assistant-v1.jsonl (sha256 {sha[v1][:12]})"])
    assert "judged nothing" not in out and "only in" not in out
    document = json.loads((project.path / "candidate.json").read_text())
    source = document["settings"]["models"]["assistant-cpu"]["source"]
    assert source["alias"] is True and source["name"] == "assistant" and source["backend"] == "recorded"
    assert source["file_sha256"] == sha[v2] and Path(source["file"]).name == "assistant-v2.jsonl"
    assert document["settings"]["options"]["ipw_model"]["from"] == "ini"
    assert {r["model"] for r in document["records"]} == {"assistant"}
    coverage = document["comparison"]["coverage"]
    assert coverage == [{"system": "assistant@cpu", "current": "assistant@cpu", "baseline": "assistant@cpu",
                         "paired": N, "in_baseline": N, "in_current": N, "paired_by": "alias",
                         "current_source": f"recorded:releases/assistant-v2.jsonl (sha256 {sha[v2][:12]})",
                         "baseline_source": f"recorded:releases/assistant-v1.jsonl (sha256 {sha[v1][:12]})",
                         "current_model": "assistant", "baseline_model": "assistant"}]
    # the report's comparison section names what stands behind each side of the aliased pair
    page = (project.path / "report" / "index.html").read_text()
    section = page[page.index("Comparison with the baseline"):]
    assert sha[v1][:12] in section and sha[v2][:12] in section and "assistant-v1.jsonl" in section
    assert "IPW REGRESSION: assistant@cpu: accuracy 1 -&gt; 0.5" in section
    summary = (project.path / "report" / "summary.md").read_text()
    assert "## Comparison with the baseline" in summary and sha[v1][:12] in summary


def test_unaliased_release_under_a_new_name_warns_and_fails_when_a_baseline_is_required(project: pytest.Pytester):
    assert run(project, "recorded:releases/assistant-v1.jsonl", "--ipw-autosave").ret == 0
    plain = run(project, "recorded:releases/assistant-v2.jsonl", "--ipw-compare", *GATES)
    assert plain.ret == 0, plain.stdout.str()
    out = plain.stdout.str()
    plain.stdout.fnmatch_lines([
        "*IPW COMPARE WARNING: --ipw-compare-fail=accuracy:2pt, --ipw-compare-fail=ipw:5% judged nothing: no model "
        "× accelerator has queries in both runs (*/0001_* has assistant-v1@cpu; this run has assistant-v2@cpu); "
        "name both releases with one alias (--ipw-model=NAME=SPEC, ini key ipw_model), or compare the saved runs "
        "offline: pytest-ipw compare BASELINE CURRENT --pair assistant-v2=assistant-v1",
    ])
    plain.stdout.fnmatch_lines(["*UnpairedGateWarning: --ipw-compare-fail=accuracy:2pt*judged nothing*"])
    # both systems listed, unpaired; no change row at all, so nothing reads "within noise"
    plain.stdout.fnmatch_lines(["assistant-v2@cpu*0*0*30*unpaired", "assistant-v1@cpu*0*30*0*unpaired"])
    assert "within noise" not in out and "IPW REGRESSION" not in out

    strict = run(project, "recorded:releases/assistant-v2.jsonl", "--ipw-compare", *GATES, "--ipw-require-baseline")
    assert strict.ret == 1
    strict.stdout.fnmatch_lines(["*IPW COMPARE FAILED: --ipw-compare-fail=accuracy:2pt, --ipw-compare-fail=ipw:5% "
                                 "judged nothing*(and --ipw-require-baseline is set)"])
    assert not lines_with(strict.stdout.str(), "IPW COMPARE WARNING")  # said once, as the failure
    as_error = run(project, "recorded:releases/assistant-v2.jsonl", "--ipw-compare", *GATES,
                   "-W", "error::pytest_ipw.UnpairedGateWarning")
    assert as_error.ret == 1
    as_error.stdout.fnmatch_lines(["*IPW WARNING AS ERROR: UnpairedGateWarning: *judged nothing*"])


def test_pair_pairs_saved_runs_offline(project: pytest.Pytester, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch):
    assert run(project, "recorded:releases/assistant-v1.jsonl", "--ipw-autosave").ret == 0
    assert run(project, "recorded:releases/assistant-v2.jsonl", "--ipw-autosave").ret == 0
    monkeypatch.chdir(project.path)
    capsys.readouterr()
    gates = ["--fail=accuracy:2pt", "--fail=ipw:5%"]
    assert cli_main(["compare", "1", "2", "--pair", "assistant-v2=assistant-v1", *gates]) == 1
    out, err = capsys.readouterr()
    (row,) = [line for line in out.splitlines() if line.startswith("assistant-v2@cpu vs assistant-v1")]
    assert row.split()[3:7] == ["30", "30", "30", "--pair"] and "assistant-v2.jsonl" in row and "sha256" in row
    regressions = lines_with(err, "IPW REGRESSION")
    assert len(regressions) == 2
    assert regressions[0].startswith("IPW REGRESSION: assistant-v2@cpu: accuracy 1 -> 0.5 (-50.0 points")
    assert regressions[1].startswith("IPW REGRESSION: assistant-v2@cpu: ipw 0.25 -> 0.125 (-50.0%")

    assert cli_main(["compare", "1", "2", *gates]) == 0  # not paired: loud, not a pass in silence
    out, err = capsys.readouterr()
    assert "within noise" not in out
    assert lines_with(err, "IPW COMPARE WARNING: --fail=accuracy:2pt, --fail=ipw:5% judged nothing")
    assert "pair them: --pair assistant-v2=assistant-v1" in err
    assert cli_main(["compare", "1", "2", *gates, "--require-baseline"]) == 1
    assert "IPW COMPARE FAILED: --fail=accuracy:2pt, --fail=ipw:5% judged nothing" in capsys.readouterr().err

    assert cli_main(["compare", "1", "2", "--pair", "assistant-v3=assistant-v1"]) == 2
    err = capsys.readouterr().err
    assert "--pair assistant-v3=assistant-v1: " in err and "has no model 'assistant-v3' (it has assistant-v2)" in err
    assert cli_main(["compare", "1", "2", "--pair", "assistant-v2"]) == 2
    assert "is not NEW=OLD" in capsys.readouterr().err
    assert cli_main(["compare", "1", "2", "--pair", "assistant-v2=assistant-v1", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["coverage"][0]["paired_by"] == "--pair" and document["coverage"][0]["paired"] == N


# -- issue 17: partial runs -----------------------------------------------------------------------------------

def test_a_real_interrupted_run_is_saved_partial_and_latest_skips_it(project: pytest.Pytester,
                                                                      capsys: pytest.CaptureFixture[str],
                                                                      monkeypatch: pytest.MonkeyPatch):
    slow = answers(project.path / "releases" / "slow.jsonl", latency=0.1)
    model = f"--ipw-model=assistant=recorded:{slow}"
    assert run(project, None, model, "--ipw-autosave").ret == 0  # 0001: complete
    journal = project.path / "interrupted.jsonl"
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl",
               "--ipw-idle-seconds=0", model, "--ipw-autosave", f"--ipw-journal={journal.name}"]
    with (project.path / "interrupted.out").open("w") as output:
        process = subprocess.Popen(command, cwd=project.path, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if journal.exists() and len(journal.read_text().splitlines()) >= 1 + 6:
                break
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=60) == pytest.ExitCode.INTERRUPTED
    interrupted_out = (project.path / "interrupted.out").read_text()
    first, second = saved(project)
    partial = load_run(second)
    done = len(partial["records"])
    assert partial["partial"] is True and 6 <= done < N and partial["expected_records"] == N
    assert f"compare: saved as a PARTIAL run ({done} of {N} queries finished)" in interrupted_out

    # the default selector passes over it, and says so
    result = run(project, None, model, "--ipw-compare", "--ipw-compare-fail=accuracy:2pt", "--ipw-require-baseline")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines([
        f"compared with */{first.stem} (paired by query*",
        f"compare: skipped 1 partial run (*/{second.stem}: {done} of {N} queries); compared with the newest "
        f"complete run, */{first.stem}",
    ])
    # named explicitly, it is compared, with a warning line and a PartialBaselineWarning, and its coverage said
    explicit = run(project, None, model, "--ipw-compare=2", "--ipw-compare-fail=accuracy:2pt")
    assert explicit.ret == 0
    explicit.stdout.fnmatch_lines([
        f"compared with */{second.stem} *",
        f"assistant@cpu*{done}*{done}*{N}*alias*",
        f"compare: --ipw-compare-fail=accuracy:2pt on assistant@cpu: gate judged on {done} paired queries of {N} "
        f"({done} in the baseline, {N} in this run)",
        f"IPW COMPARE WARNING: baseline */{second.stem} is a PARTIAL run ({done} of {N} queries finished)*",
    ])
    explicit.stdout.fnmatch_lines(["*PartialBaselineWarning: baseline*is a PARTIAL run*"])
    # `pytest-ipw list` marks it
    monkeypatch.chdir(project.path)
    capsys.readouterr()
    assert cli_main(["list"]) == 0
    listing = capsys.readouterr().out
    (row,) = lines_with(listing, second.stem)
    assert f"PARTIAL: {done} of {N} queries" in row
    assert "PARTIAL" not in lines_with(listing, first.stem)[0]
    # offline, `latest` as the baseline passes over it too
    assert cli_main(["compare", "latest", "2"]) == 0
    offline = capsys.readouterr().out
    assert "skipped 1 partial run (" in offline and f"{second.stem}: {done} of {N} queries" in offline


INTERRUPTING = ("def test_answer(ipw_bench, ipw_query):\n"
                "    ipw_bench()\n"
                "    if ipw_query.id == 'q-004':\n"
                "        raise KeyboardInterrupt\n")


def test_save_partial_no_refuses_and_a_lone_partial_run_is_no_baseline(project: pytest.Pytester):
    model = "assistant=recorded:releases/assistant-v1.jsonl"
    project.makepyfile(test_bench=INTERRUPTING)
    refused = project.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-idle-seconds=0",
                                f"--ipw-model={model}", "--ipw-autosave", "--ipw-save-partial=no", no_reraise_ctrlc=True)
    assert refused.ret == pytest.ExitCode.INTERRUPTED
    refused.stdout.fnmatch_lines([f"compare: not saved: this run is PARTIAL (5 of {N} queries finished) and "
                                  "--ipw-save-partial=no"])
    assert saved(project) == []
    project.makeini("[pytest]\nipw_save_partial = no\n")  # the ini key reads the same
    from_ini = project.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-idle-seconds=0",
                                 f"--ipw-model={model}", "--ipw-autosave", no_reraise_ctrlc=True)
    from_ini.stdout.fnmatch_lines(["compare: not saved: this run is PARTIAL*--ipw-save-partial=no"])
    assert saved(project) == []
    project.makeini("[pytest]\nipw_save_partial = perhaps\n")
    bad = run(project, model, "--ipw-autosave")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*ini key ipw_save_partial: cannot read 'perhaps' (expected yes|no)*"])
    project.makeini("[pytest]\n")
    kept = project.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-idle-seconds=0",
                             f"--ipw-model={model}", "--ipw-autosave", no_reraise_ctrlc=True)
    kept.stdout.fnmatch_lines(["compare: saved as a PARTIAL run (5 of 30 queries finished)*"])
    (only,) = saved(project)
    project.makepyfile(test_bench=BENCHMARK)
    result = run(project, model, "--ipw-compare", "--ipw-require-baseline")
    assert result.ret == 1
    result.stdout.fnmatch_lines([f"*IPW COMPARE FAILED: no saved run matches --ipw-compare=latest for machine id * "
                                 f"(skipped 1 partial run (*/{only.stem}: 5 of 30 queries); name one by its number "
                                 "to compare with it anyway)*"])


def test_a_gate_on_fewer_pairs_than_either_run_says_it(project: pytest.Pytester):
    model = "assistant=recorded:releases/assistant-v1.jsonl"
    assert run(project, model, "--ipw-autosave", "--ipw-limit=12").ret == 0
    result = run(project, model, "--ipw-compare", "--ipw-compare-fail=accuracy:2pt", "--ipw-compare-fail=coverage:1pt")
    assert result.ret == 0
    result.stdout.fnmatch_lines([
        "assistant@cpu*12*12*30*alias*",
        "compare: --ipw-compare-fail=accuracy:2pt on assistant@cpu: gate judged on 12 paired queries of 30 "
        "(12 in the baseline, 30 in this run)",
        "compare: --ipw-compare-fail=coverage:1pt: gate judged on 12 paired queries of 30*",
    ])


def test_same_name_pairs_quietly(project: pytest.Pytester):
    model = "recorded:releases/assistant-v1.jsonl"
    assert run(project, model, "--ipw-autosave").ret == 0
    result = run(project, model, "--ipw-compare", *GATES, "--ipw-require-baseline")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["assistant-v1@cpu*30*30*30*same name"])
    assert "gate judged on" not in result.stdout.str() and "IPW COMPARE" not in result.stdout.str()
