"""The README and the documentation site stay true to the code.

- ``mkdocs build --strict`` passes: no broken link or anchor, no API name that no longer exists, and
  the command-line reference renders every option of every subcommand from the parser itself.
- Every ``hf-decomp`` command shown in a code block of the README or the docs parses with today's
  parser, and every repository path they name exists.
- The README stays a short front door whose set-up, run and test commands are the ones CI runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hf_decomp.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_FILES = sorted([README, *(ROOT / "docs").rglob("*.md")])
SETUP, RUN, TEST = 'pip install -e ".[dev]"', "hf-decomp analyze --out runs/resnet20", "python -m pytest -q"
# repository paths named in backticks or links; placeholders (<name>) and globs are not paths
# outputs that exist once a command ran: the browser test's screenshot folder (ignored by git)
OUTPUT_PATHS = ("tests/artifacts/",)
PATH_PATTERN = re.compile(r"(?<![\w./-])((?:hf_decomp|benchmarks|scripts|tests|docs|model_cards|\.ci)/[\w./-]*[\w/])")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _code_blocks(text: str) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M)


def _documented_commands(text: str) -> list[str]:
    """``hf-decomp ...`` lines of the code blocks, continuation lines joined."""
    commands = []
    for block in _code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("hf-decomp "):
                commands.append(line)
            elif " -m hf_decomp " in line:
                commands.append("hf-decomp " + line.split(" -m hf_decomp ", 1)[1])
    return commands


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_parses(doc):
    parser = build_parser()
    for command in _documented_commands(doc.read_text(encoding="utf-8")):
        tokens = shlex.split(re.sub(r"\[[^\]]*\]", "", command))[1:]  # [--optional flags] are left out
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:
                parser.parse_args(tokens)
            except SystemExit:
                pytest.fail(f"{doc.name}: `{command}` does not parse: {stderr.getvalue().strip().splitlines()[-1]}")


def test_the_docs_show_commands():
    # the guard above must have something to check
    assert len([c for doc in DOC_FILES for c in _documented_commands(doc.read_text(encoding="utf-8"))]) >= 20


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_named_repository_path_exists(doc):
    text = doc.read_text(encoding="utf-8")
    missing = sorted({p for p in PATH_PATTERN.findall(text)
                      if not p.startswith(OUTPUT_PATHS)
                      # an --out prefix stands for the files it wrote (resnet56 -> resnet56.md, resnet56.png)
                      and not any(ROOT.glob(p + "*"))})
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def test_readme_is_a_short_front_door_with_the_ci_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    blocks = "\n".join(_code_blocks(text))
    positions = [blocks.find(command) for command in (SETUP, RUN, TEST)]
    assert -1 not in positions and positions == sorted(positions), "set-up, run and test commands, in that order"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1] == TEST, ".ci/run must end by running exactly the README's test command"
    install = next(i for i, line in enumerate(ci) if "pip install" in line and '-e ".[dev]"' in line)
    docs = next(i for i, line in enumerate(ci) if "mkdocs build --strict" in line)
    assert install < docs < len(ci) - 1


def test_cli_reference_lists_every_subcommand_and_option():
    pytest.importorskip("mkdocs")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from mkdocs_hooks import render_cli_reference
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    reference = render_cli_reference()
    for name, subparser in _subcommands(build_parser()).items():
        assert f"\n## {name}\n" in reference
        section = reference.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for action in subparser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if action.help == argparse.SUPPRESS:
                assert not any(f"`{flag}`" in section for flag in action.option_strings), action.option_strings
                continue
            for flag in action.option_strings:
                assert f"`{flag}`" in section, f"{name}: {flag} is missing from the CLI reference"


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python", reason="the dev extra installs mkdocstrings[python]")
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")]
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert completed.returncode == 0, completed.stderr[-4000:]
    site = tmp_path / "site"
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert "--eval-limit" in cli and 'id="specialize"' in cli
    api = (site / "reference" / "api" / "index.html").read_text(encoding="utf-8")
    assert "hf_decomp.analysis.run.analyze" in api and "InfluentialIndices" in api
    # the committed figures and results travel into the site
    assert (site / "benchmarks" / "results" / "paper_report" / "sweep.png").is_file()
    assert (site / "explorer" / "explorer_class.png").is_file()
