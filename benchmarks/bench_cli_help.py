"""Wall time of ``hf-decomp --help`` (and of one subcommand's ``--help``) in a fresh interpreter.

    python benchmarks/bench_cli_help.py [--repeats 7]

Prints the median seconds of each, and for scale the median of ``python -c "import torch"`` on the
same machine in the same run (the CLI's help must not import torch; target: under 0.5 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def median_seconds(argv: list[str], repeats: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rows = {"hf-decomp --help": ["-m", "hf_decomp", "--help"],
            "hf-decomp analyze --help": ["-m", "hf_decomp", "analyze", "--help"],
            "python -c 'import torch' (scale)": ["-c", "import torch"]}
    for name, argv in rows.items():
        print(f"{name:<36} {median_seconds(argv, args.repeats):.3f} s (median of {args.repeats})")


if __name__ == "__main__":
    main()
