"""``hf-decomp refit`` and ``hf-decomp finetune``: recover the accuracy lost by decomposing the head.

``refit``: select k features per class (any criterion), fold the dropped features into the bias and
re-fit the kept weights on cached training features; backbone untouched, seconds on CPU.
``finetune``: the same, then train the whole decomposed network for a few epochs with accelerate.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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
    group.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    group.add_argument("--no-augment", dest="augment", action="store_false", help="no data augmentation")
    group.add_argument("--distill", type=float, default=0.0,
                       help="weight of knowledge distillation from the full model (0 = cross-entropy only)")
    group.add_argument("--temperature", type=float, default=4.0, help="distillation temperature")
    add_output_arguments(finetune, "runs/finetune")
    finetune.set_defaults(func=run_finetune)


def _cached(adapter, split, cache_dir, args):
    from ..feature_cache import cached_features

    directory = None if cache_dir is None else Path(cache_dir) / split.split
    if directory is not None and directory.is_dir() and any(directory.iterdir()) \
            and not (directory / "meta.json").is_file():
        from ..errors import DecompValueError

        # FeatureCache.write clears its folder: never do that to a folder that is not a feature cache
        raise DecompValueError(f"--cache-dir: {directory} holds files but is not an hf-decomp feature cache "
                               f"(no meta.json). Choose an empty or new folder.")
    return cached_features(adapter, split, directory=directory, batch_size=args.batch_size,
                           num_workers=args.num_workers)


def build_recovered_head(args: argparse.Namespace):
    """Load model and data, select + correct + refit. Returns (adapter, train split, eval split, head, metrics)."""
    import torch

    from ..data import default_eval_split, load_image_split
    from ..data.labels import align_labels
    from ..errors import DecompValueError
    from ..models import load_classifier
    from ..refit import METHODS, check_labelled, decompose_head
    from ..checks import check_k

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
    (train, train_labels), (test, test_labels) = (
        align_labels(split, adapter.label_names, args.label_map, model=f"model {adapter.name!r}")
        for split in (train, test))
    train_x, train_y = _cached(adapter, train, args.cache_dir, args)
    test_x, test_y = _cached(adapter, test, args.cache_dir, args)
    weight, bias = adapter.weight.detach().float().cpu(), adapter.bias.detach().float().cpu()
    head = decompose_head(weight, bias, train_x, train_y, method=args.method, k=args.k, k1=args.k1,
                          bias_correction=args.bias_correction, refit=True, max_iter=args.max_iter)
    with torch.no_grad():
        full = 100.0 * float(((test_x @ weight.T + bias).argmax(1) == test_y).float().mean())
        decomposed = 100.0 * float((head(test_x).argmax(1) == test_y).float().mean())
    metrics = {"model": adapter.name, "method": args.method, "k": args.k, "bias_correction": args.bias_correction,
               "train_samples": int(train_y.numel()), "eval_samples": int(test_y.numel()),
               "full_accuracy": full, "decomposed_accuracy": decomposed, "rho": decomposed / full if full else None,
               "multiply_adds": {"full": weight.numel(), "decomposed": head.multiply_adds},
               "labels": {train.split: train_labels, test.split: test_labels}}
    return adapter, train, test, head, metrics


def _save_head(head, adapter, metrics, staging: Path) -> None:
    from safetensors.torch import save_file

    from ..indices import InfluentialIndices
    from ..io_utils import atomic_write_json

    InfluentialIndices(sets=head.index_sets(), num_features=head.num_features, label_names=adapter.label_names,
                       metadata={"base_model": adapter.name, "method": metrics["method"], "k2": metrics["k"],
                                 "metrics": metrics}).save(staging)
    save_file({k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()},
              staging / "head.safetensors", metadata={"format": "hf-decomp-head/1"})
    atomic_write_json(staging / "metrics.json", metrics)


def run_refit(args: argparse.Namespace) -> int:
    from ..io_utils import check_output_dir, staged_output_dir

    check_output_dir(args.out, args.overwrite)
    adapter, _, _, head, metrics = build_recovered_head(args)
    with staged_output_dir(args.out, args.overwrite) as staging:
        _save_head(head, adapter, metrics, staging)
    print(f"full accuracy        {metrics['full_accuracy']:.2f} %")
    print(f"refit accuracy       {metrics['decomposed_accuracy']:.2f} %   rho = {metrics['rho']:.4f}   "
          f"(method {metrics['method']}, k = {metrics['k']}, bias correction {metrics['bias_correction']})")
    print(f"results in {args.out}/ (indices.json, head.safetensors, metrics.json)")
    return 0


def run_finetune(args: argparse.Namespace) -> int:
    from ..finetune import build_decomposed_model, finetune, training_transform
    from ..io_utils import atomic_write_json, check_output_dir

    check_output_dir(args.out, args.overwrite)
    adapter, train, test, head, metrics = build_recovered_head(args)
    if args.streaming:
        from ..errors import DecompValueError

        raise DecompValueError("finetune needs a sized, shuffleable training split; drop --streaming.")
    print(f"refit accuracy       {metrics['decomposed_accuracy']:.2f} % (full {metrics['full_accuracy']:.2f} %), "
          f"fine-tuning {args.epochs} epoch(s)")
    model = build_decomposed_model(adapter, head, selection_method=args.method, k2=args.k)
    result = finetune(model, train, transform=training_transform(adapter, args.augment), eval_split=test,
                      eval_transform=adapter.transform, epochs=args.epochs, lr=args.lr,
                      weight_decay=args.weight_decay, batch_size=args.train_batch_size,
                      num_workers=args.num_workers, out_dir=Path(args.out), checkpoint_every=args.checkpoint_every,
                      seed=args.seed, teacher=adapter if args.distill > 0 else None, distill=args.distill,
                      temperature=args.temperature)
    metrics["finetune"] = result.metrics
    final = result.metrics["eval"]["accuracy"]
    metrics["finetuned_accuracy"] = final
    metrics["finetuned_rho"] = final / metrics["full_accuracy"] if metrics["full_accuracy"] else None
    atomic_write_json(Path(args.out) / "metrics.json", metrics)
    print(f"fine-tuned accuracy  {final:.2f} %   rho = {metrics['finetuned_rho']:.4f}")
    print(f"model in {args.out}/ (config.json, model.safetensors; load with "
          f"DecomposedForImageClassification.from_pretrained)")
    return 0
