"""Paper Tables 2-6 and Fig. 4: rho, accuracies and final-layer cost of several models at fixed k1/d, k2/d.

Each model's features are computed once (feature cache) and every number in its row comes from them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path

import torch.nn as nn

from ..method.selection import top_k_per_class
from ..utils.checks import check_k, check_width_fraction
from ..utils.errors import DecompValueError
from ..utils.markdown import markdown_table
from ..utils.paths import public_name
from .common import ModelFeatures, StudyResult, evaluate_sets
from .histograms import gather_class_statistics
from .plotting import plt, save_figure

__all__ = ["model_depth", "model_family", "resolve_k", "depth_row", "depth_study", "depth_result", "depth_table",
           "plot_rho_vs_depth"]

_DEPTH_PATTERN = re.compile(r"(resnet|resnext|densenet|vgg|wide_resnet)(\d+)", re.IGNORECASE)


def model_depth(name: str, model: nn.Module | None = None) -> int | None:
    """The depth a model is known by (resnet56 -> 56, densenet121 -> 121), else its count of conv/linear layers."""
    match = _DEPTH_PATTERN.search(name.split(":")[-1].split("/")[-1])
    if match:
        return int(match.group(2))
    if model is None:
        return None
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


def model_family(name: str) -> str:
    """``cifar10_resnet56`` -> ``cifar10_resnet``; ``wide_resnet50_2`` -> ``wide_resnet_2``; ``efficientnet_b3`` ->
    ``efficientnet``; tags (``.a1_in1k``) dropped."""
    base = name.split(":")[-1].split("/")[-1].split(".")[0]
    family = _DEPTH_PATTERN.sub(lambda m: m.group(1), base)
    return re.sub(r"_b\d+$", "", family)  # efficientnet_b0..b7 form one family


def resolve_k(value: int | None, ratio: float | None, num_features: int, name: str) -> int:
    """k from an absolute value or a ratio of d (rounded, at least 1)."""
    if (value is None) == (ratio is None):
        raise DecompValueError(f"give exactly one of {name} and {name}_ratio (e.g. {name}=5 or {name}_ratio=0.05)")
    if ratio is not None:
        value = max(1, round(check_width_fraction(f"{name}_ratio", ratio) * num_features))
    return check_k(name, value, num_features)


def depth_row(mf: ModelFeatures, *, k1: int | None = 5, k2: int | None = 5, k1_ratio: float | None = None,
              k2_ratio: float | None = None, seed: int = 0, stats=None) -> dict:
    """One row of the depth table (also the model's noise-ablation numbers)."""
    d = mf.num_features
    k1_value = resolve_k(None if k1_ratio is not None else k1, k1_ratio, d, "k1")
    k2_value = resolve_k(None if k2_ratio is not None else k2, k2_ratio, d, "k2")
    if stats is None or k1_value not in stats.k1_values:
        stats = gather_class_statistics(mf, [k1_value])
    sets = top_k_per_class(stats.histogram(k1_value).cpu(), k2_value)
    result = evaluate_sets(mf, sets, seed=seed)
    model = mf.adapter.model if mf.adapter is not None else None
    return {
        "model": mf.name, "family": model_family(mf.name), "depth": model_depth(mf.name, model),
        "d": d, "classes": mf.num_classes, "k1": k1_value, "k2": k2_value, "k1_over_d": k1_value / d,
        "k2_over_d": k2_value / d, "full_accuracy": result["full_accuracy"],
        "decomposed_accuracy": result["decomposed_accuracy"], "rho": result["rho"],
        "noise_ablation": result["noise_ablation"], "multiply_adds": result["multiply_adds"],
        "statistics_samples": stats.num_samples, "eval_samples": result["eval_samples"],
        "dataset": public_name(mf.data.get("statistics", {}).get("dataset")),  # no machine paths in results
    }


def plot_rho_vs_depth(rows: list[dict], path) -> Path:
    """rho against depth, one line per family (paper Fig. 4)."""
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    families: dict[str, list[dict]] = {}
    rows = [r for r in rows if r["rho"] is not None and r["depth"] is not None]
    if not rows:
        ax.text(0.5, 0.5, "no model with a defined rho and depth", ha="center", va="center", transform=ax.transAxes)
        return save_figure(fig, path)
    for row in rows:
        families.setdefault(row["family"], []).append(row)
    for family, members in families.items():
        members = sorted(members, key=lambda r: r["depth"] or 0)
        depths = [r["depth"] for r in members]
        ax.plot(depths, [r["rho"] for r in members], marker="o", label=family)
        for r in members:
            ax.annotate(f"{r['rho']:.3f}", (r["depth"], r["rho"]), textcoords="offset points", xytext=(0, 6),
                        ha="center", fontsize=7)
    ax.set_xticks(sorted({r["depth"] for r in rows}))
    ax.set_xlabel("depth (layers)")
    ax.set_ylabel("rho")
    k1s = sorted({r["k1"] for r in rows})
    k2s = sorted({r["k2"] for r in rows})
    ax.set_title(f"rho vs depth (k1 = {', '.join(map(str, k1s))}; k2 = {', '.join(map(str, k2s))})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    low = min(r["rho"] for r in rows)
    ax.set_ylim(min(low - 0.02, 0.9), 1.01)
    return save_figure(fig, path)


def _rho_text(rho: float | None) -> str | None:
    return None if rho is None else f"{rho:.4f}"  # None: the full layer got nothing right


def depth_table(rows: list[dict]) -> str:
    header = ["model", "depth", "d", "k1", "k2", "k1/d", "k2/d", "full acc. (%)", "decomposed acc. (%)", "rho",
              "final-layer MACs full", "decomposed"]
    body = [[r["model"], r["depth"], r["d"], r["k1"], r["k2"], f"{r['k1_over_d']:.3f}", f"{r['k2_over_d']:.3f}",
             r["full_accuracy"], r["decomposed_accuracy"], _rho_text(r["rho"]), r["multiply_adds"]["full"],
             r["multiply_adds"]["decomposed"]] for r in rows]
    return markdown_table(header, body)


def depth_study(models: Iterable[ModelFeatures | str], out_dir, *, k1: int | None = 5, k2: int | None = 5,
                k1_ratio: float | None = None, k2_ratio: float | None = None, seed: int = 0,
                load: Callable[[str], ModelFeatures] | None = None) -> StudyResult:
    """The depth table and rho-vs-depth plot for several models.

    Args:
        models: ModelFeatures, or names turned into them by ``load`` (e.g. ``load_model_features``).
        k1, k2 / k1_ratio, k2_ratio: fixed sizes, or fixed ratios of each model's d (paper: k1/d = 0.05).
    """
    rows = []
    for model in models:
        if isinstance(model, str):
            if load is None:
                raise DecompValueError("depth_study got model names but no load= function to compute their features")
            model = load(model)
        rows.append(depth_row(model, k1=k1, k2=k2, k1_ratio=k1_ratio, k2_ratio=k2_ratio, seed=seed))
    if not rows:
        raise DecompValueError("depth_study needs at least one model")
    sizes = (f"k1/d = {k1_ratio}" if k1_ratio is not None else f"k1 = {k1}") + ", " + (
        f"k2/d = {k2_ratio}" if k2_ratio is not None else f"k2 = {k2}")
    return depth_result(rows, out_dir, sizes)


def depth_result(rows: list[dict], out_dir, sizes: str) -> StudyResult:
    """The depth study's section (table + rho-vs-depth plot) from computed rows."""
    figure = plot_rho_vs_depth(rows, Path(out_dir) / "rho_vs_depth.png")
    dataset = f" of `{rows[0]['dataset']}`" if rows[0].get("dataset") else ""
    markdown = (
        f"Each model at {sizes}; statistics on {rows[0]['statistics_samples']} samples{dataset}, evaluation on "
        f"{rows[0]['eval_samples']} samples. Final-layer MACs: multiply-adds per image of the dense layer "
        f"(C x d) and of the decomposed head (sum of set sizes).\n\n" + depth_table(rows)
        + "\n\n![rho vs depth](rho_vs_depth.png)"
    )
    return StudyResult("depth", "Depth study (Tables 2-6, Fig. 4)", markdown, {"rows": rows}, [figure])
