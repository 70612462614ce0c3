"""Throughput of analyze's statistics pass divided by the machine's limit for the same work.

The **limit**: every image's encoded bytes read straight from the split's parquet files with pyarrow
(no ``datasets`` Image feature, no PIL image per row beyond the decode itself), decoded once with
``PIL.Image.open(io.BytesIO(b))`` into one preallocated uint8 array, normalised as one tensor, then
bare ``forward_features`` in batches: no data loader, no per-image work beyond the decode. Versus
analyze's statistics pass (:func:`~hf_decomp.analysis.run.gather_statistics`) reading the parquet files
through its data loader. Target: **>= 0.85** of the limit's throughput (decode included in both).
The two alternate in one process to share warm-up and background load; the best run of each counts.

    python benchmarks/bench_analyze.py                          # cifar10_resnet20, the 50k CIFAR-10 train split
    python benchmarks/bench_analyze.py --limit 10000 --repeats 1
    python benchmarks/bench_analyze.py --num-workers 0 1 2      # one analyze run per worker count
    python benchmarks/bench_analyze.py --parquet PATH ...       # the split's parquet files, if not found

The decode / normalise / forward breakdown of the limit is printed beside the ratio.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from hf_decomp import load_classifier
from hf_decomp.analysis.run import gather_statistics
from hf_decomp.data import default_num_workers, load_image_split, split_preprocessing
from hf_decomp.data.datasets import default_cifar10_dataset
from hf_decomp.data.image_modes import to_rgb
from hf_decomp.data.preprocessing import normalize_pixels
from hf_decomp.passes.features import make_accelerator


def parquet_files(dataset: str | None, split: str) -> list[Path]:
    """The split's parquet files in the order ``datasets`` concatenates them (sorted paths)."""
    root = Path(dataset or default_cifar10_dataset())
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*.parquet") if p.name.startswith(f"{split}-") or p.parent.name == split)
    if not files:
        raise SystemExit(f"no parquet files of split {split!r} under {root}; pass them with --parquet")
    return files


def encoded_images(split, files: list[Path]) -> list[bytes]:
    """The encoded bytes of the split's rows, in its order, read with pyarrow (a ``--limit`` subset is a
    row selection of the files' table: ``datasets`` keeps it as an indices mapping)."""
    column = [pq.read_table(f, columns=[split.image_column]).column(0) for f in files]
    cells = [cell for chunk in column for cell in chunk.to_pylist()]
    mapping = getattr(split.dataset, "_indices", None)  # datasets' row selection (shuffle + select)
    rows = mapping.column(0).to_pylist() if mapping is not None else range(len(cells))
    encoded = [cells[i]["bytes"] if isinstance(cells[i], dict) else cells[i] for i in rows]
    for row in (0, len(encoded) - 1):  # the same images as the pass reads
        cell = split.dataset[row][split.image_column]
        if encoded[row] == (cell["bytes"] if isinstance(cell, dict) else cell):
            continue
        raise SystemExit("the parquet rows do not match the split's rows; pass the right files with --parquet")
    return encoded


def machine_limit(adapter, encoded: list[bytes], batch_size) -> dict:
    """Seconds to decode every image once into one uint8 array, normalise it as one tensor, and run
    forward_features in batches."""
    plan = split_preprocessing(adapter.transform)
    height, width = adapter.input_size[1:]
    start = time.perf_counter()
    pixels = np.empty((len(encoded), height, width, 3), dtype=np.uint8)
    for i, data in enumerate(encoded):
        image = Image.open(io.BytesIO(data))
        if image.mode != "RGB":
            image = to_rgb(image)
        pixels[i] = np.asarray(image) if image.size == (width, height) else plan.to_uint8(image)
    pixels = torch.from_numpy(pixels).permute(0, 3, 1, 2)
    decoded = time.perf_counter()
    inputs = normalize_pixels(pixels, plan.scale).contiguous()
    normalised = time.perf_counter()
    with torch.inference_mode():
        for batch in inputs.split(batch_size):
            adapter.forward_features(batch)
    done = time.perf_counter()
    return {"images": len(encoded), "seconds": done - start, "decode_s": decoded - start,
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
    parser.add_argument("--parquet", nargs="+", default=None, help="the split's parquet files (default: found "
                        "under --dataset, or the bundled CIFAR-10)")
    args = parser.parse_args()

    adapter = load_classifier(args.model)
    split = load_image_split(args.dataset, args.split, limit=args.limit)
    if split_preprocessing(adapter.transform) is None:
        raise SystemExit(f"{args.model}: its transform has no uint8 split, the limit is not defined here")
    encoded = encoded_images(split, [Path(p) for p in args.parquet] if args.parquet
                             else parquet_files(args.dataset, args.split))
    with torch.inference_mode():  # one-time kernel set-up is neither side's cost
        adapter.forward_features(torch.zeros(args.batch_size, *adapter.input_size))
    load_before = os.getloadavg()[0]
    limit_runs, ours = [], {w: [] for w in args.num_workers}
    for _ in range(args.repeats):
        limit_runs.append(machine_limit(adapter, encoded, args.batch_size))
        for workers in args.num_workers:
            ours[workers].append(statistics_pass(adapter, split, args.batch_size, workers, args.k1))
    best = min(limit_runs, key=lambda r: r["seconds"])
    load_after = os.getloadavg()[0]
    busy = max(load_before, load_after) > 0.5
    print(f"load average {load_before:.1f} before, {load_after:.1f} after, {os.cpu_count()} cores: "
          f"{'UNDER LOAD, the times below are not the machine limit' if busy else 'idle machine'}")
    print(f"model {args.model}, {split.num_rows} images of {split.name} [{split.split}], batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"limit: {best['seconds']:6.1f} s = decode {best['decode_s']:.1f} + normalise {best['normalise_s']:.1f} "
          f"+ forward_features {best['forward_s']:.1f}   (runs: {seconds_list(limit_runs)})")
    for workers, runs in ours.items():
        seconds = min(r["seconds"] for r in runs)
        shown = default_num_workers() if workers is None else workers
        print(f"analyze statistics pass, {shown} workers: {seconds:6.1f} s   "
              f"(runs: {seconds_list(runs)})")
        print(f"ratio analyze / limit throughput = {best['seconds'] / seconds:.3f}   (target >= 0.85; limit = decode "
              f"{best['decode_s']:.1f} s + normalise {best['normalise_s']:.1f} s + forward {best['forward_s']:.1f} s)")


if __name__ == "__main__":
    main()
