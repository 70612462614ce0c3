"""How fast `hf-decomp explore` answers: startup, first Class view, Image view (issue 21's targets).

    python benchmarks/bench_explorer.py RUN_DIR [--class cat] [--image 1234] [--port 7891]

RUN_DIR: an `hf-decomp analyze` results folder, e.g. of a full ResNet-20 run
(`hf-decomp analyze --model cifar10_resnet20 --out runs/r20`). Starts `python -m hf_decomp explore RUN_DIR`
in a fresh process and measures, in seconds:

- startup: from process start to the first HTTP answer of the app (target <= 6 s);
- first Class view: one `/class_view` call for a class not shown before (target <= 2 s);
- Image view: one `/explore_row` call for an image not shown before (target <= 1 s);

each through gradio_client, as a browser's request would go. Prints one line per measure with PASS/FAIL and
exits 1 when a target is missed. The machine's load changes these numbers: report the load with them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"startup": 6.0, "first Class view": 2.0, "Image view": 1.0}


def wait_for_http(url: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the explorer exited with code {process.returncode} before answering")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"no answer from {url} within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--class", dest="class_name", default=None, help="class to show (default: the last one)")
    parser.add_argument("--image", type=int, default=1234, help="row of the evaluation split to show")
    parser.add_argument("--port", type=int, default=7891)
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    url = f"http://127.0.0.1:{args.port}/"
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "hf_decomp", "explore", args.run_dir, "--port", str(args.port)],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    measured = {}
    try:
        wait_for_http(url, process, args.timeout)
        measured["startup"] = time.perf_counter() - start
        from gradio_client import Client

        client = Client(url, verbose=False, download_files=False)
        if args.class_name is None:
            import json

            args.class_name = json.loads((Path(args.run_dir) / "indices.json").read_text())["label_names"][-1]
        begin = time.perf_counter()
        markdown, _, strips = client.predict(args.class_name, True, api_name="/class_view")
        measured["first Class view"] = time.perf_counter() - begin
        if f"### {args.class_name}" not in markdown or not strips:
            raise SystemExit(f"the Class view of {args.class_name!r} came back without its set or its top images")
        begin = time.perf_counter()
        message, *_ = client.predict(args.image, api_name="/explore_row")
        measured["Image view"] = time.perf_counter() - begin
        if "Decomposed prediction" not in message:
            raise SystemExit(f"the Image view of #{args.image} gave no prediction: {message!r}")
    finally:
        process.terminate()
        process.wait(timeout=30)
    load = os.getloadavg()[0]
    failed = 0
    for name, seconds in measured.items():
        ok = seconds <= TARGETS[name]
        failed += not ok
        print(f"{name:17s} {seconds:7.2f} s  target <= {TARGETS[name]:.0f} s  {'PASS' if ok else 'FAIL'}")
    print(f"(load average {load:.1f} on {os.cpu_count()} cores)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
