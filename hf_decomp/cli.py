"""The ``hf-decomp`` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .commands import COMMAND_MODULES
from .utils.errors import DecompError
from .utils.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-decomp",
        description="Find class-specific features in image classifiers (Badola et al., 'Decomposing the Deep').",
    )
    parser.add_argument("--version", action="version", version=f"hf-decomp {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"hf_decomp.commands.{name}").register(subparsers)
    for subparser in subparsers.choices.values():
        # No prefix matching: `sweep --k1 5` must not silently mean `--k1-grid 5`.
        subparser.allow_abbrev = False
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from .commands.common import check_out

        check_out(args)  # every subcommand with --out: refuse an input or an unwritable place before work
        return int(args.func(args) or 0)
    except DecompError as e:
        print(f"hf-decomp {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hf-decomp {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
