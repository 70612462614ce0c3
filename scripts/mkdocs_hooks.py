"""MkDocs hooks (mkdocs.yml ``hooks:``) that keep the documentation tied to the code.

- The command-line reference is rendered at build time from ``hf_decomp.cli.build_parser()``: every
  subcommand, its usage line and each argument group's options, so it cannot drift from the CLI.
- The committed results (``benchmarks/results/``: reports, tables, figures) and ``CHANGELOG.md`` join
  the site from where they live in the repository, so the pages link them without a copy that could
  go stale, and a link to a results file that is gone fails ``mkdocs build --strict``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
CLI_MARKER = "<!-- cli-reference -->"
RESULTS = "benchmarks/results"
RESULT_SUFFIXES = (".md", ".png")


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _option_names(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"`{action.metavar or action.dest}`"
    names = ", ".join(f"`{name}`" for name in action.option_strings)
    if action.nargs == 0:
        return names
    metavar = action.metavar or action.dest.upper()
    if isinstance(metavar, tuple):
        metavar = " ".join(metavar)
    return f"{names} `{metavar}`"


def _argument_table(parser: argparse.ArgumentParser, group) -> list[str]:
    formatter = parser._get_formatter()
    rows = []
    for action in group._group_actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue  # deprecated spellings are hidden from --help, and so from the reference
        help_text = formatter._expand_help(action) if action.help else ""  # with "(default: ...)", as --help
        if action.choices and not isinstance(action, argparse._SubParsersAction):
            help_text += f" Choices: {', '.join(f'`{choice}`' for choice in action.choices)}."
        rows.append(f"| {_option_names(action)} | {_cell(help_text)} |")
    if not rows:
        return []
    title = group.title if group.title not in ("options", "optional arguments") else "Options"
    header = ["| argument | description (and default, as `--help` shows it) |", "|---|---|"]
    return [f"**{title[0].upper()}{title[1:]}**", "", *header, *rows, ""]


def render_cli_reference() -> str:
    """Markdown for every ``hf-decomp`` subcommand, from the parser the CLI itself builds."""
    sys.path.insert(0, str(ROOT))
    try:
        from hf_decomp.cli import build_parser
    finally:
        sys.path.remove(str(ROOT))
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {choice.dest: choice.help for choice in subparsers._choices_actions}
    lines = ["| command | what it does |", "|---|---|"]
    lines += [f"| [`{name}`](#{name}) | {_cell(summaries.get(name) or '')} |" for name in subparsers.choices]
    lines.append("")
    for name, subparser in subparsers.choices.items():
        lines += [f"## {name}", ""]
        if subparser.description or summaries.get(name):
            lines += [_cell(subparser.description or summaries[name]), ""]
        lines += ["```text", subparser.format_usage().strip(), "```", ""]
        for group in subparser._action_groups:
            lines += _argument_table(subparser, group)
    return "\n".join(lines)


def on_files(files, config):
    """Add the committed results and the changelog to the site, from their places in the repository."""
    results = ROOT / RESULTS
    for path in sorted(results.rglob("*")):
        if path.is_file() and path.suffix in RESULT_SUFFIXES:
            files.append(File(path.relative_to(ROOT).as_posix(), src_dir=str(ROOT), dest_dir=config["site_dir"],
                              use_directory_urls=config["use_directory_urls"]))
    files.append(File.generated(config, "changelog.md", abs_src_path=str(ROOT / "CHANGELOG.md")))
    return files


def on_page_markdown(markdown, page, config, files):
    if CLI_MARKER in markdown:
        return markdown.replace(CLI_MARKER, render_cli_reference())
    return markdown
