"""Class specialists on CIFAR-10 subsets: every criterion, the same allocation and the same recovery.

For each model, class subset, budget and criterion: score the channel groups once on all training
images of the subset, prune to the budget (``--allocation``, global by default), recalibrate the
batch norms and distil for ``--epochs`` from the full model restricted to the subset, with the
recipe of :class:`hf_decomp.specialize.distill.DistillRecipe` fixed before the study ran. The last
epoch is kept (no checkpoint is chosen). Accuracy is read on every test image of the subset and on
the two seeded, class-stratified test halves, so the report can choose the criterion on one half
and read it on the other (cross-fitting).

Each run saves its scores, its per-epoch checkpoint and, when done, ``result.json`` under
``--work/<model>/<subset>/``, and when done its result in ``--out/runs/<model>/<subset>/``: a killed
study resumes where it stopped (per run and per epoch).

    python benchmarks/specialize_study.py --model cifar10_resnet20 --budgets 0.3 0.15 \\
        --out benchmarks/results/specialize
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hf_decomp.data import load_image_split
from hf_decomp.models.loading import load_classifier
from hf_decomp.specialize.distill import DistillRecipe
from hf_decomp.specialize.pipeline import (
    build_specialist,
    criterion_scores_cached,
    load_specialist_data,
    parameter_count,
    restricted_network,
)
from hf_decomp.specialize.pruning import count_macs, resolve_classes
from hf_decomp.specialize.recovery import one_thread_latency
from hf_decomp.specialize.vocabulary import CRITERIA
from hf_decomp.utils.files import atomic_write_json

SUBSETS = ("cat,dog", "airplane,ship", "automobile,truck", "bird,deer,frog")


def run_subset(adapter, model_name: str, subset: str, budgets, criteria, recipe: DistillRecipe, out: Path,
               work: Path, allocation: str, seed: int) -> None:
    class_ids = resolve_classes(subset, adapter.label_names)
    name = subset.replace(",", "-")
    results, folder = out / "runs" / model_name / name, work / model_name / name
    todo = [(b, c) for b in budgets for c in criteria if not (results / f"{allocation}-{b}-{c}.json").is_file()]
    if not todo:
        return
    model, input_size = adapter.model.eval(), adapter.input_size
    full_macs = count_macs(model, input_size)
    network = restricted_network(model, class_ids)
    started = time.perf_counter()
    data = load_specialist_data(load_image_split(None, "train"), load_image_split(None, "test"), class_ids,
                                adapter.transform, half_seed=0, seed=seed)
    print(f"{model_name} {subset}: {data.train[1].numel()} training, {data.test[1].numel()} test images "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    full_file = results / "full.json"
    if not full_file.is_file():
        from hf_decomp.specialize.distill import evaluate_accuracy

        halves = data.halves()
        full = {"test_accuracy": evaluate_accuracy(network, *data.test),
                **{k: evaluate_accuracy(network, *v) for k, v in halves.items()},
                "macs": full_macs, "params": parameter_count(model), "latency_ms": one_thread_latency(network, input_size),
                "half_sizes": [len(data.half_a), len(data.half_b)]}
        results.mkdir(parents=True, exist_ok=True)
        atomic_write_json(full_file, full)
    for budget, criterion in todo:
        run_dir = folder / f"{allocation}-{budget}-{criterion}"
        started, cpu_started = time.perf_counter(), time.process_time()
        scores = criterion_scores_cached(criterion, network, input_size, data, folder=folder)
        scored = time.perf_counter()
        student, info = build_specialist(network, scores, budget, data, recipe, input_size=input_size,
                                         full_macs=full_macs, allocation=allocation, seed=seed, folder=run_dir,
                                         progress=False)
        info.update(model=model_name, classes=subset.split(","), criterion=criterion, allocation=allocation,
                    budget=budget, epochs=recipe.epochs, seed=seed, scoring_seconds=scored - started,
                    cpu_minutes=(time.process_time() - cpu_started) / 60,
                    wall_minutes=(time.perf_counter() - started) / 60, threads=torch.get_num_threads(),
                    latency_ms=one_thread_latency(student, input_size))
        results.mkdir(parents=True, exist_ok=True)
        atomic_write_json(results / f"{allocation}-{budget}-{criterion}.json", info)
        print(f"  {budget} {criterion:<12} MACs {info['macs_fraction']:.3f} test {info['test_accuracy']:.2f} "
              f"(A {info['half_a']:.2f}, B {info['half_b']:.2f}) {info['wall_minutes']:.1f} min", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["cifar10_resnet20"])
    parser.add_argument("--subsets", nargs="+", default=list(SUBSETS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.3, 0.15])
    parser.add_argument("--criteria", nargs="+", default=list(CRITERIA), choices=CRITERIA)
    parser.add_argument("--allocation", default="global", choices=("global", "uniform"))
    parser.add_argument("--epochs", type=int, default=DistillRecipe.epochs)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/specialize"),
                        help="one JSON per finished run under OUT/runs/ (committed)")
    parser.add_argument("--work", type=Path, default=Path("runs/specialize-study"),
                        help="scores and per-epoch checkpoints (resume from here; not committed)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = DistillRecipe(epochs=args.epochs)
    for model_name in args.model:
        adapter = load_classifier(model_name)
        for subset in args.subsets:
            run_subset(adapter, model_name, subset, args.budgets, args.criteria, recipe, args.out,
                       args.work, args.allocation, args.seed)


if __name__ == "__main__":
    main()
