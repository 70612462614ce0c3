"""``hf-decomp selectivity``: Psi_k, mu and pairwise MI at every layer of one or more models, against depth."""

from __future__ import annotations

import argparse

from .common import (
    HelpFormatter,
    add_data_arguments,
    add_deprecated_alias,
    add_layer_arguments,
    add_model_arguments,
    add_run_arguments,
    add_selection_arguments,
    refuse_flag,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "selectivity", formatter_class=HelpFormatter,
        help="class selectivity (Psi_k, mu, pairwise MI) at every layer, against depth, for one or more models",
        description="One pass over the statistics split per model gathers every layer's statistics; writes "
                    "report.md (table + the paper's claim measured), report.json and selectivity.png.")
    add_model_arguments(parser, many=("cifar10_resnet20",), weights=False)
    add_data_arguments(parser, only=("dataset", "stats_split", "limit", "batch_size", "num_workers"))
    refuse_flag(parser, "--eval-split", "selectivity reads only the statistics split (--stats-split)")
    group = add_selection_arguments(parser, k2=False, fractions=True)
    group.add_argument("--mass-fraction", type=float, default=0.5, metavar="K",
                       help="mass fraction k of Psi_k (and of the fractional-k sets), in (0, 1]")
    add_deprecated_alias(group, "--k", "--mass-fraction", "mass_fraction", type=float)
    add_layer_arguments(parser, default=["all-blocks"], purpose="layers whose selectivity is measured")
    add_run_arguments(parser, "runs/selectivity")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..studies.selectivity import run_selectivity
    from ..utils.errors import DecompValueError

    if args.list_layers:
        from .common import print_layer_list

        return print_layer_list(args)
    if not 0 < args.mass_fraction <= 1:
        raise DecompValueError(f"--mass-fraction {args.mass_fraction} must be in (0, 1], e.g. 0.5")
    result = run_selectivity(args.model, args.dataset, args.out, layers=args.layers, fraction=args.mass_fraction,
                             k1=args.k1, split=args.stats_split, limit=args.limit, seed=args.seed,
                             batch_size=args.batch_size, num_workers=args.num_workers, overwrite=args.overwrite)
    for profile in result.data["profiles"]:
        for row in profile["layers"]:
            print(f"{profile['model']:<20} {row['layer']:<12} d={row['width']:<4} Psi {row['psi']:.3f}  "
                  f"mu {row['mu']:.3f}  MI {row['mi']:.3f}")
    print(f"report in {args.out}/report.md")
    return 0
