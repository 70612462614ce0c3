"""``hf-decomp export``: an analyze results folder -> a saved DecomposedForImageClassification with its card."""

from __future__ import annotations

import argparse

from .common import HelpFormatter, add_model_arguments


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="turn analyze results into a Hugging Face model folder (from_pretrained, pipeline, Hub)",
        description="Build a DecomposedForImageClassification from the model and the influential indices of an "
                    "`hf-decomp analyze` results folder, and save it with its preprocessor config, indices, "
                    "remote code and model card.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--indices", metavar="RUN_DIR",
                        help="results folder of `hf-decomp analyze` (indices.json, metrics.json, figures)")
    parser.add_argument("--out", metavar="MODEL_DIR", help="model folder to write")
    parser.add_argument("--space", metavar="SPACE_DIR", default=None,
                        help="instead, write a Gradio Space folder (app.py, requirements.txt, README) running "
                             "`hf-decomp explore` over the Hub model --repo-id; upload it with "
                             "`hf-decomp push SPACE_DIR --repo-type space`")
    add_model_arguments(parser, default=None,
                        help="the decomposed model (not given: the base_model recorded in indices.json)")
    parser.add_argument("--repo-id", default=None, help="Hub repo named in the card's how-to-load snippet")
    parser.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                        help="replace files already in MODEL_DIR")
    parser.add_argument("--overwrite-card", action=argparse.BooleanOptionalAction, default=False,
                        help="replace a hand-written README.md in MODEL_DIR")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..hub.export import build_decomposed_model, load_run, save_decomposed_model
    from ..models import load_classifier
    from ..utils.errors import DecompValueError
    from ..utils.files import check_output_dir

    if args.space is not None:
        return _write_space(args)
    if not args.indices or not args.out:
        raise DecompValueError("export needs --indices RUN_DIR and --out MODEL_DIR (or --space SPACE_DIR --repo-id "
                               "USER/MODEL for an explorer Space)")
    check_output_dir(args.out, args.overwrite)  # before loading anything
    indices, metrics = load_run(args.indices)
    model_name = args.model or indices.metadata.get("base_model")
    if not model_name:
        raise DecompValueError(f"{args.indices}/indices.json records no base_model; name the model with --model.")
    adapter = load_classifier(model_name, checkpoint=args.weights)
    model = build_decomposed_model(adapter, indices, metrics)
    out = save_decomposed_model(model, args.out, overwrite=args.overwrite, overwrite_card=args.overwrite_card,
                                figures_from=args.indices, repo_id=args.repo_id)
    config = model.config
    print(f"saved {type(model).__name__} of {model_name} ({config.num_labels} classes, d = {config.num_features}, "
          f"{model.head.multiply_adds} of {config.num_labels * config.num_features} final-layer weights kept) to {out}/")
    print(f"load it with transformers.pipeline('image-classification', model='{out}', trust_remote_code=True)")
    return 0


def _write_space(args: argparse.Namespace) -> int:
    from ..hub.space import write_space
    from ..utils.errors import DecompValueError

    if args.out is not None:
        raise DecompValueError("give --out MODEL_DIR (a model folder) or --space SPACE_DIR (an explorer Space of "
                               "the Hub model --repo-id), not both: run export once for each.")
    if args.repo_id is None:
        raise DecompValueError("--space needs --repo-id USER/MODEL: the Hub id of the exported model the Space shows")
    out = write_space(args.space, args.repo_id, overwrite=args.overwrite,
                      inputs={"--indices": args.indices})
    print(f"wrote a Gradio Space for {args.repo_id} to {out}/ (app.py, decomp_explorer.py, requirements.txt, README.md)")
    print(f"upload it with: hf-decomp push {out} --repo-id USER/SPACE --repo-type space")
    return 0
