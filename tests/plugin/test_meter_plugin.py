"""The meters wired into a real pytest run (pytester): recorded answers, a replayed power trace, the idle
baseline, total vs active energy, and provenance as the trace declares it."""

from __future__ import annotations

import json

import pytest

QUERIES = [
    {"id": "add-1", "prompt": "What is 2 + 2? Answer with just the number.", "answer": "4", "domain": "math",
     "split": "reasoning", "scorer": "numeric"},
    {"id": "cap-1", "prompt": "What is the capital of France? Answer with one word.", "answer": "Paris",
     "domain": "geo", "split": "chat", "scorer": "exact"},
    {"id": "add-2", "prompt": "What is 3 + 5? Answer with just the number.", "answer": "8", "domain": "math",
     "split": "reasoning", "scorer": "numeric"},
]
ANSWERS = {"add-1": "4", "cap-1": "Paris", "add-2": "9"}
IDLE_W, BUSY_W, IDLE_S = 20.0, 80.0, 0.3


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in QUERIES) + "\n")
    (pytester.path / "answers.jsonl").write_text("\n".join(
        json.dumps({"prompt": q["prompt"], "response": ANSWERS[q["id"]], "tokens_in": 10, "tokens_out": 2,
                    "latency_s": 0.06}) for q in QUERIES) + "\n")
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    return pytester


def write_trace(pytester: pytest.Pytester, provenance: str | None, domain: str = "system") -> str:
    """20 W while the idle baseline runs (its first IDLE_S seconds), then 80 W, sampled every 10 ms."""
    lines = [f"# provenance: {provenance}", "# sensor: wall meter (test)", f"# domain: {domain}"] if provenance else []
    lines.append("timestamp,watts")
    for k in range(6001):  # 60 s
        t = k / 100
        lines.append(f"{t:.2f},{IDLE_W if t <= IDLE_S else BUSY_W}")
        if abs(t - IDLE_S) < 1e-9:
            lines.append(f"{t:.2f},{BUSY_W}")  # the step, at one instant
    (pytester.path / "trace.csv").write_text("\n".join(lines) + "\n")
    return "trace.csv"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", "--ipw-model=recorded:answers.jsonl",
                              "--ipw-json=r.json", "--ipw-warmup=0", *args)


def test_replayed_measurement_is_reported_as_measured_with_idle_and_active_energy(project):
    trace = write_trace(project, "measured")
    result = run(project, f"--ipw-meter=replay:{trace}", f"--ipw-idle-seconds={IDLE_S}")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "*answers*cpu*3*0.667*MEASURED system",
        "energy: MEASURED by replay: trace.csv (power samples, integrated; recorded by wall meter (test))",
        "energy: IPW, IPJ, J/query and W use TOTAL energy (idle baseline * W, measured by the same meter before the "
        "queries; idle-subtracted energy is joules_active in --ipw-json, --ipw-energy=active uses it)",
    ])
    assert "ESTIMATE" not in result.stdout.str()
    document = json.loads((project.path / "r.json").read_text())
    energy = document["settings"]["energy"]
    assert energy == {"basis": "total", "idle_seconds": IDLE_S, "sample_hz": 20.0, "meter": f"replay:{trace}"}
    [meter_info] = document["settings"]["meters"].values()
    baseline = meter_info["idle_baseline"]
    assert baseline["provenance"] == "measured" and baseline["seconds"] >= IDLE_S
    assert IDLE_W <= baseline["watts"] < BUSY_W  # the baseline saw the idle part of the trace
    for record in document["records"]:
        assert record["provenance"] == "measured" and record["energy_basis"] == "total"
        assert record["watts"] == pytest.approx(BUSY_W)  # queries ran after the idle part
        assert record["idle_watts"] == pytest.approx(baseline["watts"])
        assert record["joules_active"] == pytest.approx(record["joules"] - record["idle_watts"] * record["seconds"])
        assert record["joules_active"] > 0
    [summary] = document["summary"]
    assert summary["energy_basis"] == "total" and summary["provenance"] == "measured"
    assert summary["mean_watts"] == pytest.approx(BUSY_W)
    assert summary["idle_watts"] == pytest.approx(baseline["watts"])


def test_trace_without_declared_provenance_is_reported_as_estimated(project):
    trace = write_trace(project, None)
    result = run(project, f"--ipw-meter=replay:{trace}", "--ipw-idle-seconds=0")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines([
        "*answers*cpu*ESTIMATED system",
        "energy: ESTIMATED by replay: trace.csv (power samples, integrated; provenance not declared in the trace: "
        "treated as an estimate)",
        "*TOTAL energy (no idle baseline (--ipw-idle-seconds=0))",
        "*every figure above is an ESTIMATE*",
    ])
    assert "MEASURED" not in result.stdout.str()
    record = json.loads((project.path / "r.json").read_text())["records"][0]
    assert record["provenance"] == "estimated" and record["idle_watts"] is None and record["joules_active"] is None


def test_active_energy_basis_is_used_and_said(project):
    trace = write_trace(project, "measured")
    result = run(project, f"--ipw-meter=replay:{trace}", f"--ipw-idle-seconds={IDLE_S}", "--ipw-energy=active")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["*MEASURED system (active)", "energy: IPW, IPJ, J/query and W use ACTIVE energy*"])
    document = json.loads((project.path / "r.json").read_text())
    records, [summary] = document["records"], document["summary"]
    assert document["settings"]["energy"]["basis"] == "active" and summary["energy_basis"] == "active"
    assert summary["mean_joules"] == pytest.approx(sum(r["joules_active"] for r in records) / 3)
    assert summary["mean_watts"] < BUSY_W  # the idle power is taken off
    assert summary["ipw"] == pytest.approx(summary["accuracy"] / summary["mean_watts"])


def test_energy_part_provenance_is_listed_for_a_sum(project):
    trace = write_trace(project, "measured", domain="gpu")
    result = run(project, f"--ipw-meter=replay:{trace}+estimate", "--ipw-idle-seconds=0")
    result.assert_outcomes(passed=3)
    # the sum holds an estimate, so the whole is ESTIMATED, each part keeps its own label, and the mix is said
    result.stdout.fnmatch_lines([
        "*answers*cpu*ESTIMATED gpu+cpu",
        "energy:   part ESTIMATED cpu by estimate: psutil CPU utilisation*",
        "energy:   part MEASURED gpu by replay: trace.csv*",
        "*MIXES measured and estimated*",
    ])
    record = json.loads((project.path / "r.json").read_text())["records"][0]
    assert [p["provenance"] for p in record["energy_parts"]] == ["measured", "estimated"]


@pytest.mark.parametrize("args, message", [
    (("--ipw-energy=active", "--ipw-idle-seconds=0"), "--ipw-energy=active subtracts the idle baseline"),
    (("--ipw-sample-hz=0",), "--ipw-sample-hz must be positive"),
    (("--ipw-meter=wattmeter",), "unknown meter 'wattmeter'"),
    (("--ipw-meter=replay:missing.csv",), "power trace missing.csv does not exist"),
    (("--ipw-meter=prometheus+http://127.0.0.1:9/metrics",), "cannot reach http://127.0.0.1:9/metrics"),
])
def test_meter_usage_errors_are_one_line(project, args, message):
    result = run(project, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_trace_too_short_for_the_run_stops_with_the_fix(project):
    (project.path / "short.csv").write_text("# provenance: measured\ntimestamp,watts\n0,10\n0.1,10\n")
    result = run(project, "--ipw-meter=replay:short.csv", "--ipw-idle-seconds=0.2")
    assert "record a longer trace" in result.stdout.str() + result.stderr.str()
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
