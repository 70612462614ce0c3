"""Class-specialist sub-networks vs. class-agnostic L1 magnitude pruning, on class subsets of CIFAR-10.

For each class subset: hold out ``--val-per-class`` training images per class as a validation split
(every hyper-parameter is chosen there, never on test), gather the chosen classes' channel votes on
``--train-per-class`` other training images, then for each budget and method prune with
Torch-Pruning, refit the head on the same training images, and (at ``--ft-budgets``, all budgets by
default) fine-tune for one epoch over those images distilled from the full model's restricted logits.
The k1 fraction and each method's fine-tuning learning rate are chosen on validation at
``--select-budget``; the other budgets reuse them. Accuracy is measured
on every CIFAR-10 test image of the chosen classes. Results are appended to ``--out`` (JSON) after
every configuration, so an interrupted run keeps what it measured.

    python benchmarks/specialize_study.py --model cifar10_resnet20 --out benchmarks/results/specialize/resnet20.json
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from hf_decomp.data import load_image_split
from hf_decomp.models.loading import load_classifier
from hf_decomp.specialize.pipeline import (
    finetune_specialist,
    parameter_count,
    prune_specialist,
    recalibrate_batchnorm,
    recover_specialist,
    subset_split,
)
from hf_decomp.specialize.pruning import PRUNING_METHODS, count_macs, prepare_for_pruning, resolve_classes
from hf_decomp.specialize.recovery import accuracy, class_rows, latency_ms, load_class_images, split_rows
from hf_decomp.specialize.votes import gather_channel_votes
from hf_decomp.utils.paths import cache_dir

SUBSETS = ("cat,dog", "airplane,ship", "automobile,truck", "bird,deer,frog")


def cached_images(split, rows, class_ids, transform, tag):
    key = hashlib.sha256(json.dumps([split.split, list(rows), list(class_ids), tag]).encode()).hexdigest()[:16]
    path = cache_dir() / "specialize" / f"{key}.safetensors"
    if path.is_file():
        tensors = load_file(path)
        return tensors["pixels"], tensors["labels"]
    pixels, labels = load_class_images(split, rows, class_ids, transform)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"pixels": pixels.contiguous(), "labels": labels}, path)
    return pixels, labels


def per_class_slice(data, limit):
    """The first ``limit`` images of each class (rows are stored class by class)."""
    if not limit:
        return data
    keep = torch.cat([torch.nonzero(data[1] == c).flatten()[:limit] for c in data[1].unique()])
    return data[0][keep], data[1][keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cifar10_resnet20")
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.1, 0.3, 0.5, 0.7])
    parser.add_argument("--ft-budgets", nargs="*", type=float, default=None,
                        help="budgets at which to fine-tune (default: every budget)")
    parser.add_argument("--k1-fractions", nargs="+", type=float, default=[0.1, 0.25, 0.5])
    parser.add_argument("--select-budget", type=float, default=0.3, help="budget at which k1 is chosen on validation")
    parser.add_argument("--train-per-class", type=int, default=1000)
    parser.add_argument("--val-per-class", type=int, default=300)
    parser.add_argument("--ft-lrs", nargs="+", type=float, default=[0.01, 0.03],
                        help="fine-tuning learning rates; each method's is chosen on validation at --select-budget")
    parser.add_argument("--use-train-per-class", type=int, default=None,
                        help="use only this many of the cached training images per class (a cheaper run)")
    parser.add_argument("--use-test-per-class", type=int, default=None,
                        help="evaluate on only the first this many test images per class (a cheaper run)")
    parser.add_argument("--latency-budgets", nargs="*", type=float, default=None,
                        help="measure latency only at these budgets (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    ft_budgets = args.budgets if args.ft_budgets is None else args.ft_budgets
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    adapter = load_classifier(args.model)
    model, input_size = adapter.model.eval(), adapter.input_size
    train_split, test_split = load_image_split(None, "train"), load_image_split(None, "test")
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"model": args.model, "runs": []}
    done = {(r["subset"], r["method"], r["budget"], r.get("stage")) for r in results["runs"]}
    results.update(protocol={k: v for k, v in vars(args).items() if k != "out"},
                   full_macs=count_macs(model, input_size), full_params=parameter_count(model),
                   full_latency_ms={"batch1": latency_ms(model, input_size, 1), "batch64": latency_ms(model, input_size, 64)}
                   if args.latency_budgets is None or args.latency_budgets else None)

    def save(record=None):
        if record is not None:
            results["runs"].append(record)
            print(json.dumps(record), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))

    save()
    for subset in args.subsets:
        class_ids = resolve_classes(subset, adapter.label_names)
        started = time.time()
        train_rows, val_rows = split_rows(class_rows(train_split, class_ids), args.val_per_class, args.train_per_class)
        test_rows = sum(class_rows(test_split, class_ids).values(), [])
        train = cached_images(train_split, train_rows, class_ids, adapter.transform, args.model)
        val = cached_images(train_split, val_rows, class_ids, adapter.transform, args.model)
        test = cached_images(test_split, test_rows, class_ids, adapter.transform, args.model)
        train = per_class_slice(train, args.use_train_per_class)
        test = per_class_slice(test, args.use_test_per_class)
        if (subset, "full-restricted", 1.0, "none") not in done:
            with torch.no_grad():
                save({"subset": subset, "method": "full-restricted", "budget": 1.0, "stage": "none",
                      "macs_fraction": 1.0, "params": parameter_count(model),
                      "val_accuracy": accuracy(model(val[0])[:, class_ids], None, val[1]),
                      "test_accuracy": accuracy(model(test[0])[:, class_ids], None, test[1]),
                      "test_images": int(test[1].numel())})
        votes = gather_channel_votes(prepare_for_pruning(model), *train, len(class_ids), args.k1_fractions)
        print(f"{subset}: data + votes {time.time() - started:.0f}s", flush=True)
        # the per-group ratio of a budget does not depend on the method: bisect once per budget
        ratios = {budget: prune_specialist(model, class_ids, budget, method="magnitude",
                                           input_size=input_size)[1]["pruning_ratio"]
                  for budget in sorted({*args.budgets, args.select_budget})}
        # k1 on validation, at the selection budget, with the full recovery recipe
        k1_val = {}
        for fraction in args.k1_fractions:
            pruned, _ = prune_specialist(model, class_ids, args.select_budget, method="class-aware",
                                         input_size=input_size, scores=votes[fraction],
                                         ratio=ratios[args.select_budget])
            k1_val[fraction] = accuracy(recover_specialist(pruned, train), *val)
        k1 = max(k1_val, key=k1_val.get)
        print(f"{subset}: k1 fraction validation accuracies {k1_val} -> {k1}", flush=True)
        # the selection budget first: it fixes each method's fine-tuning learning rate for the others
        chosen_lr = {r["method"]: r["ft_lr"] for r in results["runs"]
                     if r["subset"] == subset and r.get("stage") == "finetune" and r["budget"] == args.select_budget}
        for budget in sorted(args.budgets, key=lambda b: (b != args.select_budget, b)):
            for method in PRUNING_METHODS:
                if (subset, method, budget, "refit") in done and (
                        budget not in ft_budgets or (subset, method, budget, "finetune") in done):
                    continue
                t = time.time()
                raw, info = prune_specialist(model, class_ids, budget, method=method, input_size=input_size,
                                             scores=votes[k1] if method == "class-aware" else None,
                                             ratio=ratios[budget])
                recalibrated = recalibrate_batchnorm(copy.deepcopy(raw), train[0])
                refit_only = recover_specialist(raw, train, recalibrate=False)
                pruned = recover_specialist(raw, train)
                record = {"subset": subset, "method": method, "budget": budget, "stage": "refit",
                          "k1_fraction": k1 if method == "class-aware" else None, "k1_validation": k1_val,
                          **info, "test_accuracy_pruned_only": accuracy(raw, *test),
                          "test_accuracy_bn_recalibrated": accuracy(recalibrated, *test),
                          "test_accuracy_head_refit_only": accuracy(refit_only, *test),
                          "val_accuracy": accuracy(pruned, *val), "test_accuracy": accuracy(pruned, *test),
                          "latency_ms": {"batch1": latency_ms(pruned, input_size, 1),
                                         "batch64": latency_ms(pruned, input_size, 64)}
                          if args.latency_budgets is None or budget in args.latency_budgets else None}
                record["seconds"] = time.time() - t
                if (subset, method, budget, "refit") not in done:
                    save(record)
                if budget not in ft_budgets or (subset, method, budget, "finetune") in done:
                    continue
                lrs = [chosen_lr[method]] if method in chosen_lr else args.ft_lrs
                trials = {}
                for lr in lrs:
                    t = time.time()
                    tuned, metrics = finetune_specialist(pruned, adapter, class_ids,
                                                         subset_split(train_split, train_rows, class_ids),
                                                         epochs=1.0, lr=lr)
                    trials[lr] = (accuracy(tuned, *val), tuned, metrics, time.time() - t)
                lr = max(trials, key=lambda v: trials[v][0])
                chosen_lr.setdefault(method, lr)
                val_accuracy, tuned, metrics, seconds = trials[lr]
                save({**record, "stage": "finetune", "ft_lr": lr,
                      "ft_lr_validation": {str(v): trials[v][0] for v in trials}, "finetune": metrics,
                      "val_accuracy": val_accuracy, "test_accuracy": accuracy(tuned, *test), "seconds": seconds})
                print(f"{subset} {method} {budget}: fine-tuning lr validation "
                      f"{ {v: trials[v][0] for v in trials} } -> {lr}", flush=True)


if __name__ == "__main__":
    main()
