"""Arguments shared by the subcommands: one definition per flag, reused in groups (model, data, selection, run).

The vocabulary (one name per concept, every subcommand): ``--model``, ``--weights``, ``--k1``, ``--k2``,
``--k1-grid``/``--k2-grid``, ``--criterion``, ``--bias-correction``, ``--stats-split``, ``--eval-split``,
``--batch-size``, ``--out``, ``--overwrite``, ``--seed``, ``--resume``/``--save-every``/``--resume-dir``.
Older spellings stay as hidden aliases that print one deprecation warning naming the new flag.

This module imports nothing heavy: ``hf-decomp --help`` must not load torch.
"""

from __future__ import annotations

import argparse
import sys

DECODE_CHOICES = ("cpu", "cpu-fast", "gpu", "dali")  # hf_decomp.data.loader.DECODERS, without importing torch

__all__ = ["HelpFormatter", "positive_int", "non_negative_int", "int_or_fraction", "coverage_fraction", "int_list",
           "name_list",
           "criterion_choices", "add_deprecated_alias", "refuse_flag", "add_model_arguments", "add_data_arguments",
           "add_selection_arguments", "add_grid_arguments", "add_run_arguments", "add_resume_arguments",
           "add_speed_arguments", "add_layer_arguments", "add_cache_argument", "DEFAULT_MODEL", "CIFAR_RESNETS"]

DEFAULT_MODEL = "cifar10_resnet20"
CIFAR_RESNETS = ("cifar10_resnet20", "cifar10_resnet32", "cifar10_resnet44", "cifar10_resnet56")
PAPER_GRID = (1, 2, 3, 5, 8, 10, 16, 32)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default, except where there is none to show.

    ``None`` (the help says what happens when the flag is not given) and the off state of a plain
    switch (``--list-layers``) are not printed; help texts never repeat the default themselves.
    """

    def _get_help_string(self, action):
        if action.default is None or isinstance(action, argparse._StoreConstAction):
            return action.help
        return super()._get_help_string(action)


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


def coverage_fraction(text: str) -> float:
    """``--coverage``: a fraction in (0, 1] of each class's votes, the unit of ``AnalysisSettings.coverage``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction such as 0.5") from None
    if 1 < value <= 100:
        raise argparse.ArgumentTypeError(f"{text} is a percentage; coverage is a fraction in (0, 1]: give "
                                         f"{value / 100:g} for {value:g} %")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} must be a fraction in (0, 1] (e.g. 0.5)")
    return value


def int_list(text: str) -> list[int]:
    """``1,5,10`` -> [1, 5, 10] (also one value: ``5`` -> [5])."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of integers (e.g. 1 5 10)") from None


def name_list(text: str) -> list[str]:
    """``a,b`` -> ['a', 'b']."""
    return [v.strip() for v in text.split(",") if v.strip()]


class _Flatten(argparse.Action):
    """nargs='+' of a list type: ``--k1-grid 1 5 10`` and ``--k1-grid 1,5,10`` both give [1, 5, 10].

    Repeating the flag adds to the values given before (never to the default).
    """

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, self.dest, None)
        given = [] if given is self.default or given is None else given
        setattr(namespace, self.dest, given + [item for chunk in values for item in chunk])


def criterion_choices(scope: str = "refit") -> tuple[str, ...]:
    """Names ``--criterion`` accepts, from the criterion registry (torch-free to import): ``refit`` (every
    criterion sized by k), ``statistics`` (those computed from streamed class statistics, as ``analyze``
    and the activation-map study do)."""
    from ..method.criteria import list_criteria

    filters = {"refit": {}, "statistics": {"streamable": True}, "maps": {"streamable": True}}[scope]
    return tuple(list_criteria(set_size="k", **filters))


def criterion_help(name: str) -> str:
    from ..method.criteria import get_criterion

    return get_criterion(name).help


class _DeprecatedAlias(argparse.Action):
    """An old spelling: stores like the new flag and prints one warning line naming it."""

    def __init__(self, option_strings, dest, new_flag: str, convert=None, **kwargs):
        super().__init__(option_strings, dest, **kwargs)
        self.new_flag, self.convert = new_flag, convert

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"{parser.prog}: warning: {option_string} is deprecated; use {self.new_flag}", file=sys.stderr)
        setattr(namespace, self.dest, self.convert(values) if self.convert else values)


def add_deprecated_alias(container, old: str, new: str, dest: str, *, type=None, convert=None, nargs=None) -> None:
    """Hidden ``old`` flag, stored in ``dest`` (the new flag's) after a warning naming ``new``."""
    container.add_argument(old, dest=dest, action=_DeprecatedAlias, new_flag=new, type=type, convert=convert,
                           nargs=nargs, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def refuse_flag(parser: argparse.ArgumentParser, flag: str, hint: str) -> None:
    """Make ``flag`` an error with a hint, instead of a silently ignored or abbreviated option."""

    class _Refuse(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            parser.error(f"{option_string} does nothing here; {hint}")

    parser.add_argument(flag, action=_Refuse, nargs="?", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_model_arguments(parser: argparse.ArgumentParser, *, many: tuple[str, ...] | None = None,
                        default: str | None = DEFAULT_MODEL, weights: bool = True, help: str | None = None) -> None:
    """``--model`` (one name, or several with ``many`` = their default) and ``--weights``."""
    group = parser.add_argument_group("model")
    names = ("timm name (cifar10_resnet20, timm:resnet50.a1_in1k, hf-hub:timm/...), transformers Hub id or "
             "local folder")
    if many is not None:
        group.add_argument("--model", nargs="+", type=name_list, action=_Flatten, default=list(many),
                           metavar="NAME", help=help or f"one or more models: {names}")
        add_deprecated_alias(group, "--models", "--model", "model", type=name_list)
    else:
        group.add_argument("--model", default=default, metavar="NAME", help=help or names)
    if weights:
        group.add_argument("--weights", default=None, metavar="PATH",
                           help="local weights file for a timm architecture (loaded with weights_only=True)")
        add_deprecated_alias(group, "--checkpoint", "--weights", "weights")


_DATA = {
    "dataset": (("--dataset",), dict(default=None, help="Hub dataset name or local folder/parquet (not given: the "
                                     "bundled CIFAR-10, else uoft-cs/cifar10 from the Hub)")),
    "stats_split": (("--stats-split",), dict(default="train", help="split the statistics are gathered on")),
    "eval_split": (("--eval-split",), dict(default=None, help="split accuracies are measured on (not given: "
                                           "test, else validation)")),
    "image_column": (("--image-column",), dict(default=None, help="image column (not given: detected)")),
    "label_column": (("--label-column",), dict(default=None, help="label column (not given: detected)")),
    "label_map": (("--label-map",), dict(default=None, metavar="FILE.json",
                                         help="which dataset class is which model class, as a JSON object {dataset "
                                              "label: model label} (names or indices); needed only when the class "
                                              "names do not match the model's")),
    "streaming": (("--streaming",), dict(action=argparse.BooleanOptionalAction, default=False,
                                         help="stream the dataset instead of downloading it")),
    "limit": (("--limit",), dict(type=positive_int, default=None, metavar="N",
                                 help="seeded random subset of N images of the statistics split")),
    "eval_limit": (("--eval-limit",), dict(type=positive_int, default=None, metavar="N",
                                           help="seeded random subset of N images of the evaluation split")),
    "batch_size": (("--batch-size",), dict(type=positive_int, default=256, help="images per forward pass")),
    "num_workers": (("--num-workers",), dict(type=non_negative_int, default=None,
                                             help="data-loader workers (not given: from the machine's cores and "
                                                  "the device)")),
    "decode": (("--decode",), dict(default="cpu", choices=DECODE_CHOICES,
                                   help="where JPEG images are decoded: loader workers with PIL (cpu), loader "
                                        "workers with libjpeg-turbo + torch's resize (cpu-fast: pixels within "
                                        "two levels; pip install simplejpeg), the CUDA device (gpu: nvJPEG; falls "
                                        "back to cpu without CUDA) or NVIDIA DALI on the device (dali: refused "
                                        "without DALI or CUDA)")),
}
STUDY_DATA = ("dataset", "stats_split", "eval_split", "label_map", "limit", "eval_limit", "batch_size", "num_workers")


def add_data_arguments(parser: argparse.ArgumentParser, only: tuple[str, ...] | None = None, **overrides) -> None:
    """The data flags (all, or the dests in ``only``); ``overrides`` = {dest: {kwarg: value}}."""
    group = parser.add_argument_group("data")
    for dest, (flags, kwargs) in _DATA.items():
        if only is None or dest in only:
            group.add_argument(*flags, **{**kwargs, **overrides.get(dest, {})})


def add_selection_arguments(parser: argparse.ArgumentParser, *, k1: bool = True, k2: bool = True,
                            fractions: bool = False, criterion: str | None = None, criterion_default: str = "histogram",
                            bias_correction: bool = False, k_alias: bool = False):
    """``--k1``, ``--k2`` (absolute, or with ``fractions`` a fraction of each layer's width), ``--criterion``
    (choices of :func:`criterion_choices` scope ``criterion``) and ``--bias-correction``. Returns the group."""
    group = parser.add_argument_group("selection")
    k_type = int_or_fraction if fractions else positive_int
    width = " (or a fraction of each layer's width, e.g. 0.1)" if fractions else ""
    if k1:
        group.add_argument("--k1", type=k_type, default=5, help=f"top features per sample that vote{width}")
    if k2:
        group.add_argument("--k2", type=k_type, default=5, help=f"influential features kept per class{width}")
        if k_alias:
            add_deprecated_alias(group, "--k", "--k2", "k2", type=k_type)
    if criterion is not None:
        names = criterion_choices(criterion)
        group.add_argument("--criterion", default=criterion_default, choices=names,
                           help="how features are ranked per class: "
                                + "; ".join(f"{name} = {criterion_help(name)}" for name in names))
        add_deprecated_alias(group, "--method", "--criterion", "criterion")
    if bias_correction:
        group.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=False,
                           help="fold the dropped features' mean contribution into the bias: "
                                "b_c += sum of dropped W_cj mean(x_j)")
    return group


def add_grid_arguments(parser: argparse.ArgumentParser, *, k1: tuple[int, ...] | None = PAPER_GRID,
                       k2: tuple[int, ...] | None = PAPER_GRID, aliases: dict[str, str] | None = None,
                       purpose: str = "values the study sweeps") -> None:
    """``--k1-grid`` / ``--k2-grid`` (space- or comma-separated); ``aliases`` = {old flag: new flag}."""
    group = parser.add_argument_group("grids")
    for name, default in (("k1", k1), ("k2", k2)):
        if default is not None:
            group.add_argument(f"--{name}-grid", nargs="+", type=int_list, action=_Flatten, default=list(default),
                               metavar="N", help=f"{name} {purpose}")
    for old, new in (aliases or {}).items():
        add_deprecated_alias(group, old, new, new.lstrip("-").replace("-", "_"), type=int_list)


def add_cache_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", default=None,
                        help="feature cache folder; refused if made for another model or dataset (not given: "
                             "under $HF_DECOMP_CACHE)")


def add_run_arguments(parser: argparse.ArgumentParser, default_out: str | None, *, seed: bool = True,
                      out_help: str = "results folder", out_metavar: str | None = None) -> None:
    """``--out``, ``--overwrite`` and ``--seed``."""
    group = parser.add_argument_group("run")
    group.add_argument("--out", default=default_out, required=default_out is None and out_metavar is not None,
                       metavar=out_metavar, help=out_help)
    group.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                       help="replace results already in --out")
    if seed:
        group.add_argument("--seed", type=int, default=0,
                           help="seed of every random choice (--limit subsets, noise, held-out images, training)")


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    """Long runs: save the pass's state and resume it."""
    group = parser.add_argument_group("resume")
    group.add_argument("--resume", action=argparse.BooleanOptionalAction, default=False,
                       help="continue an interrupted run from its saved state (same settings and process count)")
    group.add_argument("--save-every", type=positive_int, default=None, metavar="BATCHES",
                       help="save the pass's sums and position every this many batches (per process)")
    group.add_argument("--save-every-minutes", type=float, default=None, metavar="MINUTES",
                       help="save the pass's sums and position every this many minutes (not given: 10 with "
                            "--resume and no --save-every)")
    group.add_argument("--resume-dir", default=None, metavar="DIR",
                       help="where the saved state goes (not given: .<out name>.checkpoints beside --out)")
    add_deprecated_alias(group, "--checkpoint-every", "--save-every", "save_every", type=positive_int)
    add_deprecated_alias(group, "--checkpoint-minutes", "--save-every-minutes", "save_every_minutes", type=float)
    add_deprecated_alias(group, "--checkpoint-dir", "--resume-dir", "resume_dir")


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("speed")
    group.add_argument("--mixed-precision", default=None, choices=("no", "bf16", "fp16"),
                       help="autocast the forward pass (not given: accelerate's config, else no)")
    group.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False,
                       help="channels-last inputs and weights (faster convolutions on recent GPUs)")


def add_layer_arguments(parser: argparse.ArgumentParser, default: list[str] | None = None,
                        purpose: str = "also analyze these layers in the same pass") -> None:
    """``--layers`` (module names, timm feature_info.N, all-blocks, final) and ``--list-layers``."""
    group = parser.add_argument_group("layers")
    group.add_argument("--layers", nargs="+", default=default, metavar="NAME",
                       help=f"{purpose}: module names as model.named_modules() prints them, feature_info.N, "
                            "'all-blocks' or 'final'")
    group.add_argument("--list-layers", action="store_true", help="print the model's layer names and exit")


# Arguments that name things a subcommand reads: --out must be none of them, inside none and contain none.
INPUT_ARGUMENTS = {"dataset": "--dataset", "indices": "--indices", "weights": "--weights",
                   "cache_dir": "--cache-dir", "resume_dir": "--resume-dir", "model": "--model",
                   "imagenet_dataset": "--imagenet-dataset", "label_map": "--label-map"}


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


def print_layer_list(args: argparse.Namespace) -> int:
    """Print every name ``--layers`` accepts, blocks marked, for the model of ``args``."""
    from ..layers import block_names, layer_choices
    from ..models import load_classifier

    model = args.model[0] if isinstance(args.model, list) else args.model
    adapter = load_classifier(model or DEFAULT_MODEL, checkpoint=getattr(args, "weights", None))
    blocks = set(block_names(adapter))
    for name in layer_choices(adapter):
        print(f"{name}  (block)" if name in blocks else name)
    return 0
