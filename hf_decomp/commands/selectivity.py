"""``hf-decomp selectivity``: Psi_k, mu and pairwise MI at every layer of one or more models, against depth."""

from __future__ import annotations

import argparse

from .common import add_layer_arguments, int_or_fraction


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "selectivity", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="class selectivity (Psi_k, mu, pairwise MI) at every layer, against depth, for one or more models",
        description="One pass over the statistics split per model gathers every layer's statistics; writes "
                    "report.md (table + the paper's claim measured), report.json and selectivity.png.")
    parser.add_argument("--model", nargs="+", action="extend", default=None, metavar="MODEL",
                        help="one or more models (repeatable; default: cifar10_resnet20)")
    parser.add_argument("--dataset", default=None, help="dataset name or folder (default: bundled CIFAR-10)")
    parser.add_argument("--stats-split", default="train", help="split whose images are passed (default: train)")
    parser.add_argument("--limit", type=int, default=None, help="seeded random subset of the split (e.g. 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of --limit")
    parser.add_argument("--k", type=float, default=0.5, help="mass fraction of Psi_k (and of the fractional-k sets)")
    parser.add_argument("--k1", type=int_or_fraction, default=5,
                        help="top channels per sample whose class histograms the MI compares (or a width fraction)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=None, help="data-loader workers (default: up to 4)")
    parser.add_argument("--out", default="runs/selectivity", help="results folder (default: runs/selectivity)")
    parser.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    add_layer_arguments(parser, default=["all-blocks"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..studies.selectivity import run_selectivity
    from ..utils.errors import DecompValueError

    models = args.model or ["cifar10_resnet20"]
    if args.list_layers:
        from .common import print_layer_list

        args.model = models[0]
        return print_layer_list(args)
    if not 0 < args.k <= 1:
        raise DecompValueError(f"--k {args.k} must be a mass fraction in (0, 1], e.g. 0.5")
    result = run_selectivity(models, args.dataset, args.out, layers=args.layers, fraction=args.k, k1=args.k1,
                             split=args.stats_split, limit=args.limit, seed=args.seed, batch_size=args.batch_size,
                             num_workers=args.num_workers, overwrite=args.overwrite)
    for profile in result.data["profiles"]:
        for row in profile["layers"]:
            print(f"{profile['model']:<20} {row['layer']:<12} d={row['width']:<4} Psi {row['psi']:.3f}  "
                  f"mu {row['mu']:.3f}  MI {row['mi']:.3f}")
    print(f"report in {args.out}/report.md")
    return 0
