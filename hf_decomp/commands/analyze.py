"""``hf-decomp analyze``: statistics, Algorithm 1, decomposed head and its evaluation."""

from __future__ import annotations

import argparse

from .common import (
    HelpFormatter,
    add_data_arguments,
    add_layer_arguments,
    add_model_arguments,
    add_resume_arguments,
    add_run_arguments,
    add_selection_arguments,
    add_speed_arguments,
    coverage_fraction,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "analyze",
        help="find influential features per class and evaluate the decomposed classifier",
        description="Gather top-k1 statistics on the statistics split, select k2 influential features per "
                    "class (Algorithm 1), and evaluate full vs decomposed accuracy and the noise ablation.",
        formatter_class=HelpFormatter,
    )
    add_model_arguments(parser)
    add_data_arguments(parser)
    selection = add_selection_arguments(parser, fractions=True, criterion="statistics", bias_correction=True)
    selection.add_argument("--coverage", type=coverage_fraction, default=None, metavar="FRACTION",
                           help="instead of --k2: per class, keep the fewest features holding this fraction "
                                "of the histogram mass (e.g. 0.5), as AnalysisSettings(coverage=0.5)")
    selection.add_argument("--top-images", type=int, default=16, metavar="N",
                           help="keep per feature (and per class) the N most activating statistics images as "
                                "row ids, for `hf-decomp explore` (0: none)")
    add_layer_arguments(parser)
    add_run_arguments(parser, "runs/analyze")
    add_resume_arguments(parser)
    add_speed_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..analysis.run import analyze

    if args.list_layers:
        from .common import print_layer_list

        return print_layer_list(args)
    from ..analysis.settings import AnalysisSettings

    # every field from the flag of the same dest; --coverage replaces the default --k2
    result = analyze(settings=AnalysisSettings.from_namespace(args, **({} if args.coverage is None else {"k2": None})))
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under accelerate launch / torchrun only one process reports
        return 0
    m = result.metrics
    noise = m["noise_ablation"]

    def ratio(value) -> str:  # rho is undefined (None) when the full model gets nothing right
        return "undefined (full accuracy is 0 %)" if value is None else f"{value:.4f}"

    print(f"full accuracy        {m['full_accuracy']:.2f} %")
    print(f"decomposed accuracy  {m['decomposed_accuracy']:.2f} %   rho = {ratio(m['rho'])}")
    print(f"noise ablation       influential->noise {noise['influential_to_noise_accuracy']:.2f} %, "
          f"non-influential->noise {noise['non_influential_to_noise_accuracy']:.2f} %")
    if "bias_corrected" in m:
        print(f"+ bias correction    {m['bias_corrected']['decomposed_accuracy']:.2f} %   "
              f"rho = {ratio(m['bias_corrected']['rho'])}")
    print(f"final-layer MACs     {m['multiply_adds']['full']} -> {m['multiply_adds']['decomposed']}")
    for warning in result.warnings:
        print(f"warning: {warning}")
    for name, info in m.get("layers", {}).items():
        print(f"layer {name:<24} d={info['width']:<5} k1={info['k1']:<4} mean set size {info['mean_set_size']:.1f}")
    if result.out_dir is not None:
        print(f"results in {result.out_dir}/ (indices.json, indices.safetensors, metrics.json, report.md"
              f"{', layers/' if result.layer_indices else ''})")
    return 0
