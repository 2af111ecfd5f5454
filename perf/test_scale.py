"""Benchmarks of the steps whose cost grows with the number of records, at each ``--perf-sizes`` size: the
end-of-run aggregate, the study analyses, ``pytest-ipw report`` and ``pytest-ipw compare``, reading a
results file (whole, and as columns), and writing the records as JSON and as Parquet.

They call only public entry points (the analysis functions, the command line, the results loader and the
writers), so that they measure any implementation behind them, before and after a rewrite."""

from __future__ import annotations

from pathlib import Path

import pytest

from perf import synthetic
from perf.steps import aggregate, analyses
from pytest_ipw import cli
from pytest_ipw.analysis import metrics
from pytest_ipw.core.files import write_json_atomic
from pytest_ipw.history.storage import load_run, load_run_table


def test_aggregate(run, records, size):
    result = run(aggregate, records)
    assert [s.system for s in result["summary"]] == [f"{m}@h100" for m in synthetic.model_names(4)]
    assert sum(s.queries for s in result["summary"]) == len(records)
    assert result["coverage"].queries == max(1, size // 4)
    assert result["judge_cost"] is None  # no judged query in the synthetic run


def test_analyses(run, records, size):
    systems, models, versus, routing, frontier = run(analyses, records)
    assert systems.overall.queries == models.overall.queries == max(1, size // 4)
    assert versus.to_dict() and routing.results and frontier


def test_report(run, results_file, tmp_path):
    """``pytest-ipw report FILE -o DIR``, in this process (the loader, the analyses, figures, HTML, Markdown)."""
    pytest.importorskip("matplotlib")
    out = tmp_path / "report"

    def report() -> int:
        return cli.main(["report", str(results_file), "-o", str(out)])

    assert run(report) == 0
    assert (out / "index.html").stat().st_size and (out / "summary.md").stat().st_size


def test_compare(run, results_file, second_results_file, capsys):
    """``pytest-ipw compare FILE FILE2``: two runs of the study, the second 2% less efficient."""
    assert run(cli.main, ["compare", str(results_file), str(second_results_file)]) == 0
    printed = capsys.readouterr().out
    assert "model-3@h100" in printed and "joules" in printed


def test_read_results(run, results_file, size):
    """The whole-document results loader (``history.storage.load_run``: every record as a dict)."""
    document = run(load_run, results_file)
    assert len(document["records"]) == 4 * max(1, size // 4)


def test_read_results_as_table(run, results_file, size):
    """The loader ``pytest-ipw report`` and ``compare`` use (``history.storage.load_run_table``): the records
    read a few megabytes at a time into columns."""
    document, table = run(load_run_table, results_file)
    assert len(table) == 4 * max(1, size // 4) and document["schema_version"] == synthetic.SCHEMA_VERSION


def test_read_results_from_parquet(run, parquet_results_file, size):
    """``load_run_table`` of a run that also wrote its records as Parquet: the columns come from the Parquet
    copy (its stamp names the document), the JSON records are skipped over."""
    document, table = run(load_run_table, parquet_results_file)
    assert len(table) == 4 * max(1, size // 4) and document["settings"]["options"]["ipw_parquet"]["value"]


def test_write_results(run, records, tmp_path):
    """``--ipw-json``: the results document written atomically (records and the run's summary)."""
    document = {"schema_version": synthetic.SCHEMA_VERSION, "records": records,
                "summary": [s.to_dict() for s in metrics.summarize_systems(records)]}
    target = run(write_json_atomic, tmp_path / "results.json", document)
    assert Path(target).stat().st_size > 100 * len(records)


def test_write_parquet(run, records, tmp_path):
    """``--ipw-parquet``: the records as a Parquet table."""
    pytest.importorskip("pyarrow")
    from pytest_ipw.core.files import write_parquet

    target = run(write_parquet, tmp_path / "records.parquet", records)
    import pyarrow.parquet as pq

    assert pq.ParquetFile(target).metadata.num_rows == len(records)
