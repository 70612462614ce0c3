"""Paper Fig. 2: per class, how often each feature is among a sample's top-k1, influential bins highlighted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.label_names import model_class_index
from ..method.selection import top_k_per_class
from ..method.statistics import ClassStatistics
from ..utils.checks import check_k
from ..utils.markdown import markdown_table
from .common import ModelFeatures, StudyResult, batched
from .plotting import grid_shape, plt, save_figure

__all__ = ["gather_class_statistics", "plot_histogram_grid", "histogram_study"]


def gather_class_statistics(mf: ModelFeatures, k1_values) -> ClassStatistics:
    """One pass over the statistics-split features; every k1 histogram comes from the same top-k."""
    stats = ClassStatistics(mf.num_classes, mf.num_features, k1_values)
    for x, y in batched(mf.train_features, mf.train_labels):
        stats.update(x, y)
    return stats


def _choose_classes(label_names: list[str], classes, max_classes: int) -> list[int]:
    if classes is None:
        return list(range(min(len(label_names), max_classes)))
    return [model_class_index(c, label_names) for c in classes]


def plot_histogram_grid(histogram: torch.Tensor, index_sets, label_names, classes: list[int], path, k1: int,
                        title: str = "") -> Path:
    """Grid of bar charts, one per class: normalised top-k1 counts, influential bins in red."""
    rows, columns = grid_shape(len(classes), 5)
    fig, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 2.1 * rows), squeeze=False, sharey=True)
    d = histogram.shape[1]
    for ax in axes.flat[len(classes):]:
        ax.axis("off")
    for ax, c in zip(axes.flat, classes):
        counts = histogram[c].double()
        share = (counts / counts.sum().clamp(min=1)).numpy()
        colors = np.array(["#9aa5b1"] * d, dtype=object)
        colors[list(index_sets[c])] = "#d62728"
        ax.bar(np.arange(d), share, width=1.0, color=list(colors))
        ax.set_title(f"{label_names[c]}", fontsize=9)
        ax.set_xlim(-0.5, d - 0.5)
        ax.tick_params(labelsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("share of top-k1 votes", fontsize=7)
    for ax in axes[-1, :]:
        ax.set_xlabel("feature index", fontsize=7)
    fig.suptitle(title or f"Top-{k1} feature histograms per class (red: influential set)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def histogram_study(mf: ModelFeatures, out_dir, *, k1: int = 5, k2: int = 5, classes=None, max_classes: int = 10,
                    stats: ClassStatistics | None = None) -> StudyResult:
    """Fig. 2 for ``mf``: histograms of chosen classes (default: the first ``max_classes``)."""
    check_k("k1", k1, mf.num_features)
    check_k("k2", k2, mf.num_features)
    if stats is None or k1 not in stats.k1_values:
        stats = gather_class_statistics(mf, [k1])
    histogram = stats.histogram(k1).cpu()
    sets = top_k_per_class(histogram, k2)
    chosen = _choose_classes(mf.label_names, classes, max_classes)
    figure = plot_histogram_grid(histogram, sets, mf.label_names, chosen, Path(out_dir) / "histograms.png", k1,
                                 title=f"{mf.name}: top-{k1} histograms, influential k2={k2} in red")
    share = []
    for c in chosen:
        total = max(int(histogram[c].sum()), 1)
        share.append(100.0 * float(histogram[c, sets[c]].sum()) / total)
    rows = [[mf.label_names[c], int(stats.sample_counts[c]), " ".join(map(str, sets[c])), s]
            for c, s in zip(chosen, share)]
    markdown = (
        f"Per class, how often each of the d = {mf.num_features} features is among a training sample's top-{k1} "
        f"(statistics split, {stats.num_samples} samples); the k2 = {k2} most frequent (red) form the class's "
        f"influential set.\n\n![histograms](histograms.png)\n\n"
        + markdown_table(["class", "samples", "influential features", "votes held by the set (%)"], rows)
    )
    data = {"k1": k1, "k2": k2, "classes": [mf.label_names[c] for c in chosen],
            "index_sets": {mf.label_names[c]: sets[c] for c in chosen},
            "vote_share_percent": dict(zip([mf.label_names[c] for c in chosen], share))}
    return StudyResult("histograms", "Top-k1 histograms (Fig. 2)", markdown, data, [figure])
