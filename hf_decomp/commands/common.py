"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=None,
                       help="timm name (cifar10_resnet20, timm:resnet50.a1_in1k, hf-hub:timm/...), "
                            "transformers Hub id or local folder (default: cifar10_resnet20)")
    group.add_argument("--checkpoint", default=None, help="local weights file for a timm architecture")


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=None,
                       help="Hub dataset name or local folder/parquet (default: bundled CIFAR-10, "
                            "else uoft-cs/cifar10 from the Hub)")
    group.add_argument("--stats-split", default="train", help="split for the statistics (default: train)")
    group.add_argument("--eval-split", default=None, help="split for evaluation (default: test, else validation)")
    group.add_argument("--image-column", default=None, help="image column (default: detected)")
    group.add_argument("--label-column", default=None, help="label column (default: detected)")
    group.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it")
    group.add_argument("--limit", type=int, default=None, help="seeded random subset of the statistics split")
    group.add_argument("--eval-limit", type=int, default=None, help="seeded random subset of the eval split")
    group.add_argument("--batch-size", type=int, default=256)
    group.add_argument("--num-workers", type=int, default=None, help="data-loader workers (default: up to 4)")
    group.add_argument("--seed", type=int, default=0, help="seed of --limit subsets and of the noise ablation")


def add_output_arguments(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--out", default=default_out, help=f"results folder (default: {default_out})")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Long runs: checkpoints, resuming, and the speed options of the forward pass."""
    group = parser.add_argument_group("long runs")
    group.add_argument("--resume", action="store_true",
                       help="continue an interrupted run from its checkpoints (same settings and process count)")
    group.add_argument("--checkpoint-every", type=int, default=None, metavar="BATCHES",
                       help="save the pass's sums and position every this many batches (per process)")
    group.add_argument("--checkpoint-minutes", type=float, default=None, metavar="MINUTES",
                       help="save the pass's sums and position every this many minutes "
                            "(default 10 with --resume and no --checkpoint-every)")
    group.add_argument("--checkpoint-dir", default=None,
                       help="where checkpoints go (default: .<out name>.checkpoints beside --out)")
    group.add_argument("--mixed-precision", default=None, choices=("no", "bf16", "fp16"),
                       help="autocast the forward pass (default: accelerate's config, else no)")
    group.add_argument("--channels-last", action="store_true",
                       help="channels-last inputs and weights (faster convolutions on recent GPUs)")


def int_or_fraction(text: str) -> int | float:
    """``5`` -> 5 (absolute), ``0.1`` -> 0.1 (a fraction of the layer's width)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a whole number nor a fraction such as 0.1") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text}: a fraction of the layer width must be in (0, 1)")
    return value


def add_layer_arguments(parser: argparse.ArgumentParser, default: list[str] | None = None) -> None:
    """``--layers`` (module names, timm feature_info.N, all-blocks, final) and ``--list-layers``."""
    group = parser.add_argument_group("layers")
    group.add_argument("--layers", nargs="+", default=default, metavar="NAME",
                       help="also analyze these layers in the same pass: module names as model.named_modules() "
                            "prints them, feature_info.N, 'all-blocks' or 'final' (the default)")
    group.add_argument("--list-layers", action="store_true", help="print the model's layer names and exit")


def print_layer_list(args: argparse.Namespace) -> int:
    """Print every name ``--layers`` accepts, blocks marked, for the model of ``args``."""
    from ..layers import block_names, layer_choices
    from ..models import load_classifier

    adapter = load_classifier(args.model or "cifar10_resnet20", checkpoint=getattr(args, "checkpoint", None))
    blocks = set(block_names(adapter))
    for name in layer_choices(adapter):
        print(f"{name}  (block)" if name in blocks else name)
    return 0
