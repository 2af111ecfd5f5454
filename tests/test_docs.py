"""The documentation stays true to the code: docs/options.md is generated from the option declarations and
must match them, every option pytest knows is documented, links resolve, and README keeps its shape."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from pytest_ipw.options import declared_options, options_markdown

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def test_options_md_is_generated_from_the_declarations():
    assert (DOCS / "options.md").read_text(encoding="utf-8") == options_markdown(), (
        "docs/options.md differs from the option declarations: run `pytest-ipw options-doc -o docs/options.md`")


def test_every_option_pytest_knows_is_documented():
    """Also an option added with parser.addoption outside RunOptions: it must not escape the docs."""
    help_text = subprocess.run([sys.executable, "-m", "pytest", "--help", "-p", "no:cacheprovider"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout
    flags = set(re.findall(r"(--ipw-[a-z0-9-]+)", help_text))
    documented = (DOCS / "options.md").read_text(encoding="utf-8")
    assert flags, "pytest --help lists no --ipw-* option: is the plugin loaded?"
    missing = sorted(flag for flag in flags if f"`{flag}" not in documented)
    assert not missing, f"undocumented options: {missing}; declare them in RunOptions and regenerate docs/options.md"


def test_every_declaration_has_help():
    for field, spec in declared_options():
        assert spec.help.strip() and spec.flag.startswith("--ipw-"), field.name


def test_the_options_doc_command_writes_the_file(tmp_path):
    target = tmp_path / "options.md"
    subprocess.run([sys.executable, "-m", "pytest_ipw", "options-doc", "-o", str(target)], check=True,
                   capture_output=True)
    assert target.read_text(encoding="utf-8") == options_markdown()


def links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8"))


def test_relative_links_resolve():
    broken = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for target in links(page):
            if re.match(r"[a-z]+:", target):
                continue  # http(s)://, mailto:
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    # docs/energy-methodology.md is written separately; everything else must exist
    assert [b for b in broken if not b.endswith("energy-methodology.md")] == []


def test_readme_is_short_and_keeps_the_ci_command():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 200
    marker = lines.index("<!-- ci-test-command -->")
    assert lines[marker + 1] == "```" and lines[marker + 2].startswith("python -m pytest tests/")
    for heading in ("## Set-up: two commands", "## Reading the output", "## Recipes", "## Documentation"):
        assert heading in lines
    # the paths that have never read real hardware are named plainly
    section = text.split("## What has run on real hardware", 1)[1].split("\n## ", 1)[0]
    for name in ("NVML", "AMD", "Jetson", "vLLM", "Apple"):
        assert name in section


def test_the_two_readme_commands_are_a_user_install_and_the_benchmark():
    text = README.read_text(encoding="utf-8")
    block = text.split("## Set-up: two commands", 1)[1].split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ['pip install -e ".[llama]"', "pytest benchmarks/"]
