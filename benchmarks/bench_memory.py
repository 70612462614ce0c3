"""Memory of the statistics pass does not grow with the dataset.

1. The statistics pass of ``analyze`` (cifar10_resnet20) over 10,000 and over 50,000 CIFAR-10
   training images, each in a fresh subprocess, and the ratio of their peak resident memory
   (target: at most 1.10). The data loader runs in the measured process (``num_workers=0``) so
   that nothing escapes the measurement.
2. A synthetic ImageNet-shaped feature stream (d = 2048, C = 1000, 1.28 M samples) through
   :class:`~hf_decomp.method.statistics.ClassStatistics` alone: time and peak memory.

Peak RSS (``ru_maxrss``) counts the pages of the memory-mapped Arrow file that were read, which the
kernel can drop at any time; the anonymous part (``RssAnon``, sampled every 20 ms) is what the
process itself holds. Both are printed; the target is checked on peak RSS.

    python benchmarks/bench_memory.py
    python benchmarks/bench_memory.py --sizes 2000 10000 --samples 128000   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time


class PeakMemory:
    """Peak resident memory of this process: ru_maxrss, plus sampled peaks of VmRSS and RssAnon."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    key = line.split(":")[0]
                    if key in self.peak:
                        self.peak[key] = max(self.peak[key], int(line.split()[1]))  # kB
        except OSError:  # not Linux: only ru_maxrss
            self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._sample()
        self._stop.set()
        self._thread.join()

    def result(self) -> dict:
        maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":
            maxrss_kb //= 1024  # bytes there
        return {"peak_rss_mb": maxrss_kb / 1024, "peak_anon_mb": self.peak["RssAnon"] / 1024,
                "peak_file_mb": self.peak["RssFile"] / 1024}


def current_rss_mb() -> float:
    try:
        with open("/proc/self/status") as handle:
            return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS")) / 1024
    except (OSError, StopIteration):
        return float("nan")


def statistics_worker(limit: int, batch_size: int) -> dict:
    """Child process: one statistics pass over ``limit`` CIFAR-10 training images."""
    from hf_decomp.analysis.run import gather_statistics
    from hf_decomp.data import load_image_split
    from hf_decomp.models import load_classifier

    adapter = load_classifier("cifar10_resnet20")
    split = load_image_split(None, "train", limit=limit)
    with PeakMemory() as memory:
        start = time.perf_counter()
        stats, info = gather_statistics(adapter, split, [5], batch_size=batch_size, num_workers=0)
        seconds = time.perf_counter() - start
    return {"images": stats.num_samples, "seconds": seconds, **memory.result()}


def synthetic_stream(samples: int, num_features: int, num_classes: int, batch_size: int, k1: int) -> dict:
    """ImageNet-shaped random features through ClassStatistics alone (no model, no data loading)."""
    import torch

    from hf_decomp.method.statistics import ClassStatistics

    generator = torch.Generator().manual_seed(0)
    baseline_mb = current_rss_mb()  # the interpreter, torch and hf_decomp before any statistics
    with PeakMemory() as memory:
        start = time.perf_counter()
        stats = ClassStatistics(num_classes, num_features, k1_values=(k1,))
        done = 0
        while done < samples:
            n = min(batch_size, samples - done)
            features = torch.rand(n, num_features, generator=generator)  # non-negative, like pooled ReLU maps
            labels = torch.randint(0, num_classes, (n,), generator=generator)
            stats.update(features, labels)
            done += n
        seconds = time.perf_counter() - start
    assert stats.num_samples == samples
    return {"samples": samples, "seconds": seconds, "samples_per_second": samples / seconds, **memory.result(),
            "baseline_rss_mb": baseline_mb,
            "statistics_mb": sum(t.numel() * t.element_size() for t in stats.state_dict().values()) / 2**20}


def run_child(args: list[str]) -> dict:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    completed = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def cifar_part(args, results: dict) -> float:
    common = ["--batch-size", str(args.batch_size)] + (["--threads", str(args.threads)] if args.threads else [])
    small, large = (run_child(["--worker", "statistics", "--limit", str(n), *common]) for n in args.sizes)
    results.update(small=small, large=large)
    ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
    anon_ratio = large["peak_anon_mb"] / small["peak_anon_mb"] if small["peak_anon_mb"] else float("nan")
    print("| images | time (s) | peak RSS (MB) | peak anonymous (MB) | peak file-backed (MB) |")
    print("|---|---|---|---|---|")
    for row in (small, large):
        print(f"| {row['images']:,} | {row['seconds']:.1f} | {row['peak_rss_mb']:.0f} | {row['peak_anon_mb']:.0f} "
              f"| {row['peak_file_mb']:.0f} |")
    verdict = "OK" if ratio <= 1.10 else "ABOVE TARGET"
    print(f"peak RSS ratio {args.sizes[1]:,} / {args.sizes[0]:,} images: {ratio:.3f} (target <= 1.10: {verdict}); "
          f"anonymous memory ratio {anon_ratio:.3f}")
    results["anon_ratio"] = anon_ratio
    return ratio


def synthetic_part(args) -> dict:
    synthetic = run_child(["--worker", "synthetic", "--samples", str(args.samples), "--num-features",
                           str(args.num_features), "--num-classes", str(args.num_classes), "--synthetic-batch",
                           str(args.synthetic_batch), "--k1", str(args.k1),
                           *(["--threads", str(args.threads)] if args.threads else [])])
    print(f"synthetic stream: {synthetic['samples']:,} samples, d={args.num_features}, C={args.num_classes}, "
          f"k1={args.k1}: {synthetic['seconds']:.1f} s ({synthetic['samples_per_second']:,.0f} samples/s), "
          f"peak RSS {synthetic['peak_rss_mb']:.0f} MB, of which {synthetic['baseline_rss_mb']:.0f} MB before the "
          f"stream (interpreter + torch); the statistics themselves are {synthetic['statistics_mb']:.0f} MB")
    return synthetic


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=(10_000, 50_000), metavar=("SMALL", "LARGE"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--samples", type=int, default=1_281_167, help="synthetic stream length (ImageNet train)")
    parser.add_argument("--num-features", type=int, default=2048)
    parser.add_argument("--num-classes", type=int, default=1000)
    parser.add_argument("--synthetic-batch", type=int, default=1024)
    parser.add_argument("--k1", type=int, default=102, help="k1 of the synthetic stream (paper: 0.05 * d)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the children")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--parts", nargs="+", choices=("cifar", "synthetic"), default=("cifar", "synthetic"))
    parser.add_argument("--worker", choices=("statistics", "synthetic"), help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.worker == "statistics":
        print(json.dumps(statistics_worker(args.limit, args.batch_size)))
        return 0
    if args.worker == "synthetic":
        print(json.dumps(synthetic_stream(args.samples, args.num_features, args.num_classes, args.synthetic_batch,
                                          args.k1)))
        return 0

    results, ratio = {}, None
    if "cifar" in args.parts:
        ratio = results["ratio"] = cifar_part(args, results)
    if "synthetic" in args.parts:
        results["synthetic"] = synthetic_part(args)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0 if ratio is None or ratio <= 1.10 else 1


if __name__ == "__main__":
    sys.exit(main())
