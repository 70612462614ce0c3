"""Statistics of every block output of a model in one pass, divided by the final-layer-only pass.

Target: <= 1.3 for cifar10_resnet56 (27 blocks): the per-layer hooks, pooling and ClassStatistics
updates must cost little next to the network. Both passes read the same split with the same
loader settings, in the same process, alternating so they share warm-up and background load; the
best of ``--repeats`` runs of each is compared.

    python benchmarks/bench_layers.py                               # resnet56, 5000 train images
    python benchmarks/bench_layers.py --model cifar10_resnet20 --limit 2000 --repeats 1
"""

from __future__ import annotations

import argparse
import time

import torch

from hf_decomp import load_classifier
from hf_decomp.analysis.run import gather_statistics
from hf_decomp.data import load_image_split
from hf_decomp.layers import gather_layer_statistics, resolve_layers
from hf_decomp.passes.features import make_accelerator


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cifar10_resnet56")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--limit", type=int, default=5000, help="seeded subset of the train split")
    parser.add_argument("--k1", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    adapter = load_classifier(args.model)
    split = load_image_split(args.dataset, "train", limit=args.limit)
    layers = resolve_layers(adapter, ["all-blocks", "final"])
    accelerator = make_accelerator()
    kwargs = dict(accelerator=accelerator, batch_size=args.batch_size, num_workers=args.num_workers)

    final_only, every_block = [], []
    for _ in range(args.repeats):
        final_only.append(timed(lambda: gather_statistics(adapter, split, [args.k1], **kwargs)))
        every_block.append(timed(lambda: gather_layer_statistics(adapter, split, layers, [args.k1], **kwargs)))
    best_final, best_all = min(final_only), min(every_block)
    print(f"model {args.model}, {split.num_rows} train images, {len(layers) - 1} blocks + final, batch "
          f"{args.batch_size}, torch threads {torch.get_num_threads()}")
    print(f"final layer only   {best_final:7.1f} s   (runs: {', '.join(f'{v:.1f}' for v in final_only)})")
    print(f"every block, 1 pass {best_all:6.1f} s   (runs: {', '.join(f'{v:.1f}' for v in every_block)})")
    print(f"ratio every-block / final-only = {best_all / best_final:.3f}   (target <= 1.3)")


if __name__ == "__main__":
    main()
