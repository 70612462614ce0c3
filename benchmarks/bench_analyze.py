"""Throughput of analyze's evaluation pass divided by a bare forward pass over the same data loader.

Target: >= 0.95 (analyze adds the statistics / evaluation arithmetic, which should be negligible
next to the network). Both passes use the same dataset split, transform, batch size and workers, in
the same process, alternating to share warm-up and background load.

    python benchmarks/bench_analyze.py                      # cifar10_resnet20 on the CIFAR-10 test split
    python benchmarks/bench_analyze.py --limit 2000 --repeats 1
"""

from __future__ import annotations

import argparse
import time

import torch

from hf_decomp import DecomposedLinear, load_classifier
from hf_decomp.analyze import evaluate_decomposition, gather_statistics
from hf_decomp.data import default_eval_split, load_image_split, make_dataloader
from hf_decomp.features import make_accelerator


def bare_forward(adapter, split, batch_size, num_workers) -> tuple[float, int]:
    """Images per second of model(x) over the same loader, nothing else."""
    loader = make_dataloader(split, adapter.transform, batch_size, num_workers)
    seen, start = 0, time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            adapter.model(batch["pixel_values"])
            seen += batch["pixel_values"].shape[0]
    return seen / (time.perf_counter() - start), seen


def analyze_eval_pass(adapter, head, split, batch_size, num_workers) -> tuple[float, int]:
    start = time.perf_counter()
    result = evaluate_decomposition(adapter, head, split, accelerator=make_accelerator(), batch_size=batch_size,
                                    num_workers=num_workers)
    return result["eval_samples"] / (time.perf_counter() - start), result["eval_samples"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cifar10_resnet20")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--limit", type=int, default=None, help="subset of the eval split")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    adapter = load_classifier(args.model)
    split = load_image_split(args.dataset, default_eval_split(args.dataset), limit=args.limit)
    # indices from a small statistics pass; the head's cost does not depend on which features it keeps
    stats_split = load_image_split(args.dataset, "train", limit=2000)
    stats, _ = gather_statistics(adapter, stats_split, [5], batch_size=args.batch_size, num_workers=args.num_workers)
    sets = stats.histogram(5).topk(5, dim=1).indices.tolist()
    head = DecomposedLinear(adapter.weight.detach(), adapter.bias.detach(), sets)

    bare, ours = [], []
    for _ in range(args.repeats):
        bare.append(bare_forward(adapter, split, args.batch_size, args.num_workers)[0])
        ours.append(analyze_eval_pass(adapter, head, split, args.batch_size, args.num_workers)[0])
    best_bare, best_ours = max(bare), max(ours)
    print(f"model {args.model}, {split.num_rows} eval images, batch {args.batch_size}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"bare forward      {best_bare:8.1f} img/s   (runs: {', '.join(f'{v:.1f}' for v in bare)})")
    print(f"analyze eval pass {best_ours:8.1f} img/s   (runs: {', '.join(f'{v:.1f}' for v in ours)})")
    print(f"ratio analyze / bare = {best_ours / best_bare:.3f}   (target >= 0.95)")


if __name__ == "__main__":
    main()
