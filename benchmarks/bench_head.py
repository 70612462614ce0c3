"""Latency of the decomposed head: dense nn.Linear vs the paper's gather formulation vs hf-decomp's kernel.

    python benchmarks/bench_head.py [--threads N] [--repeats R]

For each (C, d, k, batch) it times, under ``torch.inference_mode``, the median of R calls of
- dense:  ``nn.Linear(d, C)`` (what the decomposed head replaces),
- paper:  ``gather_decomposed_logits`` (gather x[:, I] into (B, C, k), multiply, sum),
- ours:   ``DecomposedLinear.forward`` (kernel chosen by shape, see hf_decomp/portable/decomposed_head.py),
checks that ours equals the paper's formula, and prints the speedups.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn as nn

from hf_decomp.portable.decomposed_head import DecomposedLinear, gather_decomposed_logits

SHAPES = ((10, 64, 5, 256), (1000, 2048, 50, 256), (21843, 2048, 50, 64))


def median_ms(fn, repeats: int, warmup_s: float = 0.5) -> float:
    # Warm up for a fixed time, not a fixed count: after the previous kernel, BLAS and OpenMP worker
    # threads keep spinning for a while and would steal the cores from whichever kernel runs next.
    deadline = time.perf_counter() + warmup_s
    fn()
    while time.perf_counter() < deadline:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return 1e3 * times[len(times) // 2]


def bench(num_classes: int, num_features: int, k: int, batch: int, repeats: int) -> dict:
    generator = torch.Generator().manual_seed(0)
    dense = nn.Linear(num_features, num_classes)
    sets = [torch.randperm(num_features, generator=generator)[:k].tolist() for _ in range(num_classes)]
    head = DecomposedLinear(dense.weight, dense.bias, sets)
    x = torch.randn(batch, num_features, generator=generator).relu()
    with torch.inference_mode():
        reference = gather_decomposed_logits(x, head.indices, head.kept_weight, head.bias)
        error = float((head(x) - reference).abs().max())
        result = {
            "C": num_classes, "d": num_features, "k": k, "batch": batch, "kernel": head.kernel,
            "dense_ms": median_ms(lambda: dense(x), repeats),
            "paper_gather_ms": median_ms(
                lambda: gather_decomposed_logits(x, head.indices, head.kept_weight, head.bias), repeats),
            "ours_ms": median_ms(lambda: head(x), repeats),
            "max_abs_diff_vs_paper": error,
        }
    result["speedup_vs_dense"] = result["dense_ms"] / result["ours_ms"]
    result["speedup_vs_paper"] = result["paper_gather_ms"] / result["ours_ms"]
    result["paper_vs_dense"] = result["dense_ms"] / result["paper_gather_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    header = (f"{'C':>6} {'d':>5} {'k':>3} {'B':>4} {'kernel':>13} | {'dense ms':>9} {'paper ms':>9} {'ours ms':>9} | "
              f"{'ours/dense':>10} {'ours/paper':>10} {'paper/dense':>11} | max|diff|")
    print(header)
    print("-" * len(header))
    results = []
    for shape in SHAPES:
        r = bench(*shape, repeats=args.repeats)
        results.append(r)
        print(f"{r['C']:>6} {r['d']:>5} {r['k']:>3} {r['batch']:>4} {r['kernel']:>13} | {r['dense_ms']:>9.3f} "
              f"{r['paper_gather_ms']:>9.3f} {r['ours_ms']:>9.3f} | {r['speedup_vs_dense']:>9.1f}x "
              f"{r['speedup_vs_paper']:>9.1f}x {r['paper_vs_dense']:>10.2f}x | {r['max_abs_diff_vs_paper']:.1e}")
    print("ours/dense = how many times faster than nn.Linear; paper/dense < 1 means the gather is slower.")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": torch.get_num_threads(), "torch": torch.__version__, "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
