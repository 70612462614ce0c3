"""Selectivity against depth: Psi_k, the class selectivity index mu and pairwise MI at every block.

Tests the paper's claim that deeper layers, and deeper models, are more class-specific. Every
layer's statistics come from one pass over the (train) images per model; the measures are pure
functions of those statistics (:mod:`hf_decomp.layers.selectivity`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..layers import FINAL, gather_layer_statistics, resolve_k
from ..layers.selectivity import (
    above_mean_vote_mi,
    class_selectivity_index,
    mass_k1_per_class,
    per_class_k1_histogram,
    psi_per_class,
)
from ..method.selection import coverage_per_class
from ..utils.errors import DecompValueError
from ..utils.markdown import markdown_table
from ..utils.paths import public_name
from .common import StudyResult
from .plotting import plt, save_figure

__all__ = ["run_selectivity", "layer_selectivity", "select_by_activation_mass", "selectivity_profile", "selectivity_study",
           "rank_correlation", "MEASURES"]

# name, label, True when a higher value means more class-specific
MEASURES = (("psi", "Psi_k (median count)", True), ("mu", "class selectivity index mu", True),
            ("mi", "pairwise MI of above-mean top-k1 vote indicators", False))
_RANK_COUNTS_MAX_WIDTH = 512  # (C, d, d) rank counts for fractional-k sets only up to this width


def select_by_activation_mass(stats, fraction: float, coverage: float = 0.5) -> tuple[list[int], list[list[int]]]:
    """Fractional k: per-class k1 = mean count of channels below ``fraction`` of the mass, then coverage sets.

    Needs statistics gathered with ``mass_fractions=(fraction,)`` and ``rank_histograms=True``.
    Returns (per-class k1, per-class sets).
    """
    if stats.rank_counts is None:
        raise DecompValueError("fractional-k sets need rank counts: gather with rank_histograms=True")
    k1 = mass_k1_per_class(stats.mass_count_histogram(fraction).cpu())
    histogram = per_class_k1_histogram(stats.rank_counts.cpu(), k1)
    return k1.tolist(), coverage_per_class(histogram, coverage)


def layer_selectivity(stats, fraction: float, k1) -> dict:
    """Psi (median and mean count), mu and pairwise MI of one layer's statistics; NaN-free means over classes."""
    width = stats.num_features
    psi = psi_per_class(stats.mass_count_histogram(fraction).cpu())
    counts = stats.sample_counts.cpu()
    present = counts > 0
    mu = class_selectivity_index(stats.class_means().cpu(), counts)
    layer_k1 = min(resolve_k("k1", k1, width) if isinstance(k1, float) else int(k1), width)
    mi = above_mean_vote_mi(stats.histogram(layer_k1).cpu(), counts)
    row = {"width": width, "samples": stats.num_samples, "k1": layer_k1,
           "psi": float(psi["psi"][present].mean()), "psi_mean": float(psi["psi_mean"][present].mean()),
           "psi_per_class": psi["psi"].tolist(), "median_count_per_class": psi["median_count"].tolist(),
           "mu": float(mu.mean()), "mu_median": float(mu.median()), "mi": mi["mean"]}
    if stats.rank_counts is not None:
        row["mass_k1_per_class"], sets = select_by_activation_mass(stats, fraction)
        row["mass_sets_mean_size"] = sum(map(len, sets)) / len(sets)
    return row


def selectivity_profile(adapter, split, layers=("all-blocks",), *, fraction: float = 0.5, k1=5,
                        batch_size: int = 256, num_workers: int | None = None, accelerator=None) -> dict:
    """One pass over ``split``: selectivity of every layer of one model, in forward order.

    ``k1`` (for MI) is absolute (clipped to a narrower layer's width) or a fraction of each width.
    """
    from ..layers import layer_widths, resolve_layers

    names = resolve_layers(adapter, list(layers))
    widths = layer_widths(adapter, names)
    k1_per_layer = {name: [resolve_k("k1", k1, width, name) if isinstance(k1, float) else min(int(k1), width)]
                    for name, width in widths.items()}
    stats = gather_layer_statistics(
        adapter, split, names, k1_values=k1_per_layer, accelerator=accelerator, batch_size=batch_size,
        num_workers=num_workers, mass_fractions=(fraction,),
        rank_histograms=max(widths.values()) <= _RANK_COUNTS_MAX_WIDTH)
    inner = [name for name in stats if name != FINAL]
    rows = []
    for position, (name, layer) in enumerate(stats.items()):
        row = {"layer": name, **layer_selectivity(layer, fraction, k1_per_layer[name][0])}
        row["relative_depth"] = 1.0 if name == FINAL else (position + 1) / len(inner)
        rows.append(row)
    return {"model": adapter.name, "fraction": fraction, "k1": k1, "layers": rows}


def rank_correlation(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN for fewer than 3 points or constant input."""
    from scipy.stats import spearmanr

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


def _claims(profiles: list[dict]) -> dict:
    """The paper's two claims, measured: trend with layer depth per model, and with model depth at the last block."""
    from .depth import model_depth

    within = {}
    for profile in profiles:
        rows = [r for r in profile["layers"] if r["layer"] != FINAL]
        depth = [r["relative_depth"] for r in rows]
        within[profile["model"]] = {m: rank_correlation(depth, [r[m] for r in rows]) for m, _, _ in MEASURES}
    last = {p["model"]: [r for r in p["layers"] if r["layer"] != FINAL][-1] for p in profiles}
    depths = {p["model"]: model_depth(p["model"]) for p in profiles}
    across = {}
    if len(profiles) >= 2 and all(d is not None for d in depths.values()):
        ordered = sorted(last, key=depths.__getitem__)
        across = {m: {"model_depths": [depths[n] for n in ordered], "last_block": [last[n][m] for n in ordered],
                      "rank_correlation": rank_correlation([depths[n] for n in ordered],
                                                           [last[n][m] for n in ordered])}
                  for m, _, _ in MEASURES}
    return {"layer_depth_rank_correlation": within, "model_depth": across}


def _verdict(claims: dict) -> list[str]:
    lines = []
    for measure, label, higher_is_specific in MEASURES:
        values = [v[measure] for v in claims["layer_depth_rank_correlation"].values() if not math.isnan(v[measure])]
        if values:
            sign = 1 if higher_is_specific else -1
            agree = sum(sign * v > 0.5 for v in values)
            lines.append(f"- {label}: more class-specific with layer depth (Spearman {'>' if sign > 0 else '<'} "
                         f"{'' if sign > 0 else '-'}0.5) in {agree} of {len(values)} models "
                         f"(Spearman per model: {', '.join(f'{v:+.2f}' for v in values)}).")
        across = claims["model_depth"].get(measure)
        if across and not math.isnan(across["rank_correlation"]):
            rho = across["rank_correlation"]
            specific = rho > 0 if higher_is_specific else rho < 0
            lines.append(f"  At the last block, deeper models are {'more' if specific else 'not more'} class-specific "
                         f"by this measure (Spearman over depths {across['model_depths']}: {rho:+.2f}; values "
                         f"{', '.join(f'{v:.3f}' for v in across['last_block'])}).")
    return lines


def plot_selectivity(profiles: list[dict], path) -> Path:
    """Selectivity against relative depth, one panel per measure, one line per model."""
    fig, axes = plt.subplots(1, len(MEASURES), figsize=(4.2 * len(MEASURES), 3.4))
    for ax, (measure, label, higher) in zip(axes, MEASURES):
        for profile in profiles:
            rows = [r for r in profile["layers"] if r["layer"] != FINAL]
            ax.plot([r["relative_depth"] for r in rows], [r[measure] for r in rows], marker="o", markersize=3,
                    label=profile["model"])
        ax.set_xlabel("block / number of blocks")
        ax.set_title(label + (" (higher = more specific)" if higher else " (lower = more specific)"), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def selectivity_study(profiles: list[dict], out_dir, *, data: dict | None = None) -> StudyResult:
    """Table (model x layer x {Psi, mu, MI}), figure against depth and the claims, from :func:`selectivity_profile` s."""
    if not profiles:
        raise DecompValueError("no selectivity profiles; give at least one model")
    figure = plot_selectivity(profiles, Path(out_dir) / "selectivity.png")
    claims = _claims(profiles)
    fraction, k1 = profiles[0]["fraction"], profiles[0]["k1"]
    header = ["model", "layer", "d", "Psi", "Psi (mean count)", "mu", "MI", "mass k1 (mean over classes)"]
    rows = []
    for profile in profiles:
        for r in profile["layers"]:
            mass = r.get("mass_k1_per_class")
            rows.append([profile["model"], r["layer"], r["width"], f"{r['psi']:.3f}", f"{r['psi_mean']:.3f}",
                         f"{r['mu']:.3f}", f"{r['mi']:.3f}", "" if mass is None else f"{sum(mass) / len(mass):.1f}"])
    samples = profiles[0]["layers"][0]["samples"]
    markdown = (
        f"Per layer, from one pass over {samples} images per model: Psi_k with k = {fraction} (per sample, the "
        f"number of channels holding less than {fraction:.0%} of the pooled activation mass; Psi = (d - median "
        f"count) / d, mean over classes), mu = mean over channels of the class selectivity index "
        f"(mu_max - mu_-max) / (mu_max + mu_-max), and MI = mean pairwise mutual information of the classes' "
        f"above-mean top-k1 vote indicators (the MI of the authors' indices_experiment.py; k1 = {k1}, clipped to "
        f"the layer width; lower = classes use more distinct channels).\n\n"
        f"![selectivity](selectivity.png)\n\n**The paper's claim (deeper = more class-specific), measured:**\n\n"
        + "\n".join(_verdict(claims)) + "\n\n" + markdown_table(header, rows))
    return StudyResult("selectivity", "Selectivity against depth", markdown,
                       {"profiles": profiles, "claims": claims, **(data or {})}, [figure])


def run_selectivity(models, dataset: str | None, out_dir, *, layers=("all-blocks",), fraction: float = 0.5, k1=5,
                    split: str = "train", limit: int | None = None, seed: int = 0, batch_size: int = 256,
                    num_workers: int | None = None, overwrite: bool = False) -> StudyResult:
    """Profiles of every model (one pass each) into ``out_dir``: report.md, report.json, selectivity.png."""
    from ..data import load_image_split
    from ..models import load_classifier
    from ..utils.files import check_output_dir, staged_output_dir
    from .suite import write_report

    if isinstance(models, str):
        models = [models]
    check_output_dir(out_dir, overwrite)
    image_split = load_image_split(dataset, split, limit=limit, seed=seed)
    adapters = [load_classifier(name) for name in models]  # fail on a bad name before any pass
    profiles = [selectivity_profile(adapter, image_split, layers, fraction=fraction, k1=k1, batch_size=batch_size,
                                    num_workers=num_workers) for adapter in adapters]
    settings = {"models": [public_name(m) for m in models], "layers": list(layers), "k": fraction, "k1": k1, "split": split,
                "limit": limit, "seed": seed, "images": image_split.num_rows,
                "dataset": public_name(dataset) or "bundled CIFAR-10"}  # no machine paths in committed results
    with staged_output_dir(out_dir, overwrite) as staging:
        result = selectivity_study(profiles, staging, data={"settings": settings})
        write_report([result], staging, settings, title="hf-decomp selectivity")
    return result
