"""Which saved run ``--ipw-compare=SELECTOR`` compares with: partial runs are passed over by choosers (latest, a
commit prefix, a branch) and used, for the caller to warn about, when named (a number, a save name, a path)."""

from __future__ import annotations

from pathlib import Path

from pytest_ipw.history.storage import Storage


def save(storage: Storage, commit: str, branch: str, partial: bool, name: str | None = None) -> str:
    records = [{"query_id": f"q{i}", "model": "m", "accelerator": "cpu", "domain": "d", "correct": True,
                "joules": 1.0, "watts": 1.0, "latency_s": 0.1} for i in range(3 if partial else 10)]
    document = {"schema_version": 1, "records": records, "partial": partial, "expected_records": 10,
                "commit_info": {"id": commit, "branch": branch}}
    return storage.save(document, machine="box", commit=commit, dirty=False, name=name).path.stem


def test_choosers_pass_over_partial_runs_and_named_runs_are_used(tmp_path: Path):
    storage = Storage(tmp_path)
    complete = save(storage, "aaaa1111", "main", partial=False)
    cancelled = save(storage, "bbbb2222", "main", partial=True, name="cancelled")
    for selector in ("latest", "main"):
        choice = storage.select_baseline(selector, "box")
        assert choice.run is not None and choice.run.path.stem == complete and not choice.explicit
        assert choice.skipped_line() == f"skipped 1 partial run (box/{cancelled}: 3 of 10 queries)"
    # a commit whose only run is partial has no baseline; the run passed over is named
    choice = storage.select_baseline("bbbb2222", "box")
    assert choice.run is None and choice.skipped_line() == f"skipped 1 partial run (box/{cancelled}: 3 of 10 queries)"
    for selector in ("2", "cancelled", str(tmp_path / "box" / f"{cancelled}.json")):
        choice = storage.select_baseline(selector, "box")
        assert choice.run is not None and choice.run.path.stem == cancelled and choice.explicit, selector
        assert choice.document is not None and choice.document["partial"] is True and not choice.skipped


def test_nothing_but_partial_runs_is_no_baseline(tmp_path: Path):
    storage = Storage(tmp_path)
    first, second = save(storage, "cccc3333", "main", True), save(storage, "dddd4444", "main", True)
    choice = storage.select_baseline("latest", "box")
    assert choice.run is None and choice.document is None
    assert choice.skipped_line() == (f"skipped 2 partial runs (box/{second}: 3 of 10 queries, "
                                     f"box/{first}: 3 of 10 queries)")
    assert storage.select_baseline("latest", "other-machine").run is None
