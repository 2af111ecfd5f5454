"""Gating on real CI runners: the machine id leaves out the host name, ini keys, warning categories,
storage in the rootdir, ``pytest-ipw machine-id`` and the JUnit record property (issue 10)."""

from __future__ import annotations

import json
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support import BENCHMARK, REPO, addition_queries, fixed_meter_conftest, recorded_answers

from pytest_ipw.cli import main as cli_main
from pytest_ipw.history.storage import load_run

N = 20
def queries() -> list[dict]:
    return addition_queries(N)


def answers(path: Path, wrong_every: int | None = None) -> str:
    return recorded_answers(path, queries(), wrong_every, wrong_by=8)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    (pytester.path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries()))
    pytester.makepyfile(test_bench=BENCHMARK)
    # one model name ("model"), two releases of its answers: a runtime release that got worse
    answers(pytester.path / "good" / "model.jsonl")
    answers(pytester.path / "worse" / "model.jsonl", wrong_every=3)
    return pytester


def run(pytester: pytest.Pytester, model: str, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", f"--ipw-model=recorded:{model}",
                              "--ipw-idle-seconds=0", *args)


GATE = ("--ipw-autosave", "--ipw-compare", "--ipw-compare-fail=accuracy:2pt", "--ipw-require-baseline")


def test_two_jobs_on_ephemeral_runners_find_each_other(project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Two CI jobs on the same hardware under different host names share one storage folder: the second
    compares with the first, and a degraded second fails its gate."""
    project.makeconftest(fixed_meter_conftest(2.0))
    monkeypatch.setattr(socket, "gethostname", lambda: "runner-7f9c2-abcde")
    first = run(project, "good/model.jsonl", "--ipw-autosave")
    assert first.ret == 0
    monkeypatch.setattr(socket, "gethostname", lambda: "runner-1a2b3-zyxwv")
    second = run(project, "worse/model.jsonl", *GATE)
    assert second.ret == 1, second.stdout.str()
    second.stdout.fnmatch_lines(["compared with *0001_*", "*IPW REGRESSION: *accuracy*"])
    saved = sorted((project.path / ".ipw").glob("*/*.json"))
    assert len(saved) == 2 and saved[0].parent == saved[1].parent  # one machine id for both jobs
    hosts = {load_run(p)["machine_info"]["node"] for p in saved}
    assert hosts == {"runner-7f9c2-abcde", "runner-1a2b3-zyxwv"}


def test_no_baseline_names_the_facts_that_differ(project: pytest.Pytester):
    project.makeconftest(fixed_meter_conftest(2.0))
    assert run(project, "good/model.jsonl", "--ipw-autosave").ret == 0
    (saved,) = (project.path / ".ipw").glob("*/*.json")
    document = load_run(saved)
    identity = document["machine_identity"]
    identity["meters"][0][3] = "550.54"  # the driver, as if saved before a driver upgrade
    identity["cpu"] = "Intel Xeon Platinum 8480+"
    other = project.path / ".ipw" / "gpu-old-driver"
    other.mkdir()
    (other / saved.name).write_text(json.dumps(document))
    saved.unlink()
    result = run(project, "good/model.jsonl", "--ipw-compare")
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*nearest saved machine id is gpu-old-driver, which differs: CPU * vs Intel Xeon "
                                 "Platinum 8480+; driver None vs 550.54*--ipw-machine-id*"])
    assert "differ in hardware or meter" not in result.stdout.str()


def test_machine_id_option_and_ini_key_pin_the_id(project: pytest.Pytester):
    project.makeconftest(fixed_meter_conftest(2.0))
    assert run(project, "good/model.jsonl", "--ipw-autosave", "--ipw-machine-id=ci-gpu-box").ret == 0
    project.makeini("[pytest]\nipw_machine_id = ci-gpu-box\n")
    result = run(project, "good/model.jsonl", "--ipw-compare", "--ipw-require-baseline", "--ipw-json=r.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["compared with ci-gpu-box/0001_*"])
    options = json.loads((project.path / "r.json").read_text())["settings"]["options"]
    assert options["ipw_machine_id"] == {"value": "ci-gpu-box", "from": "ini"}
    bad = run(project, "good/model.jsonl", "--ipw-machine-id=../escape")
    assert bad.ret == 4
    bad.stderr.fnmatch_lines(["*pytest-ipw:*a name is 1-64 letters*"])


def test_ini_keys_set_options_and_the_command_line_wins(project: pytest.Pytester):
    project.makeconftest(fixed_meter_conftest(2.0))
    project.makefile(".toml", pyproject="""
[tool.pytest.ini_options]
ipw_model = "recorded:good/model.jsonl"
ipw_dataset = "queries.jsonl"
ipw_limit = "5"
ipw_idle_seconds = "0"
ipw_max_tokens = "32"
ipw_energy = "total"
ipw_min_accuracy = "0.5"
ipw_autosave = true
ipw_compare = "latest"
ipw_compare_fail = ["accuracy:2pt", "ipw:5%"]
""")
    result = project.runpytest("-p", "no:cacheprovider", "--ipw-json=r.json", "--ipw-limit=3")
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=3)
    document = json.loads((project.path / "r.json").read_text())
    options = document["settings"]["options"]
    assert options["ipw_limit"] == {"value": 3, "from": "command line"}
    assert options["ipw_max_tokens"] == {"value": 32, "from": "ini"}
    assert options["ipw_compare_fail"] == {"value": ["accuracy:2pt", "ipw:5%"], "from": "ini"}
    assert options["ipw_temperature"]["from"] == "default"
    assert document["settings"]["generation"]["max_tokens"] == 32
    assert len(list((project.path / ".ipw").glob("*/*.json"))) == 1  # ipw_autosave


@pytest.mark.parametrize("ini, message", [
    ("ipw_limit = many", "*ini key ipw_limit: cannot read 'many' (expected N)*"),
    ("ipw_energy = watts", "*ini key ipw_energy: 'watts' is not one of total, active*"),
    ("ipw_autosave = perhaps", "*ini key ipw_autosave*"),
    ("ipw_compare_fail = speed:5%\nipw_compare = latest", "*speed*"),
])
def test_a_bad_ini_value_is_one_clear_error(project: pytest.Pytester, ini: str, message: str):
    project.makeini(f"[pytest]\n{ini}\n")
    result = run(project, "good/model.jsonl")
    assert result.ret == 4
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_no_baseline_is_a_warning_that_a_filter_turns_into_a_failure(project: pytest.Pytester):
    project.makeconftest(fixed_meter_conftest(2.0))
    plain = run(project, "good/model.jsonl", "--ipw-compare")
    assert plain.ret == 0
    plain.stdout.fnmatch_lines(["*NoBaselineWarning: --ipw-compare=latest found no baseline*"])
    strict = run(project, "good/model.jsonl", "--ipw-compare", "-W", "error::pytest_ipw.NoBaselineWarning")
    assert strict.ret == 1
    strict.stdout.fnmatch_lines(["*IPW WARNING AS ERROR: NoBaselineWarning: --ipw-compare=latest found no baseline*"])


def test_estimated_energy_and_truncation_warnings_have_their_own_categories(project: pytest.Pytester):
    long_answers = project.path / "long.jsonl"
    with long_answers.open("w") as handle:
        for i, query in enumerate(queries()):
            handle.write(json.dumps({"prompt": query["prompt"], "response": str(i + 1), "tokens_in": 10,
                                     "tokens_out": 8, "finish_reason": "length"}) + "\n")
    result = run(project, "long.jsonl", "-W", "error::pytest_ipw.TruncatedAnswersWarning")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*IPW WARNING AS ERROR: TruncatedAnswersWarning: *answers hit --ipw-max-tokens*"])
    estimated = run(project, "good/model.jsonl", "-W", "error::pytest_ipw.IPWWarning")  # the family's base
    assert estimated.ret == 1
    estimated.stdout.fnmatch_lines(["*IPW WARNING AS ERROR: EstimatedEnergyWarning: energy of * is ESTIMATED*"])


def test_storage_defaults_to_the_rootdir_not_the_current_folder(project: pytest.Pytester):
    project.makeconftest(fixed_meter_conftest(2.0))
    project.makeini("[pytest]\n")
    sub = project.mkdir("sub")
    (sub / "test_inner.py").write_text(BENCHMARK)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(sub)
        result = project.runpytest("-p", "no:cacheprovider", f"--ipw-dataset={project.path / 'queries.jsonl'}",
                                   f"--ipw-model=recorded:{project.path / 'good' / 'model.jsonl'}", "--ipw-idle-seconds=0",
                                   "--ipw-autosave", "test_inner.py")
    assert result.ret == 0, result.stdout.str()
    assert list((project.path / ".ipw").glob("*/*.json")) and not (sub / ".ipw").exists()


def test_cli_machine_id_is_the_id_a_run_saves_under(project: pytest.Pytester, capsys: pytest.CaptureFixture[str]):
    # no meter override: the run and the command choose the same meter (the estimate, on a machine without one)
    assert run(project, "good/model.jsonl", "--ipw-autosave", "--ipw-meter=estimate").ret == 0
    (saved,) = (project.path / ".ipw").glob("*/*.json")
    capsys.readouterr()
    assert cli_main(["machine-id", "--meter=estimate"]) == 0
    assert capsys.readouterr().out.strip() == saved.parent.name
    assert cli_main(["machine-id", "--machine-id=pinned"]) == 0
    assert capsys.readouterr().out.strip() == "pinned"


def test_every_test_carries_its_record_in_junit_xml(project: pytest.Pytester):
    project.makeconftest(fixed_meter_conftest(2.0))
    assert run(project, "good/model.jsonl", "--ipw-limit=3", "--junitxml=junit.xml").ret == 0
    cases = ET.parse(project.path / "junit.xml").getroot().iter("testcase")
    records = []
    for case in cases:
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        records.append(json.loads(properties["ipw_record"]))
        assert properties["ipw_provenance"] == "measured"
    assert len(records) == 3 and all(r["joules"] == 2.0 for r in records)


def test_the_ci_recipes_use_only_declared_options_and_ini_keys():
    import re

    from pytest_ipw.options import declared_options, ini_name

    text = (REPO / "docs" / "ci.md").read_text(encoding="utf-8")
    flags = {spec.flag for _, spec in declared_options()}
    keys = {ini_name(f) for f, spec in declared_options() if spec.ini}
    used_flags = set(re.findall(r"--ipw-[a-z-]+[a-z]", text))
    used_keys = set(re.findall(r"\bipw_[a-z_]+[a-z]\b", text)) - {"ipw_bench", "ipw_query", "ipw_target",  # fixtures
                                                                   "ipw_record", "ipw_correct", "ipw_joules",
                                                                   "ipw_watts", "ipw_provenance", "ipw_meter",
                                                                   "ipw_latency_s", "ipw_tokens_out",
                                                                   "ipw_unscorable"}
    assert used_flags and used_flags <= flags, used_flags - flags
    assert used_keys and used_keys <= keys, used_keys - keys
