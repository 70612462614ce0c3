"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse

__all__ = ["positive_int", "non_negative_int", "add_model_arguments", "add_data_arguments",
           "add_output_arguments", "add_run_arguments", "refuse_flag"]


def _int_at_least(minimum: int, purpose: str):
    """An argparse type: an integer >= ``minimum``, refused in one line naming the value."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be {minimum} or more")
        return value

    parse.__doc__ = f"argparse type: an integer >= {minimum} ({purpose})."
    return parse


positive_int = _int_at_least(1, "batch sizes, row limits, k")
non_negative_int = _int_at_least(0, "worker counts")


def refuse_flag(parser: argparse.ArgumentParser, flag: str, hint: str) -> None:
    """Make ``flag`` an error with a hint, instead of a silently ignored or abbreviated option.

    argparse would otherwise read e.g. ``sweep --k1 5`` as the prefix of ``--k1-values``.
    """

    class _Refuse(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            parser.error(f"{option_string} does nothing here; {hint}")

    parser.add_argument(flag, action=_Refuse, nargs="?", help=argparse.SUPPRESS)


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
    group.add_argument("--label-map", default=None, metavar="FILE.json",
                       help="which dataset class is which model class, as a JSON object {dataset label: model "
                            "label} (names or indices); needed only when the class names do not match the model's")
    group.add_argument("--streaming", action="store_true", help="stream the dataset instead of downloading it")
    group.add_argument("--limit", type=positive_int, default=None, help="seeded random subset of the statistics split")
    group.add_argument("--eval-limit", type=positive_int, default=None, help="seeded random subset of the eval split")
    group.add_argument("--batch-size", type=positive_int, default=256)
    group.add_argument("--num-workers", type=non_negative_int, default=None, 
                       help="data-loader workers (default: from the machine's cores and the device)")
    group.add_argument("--decode", default="cpu", choices=("cpu", "gpu"),
                       help="where JPEG images are decoded: loader workers (default) or the CUDA device "
                            "(nvJPEG; falls back to cpu without CUDA)")
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


# Arguments that name things a subcommand reads: --out must be none of them, inside none and contain none.
INPUT_ARGUMENTS = {"dataset": "--dataset", "indices": "--indices", "checkpoint": "--checkpoint",
                   "cache_dir": "--cache-dir", "checkpoint_dir": "--checkpoint-dir", "model": "--model",
                   "models": "--models", "imagenet_dataset": "--imagenet-dataset", "label_map": "--label-map"}


def input_paths(args: argparse.Namespace) -> dict:
    """flag -> path of every input a subcommand was given (and the defaults it reads: bundled data, cache)."""
    from ..utils.paths import cache_dir, default_cifar10_dataset

    inputs = {}
    for name, flag in INPUT_ARGUMENTS.items():
        value = getattr(args, name, None)
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and item:
                inputs[f"{flag} {item}" if isinstance(value, (list, tuple)) else flag] = item
    if hasattr(args, "dataset") and args.dataset is None:
        inputs["(the default dataset)"] = default_cifar10_dataset()
    inputs["(the hf-decomp cache, $HF_DECOMP_CACHE)"] = str(cache_dir())
    return inputs


def check_out(args: argparse.Namespace) -> None:
    """Before any work: --out is no input, can be written, and holds no results unless --overwrite."""
    from ..utils.files import check_output_dir

    out = getattr(args, "out", None)
    if out is not None:
        check_output_dir(out, bool(getattr(args, "overwrite", False)), inputs=input_paths(args))


def int_or_fraction(text: str) -> int | float:
    """``5`` -> 5 (absolute), ``0.1`` -> 0.1 (a fraction of the layer's width)."""
    try:
        value = int(text)
    except ValueError:
        pass
    else:
        if value < 1:
            raise argparse.ArgumentTypeError(f"{value} must be 1 or more (or a fraction such as 0.1)")
        return value
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
