"""``hf-decomp refit`` and ``hf-decomp finetune``: recover the accuracy lost by decomposing the head.

``refit``: select k2 features per class (any criterion), fold the dropped features into the bias and
re-fit the kept weights on cached training features; backbone untouched, seconds on CPU.
``finetune``: the same, then train the whole decomposed network for a few epochs with accelerate.
The work is :func:`hf_decomp.recovery.heads.build_recovered_head`; these commands parse, call and print.
Every flag's dest is a field of :class:`~hf_decomp.recovery.settings.RefitSettings` /
:class:`~hf_decomp.recovery.settings.FinetuneSettings` (a test checks it); the settings are built from
the parsed flags in one call.
"""

from __future__ import annotations

import argparse

from .common import (
    HelpFormatter,
    add_cache_argument,
    add_data_arguments,
    add_model_arguments,
    add_run_arguments,
    add_selection_arguments,
    positive_int,
    refuse_flag,
)

DEFAULT_VAL_SIZE = "5000"  # = hf_decomp.data.holdout.DEFAULT_VAL_SIZE (that module imports torch; a test ties them)
RECOVERY_DATA = ("dataset", "stats_split", "eval_split", "image_column", "label_column", "label_map", "streaming",
                 "limit", "eval_limit", "batch_size", "num_workers")  # no --decode: features come from the cache


def _add_recovery_arguments(parser: argparse.ArgumentParser) -> None:
    group = add_selection_arguments(parser, criterion="refit", criterion_default="pruning", bias_correction=True,
                                    k_alias=True)
    group.add_argument("--max-iter", type=int, default=100, help="L-BFGS iterations of each refit")
    group.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.75],
                       help="fractions kept per pruning step to try; the one best on --val-split is used")
    group.add_argument("--val-split", default=DEFAULT_VAL_SIZE,
                       help="images held out from --stats-split (seeded by --val-seed, stratified by class) or the name "
                            "of a validation split; every choice is made on it, the test split is read at the end")
    group.add_argument("--val-seed", type=int, default=0,
                       help="seed of the held-out validation images (--seed seeds the training)")
    add_cache_argument(group)


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser, only=RECOVERY_DATA)
    refuse_flag(parser, "--decode", "refit and finetune read images through the feature cache's CPU loader")


def register(subparsers) -> None:
    refit = subparsers.add_parser(
        "refit", help="select features, correct biases and refit the decomposed head on cached features",
        description="Select k2 features per class, optionally fold the dropped features' mean contribution into "
                    "the bias, and refit the kept weights and biases on the training split's features (backbone "
                    "frozen).",
        formatter_class=HelpFormatter)
    add_model_arguments(refit)
    _add_data_arguments(refit)
    _add_recovery_arguments(refit)
    add_run_arguments(refit, "runs/refit")
    refit.set_defaults(func=run_refit)

    finetune = subparsers.add_parser(
        "finetune", help="refit, then fine-tune the whole decomposed network with accelerate",
        description="Build the decomposed head as `refit` does, then train backbone and head together "
                    "(SGD, warm-up + cosine, augmentation) and save a DecomposedForImageClassification.",
        formatter_class=HelpFormatter)
    add_model_arguments(finetune)
    _add_data_arguments(finetune)
    _add_recovery_arguments(finetune)
    group = finetune.add_argument_group("fine-tuning")
    group.add_argument("--epochs", type=float, default=1.0, help="epochs (fractions allowed)")
    group.add_argument("--lr", type=float, default=0.01, help="peak learning rate (SGD, Nesterov)")
    group.add_argument("--weight-decay", type=float, default=1e-4, help="SGD weight decay")
    group.add_argument("--train-batch-size", type=positive_int, default=128, help="images per training step")
    group.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                       help="random-crop and flip augmentation of the training images")
    group.add_argument("--distill", type=float, default=0.0,
                       help="weight of knowledge distillation from the full model (0 = cross-entropy only)")
    group.add_argument("--temperature", type=float, default=4.0, help="distillation temperature")
    group.add_argument("--freeze-bn", action=argparse.BooleanOptionalAction, default=False,
                       help="keep batch-norm running statistics fixed (layers in eval mode; their scale and shift train)")
    group.add_argument("--clip-grad", type=float, default=None, help="clip the gradient norm to this value")
    group.add_argument("--backbone-lr-scale", type=float, default=1.0,
                       help="backbone learning rate = --lr times this (the head uses --lr)")
    group.add_argument("--head-warmup", type=float, default=0.0,
                       help="fraction of the steps that train the head only (backbone learning rate 0)")
    group.add_argument("--eval-every", type=float, default=0.25,
                       help="evaluate on --val-split every this many epochs and keep the best model (early stop); "
                            "0 = keep the last")
    add_run_arguments(finetune, "runs/finetune")
    finetune.set_defaults(func=run_finetune)


def _recovered_head(args: argparse.Namespace):
    """Settings from the parsed flags (validated before anything is loaded), then the recovered head."""
    from ..recovery.heads import build_recovered_head
    from ..recovery.settings import FinetuneSettings, RefitSettings

    settings = (FinetuneSettings if args.command == "finetune" else RefitSettings).from_namespace(args)
    return settings, build_recovered_head(settings=settings)


def run_refit(args: argparse.Namespace) -> int:
    from ..recovery.heads import save_recovered_head
    from ..utils.files import check_output_dir, staged_output_dir

    check_output_dir(args.out, args.overwrite)
    _, (adapter, _, _, _, head, metrics) = _recovered_head(args)
    with staged_output_dir(args.out, args.overwrite) as staging:
        save_recovered_head(head, adapter, metrics, staging)
    _print_accuracies(metrics, "refit")
    halves = metrics["test_halves"]
    print(f"test halves (keep chosen on one half, read on the other, averaged): refit {halves['accuracy']:.2f} "
          f"± {halves['standard_error']:.2f} %   full {halves['full_accuracy']:.2f} %")
    print(f"(criterion {metrics['method']}, k2 = {metrics['k']}, keep = {metrics['keep']}, "
          f"bias correction {metrics['bias_correction']}; choices made on validation)")
    print(f"results in {args.out}/ (indices.json, head.safetensors, metrics.json)")
    return 0


def _print_accuracies(metrics: dict, label: str, validation: float | None = None, test: float | None = None) -> None:
    val, full = metrics["validation"], metrics["full_accuracy"]
    validation = val["decomposed_accuracy"] if validation is None else validation
    test = metrics["decomposed_accuracy"] if test is None else test
    memorised = " memorised" if val.get("memorised") else ""
    print(f"validation ({val['samples']} images{memorised})   full {val['full_accuracy']:.2f} %   {label} "
          f"{validation:.2f} %")
    print(f"test       ({metrics['eval_samples']} images)   full {full:.2f} %   {label} {test:.2f} %   "
          f"rho = {test / full if full else float('nan'):.4f}")
    if val.get("memorised"):
        print(f"note: validation is {metrics['val_split']['note']}")


def run_finetune(args: argparse.Namespace) -> int:
    from ..recovery.heads import finetune_recovered_head
    from ..utils.files import atomic_write_json, check_output_dir, staged_output_dir

    check_output_dir(args.out, args.overwrite)
    settings, (adapter, fit, validation, test, head, metrics) = _recovered_head(args)
    print(f"refit: validation {metrics['validation']['decomposed_accuracy']:.2f} % "
          f"(full {metrics['validation']['full_accuracy']:.2f} %); fine-tuning {args.epochs} epoch(s) on "
          f"{fit.num_rows} images")
    model, result, metrics = finetune_recovered_head(adapter, fit, validation, test, head, metrics, settings=settings)
    with staged_output_dir(args.out, args.overwrite) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        from ..hub.export import write_extras

        write_extras(model, staging)  # indices and model card, whatever was imported before
        atomic_write_json(staging / "metrics.json", metrics)
        atomic_write_json(staging / "finetune.json", {"metrics": result.metrics, "history": result.history})
    _print_accuracies(metrics, "fine-tuned", result.metrics["validation"]["accuracy"], metrics["finetuned_accuracy"])
    print(f"(refit before fine-tuning: test {metrics['refit_accuracy']:.2f} %; model chosen at step "
          f"{result.metrics['validation']['best_step']} of {result.metrics['steps']} on validation)")
    print(f"model in {args.out}/ (config.json, model.safetensors; load with "
          f"DecomposedForImageClassification.from_pretrained)")
    return 0
