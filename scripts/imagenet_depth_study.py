"""The paper's ImageNet depth study (Tables 2-6, Fig. 4) over timm models, under python or ``accelerate launch``.

For each model: one statistics pass over the training split (top-k1 histograms with k1 = k1/d * d),
Algorithm 1 with k2 features per class, one evaluation pass over the validation split (full and
decomposed accuracy, noise ablation). Every process reads its own share of the data and the sums
are reduced across processes. Writes ``report.md``, ``report.json`` and ``rho_vs_depth.png``.

    accelerate launch scripts/imagenet_depth_study.py --dataset ILSVRC/imagenet-1k --out runs/imagenet-depth
    python scripts/imagenet_depth_study.py --model resnet50 --limit 20000 --eval-limit 5000

The default model list and sizes are the paper's: k1/d = 0.05, k2 = 50.
"""

from __future__ import annotations

import argparse
import sys
import time

PAPER_MODELS = ("resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2", "densenet121",
                "densenet169", "densenet161", "densenet201", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
                "efficientnet_b3")


def parse_args(argv=None) -> argparse.Namespace:
    from hf_decomp.commands.common import add_deprecated_alias, name_list

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=list(PAPER_MODELS), metavar="NAME", help="timm model names")
    add_deprecated_alias(parser, "--models", "--model", "model", type=name_list)
    parser.add_argument("--dataset", default="ILSVRC/imagenet-1k", help="Hub name or local folder")
    parser.add_argument("--stats-split", default="train")
    parser.add_argument("--eval-split", default="validation")
    parser.add_argument("--k1-ratio", type=float, default=0.05, help="k1 / d")
    parser.add_argument("--k2", type=int, default=50, help="features kept per class")
    parser.add_argument("--limit", type=int, default=None, help="seeded random subset of the statistics split")
    parser.add_argument("--eval-limit", type=int, default=None, help="seeded random subset of the eval split")
    parser.add_argument("--streaming", action="store_true")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--no-pretrained", action="store_true", help="random weights (for smoke tests)")
    parser.add_argument("--cpu", action="store_true", help="run on CPU even when a GPU is present")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/imagenet-depth")
    parser.add_argument("--overwrite", action="store_true")
    return parser.parse_args(argv)


def study_model(name: str, args, accelerator, train, test) -> dict:
    """One depth-table row, computed with the accelerate-aware passes of hf_decomp.analysis.run."""
    from hf_decomp import DecomposedLinear, evaluate_decomposition, gather_statistics, load_classifier
    from hf_decomp.method.selection import top_k_per_class
    from hf_decomp.studies.depth import model_depth, model_family, resolve_k

    adapter = load_classifier(name, pretrained=not args.no_pretrained)
    adapter.to(accelerator.device)
    d = adapter.num_features
    k1 = resolve_k(None, args.k1_ratio, d, "k1")
    k2 = resolve_k(min(args.k2, d), None, d, "k2")
    loader = dict(accelerator=accelerator, batch_size=args.batch_size, num_workers=args.num_workers)
    start = time.perf_counter()
    stats, _ = gather_statistics(adapter, train, [k1], **loader)
    sets = top_k_per_class(stats.histogram(k1), k2)
    head = DecomposedLinear(adapter.weight.detach().float().cpu(), adapter.bias.detach().float().cpu(), sets)
    result = evaluate_decomposition(adapter, head, test, seed=args.seed, **loader)
    row = {
        "model": name, "family": model_family(name), "depth": model_depth(name, adapter.model), "d": d,
        "classes": adapter.num_classes, "k1": k1, "k2": k2, "k1_over_d": k1 / d, "k2_over_d": k2 / d,
        "full_accuracy": result["full_accuracy"], "decomposed_accuracy": result["decomposed_accuracy"],
        "rho": result["rho"], "noise_ablation": result["noise_ablation"],
        "multiply_adds": {"full": d * adapter.num_classes, "decomposed": head.multiply_adds},
        "statistics_samples": stats.num_samples, "eval_samples": result["eval_samples"],
        "seconds": round(time.perf_counter() - start, 1),
    }
    accelerator.print(f"{name}: full {row['full_accuracy']:.2f} %, decomposed {row['decomposed_accuracy']:.2f} %, "
                      f"rho {row['rho'] if row['rho'] is None else round(row['rho'], 4)} (k1 = {k1}, k2 = {k2}, d = {d}, {row['seconds']} s)")
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    from hf_decomp.data import load_image_split
    from hf_decomp.passes.features import make_accelerator
    from hf_decomp.studies.depth import depth_result
    from hf_decomp.studies.noise import noise_study
    from hf_decomp.studies.suite import write_report
    from hf_decomp.utils.files import check_output_dir, staged_output_dir

    accelerator = make_accelerator(cpu=args.cpu)
    if accelerator.is_main_process:
        check_output_dir(args.out, args.overwrite)
    models = [m.strip() for name in args.model for m in name.split(",") if m.strip()]
    split_kwargs = dict(streaming=args.streaming, seed=args.seed)
    with accelerator.main_process_first():  # the main process downloads / prepares the dataset first
        train = load_image_split(args.dataset, args.stats_split, limit=args.limit, **split_kwargs)
        test = load_image_split(args.dataset, args.eval_split, limit=args.eval_limit, **split_kwargs)
    rows = [study_model(name, args, accelerator, train, test) for name in models]
    if accelerator.is_main_process:
        settings = {k: v for k, v in vars(args).items()}
        with staged_output_dir(args.out, args.overwrite) as staging:
            sections = [depth_result(rows, staging, f"k1/d = {args.k1_ratio}, k2 = {args.k2}"), noise_study(rows)]
            write_report(sections, staging, settings, title="ImageNet depth study")
        accelerator.print(f"report in {args.out}/report.md")
    accelerator.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
