"""``hf-decomp explore``: serve the interactive explorer over a results folder or a decomposed model."""

from __future__ import annotations

import argparse

from .common import HelpFormatter


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "explore",
        help="interactive Gradio explorer of a decomposition (Image, Class and Model views)",
        description="Serve a Gradio app over an `hf-decomp analyze` results folder, a folder written by "
                    "`hf-decomp export`, or the Hub id of such a model: full vs decomposed predictions, the "
                    "contributions of the influential features, activation maps, each class's influential "
                    "set with the top activating images of each feature, rho and the run's figures.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("source", metavar="RUN_OR_MODEL",
                        help="analyze results folder, exported model folder, or Hub id (user/name) of one")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=None, help="port (not given: Gradio's, 7860 or the next free)")
    parser.add_argument("--share", action=argparse.BooleanOptionalAction, default=False,
                        help="also open a public gradio.live link")
    parser.add_argument("--dataset", default=None,
                        help="where to read images from (not given: the dataset the run or model records)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..explore.app import launch

    launch(args.source, host=args.host, port=args.port, share=args.share, dataset=args.dataset)
    return 0
