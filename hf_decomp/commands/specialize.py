"""``hf-decomp specialize``: a smaller network that only serves a class subset."""

from __future__ import annotations

import argparse

from .common import HelpFormatter, add_data_arguments, add_deprecated_alias, add_model_arguments, add_run_arguments


def register(subparsers) -> None:
    from ..specialize.vocabulary import ALLOCATIONS, CRITERIA, DEFAULT_CRITERION

    parser = subparsers.add_parser(
        "specialize",
        help="prune a classifier down to what a class subset needs (Torch-Pruning), distil it, export it",
        description="Score every channel group of the network for the chosen classes, prune to a multiply-add "
                    "budget with Torch-Pruning, keep only the chosen classes' head rows, recover by distillation "
                    "from the full model restricted to the classes (a recipe fixed in advance), and save a "
                    "from_pretrained / pipeline-ready model with a card. With several --criterion values, the one "
                    "best on test half A is exported and read on half B (cross-fitted).",
        formatter_class=HelpFormatter,
    )
    add_model_arguments(parser)
    add_data_arguments(parser, only=("dataset", "stats_split", "eval_split", "batch_size"),
                       eval_split={"default": "test", "help": "split accuracies are measured on (never the training split)"})
    add_deprecated_alias(parser, "--train-split", "--stats-split", "stats_split")
    group = parser.add_argument_group("specialization")
    group.add_argument("--classes", required=True, help="class names or ids, comma-separated (e.g. cat,dog or 3,5)")
    group.add_argument("--macs", type=float, required=True, help="budget: fraction of the full model's multiply-adds")
    group.add_argument("--criterion", nargs="+", default=[DEFAULT_CRITERION], metavar="NAME",
                       help=f"pruning criteria: {', '.join(CRITERIA)}; several: chosen on test half A")
    add_deprecated_alias(group, "--pruning", "--criterion", "criterion", nargs="+")
    add_deprecated_alias(group, "--method", "--criterion", "criterion", nargs="+")
    group.add_argument("--allocation", default="global", choices=ALLOCATIONS,
                       help="global: widths follow the scores; uniform: every group loses the same fraction")
    group.add_argument("--train-per-class", type=int, default=None,
                       help="training images per class (not given: all of them)")
    group.add_argument("--k1-fraction", type=float, default=0.25,
                       help="vote and propagated criteria: each image votes for this fraction of a layer's channels")
    recovery = parser.add_argument_group("recovery (distillation from the restricted full model)")
    recovery.add_argument("--epochs", type=int, default=10, help="epochs over the chosen classes' training images")
    recovery.add_argument("--lr", type=float, default=0.05, help="peak learning rate (cosine to 0)")
    recovery.add_argument("--distill", type=float, default=0.9, help="weight of the teacher's KL; the rest is CE")
    recovery.add_argument("--temperature", type=float, default=4.0, help="distillation temperature")
    recovery.add_argument("--half-seed", type=int, default=0, help="seed of the stratified test halves")
    add_run_arguments(parser, None, out_metavar="MODEL_DIR", out_help="model folder to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..specialize.api import specialize
    from ..specialize.settings import SpecializeSettings

    result = specialize(SpecializeSettings.from_namespace(args))
    report = result["report"]
    for row in result["table"]:
        print(f"{row['name']:<48} MACs {row['macs_fraction']:.3f}  params {row['params']:>8}  "
              f"accuracy {row['test_accuracy']:.2f} %  (half A {row['half_a']:.2f}, half B {row['half_b']:.2f})")
    print(f"{report['protocol']}: {report['chosen_criterion']} {report['accuracy']:.2f} % on "
          f"{report['reported_split']} (full model restricted: {report['full_accuracy']:.2f} %)")
    print(f"saved to {args.out}/ (pipeline('image-classification', model='{args.out}', trust_remote_code=True))")
    return 0
