"""``hf-decomp specialize``: a smaller network that only serves a class subset, with its baselines."""

from __future__ import annotations

import argparse

from .common import (
    HelpFormatter,
    add_data_arguments,
    add_deprecated_alias,
    add_model_arguments,
    add_run_arguments,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "specialize",
        help="prune a classifier down to the channels a class subset needs (Torch-Pruning), recover, export",
        description="Keep, at every layer, the channels most voted for by the chosen classes' training images, "
                    "prune the rest with Torch-Pruning to a multiply-add budget, keep only the chosen classes' "
                    "head rows, recover (batch-norm recalibration, head refit, optional distilled fine-tuning) "
                    "and save a from_pretrained-able model with a card. The table compares it with the full "
                    "model restricted to the classes and with L1 magnitude pruning at the same budget.",
        formatter_class=HelpFormatter,
    )
    add_model_arguments(parser)
    add_data_arguments(parser, only=("dataset", "stats_split", "eval_split", "batch_size"),
                       eval_split={"default": "test", "help": "split accuracies are measured on"})
    add_deprecated_alias(parser, "--train-split", "--stats-split", "stats_split")
    group = parser.add_argument_group("specialization")
    group.add_argument("--classes", required=True, help="class names or ids, comma-separated (e.g. cat,dog or 3,5)")
    group.add_argument("--macs", type=float, required=True, help="budget: fraction of the full model's multiply-adds")
    group.add_argument("--pruning", default="class-aware", choices=("class-aware", "magnitude"),
                       help="which channels go: the fewest votes of the classes' images, or the smallest L1 norm")
    add_deprecated_alias(group, "--method", "--pruning", "pruning")
    group.add_argument("--train-per-class", type=int, default=1000,
                       help="training images per class for the votes, batch-norm recalibration and head refit")
    group.add_argument("--val-per-class", type=int, default=300,
                       help="training images per class held out as validation (reported, never trained on)")
    group.add_argument("--test-per-class", type=int, default=None,
                       help="evaluate on the first this many test images per class (not given: all)")
    group.add_argument("--k1-fraction", type=float, default=0.25,
                       help="each image votes for this fraction of a layer's channels")
    group.add_argument("--finetune-epochs", type=float, default=0.0,
                       help="epochs of distilled fine-tuning over the --train-per-class images (0: none)")
    group.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate")
    group.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                       help="also run the magnitude-pruning baseline")
    add_run_arguments(parser, None, out_metavar="MODEL_DIR", out_help="model folder to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..specialize.api import specialize
    from ..utils.files import check_output_dir

    check_output_dir(args.out, args.overwrite)
    result = specialize(args.model, args.classes, args.macs, method=args.pruning,
                        checkpoint=args.weights, dataset=args.dataset, train_split=args.stats_split,
                        eval_split=args.eval_split, train_per_class=args.train_per_class,
                        val_per_class=args.val_per_class, test_per_class=args.test_per_class,
                        k1_fraction=args.k1_fraction,
                        finetune_epochs=args.finetune_epochs, lr=args.lr, baselines=args.baselines,
                        seed=args.seed, batch_size=args.batch_size, out_dir=args.out, overwrite=args.overwrite)
    for row in result["table"]:
        print(f"{row['name']:<40} MACs {row['macs_fraction']:.3f}  params {row['params']:>8}  "
              f"accuracy {row['test_accuracy']:.2f} %")
    print(f"saved to {args.out}/ (SpecialistForImageClassification.from_pretrained)")
    return 0
