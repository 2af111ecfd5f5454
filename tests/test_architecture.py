"""The package's layers import downward only (import-linter contracts in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_layer_contracts_hold(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import importlinter.cli as importlinter_cli  # the dev extra brings it: CI must run this check
    monkeypatch.chdir(ROOT)
    status = importlinter_cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True,
                                           no_logo=True)
    output = capsys.readouterr().out
    assert status == importlinter_cli.EXIT_STATUS_SUCCESS, output


def test_every_subpackage_says_what_lives_there() -> None:
    package = ROOT / "pytest_ipw"
    for init in package.glob("*/__init__.py"):
        text = init.read_text(encoding="utf-8")
        assert text.lstrip().startswith('"""') and len(text.split('"""')[1].split()) >= 12, init
