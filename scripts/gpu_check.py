"""GPU check (a few minutes): is ``analyze`` as fast as a bare forward pass, and is the decomposed head faster?

On timm ``resnet50`` (random weights: speed does not depend on them) with synthetic 224 px images:

1. **Compute path**, inputs already on the device: bare forward ``model(x)`` vs the statistics pass
   (``forward_features`` + :class:`ClassStatistics` update) and the evaluation pass
   (``forward_features`` + full, decomposed and noise-ablation logits), bf16 autocast + channels-last
   (and fp32 for reference). Prints analyze throughput / bare throughput for both passes.
2. **End to end against the limit**: the real ``gather_statistics`` over synthetic JPEG bytes (made
   in memory, larger than the crop: workers decode, resize and crop on uint8, the device normalises;
   ``--decode gpu`` decodes with nvJPEG instead) vs the limit, bare ``forward_features`` on inputs
   already decoded, normalised and on the device. Target: >= 0.9 of the limit.
3. **Decomposed head at ImageNet size** (C = 1000, d = 2048, k2 = 50): dense ``nn.Linear`` vs the
   paper's gather formula vs ``DecomposedLinear`` on the device, fp32 and bf16.

    python scripts/gpu_check.py --out gpu_check.json         # on a GPU (about 3 minutes on an H100, 16 cores)
    python scripts/gpu_check.py --smoke --out smoke.json     # CPU smoke test of every part (tiny sizes)

Every timing synchronises the device; each is the median of ``--repeats`` runs over ``--batches`` batches.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics as pystats
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hf_decomp.data.loader import DECODERS  # noqa: E402
from hf_decomp.method.statistics import ClassStatistics  # noqa: E402
from hf_decomp.models import load_classifier  # noqa: E402
from hf_decomp.passes.evaluation import EvaluationAccumulator  # noqa: E402
from hf_decomp.portable.decomposed_head import DecomposedLinear, gather_decomposed_logits  # noqa: E402


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return pystats.median(times)


def random_head(adapter, k2: int, generator: torch.Generator) -> DecomposedLinear:
    d = adapter.num_features
    sets = [torch.randperm(d, generator=generator)[:k2].tolist() for _ in range(adapter.num_classes)]
    return DecomposedLinear(adapter.weight.detach().float().cpu(), adapter.bias.detach().float().cpu(), sets)


def compute_path(adapter, device, args, precision: str) -> dict:
    """Throughputs with inputs already on the device: what analyze adds to the network itself."""
    generator = torch.Generator().manual_seed(0)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    batches = [torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator)
               .to(device, memory_format=memory_format) for _ in range(args.batches)]
    labels = [torch.randint(0, adapter.num_classes, (args.batch_size,), generator=generator).to(device)
              for _ in range(args.batches)]
    keys = [torch.randint(0, 2**62, (args.batch_size,), generator=generator) for _ in range(args.batches)]
    dtype = torch.bfloat16 if precision == "bf16" else None

    def autocast():
        return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)

    stats = ClassStatistics(adapter.num_classes, adapter.num_features, (args.k1,), device=device)
    head = random_head(adapter, args.k2, generator).to(device)
    evaluator = EvaluationAccumulator(adapter.weight.float(), adapter.bias.float(), head, seed=0)

    def bare():
        with torch.inference_mode(), autocast():
            for x in batches:
                adapter.model(x)

    def statistics_pass():
        with torch.inference_mode():
            for x, y in zip(batches, labels):
                with autocast():
                    features = adapter.forward_features(x)
                stats.update(features.float(), y)

    def evaluation_pass():
        with torch.inference_mode():
            for x, y, k in zip(batches, labels, keys):
                with autocast():
                    features = adapter.forward_features(x)
                evaluator.update(features.float(), y, k)

    for fn in (bare, statistics_pass, evaluation_pass):  # warm-up: cuDNN autotuning, allocator
        fn()
    images = args.batch_size * args.batches
    bare_s = median_seconds(bare, device, args.repeats)
    stats_s = median_seconds(statistics_pass, device, args.repeats)
    eval_s = median_seconds(evaluation_pass, device, args.repeats)
    return {"precision": precision, "channels_last": args.channels_last, "images": images,
            "bare_img_per_s": images / bare_s, "statistics_img_per_s": images / stats_s,
            "evaluation_img_per_s": images / eval_s,
            "statistics_over_bare": bare_s / stats_s, "evaluation_over_bare": bare_s / eval_s}


def synthetic_jpegs(count: int, size: int) -> list[bytes]:
    """``count`` distinct photo-like JPEGs of ``size`` x 1.25 * ``size`` px (``size`` 257 -> 257 x 321).

    Smooth random images (upsampled noise plus grain) compress like photos (~20-40 kB at 256 px).
    """
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)).resize(
            (int(size * 1.25), size), Image.Resampling.BICUBIC)
        grain = rng.normal(0, 8, (size, int(size * 1.25), 3))
        pixels = np.clip(np.asarray(coarse, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded


def synthetic_split(num_images: int, size: int, num_classes: int, unique: int = 1024):
    """An in-memory split of ``num_images`` JPEG rows (``unique`` distinct :func:`synthetic_jpegs`, repeated):
    decoding cost per row does not depend on repeats, and the bytes stay small in memory."""
    import datasets
    import numpy as np

    from hf_decomp.data import ImageSplit

    encoded = synthetic_jpegs(min(unique, num_images), size)
    rng = np.random.default_rng(1)  # random labels: the speed check does not read them
    images = [{"bytes": encoded[i % len(encoded)], "path": None} for i in range(num_images)]
    features = datasets.Features({"image": datasets.Image(decode=False),
                                  "label": datasets.ClassLabel(num_classes=num_classes)})
    labels = rng.integers(0, num_classes, num_images).tolist()
    dataset = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    return ImageSplit(dataset=dataset, name="synthetic", split="train", image_column="image", label_column="label",
                      label_names=[str(c) for c in range(num_classes)], streaming=False)


def end_to_end(adapter, device, args) -> dict:
    """analyze's statistics pass over JPEG bytes vs the limit: bare forward_features on inputs already
    decoded, normalised and on the device (the same number of images). Target: >= 0.9 of the limit."""
    from hf_decomp.analysis.run import gather_statistics
    from hf_decomp.data import default_num_workers
    from hf_decomp.passes.features import make_accelerator

    accelerator = make_accelerator(cpu=device.type == "cpu", mixed_precision="bf16" if args.bf16 else "no")
    # images larger than the crop, as in ImageNet: the workers resize and crop them
    split = synthetic_split(args.images, int(adapter.input_size[1] * 1.15), adapter.num_classes)
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    batches = -(-args.images // args.batch_size)
    inputs = torch.randn(args.batch_size, *adapter.input_size, generator=torch.Generator().manual_seed(2))
    inputs = inputs.to(device, memory_format=memory_format)

    def limit():
        with torch.inference_mode(), accelerator.autocast():
            for _ in range(batches):
                adapter.forward_features(inputs)

    limit()  # warm-up: cuDNN autotuning
    limit_s = median_seconds(limit, device, args.repeats)
    workers = default_num_workers(device) if args.num_workers is None else args.num_workers
    row = {"images": args.images, "num_workers": workers, "limit_img_per_s": args.images / limit_s}
    for decode in args.decode:
        seconds = median_seconds(lambda: gather_statistics(
            adapter, split, [args.k1], accelerator=accelerator, batch_size=args.batch_size, num_workers=workers,
            channels_last=args.channels_last, decode=decode), device, args.repeats)
        row[f"statistics_{decode}_decode_img_per_s"] = args.images / seconds
        row[f"statistics_{decode}_decode_over_limit"] = limit_s / seconds
    return row


def head_speed(device, args) -> list[dict]:
    """Dense layer vs paper's gather vs DecomposedLinear at ImageNet size, on the device."""
    results = []
    generator = torch.Generator().manual_seed(0)
    num_classes, d = 1000, 2048
    dense = torch.nn.Linear(d, num_classes)
    sets = [torch.randperm(d, generator=generator)[:args.k2].tolist() for _ in range(num_classes)]
    for dtype in (torch.float32, torch.bfloat16):
        head = DecomposedLinear(dense.weight, dense.bias, sets).to(device=device, dtype=dtype)
        layer = torch.nn.Linear(d, num_classes).to(device=device, dtype=dtype)
        layer.load_state_dict({k: v.to(dtype) for k, v in dense.state_dict().items()})
        x = torch.randn(args.head_batch, d, generator=generator).relu().to(device=device, dtype=dtype)
        repeats = max(args.repeats, 20)
        with torch.inference_mode():
            reference = gather_decomposed_logits(x, head.indices, head.kept_weight, head.bias)
            error = float((head(x).float() - reference.float()).abs().max())
            for fn in (lambda: layer(x), lambda: head(x)):
                fn()
            dense_s = median_seconds(lambda: layer(x), device, repeats)
            paper_s = median_seconds(lambda: gather_decomposed_logits(x, head.indices, head.kept_weight, head.bias),
                                     device, repeats)
            ours_s = median_seconds(lambda: head(x), device, repeats)
        results.append({"dtype": str(dtype).replace("torch.", ""), "C": num_classes, "d": d, "k2": args.k2,
                        "batch": args.head_batch, "kernel": getattr(head, "kernel", "?"),
                        "dense_ms": 1e3 * dense_s, "paper_gather_ms": 1e3 * paper_s, "ours_ms": 1e3 * ours_s,
                        "speedup_vs_dense": dense_s / ours_s, "speedup_vs_paper": paper_s / ours_s,
                        "max_abs_diff_vs_paper": error})
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--batches", type=int, default=8, help="batches per timed run (compute path)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=16384, help="synthetic JPEGs of the end-to-end part (0: skip)")
    parser.add_argument("--num-workers", type=int, default=None, help="default: from the machine (cores - 1 on a GPU)")
    parser.add_argument("--decode", nargs="+", default=["cpu", "gpu"], choices=DECODERS,
                        help="end-to-end runs: JPEG decoded by the loader workers (cpu: PIL, cpu-fast: libjpeg-turbo "
                             "+ torch resize) and/or on the GPU (gpu: nvJPEG, dali: NVIDIA DALI)")
    parser.add_argument("--k1", type=int, default=102, help="0.05 * d for resnet50")
    parser.add_argument("--k2", type=int, default=50)
    parser.add_argument("--head-batch", type=int, default=256)
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--no-bf16", dest="bf16", action="store_false", help="skip the bf16 runs")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when a GPU is present")
    parser.add_argument("--smoke", action="store_true",
                        help="seconds-long CPU run of every part with tiny sizes (checks the script, not the speed)")
    parser.add_argument("--out", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.smoke:
        args.cpu, args.model, args.batch_size, args.batches, args.repeats = True, "resnet18", 4, 2, 1
        args.image_size, args.images, args.num_workers, args.head_batch, args.k1 = 64, 16, 1, 8, 5

    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    if "dali" in args.decode and args.images:
        from hf_decomp.data.dali_decode import check_dali
        from hf_decomp.utils.errors import DecompValueError

        try:
            check_dali(device)
        except DecompValueError as e:  # before minutes of other parts: one line, no traceback
            print(f"error: {e}", file=sys.stderr)
            return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device: {name}; torch {torch.__version__}; model {args.model}; batch {args.batch_size}; "
          f"{args.image_size} px; channels_last={args.channels_last}", flush=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    adapter = load_classifier(f"timm:{args.model}", pretrained=False)
    adapter.to(device)
    if args.channels_last:
        adapter.to(memory_format=torch.channels_last)
    report = {"device": name, "model": args.model, "args": vars(args)}

    start = time.perf_counter()
    precisions = (["bf16"] if args.bf16 else []) + ["fp32"]
    report["compute_path"] = [compute_path(adapter, device, args, p) for p in precisions]
    for row in report["compute_path"]:
        print(f"[compute {row['precision']}] bare {row['bare_img_per_s']:.0f} img/s | statistics "
              f"{row['statistics_img_per_s']:.0f} img/s (x{row['statistics_over_bare']:.3f}) | evaluation "
              f"{row['evaluation_img_per_s']:.0f} img/s (x{row['evaluation_over_bare']:.3f})", flush=True)
    if args.images:
        row = report["end_to_end"] = end_to_end(adapter, device, args)
        ratios = " | ".join(f"statistics pass, {d} decode {row[f'statistics_{d}_decode_img_per_s']:.0f} img/s "
                            f"= x{row[f'statistics_{d}_decode_over_limit']:.3f} of the limit" for d in args.decode)
        print(f"[end to end, {args.images} JPEGs, {row['num_workers']} workers] limit (bare forward_features on "
              f"device inputs) {row['limit_img_per_s']:.0f} img/s | {ratios}   (target >= 0.9)", flush=True)
    report["head"] = head_speed(device, args)
    for row in report["head"]:
        print(f"[head {row['dtype']} C={row['C']} d={row['d']} k2={row['k2']} B={row['batch']} {row['kernel']}] "
              f"dense {row['dense_ms']:.3f} ms | paper gather {row['paper_gather_ms']:.3f} ms | ours "
              f"{row['ours_ms']:.3f} ms | ours vs dense x{row['speedup_vs_dense']:.2f}, vs paper "
              f"x{row['speedup_vs_paper']:.2f} | max|diff| {row['max_abs_diff_vs_paper']:.2e}", flush=True)
    report["seconds"] = time.perf_counter() - start
    print(f"total {report['seconds']:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
