"""The progress line: its figures (pure, on a fake clock) and how it reaches pytest's output (pytester, in a
terminal and in a log, per query and per domain item, with xdist and with --ipw-resume)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from support import fixed_meter_conftest

import pytest_ipw.run.progress as progress_module
from pytest_ipw.run.progress import ProgressWriter, RunProgress, format_duration

N = 8
BENCHMARK = "def test_answer(ipw_bench):\n    ipw_bench()\n"
# makes pytest's terminal reporter believe it writes to a terminal (pytester captures into a file)
AS_TERMINAL = '''
import pytest

@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    reporter.isatty = (lambda: True) if callable(reporter.isatty) else True
'''
# every record is a refresh: the output then does not depend on how fast this machine is
NO_WAIT = "import pytest_ipw.run.progress as _progress\n_progress.LOG_REFRESH_S = _progress.TERMINAL_REFRESH_S = 0.0\n"


def record(correct: bool = True, joules: float | None = 2.0, watts: float | None = 4.0,
           provenance: str = "measured", model: str = "m", accelerator: str = "cpu") -> dict:
    return {"model": model, "accelerator": accelerator, "correct": correct, "joules": joules, "watts": watts,
            "provenance": provenance, "energy_basis": "total", "seconds": 0.5}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- figures


def test_line_counts_accuracy_energy_and_eta():
    clock = Clock()
    progress = RunProgress(total=10, started=0.0, clock=clock)
    clock.now = 4.0
    progress.add(record(correct=True))
    progress.add(record(correct=False, joules=4.0, watts=6.0))
    assert progress.eta_s() == pytest.approx(16.0)  # 2 queries in 4 s, 8 left
    assert progress.line() == ("ipw: 2/10 queries (20%) | 0:04 elapsed, ETA 0:16 | "
                               "m@cpu accuracy 0.50, 3 J/query 5 W")


def test_each_model_accelerator_has_its_figures_and_an_estimate_says_so():
    progress = RunProgress(total=4, started=0.0, clock=Clock())
    progress.add(record(model="a"))
    progress.add(record(model="b", accelerator="h100", provenance="estimated", correct=False))
    line = progress.line()
    assert "a@cpu accuracy 1.00, 2 J/query 4 W |" in line
    assert line.endswith("b@h100 accuracy 0.00, 2 J/query 4 W (ESTIMATED)")


def test_a_remote_model_without_energy_shows_none():
    progress = RunProgress(total=2, started=0.0, clock=Clock())
    progress.add(record(joules=None, watts=None))
    assert progress.line().endswith("m@cpu accuracy 1.00, no energy figure")


def test_resumed_queries_count_as_done_but_not_towards_the_rate():
    clock = Clock()
    progress = RunProgress(total=10, started=0.0, clock=clock)
    for _ in range(5):
        progress.add(record(), resumed=True)
    clock.now = 3.0
    progress.add(record())
    assert progress.eta_s() == pytest.approx(12.0)  # 1 fresh query in 3 s, 4 left
    assert progress.line().startswith("ipw: 6/10 queries (60%), 5 resumed | 0:03 elapsed, ETA 0:12")


def test_unknown_total_and_no_fresh_query_yet():
    progress = RunProgress(total=0, started=0.0, clock=Clock())
    assert progress.line() == "ipw: 0/? queries | 0:00 elapsed"
    progress.add(record(), resumed=True)
    assert progress.eta_s() is None


@pytest.mark.parametrize("seconds, text", [(0, "0:00"), (54.4, "0:54"), (723, "12:03"), (3729, "1:02:09")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


class FakeReporter:
    """The part of pytest's TerminalReporter the writer uses."""

    def __init__(self, isatty: bool, width: int = 200):
        self.isatty = isatty
        self.verbosity = 0
        self.out: list[tuple[str, str]] = []
        self._tw = type("TW", (), {"fullwidth": width, "width_of_current_line": 0})()

    def write_line(self, line: str) -> None:
        self.out.append(("line", line))

    def ensure_newline(self) -> None:
        pass

    def rewrite(self, line: str, erase: bool = False) -> None:
        self.out.append(("rewrite", line))
        self._tw.width_of_current_line = -1  # a row holding a carriage return, as pytest measures it

    def write(self, text: str) -> None:
        self.out.append(("write", text))
        self._tw.width_of_current_line = 0


def test_log_output_writes_one_line_per_interval_and_the_last_figures_at_the_end():
    clock = Clock()
    reporter = FakeReporter(isatty=False)
    writer = ProgressWriter(reporter, RunProgress(total=3, started=0.0, clock=clock))
    writer.progress.add(record())
    writer.update()
    assert reporter.out == []  # not due yet: a short run adds nothing
    clock.now = progress_module.LOG_REFRESH_S
    writer.progress.add(record())
    writer.update()
    clock.now += 1.0
    writer.progress.add(record())
    writer.update()  # all done: the last line waits for the end of the session (after the last dot)
    assert [kind for kind, _ in reporter.out] == ["line"]
    writer.finish()
    writer.finish()
    assert [text.split(" |")[0] for _, text in reporter.out] == ["ipw: 2/3 queries (67%)", "ipw: 3/3 queries (100%)"]


def test_terminal_output_is_rewritten_in_place_fits_the_width_and_ends_its_row():
    clock = Clock()
    reporter = FakeReporter(isatty=True, width=60)
    writer = ProgressWriter(reporter, RunProgress(total=2, started=0.0, clock=clock))
    writer.progress.add(record())
    writer.update()  # at once in a terminal
    writer.progress.add(record())
    writer.update()  # the last query: the final figures now, before pytest's [100%]
    kinds = [kind for kind, _ in reporter.out]
    assert kinds == ["write", "rewrite", "rewrite", "write"]  # a row of its own, rewritten, then closed
    assert all(len(text) < 60 for kind, text in reporter.out if kind == "rewrite")
    assert reporter.out[2][1].startswith("ipw: 2/2 queries (100%)") and reporter.out[2][1].endswith("...")


# --------------------------------------------------------------------------- through pytest


@pytest.fixture
def refresh(monkeypatch):
    """Seconds between refreshes in this process: 0 makes every record a refresh, so the output does not
    depend on how fast this machine is."""
    def set_to(seconds: float) -> None:
        monkeypatch.setattr(progress_module, "LOG_REFRESH_S", seconds)
        monkeypatch.setattr(progress_module, "TERMINAL_REFRESH_S", seconds)

    set_to(0.0)
    return set_to


def write_project(root: Path, terminal: bool = False, meter: bool = True, subprocess: bool = False) -> list[str]:
    domains = ("alpha", "beta", "gamma")
    queries = [{"id": f"q-{i}", "prompt": f"What is {i} + 1?", "answer": str(i + 1), "domain": domains[i % 3],
                "split": "reasoning", "scorer": "numeric"} for i in range(N)]
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries) + "\n")
    with (root / "answers.jsonl").open("w") as handle:
        for i, query in enumerate(queries):  # every fourth answer wrong: accuracy 0.75
            handle.write(json.dumps({"prompt": query["prompt"], "response": str(i + 1 if i % 4 else i)}) + "\n")
    conftest = (fixed_meter_conftest() if meter else "") + (NO_WAIT if subprocess else "") + (AS_TERMINAL if terminal else "")
    (root / "conftest.py").write_text(conftest)
    (root / "test_bench.py").write_text(BENCHMARK)
    return ["-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-idle-seconds=0",
            "--ipw-model=recorded:answers.jsonl"]


def progress_lines(output: str) -> list[str]:
    return [line.strip() for line in re.split(r"[\r\n]", output) if line.strip().startswith("ipw: ")]


def counts(lines: list[str]) -> list[str]:
    return [line.split(" queries")[0][len("ipw: "):] for line in lines]


def test_in_a_log_one_line_per_refresh_and_the_last_figures(pytester: pytest.Pytester, refresh):
    args = write_project(pytester.path)
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=N)
    lines = progress_lines(result.stdout.str())
    assert counts(lines) == [f"{i}/{N}" for i in range(1, N + 1)]
    assert lines[-1].startswith(f"ipw: {N}/{N} queries (100%) | ")
    assert lines[-1].endswith("answers@cpu accuracy 0.75, 2 J/query 4 W")  # the fixed meter: measured
    assert re.search(r"test_bench.py \.+", result.stdout.str())  # pytest's dots stay in a log


def test_an_estimate_is_labelled(pytester: pytest.Pytester, refresh):
    args = write_project(pytester.path, meter=False)
    result = pytester.runpytest(*args, "--ipw-meter=estimate", "--ipw-limit=3")
    assert progress_lines(result.stdout.str())[-1].endswith("(ESTIMATED)")


def test_in_a_terminal_the_line_is_rewritten_in_place_without_dots(pytester: pytest.Pytester):
    args = write_project(pytester.path, terminal=True, subprocess=True)
    # a process of its own, to see the raw output (pytester's captured lines split at carriage returns)
    # (bytes: text mode would turn each carriage return into a newline)
    done = subprocess.run([sys.executable, "-m", "pytest", *args], cwd=pytester.path, capture_output=True,
                          timeout=300, env={k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"})
    output = done.stdout.decode()
    assert done.returncode == 0, output + done.stderr.decode()
    assert counts(progress_lines(output)) == [f"{i}/{N}" for i in range(1, N + 1)]
    rows = [line for line in output.split("\n") if "ipw: " in line]
    assert len(rows) == 1 and rows[0].count("\r") == N  # one row, rewritten for each query
    assert not re.search(r"test_bench.py \.", output)  # no pass dots beside the line
    assert f"{N} passed" in output


def test_one_item_running_many_queries_is_not_silent(pytester: pytest.Pytester, refresh):
    args = write_project(pytester.path)
    result = pytester.runpytest(*args, "--ipw-granularity=domain")
    result.assert_outcomes(passed=3)
    assert counts(progress_lines(result.stdout.str())) == [f"{i}/{N}" for i in range(1, N + 1)]


@pytest.mark.parametrize("silence", [["--ipw-progress=off"], ["-q", "-q"]])
def test_silenced(pytester: pytest.Pytester, refresh, silence):
    args = write_project(pytester.path)
    result = pytester.runpytest(*args, *silence)
    assert result.ret == pytest.ExitCode.OK  # (-q -q prints no outcome line to parse)
    assert progress_lines(result.stdout.str()) == []


def test_a_short_run_adds_nothing_unless_asked(pytester: pytest.Pytester, refresh):
    refresh(1e9)  # no refresh falls due during the run
    args = write_project(pytester.path)
    assert progress_lines(pytester.runpytest(*args).stdout.str()) == []
    lines = progress_lines(pytester.runpytest(*args, "-q", "-q", "--ipw-progress=on").stdout.str())
    assert counts(lines) == [f"{N}/{N}"]  # on: the last figures, even at -q -q


def test_resume_counts_what_is_already_done(pytester: pytest.Pytester, refresh):
    args = write_project(pytester.path)
    pytester.runpytest(*args, "--ipw-journal=j.jsonl").assert_outcomes(passed=N)
    result = pytester.runpytest(*args, "--ipw-journal=j.jsonl", "--ipw-resume")
    result.assert_outcomes(passed=N)
    lines = progress_lines(result.stdout.str())
    assert lines[-1].startswith(f"ipw: {N}/{N} queries (100%), {N} resumed | ")


def test_xdist_controller_aggregates_the_workers(pytester: pytest.Pytester):
    args = write_project(pytester.path, subprocess=True)
    result = pytester.runpytest_subprocess(*args, "-n", "2", "-p", "no:benchmark")
    result.assert_outcomes(passed=N)
    lines = progress_lines(result.stdout.str())
    assert counts(lines) == [f"{i}/{N}" for i in range(1, N + 1)]  # the total is known from the first report
    assert lines[-1].endswith("answers@cpu accuracy 0.75, 2 J/query 4 W")
