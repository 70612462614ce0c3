"""Throughput of analyze's statistics pass divided by the machine's limit for the same work.

The **limit**: the split decoded once into memory (one uint8 array), normalised as one tensor, then
bare ``forward_features`` in batches: no data loader, no per-image work beyond the decode. Versus
analyze's statistics pass (:func:`~hf_decomp.analysis.run.gather_statistics`) reading the parquet files
through its data loader. Target: **>= 0.85** of the limit's throughput (decode included in both).
The two alternate in one process to share warm-up and background load; the best run of each counts.

    python benchmarks/bench_analyze.py                          # cifar10_resnet20, the 50k CIFAR-10 train split
    python benchmarks/bench_analyze.py --limit 10000 --repeats 1
    python benchmarks/bench_analyze.py --num-workers 0 1 2      # one analyze run per worker count
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hf_decomp import load_classifier
from hf_decomp.analysis.run import gather_statistics
from hf_decomp.data import decode_image, default_num_workers, load_image_split, split_preprocessing
from hf_decomp.data.preprocessing import normalize_pixels
from hf_decomp.passes.features import make_accelerator


def machine_limit(adapter, split, batch_size) -> dict:
    """Seconds to decode the split into one array, normalise it as one tensor, and run forward_features."""
    plan = split_preprocessing(adapter.transform)
    height, width = adapter.input_size[1:]
    start = time.perf_counter()
    images = []
    for cell in split.dataset[split.image_column]:
        image = decode_image(cell)
        images.append(np.asarray(image) if image.size == (width, height) else plan.to_uint8(image))
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    decoded = time.perf_counter()
    inputs = normalize_pixels(pixels, plan.scale).contiguous()
    normalised = time.perf_counter()
    with torch.inference_mode():
        for batch in inputs.split(batch_size):
            adapter.forward_features(batch)
    done = time.perf_counter()
    return {"images": len(images), "seconds": done - start, "decode_s": decoded - start,
            "normalise_s": normalised - decoded, "forward_s": done - normalised}


def statistics_pass(adapter, split, batch_size, num_workers, k1) -> dict:
    start = time.perf_counter()
    _, info = gather_statistics(adapter, split, [k1], accelerator=make_accelerator(), batch_size=batch_size,
                                num_workers=num_workers)
    return {"images": info["seen_images"] if "seen_images" in info else split.num_rows,
            "seconds": time.perf_counter() - start}


def seconds_list(runs) -> str:
    return ", ".join(f"{run['seconds']:.1f}" for run in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cifar10_resnet20")
    parser.add_argument("--dataset", default=None, help="default: the bundled CIFAR-10")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=None, help="a subset of the split")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, nargs="+", default=[None],
                        help=f"worker counts to run analyze with (default: ours, here {default_num_workers()})")
    parser.add_argument("--k1", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    adapter = load_classifier(args.model)
    split = load_image_split(args.dataset, args.split, limit=args.limit)
    if split_preprocessing(adapter.transform) is None:
        raise SystemExit(f"{args.model}: its transform has no uint8 split, the limit is not defined here")
    limit_runs, ours = [], {w: [] for w in args.num_workers}
    for _ in range(args.repeats):
        limit_runs.append(machine_limit(adapter, split, args.batch_size))
        for workers in args.num_workers:
            ours[workers].append(statistics_pass(adapter, split, args.batch_size, workers, args.k1))
    best = min(limit_runs, key=lambda r: r["seconds"])
    print(f"model {args.model}, {split.num_rows} images of {split.name} [{split.split}], batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"limit: {best['seconds']:6.1f} s = decode {best['decode_s']:.1f} + normalise {best['normalise_s']:.1f} "
          f"+ forward_features {best['forward_s']:.1f}   (runs: {seconds_list(limit_runs)})")
    for workers, runs in ours.items():
        seconds = min(r["seconds"] for r in runs)
        shown = default_num_workers() if workers is None else workers
        print(f"analyze statistics pass, {shown} workers: {seconds:6.1f} s   "
              f"(runs: {seconds_list(runs)})")
        print(f"ratio analyze / limit throughput = {best['seconds'] / seconds:.3f}   (target >= 0.85)")


if __name__ == "__main__":
    main()
