"""Paper Fig. 3: rho over a k1 x k2 grid from one statistics pass and one evaluation pass.

The statistics pass gathers every k1 histogram from the same per-batch top-k. The evaluation pass
reads each batch of eval features once and scores every (k1, k2) head on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..method.selection import top_k_per_class
from ..method.statistics import ClassStatistics
from ..passes.evaluation import count_correct
from ..portable.decomposed_head import DecomposedLinear
from ..utils.checks import check_k_values
from ..utils.markdown import markdown_table
from .common import ModelFeatures, StudyResult, batched
from .histograms import gather_class_statistics
from .plotting import annotated_heatmap, plt, save_figure

__all__ = ["sweep_grid", "plot_sweep", "sweep_study", "DEFAULT_GRID"]

DEFAULT_GRID = (1, 2, 3, 5, 8, 10, 16, 32)


@torch.no_grad()
def sweep_grid(mf: ModelFeatures, k1_values, k2_values, stats: ClassStatistics | None = None) -> dict:
    """Decomposed accuracy and rho for every (k1, k2).

    Returns:
        dict with ``k1_values``, ``k2_values``, ``full_accuracy`` (percent), ``decomposed_accuracy`` and
        ``rho`` as nested lists indexed [k1][k2], and ``statistics_passes`` / ``evaluation_passes`` (1 each).
    """
    k1_values = check_k_values("k1", k1_values, mf.num_features)
    k2_values = check_k_values("k2", k2_values, mf.num_features)
    if stats is None or not set(k1_values) <= set(stats.k1_values):
        stats = gather_class_statistics(mf, k1_values)
    heads = {(k1, k2): DecomposedLinear(mf.weight, mf.bias, top_k_per_class(stats.histogram(k1).cpu(), k2))
             for k1 in k1_values for k2 in k2_values}
    correct = dict.fromkeys(heads, 0)
    full_correct = total = 0
    for x, y in batched(mf.test_features, mf.test_labels):
        full_correct += count_correct(torch.nn.functional.linear(x, mf.weight, mf.bias), y)
        total += y.numel()
        for key, head in heads.items():
            correct[key] += count_correct(head(x), y)
    if total == 0:
        from ..utils.errors import DecompValueError

        raise DecompValueError("the evaluation split has no samples; the sweep needs labelled eval features")
    full = 100.0 * full_correct / total
    accuracy = [[100.0 * correct[(k1, k2)] / total for k2 in k2_values] for k1 in k1_values]
    rho = [[a / full if full else float("nan") for a in row] for row in accuracy]
    return {"k1_values": k1_values, "k2_values": k2_values, "full_accuracy": full, "decomposed_accuracy": accuracy,
            "rho": rho, "eval_samples": total, "statistics_samples": stats.num_samples,
            "statistics_passes": 1, "evaluation_passes": 1}


def plot_sweep(result: dict, path, title: str) -> Path:
    rho = np.array(result["rho"])
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(result["k2_values"]), 1.0 + 0.55 * len(result["k1_values"])))
    low = float(np.floor(np.nanmin(rho) * 10) / 10) if np.isfinite(rho).any() else 0.0
    image = annotated_heatmap(ax, rho, result["k1_values"], result["k2_values"], fmt="{:.2f}", vmin=min(low, 0.9),
                              vmax=max(1.0, float(np.nanmax(rho))))
    ax.set_xlabel("k2 (features kept per class)")
    ax.set_ylabel("k1 (top features per sample that vote)")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="rho = decomposed / full accuracy")
    return save_figure(fig, path)


def sweep_study(mf: ModelFeatures, out_dir, *, k1_values=DEFAULT_GRID, k2_values=DEFAULT_GRID,
                stats: ClassStatistics | None = None) -> StudyResult:
    """Fig. 3 for ``mf``: rho heatmap and table over the k1 x k2 grid."""
    result = sweep_grid(mf, k1_values, k2_values, stats)
    figure = plot_sweep(result, Path(out_dir) / "sweep.png",
                        f"{mf.name}: rho over k1 x k2 (full accuracy {result['full_accuracy']:.2f} %)")
    header = ["k1 \\ k2"] + [str(k) for k in result["k2_values"]]
    rows = [[k1] + [f"{r:.3f}" for r in row] for k1, row in zip(result["k1_values"], result["rho"])]
    markdown = (
        f"rho = decomposed / full accuracy on {result['eval_samples']} eval samples (full accuracy "
        f"{result['full_accuracy']:.2f} %), for every k1 x k2; all histograms from one statistics pass over "
        f"{result['statistics_samples']} samples, all heads scored in one pass over the eval features.\n\n"
        f"![sweep](sweep.png)\n\n" + markdown_table(header, rows)
    )
    return StudyResult("sweep", "k1 x k2 sweep (Fig. 3)", markdown, result, [figure])
