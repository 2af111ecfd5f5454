"""The report shows the comparability cards of the runs it covers, and says when they are not like for like."""

from __future__ import annotations

from pytest_ipw.history.merge import merge_documents
from pytest_ipw.report.html import write_report


def run_document(host: str, accelerator: str, domain: str, period: float) -> dict:
    records = [{"query_id": q, "domain": "math", "split": "chat", "model": "small", "accelerator": accelerator,
                "correct": q == "q0", "unscorable": False, "joules": 2.0, "watts": 4.0, "seconds": 0.5,
                "latency_s": 0.5, "tokens_out": 4, "provenance": "measured", "meter": f"sensor on {host}",
                "energy_domain": domain, "prompt": "p", "response": "r", "prefill_joules": 0.5, "prefill_s": 0.1,
                "decode_joules": 1.5, "decode_s": 0.4, "decode_tokens": 3, "tokens_in": 10}
               for q in ("q0", "q1")]
    card = {"sensor": f"sensor on {host}", "provenance": "measured", "domain": domain,
            "scope": {"gpu": "device", "cpu": "package"}[domain], "reading": "counter", "update_period_s": period,
            "permissions": {"level": "none"}, "runtime_build": {"backend": "llama-cpp", "system_info": "CUDA : 1"}}
    return {"schema_version": 1, "machine_info": {"node": host}, "settings": {"meters": {}},
            "comparability": {f"small-{accelerator}": card}, "records": records}


def test_cards_of_merged_runs_are_shown_and_their_differences_warned(tmp_path):
    merged = merge_documents([("gpu.json", run_document("box-a", "h100", "gpu", 0.1)),
                              ("cpu.json", run_document("box-b", "cpu", "cpu", 0.001))])
    files = write_report(merged, tmp_path / "report")
    page = files.html.read_text()
    assert "<h2>Comparability</h2>" in page and "small-h100 (gpu.json, box-a)" in page
    assert page.count("NOT LIKE FOR LIKE") == 2  # scope and update period both differ
    assert "device" in page and "package" in page and "Energy by phase" in page
    markdown = files.markdown.read_text()
    assert "## Comparability" in markdown and "NOT LIKE FOR LIKE" in markdown


def test_one_run_shows_its_card_without_a_warning(tmp_path):
    files = write_report(run_document("box-a", "h100", "gpu", 0.1), tmp_path / "report")
    page = files.html.read_text()
    assert "<h2>Comparability</h2>" in page and "NOT LIKE FOR LIKE" not in page
