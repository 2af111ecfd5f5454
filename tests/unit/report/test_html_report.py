"""The report folder: through pytester (--ipw-report), from the CLI, and in a real headless browser."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from pytest_ipw.cli import main as cli_main
from pytest_ipw.core.errors import IPWUsageError
from pytest_ipw.report.html import write_report
from pytest_ipw.options import RunOptions

# The idle baseline measured before each model (2 s by default, where the option exists) only slows these runs.
IDLE_OFF = ["--ipw-idle-seconds=0"] if "idle_seconds" in {f.name for f in dataclasses.fields(RunOptions)} else []

PLANTED_SCRIPT = "<script>document.title='pwned'</script>"
PLANTED_IMG = "<img src=x onerror=\"document.title='pwned-img'\">"

QUERIES = [
    {"id": "add-1", "prompt": "What is 2 + 2? Answer with just the number.", "answer": "4", "domain": "math",
     "split": "reasoning", "scorer": "numeric"},
    {"id": "add-2", "prompt": "What is 3 + 5? Answer with just the number.", "answer": "8", "domain": "math",
     "split": "reasoning", "scorer": "numeric"},
    {"id": "cap-1", "prompt": "What is the capital of France? <b>Answer</b> with one word.", "answer": "Paris",
     "domain": "geo", "split": "chat", "scorer": "exact"},
]
SMALL = {"add-1": "4", "add-2": PLANTED_SCRIPT + " 7", "cap-1": "Paris"}
LARGE = {"add-1": "4", "add-2": "8", "cap-1": PLANTED_IMG}

BENCHMARK = """
def test_answer(ipw_bench):
    ipw_bench()
"""


def answers(path: Path, responses: dict[str, str]) -> str:
    path.write_text("".join(json.dumps({"prompt": q["prompt"], "response": responses[q["id"]], "tokens_in": 9,
                                        "tokens_out": 2, "latency_s": 0.002}) + "\n" for q in QUERIES))
    return str(path)


@pytest.fixture
def project(pytester: pytest.Pytester):
    (pytester.path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUERIES))
    pytester.makepyfile(test_bench=BENCHMARK)
    small = answers(pytester.path / "small.jsonl", SMALL)
    large = answers(pytester.path / "large.jsonl", LARGE)
    return pytester, f"--ipw-model=recorded:{small},recorded:{large}"


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "no:cacheprovider", "--ipw-dataset=queries.jsonl", *IDLE_OFF, *args)


def test_ipw_report_writes_html_markdown_and_figures(project):
    pytester, models = project
    info = pytester.path / "info.json"
    info.write_text(json.dumps({"small": {"release_date": "2024-11", "parameters": "135M"},
                                "large": {"release_date": "2025-02", "parameters": "1.7B"}}))
    result = run(pytester, models, "--ipw-report=rep", f"--ipw-model-info={info}", "--ipw-json=r.json")
    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(["report: rep*index.html (Markdown: rep*summary.md; * s)"])
    folder = pytester.path / "rep"
    page = (folder / "index.html").read_text()
    # the figures are inline, the page needs no network and runs no script
    assert page.count('src="data:image/png;base64,') == len(list((folder / "figures").glob("*.png"))) == 6
    assert "<script" not in page and "http://" not in page and "https://" not in page
    # untrusted answers and prompts appear as text only
    assert PLANTED_SCRIPT not in page and "<img src=x" not in page and "<b>Answer</b>" not in page
    assert html_escaped(PLANTED_SCRIPT) in page and html_escaped(PLANTED_IMG) in page
    assert "&lt;b&gt;Answer&lt;/b&gt;" in page
    # the energy here is an estimate, and the page and every figure say so
    assert "energy ESTIMATED (a power model, not a measurement)" in page
    for figure in (folder / "figures").glob("*.png"):
        assert "ESTIMATED" in Image.open(figure).text["Description"], figure.name
    markdown = (folder / "summary.md").read_text()
    assert "| model | accelerator | queries |" in markdown and "![Pareto plot](figures/pareto.png)" in markdown
    assert "**energy ESTIMATED" in markdown
    analysis = json.loads((folder / "analysis.json").read_text())
    # small answers add-1 and cap-1 (2 of 3), large add-1 and add-2: together all three
    assert analysis["coverage"]["covered"] == 3 and analysis["coverage"]["coverage"] == 1.0
    assert analysis["routing"]["baseline"] == "large@cpu"
    assert analysis["routing"]["baseline_reason"].startswith("the largest model by parameter count")
    assert [p["model"] for p in analysis["release_trends"]] == ["small", "large"]


def html_escaped(text: str) -> str:
    import html

    return html.escape(text, quote=True)


def test_bad_model_info_stops_the_run_before_any_test(project):
    pytester, models = project
    (pytester.path / "info.json").write_text(json.dumps({"small": {"role": "frontier"}}))
    result = run(pytester, models, "--ipw-report=rep", "--ipw-model-info=info.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: pytest-ipw: model info info.json, model 'small': role must be 'local' or "
                                 "'reference', got 'frontier'"])


def test_unwritable_report_folder_is_one_line_not_a_traceback(project):
    pytester, models = project
    (pytester.path / "taken").write_text("a file, not a folder")
    result = run(pytester, models, "--ipw-report=taken")
    result.stdout.fnmatch_lines(["IPW REPORT FAILED: could not write the report to taken*choose a writable folder"])
    assert "Traceback" not in result.stdout.str()


def synthetic_document(provenance: str = "measured") -> dict:
    records = []
    for model, right, joules in (("small", {"q0", "q1"}, 1.0), ("large", {"q0", "q1", "q2"}, 9.0)):
        for q in ("q0", "q1", "q2", "q3"):
            records.append({"query_id": q, "domain": "d", "split": "chat", "model": model, "accelerator": "gpu",
                            "correct": q in right, "unscorable": False, "joules": joules, "watts": joules / 0.5,
                            "seconds": 0.5, "latency_s": 0.5, "tokens_out": 3, "provenance": provenance,
                            "meter": "test sensor", "energy_domain": "gpu", "prompt": "p", "response": "r"})
    return {"schema_version": 1, "records": records, "settings": {}, "machine_info": {"node": "host-a"}}


def test_measured_energy_is_labelled_measured_and_no_records_is_an_error(tmp_path):
    files = write_report(synthetic_document("measured"), tmp_path / "r")
    page = files.html.read_text()
    assert 'id="provenance"><b>energy MEASURED — MEASURED by test sensor</b>' in page
    definition = "energy source: MEASURED by a sensor or ESTIMATED by a power model."
    assert definition in page and "ESTIMATED" not in page.replace(definition, "")
    for figure in files.figures:
        assert Image.open(figure).text["Description"].startswith("energy MEASURED"), figure.name
    analysis = json.loads(files.analysis.read_text())
    oracle = analysis["routing"]["results"][1]
    # oracle: q0, q1 -> small (1 J), q2 -> large (9 J), q3 -> fallback large (9 J): 20 J vs 36 J
    assert oracle["joules"] == 20.0 and oracle["energy_saving"] == pytest.approx(1 - 20 / 36)
    with pytest.raises(IPWUsageError, match="no records to report"):
        write_report({"schema_version": 1, "records": []}, tmp_path / "empty")


def test_cli_report_and_its_errors(tmp_path, capsys):
    source = tmp_path / "run.json"
    source.write_text(json.dumps(synthetic_document()))
    assert cli_main(["report", str(source), "-o", str(tmp_path / "out"), "--title", "Lab <run>"]) == 0
    assert "report: " in capsys.readouterr().out
    assert "<title>Lab &lt;run&gt;</title>" in (tmp_path / "out" / "index.html").read_text()
    assert cli_main(["report", str(tmp_path / "missing.json"), "-o", str(tmp_path / "out2")]) == 2
    assert "no saved run matches" in capsys.readouterr().err


# -- a real browser ----------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no headless browser: apt-get install chromium to run the "
                                                            "HTML report's rendering and script-injection checks")


def chromium(profile: Path, *args: str) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
               f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True).stdout


class Elements(HTMLParser):
    """Every element of a document, with its attributes (what the browser built, not what the text says)."""

    def __init__(self, text: str):
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))


@needs_browser
def test_browser_renders_the_report_and_runs_no_planted_script(tmp_path):
    document = synthetic_document("estimated")
    document["records"][1]["response"] = PLANTED_SCRIPT
    document["records"][2]["prompt"] = PLANTED_IMG
    files = write_report(document, tmp_path / "rep", title="browser check")
    url = files.html.resolve().as_uri()
    profile = tmp_path / "chromium-profile"

    # control: the same planted answer, unescaped and without the page's policy, does run in this browser,
    # so the checks below would notice a script that ran
    control = tmp_path / "control.html"
    control.write_text(f"<html><head><title>control</title></head><body>{PLANTED_SCRIPT}{PLANTED_IMG}</body></html>")
    control_dom = chromium(profile, "--dump-dom", control.resolve().as_uri())
    assert "<title>pwned" in control_dom
    assert any(tag == "script" for tag, _ in Elements(control_dom).elements)

    dom = chromium(profile, "--dump-dom", url)
    elements = Elements(dom).elements
    assert "<title>browser check</title>" in dom  # no planted script changed the title
    assert not [tag for tag, _ in elements if tag == "script"]
    assert not [attrs for _, attrs in elements if any(name.startswith("on") for name in attrs)]
    assert all(attrs.get("src", "").startswith("data:image/png;base64,") for tag, attrs in elements if tag == "img")
    assert "&lt;script&gt;document.title='pwned'&lt;/script&gt;" in dom  # shown as text
    assert "energy ESTIMATED" in dom

    shot = tmp_path / "report.png"
    chromium(profile, "--window-size=1280,2000", f"--screenshot={shot}", url)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    colours = image.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 200  # text, tables and inline figures, not a blank or error page
    ink = sum(n for n, (r, g, b) in colours if r + g + b < 600)
    assert ink > 0.01 * 1280 * 2000


def test_active_energy_basis_is_used_and_labelled_when_the_run_chose_it(tmp_path):
    document = synthetic_document("measured")
    for r in document["records"]:
        r["joules_active"], r["energy_basis"] = r["joules"] / 2, "active"  # a merged file: no settings.energy
    files = write_report(document, tmp_path / "r")
    analysis = json.loads(files.analysis.read_text())
    assert analysis["energy_basis"] == "active" and "active energy (above idle)" in analysis["energy_caption"]
    assert analysis["routing"]["results"][1]["joules"] == 10.0  # half of the total-energy oracle's 20 J
