"""``hf-decomp refit`` and ``hf-decomp finetune``: recover the accuracy lost by decomposing the head.

``refit``: select k features per class (any criterion), fold the dropped features into the bias and
re-fit the kept weights on cached training features; backbone untouched, seconds on CPU.
``finetune``: the same, then train the whole decomposed network for a few epochs with accelerate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.holdout import DEFAULT_VAL_SIZE
from .common import add_data_arguments, add_model_arguments, add_output_arguments, positive_int

METHOD_HELP = ("histogram = Algorithm 1 (paper); contribution = W_cj (mean_c(x_j) - mean(x_j)); "
               "label-free = W_cj mean(x_j); sparse-glm = elastic-net entry order; pruning = iterative "
               "contribution pruning with refits (best, slowest)")


def _add_selection_arguments(parser: argparse.ArgumentParser, default_method: str) -> None:
    group = parser.add_argument_group("selection and refit")
    group.add_argument("--method", default=default_method, help=METHOD_HELP)
    group.add_argument("--k", type=positive_int, default=5, help="features kept per class (k2)")
    group.add_argument("--k1", type=positive_int, default=5, help="top features per sample that vote (histogram)")
    group.add_argument("--no-bias-correction", dest="bias_correction", action="store_false",
                       help="keep the original biases (default: b_c += sum of dropped W_cj mean(x_j))")
    group.add_argument("--max-iter", type=int, default=100, help="L-BFGS iterations of each refit")
    group.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.75],
                       help="fractions kept per pruning step to try; the one best on --val-split is used")
    group.add_argument("--val-split", default=str(DEFAULT_VAL_SIZE),
                       help="images held out from --stats-split (seeded by --val-seed, stratified by class) or the name "
                            "of a validation split; every choice is made on it, the test split is read at the end")
    group.add_argument("--val-seed", type=int, default=0,
                       help="seed of the held-out validation images (--seed seeds the training)")
    group.add_argument("--cache-dir", default=None,
                       help="folder for the cached features (<dir>/<split>); refused if made for another "
                            "model or dataset (default: under $HF_DECOMP_CACHE)")


def register(subparsers) -> None:
    refit = subparsers.add_parser(
        "refit", help="select features, correct biases and refit the decomposed head on cached features",
        description="Select k features per class, fold the dropped features' mean contribution into the bias, "
                    "and refit the kept weights and biases on the training split's features (backbone frozen).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_arguments(refit)
    add_data_arguments(refit)
    _add_selection_arguments(refit, "pruning")
    add_output_arguments(refit, "runs/refit")
    refit.set_defaults(func=run_refit)

    finetune = subparsers.add_parser(
        "finetune", help="refit, then fine-tune the whole decomposed network with accelerate",
        description="Build the decomposed head as `refit` does, then train backbone and head together "
                    "(SGD, warm-up + cosine, augmentation) and save a DecomposedForImageClassification.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_model_arguments(finetune)
    add_data_arguments(finetune)
    _add_selection_arguments(finetune, "pruning")
    group = finetune.add_argument_group("fine-tuning")
    group.add_argument("--epochs", type=float, default=1.0, help="epochs (fractions allowed)")
    group.add_argument("--lr", type=float, default=0.01, help="peak learning rate (SGD, Nesterov)")
    group.add_argument("--weight-decay", type=float, default=1e-4)
    group.add_argument("--train-batch-size", type=positive_int, default=128)
    group.add_argument("--no-augment", dest="augment", action="store_false", help="no data augmentation")
    group.add_argument("--distill", type=float, default=0.0,
                       help="weight of knowledge distillation from the full model (0 = cross-entropy only)")
    group.add_argument("--temperature", type=float, default=4.0, help="distillation temperature")
    group.add_argument("--freeze-bn", action="store_true",
                       help="keep batch-norm running statistics fixed (layers in eval mode; their scale and shift train)")
    group.add_argument("--clip-grad", type=float, default=None, help="clip the gradient norm to this value")
    group.add_argument("--backbone-lr-scale", type=float, default=1.0,
                       help="backbone learning rate = --lr times this (the head uses --lr)")
    group.add_argument("--head-warmup", type=float, default=0.0,
                       help="fraction of the steps that train the head only (backbone learning rate 0)")
    group.add_argument("--eval-every", type=float, default=0.25,
                       help="evaluate on --val-split every this many epochs and keep the best model (early stop); "
                            "0 = keep the last")
    add_output_arguments(finetune, "runs/finetune")
    finetune.set_defaults(func=run_finetune)


def _cached(adapter, split, cache_dir, args):
    from ..passes.feature_cache import cached_features

    directory = None if cache_dir is None else Path(cache_dir) / split.split
    if directory is not None and directory.is_dir() and any(directory.iterdir()) \
            and not (directory / "meta.json").is_file():
        from ..utils.errors import DecompValueError

        # FeatureCache.write clears its folder: never do that to a folder that is not a feature cache
        raise DecompValueError(f"--cache-dir: {directory} holds files but is not an hf-decomp feature cache "
                               f"(no meta.json). Choose an empty or new folder.")
    return cached_features(adapter, split, directory=directory, batch_size=args.batch_size,
                           num_workers=args.num_workers)


def _accuracy(logits, labels) -> float:
    return 100.0 * float((logits.argmax(1) == labels).float().mean())


def _check_rows_align(split, labels, features_labels) -> None:
    """Cached features index the split's rows only when every image was read (none skipped)."""
    import torch

    from ..utils.errors import DecompValueError

    if features_labels.numel() != labels.numel() or not torch.equal(features_labels, labels):
        raise DecompValueError(
            f"{split.name} [{split.split}]: {labels.numel() - features_labels.numel()} images could not be read, so "
            f"rows cannot be held out by index; name a validation split with --val-split NAME.")


def build_recovered_head(args: argparse.Namespace):
    """Load model and data, hold out validation, select + correct + refit (choices on validation).

    Returns (adapter, fit split, validation split, test split, head, metrics). ``metrics``'
    ``full_accuracy`` / ``decomposed_accuracy`` / ``rho`` are on the test split; ``validation`` holds
    the same on the validation split and every candidate tried.
    """
    import torch

    from ..data import default_eval_split, load_image_split
    from ..data.holdout import hold_out
    from ..data.labels import align_labels, to_model_labels
    from ..models import load_classifier
    from ..recovery.refit import METHODS, check_labelled, decompose_head
    from ..utils.checks import check_k
    from ..utils.errors import DecompValueError

    if args.method not in METHODS:
        raise DecompValueError(f"Unknown --method {args.method!r}; known methods: {', '.join(METHODS)}.")
    adapter = load_classifier(args.model or "cifar10_resnet20", checkpoint=args.checkpoint)
    check_k("k", args.k, adapter.num_features)  # before the features are computed
    check_k("k1", args.k1, adapter.num_features)
    split_kwargs = dict(streaming=args.streaming, image_column=args.image_column, label_column=args.label_column,
                        seed=args.seed)
    train = load_image_split(args.dataset, args.stats_split, limit=args.limit, **split_kwargs)
    if train.label_column is None:
        check_labelled(None, adapter.num_classes, f"{args.command}")
    test = load_image_split(args.dataset, args.eval_split or default_eval_split(args.dataset),
                            limit=args.eval_limit, **split_kwargs)

    def aligned(split):  # labels read in the model's class order from here on
        return align_labels(split, adapter.label_names, args.label_map, model=f"model {adapter.name!r}")

    (train, train_labels), (test, test_labels) = aligned(train), aligned(test)
    held = hold_out(train, args.val_split, dataset=args.dataset, **{**split_kwargs, "seed": args.val_seed})
    if held.fit_rows is None:  # a named validation split, loaded by hold_out
        held.validation = aligned(held.validation)[0]
    train_x, train_y = _cached(adapter, train, args.cache_dir, args)
    if held.fit_rows is not None:
        raw = torch.as_tensor(list(train.dataset[train.label_column]))
        _check_rows_align(train, to_model_labels(raw, train), train_y)
        fit_x, fit_y = train_x[held.fit_rows], train_y[held.fit_rows]
        val_x, val_y = train_x[held.validation_rows], train_y[held.validation_rows]
    else:
        fit_x, fit_y = train_x, train_y
        val_x, val_y = _cached(adapter, held.validation, args.cache_dir, args)
    weight, bias = adapter.weight.detach().float().cpu(), adapter.bias.detach().float().cpu()
    candidates, head, best = [], None, -1.0
    for keep in (args.keep if args.method == "pruning" else [None]):
        candidate = decompose_head(weight, bias, fit_x, fit_y, method=args.method, k=args.k, k1=args.k1,
                                   bias_correction=args.bias_correction, refit=True, max_iter=args.max_iter,
                                   **({} if keep is None else {"keep": keep}))
        with torch.no_grad():
            val_accuracy = _accuracy(candidate(val_x), val_y)
        candidates.append({"keep": keep, "validation_accuracy": val_accuracy})
        if val_accuracy > best:
            head, best = candidate, val_accuracy
    chosen = next(c for c in candidates if c["validation_accuracy"] == best)
    with torch.no_grad():
        val_full = _accuracy(val_x @ weight.T + bias, val_y)
    test_x, test_y = _cached(adapter, test, args.cache_dir, args)  # the test split, read once, at the end
    with torch.no_grad():
        full = _accuracy(test_x @ weight.T + bias, test_y)
        decomposed = _accuracy(head(test_x), test_y)
    metrics = {"model": adapter.name, "method": args.method, "k": args.k, "bias_correction": args.bias_correction,
               "keep": chosen["keep"], "val_split": held.description,
               "train_samples": int(fit_y.numel()), "eval_split": test.split, "eval_samples": int(test_y.numel()),
               "validation": {"samples": int(val_y.numel()), "full_accuracy": val_full, "decomposed_accuracy": best,
                              "rho": best / val_full if val_full else None, "candidates": candidates},
               "full_accuracy": full, "decomposed_accuracy": decomposed, "rho": decomposed / full if full else None,
               "multiply_adds": {"full": weight.numel(), "decomposed": head.multiply_adds},
               "labels": {train.split: train_labels, test.split: test_labels}}
    return adapter, held.fit, held.validation, test, head, metrics


def _save_head(head, adapter, metrics, staging: Path) -> None:
    from safetensors.torch import save_file

    from ..method.indices import InfluentialIndices
    from ..utils.files import atomic_write_json

    InfluentialIndices(sets=head.index_sets(), num_features=head.num_features, label_names=adapter.label_names,
                       metadata={"base_model": adapter.name, "method": metrics["method"], "k2": metrics["k"],
                                 "metrics": metrics}).save(staging)
    save_file({k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()},
              staging / "head.safetensors", metadata={"format": "hf-decomp-head/1"})
    atomic_write_json(staging / "metrics.json", metrics)


def run_refit(args: argparse.Namespace) -> int:
    from ..utils.files import check_output_dir, staged_output_dir

    check_output_dir(args.out, args.overwrite)
    adapter, _, _, _, head, metrics = build_recovered_head(args)
    with staged_output_dir(args.out, args.overwrite) as staging:
        _save_head(head, adapter, metrics, staging)
    _print_accuracies(metrics, "refit")
    print(f"(method {metrics['method']}, k = {metrics['k']}, keep = {metrics['keep']}, "
          f"bias correction {metrics['bias_correction']}; choices made on validation)")
    print(f"results in {args.out}/ (indices.json, head.safetensors, metrics.json)")
    return 0


def _print_accuracies(metrics: dict, label: str, validation: float | None = None, test: float | None = None) -> None:
    val, full = metrics["validation"], metrics["full_accuracy"]
    validation = val["decomposed_accuracy"] if validation is None else validation
    test = metrics["decomposed_accuracy"] if test is None else test
    print(f"validation ({val['samples']} images)   full {val['full_accuracy']:.2f} %   {label} {validation:.2f} %")
    print(f"test       ({metrics['eval_samples']} images)   full {full:.2f} %   {label} {test:.2f} %   "
          f"rho = {test / full if full else float('nan'):.4f}")


def run_finetune(args: argparse.Namespace) -> int:
    from ..portable.modeling_decomp import DecomposedForImageClassification
    from ..recovery.finetune import evaluate_model, finetune, training_transform
    from ..utils.files import atomic_write_json, check_output_dir, staged_output_dir

    check_output_dir(args.out, args.overwrite)
    if args.streaming:
        from ..utils.errors import DecompValueError

        raise DecompValueError("finetune needs a sized, shuffleable training split; drop --streaming.")
    if args.eval_every < 0:
        from ..utils.errors import DecompValueError

        raise DecompValueError(f"--eval-every {args.eval_every} must be >= 0 epochs")
    adapter, fit, validation, test, head, metrics = build_recovered_head(args)
    print(f"refit: validation {metrics['validation']['decomposed_accuracy']:.2f} % "
          f"(full {metrics['validation']['full_accuracy']:.2f} %); fine-tuning {args.epochs} epoch(s) on "
          f"{fit.num_rows} images")
    model = DecomposedForImageClassification.from_classifier(adapter, head, selection_method=args.method, k2=args.k)
    steps_per_epoch = max(1, (fit.num_rows or 0) // args.train_batch_size)
    eval_every = max(1, round(args.eval_every * steps_per_epoch)) if args.eval_every else None
    result = finetune(model, fit, transform=training_transform(adapter, args.augment),
                      val_split=validation, eval_every=eval_every, eval_transform=adapter.transform,
                      val_start_accuracy=metrics["validation"]["decomposed_accuracy"],
                      epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay,
                      batch_size=args.train_batch_size, num_workers=args.num_workers, out_dir=None,
                      seed=args.seed, teacher=adapter if args.distill > 0 else None, distill=args.distill,
                      temperature=args.temperature, freeze_bn=args.freeze_bn, clip_grad=args.clip_grad,
                      backbone_lr_scale=args.backbone_lr_scale, head_warmup=args.head_warmup)
    model = result.model
    # the test split, read once, for the model chosen on validation
    final = evaluate_model(model, test, adapter.transform, num_workers=args.num_workers)["accuracy"]
    metrics["refit_accuracy"] = metrics["decomposed_accuracy"]
    metrics["finetune"] = result.metrics
    metrics["validation"]["refit_accuracy"] = metrics["validation"]["decomposed_accuracy"]
    metrics["validation"]["finetuned_accuracy"] = result.metrics["validation"]["accuracy"]
    metrics["finetuned_accuracy"] = final
    metrics["finetuned_rho"] = final / metrics["full_accuracy"] if metrics["full_accuracy"] else None
    model.config.metrics = _card_metrics(metrics, args)
    with staged_output_dir(args.out, args.overwrite) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        atomic_write_json(staging / "metrics.json", metrics)
        atomic_write_json(staging / "finetune.json", {"metrics": result.metrics, "history": result.history})
    _print_accuracies(metrics, "fine-tuned", result.metrics["validation"]["accuracy"], final)
    print(f"(refit before fine-tuning: test {metrics['refit_accuracy']:.2f} %; model chosen at step "
          f"{result.metrics['validation']['best_step']} of {result.metrics['steps']} on validation)")
    print(f"model in {args.out}/ (config.json, model.safetensors; load with "
          f"DecomposedForImageClassification.from_pretrained)")
    return 0


def _card_metrics(metrics: dict, args) -> dict:
    """What the model card shows: test accuracies of this model, and the validation ones beside them."""
    from ..utils.paths import default_cifar10_dataset

    val = metrics["validation"]
    return {"full_accuracy": metrics["full_accuracy"], "decomposed_accuracy": metrics["finetuned_accuracy"],
            "rho": metrics["finetuned_rho"], "eval_dataset": args.dataset or default_cifar10_dataset(), "eval_split": metrics["eval_split"],
            "eval_samples": metrics["eval_samples"], "statistics_split": args.stats_split,
            "statistics_samples": metrics["train_samples"],
            "validation": {"split": metrics["val_split"], "samples": val["samples"],
                           "full_accuracy": val["full_accuracy"], "decomposed_accuracy": val["finetuned_accuracy"],
                           "rho": val["finetuned_accuracy"] / val["full_accuracy"] if val["full_accuracy"] else None}}
