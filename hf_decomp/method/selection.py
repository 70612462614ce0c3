"""Choosing each class's influential features: pure functions from statistics to index sets.

Index sets are lists (one per class) of feature indices in rank order, most influential first.
Ties are broken towards the lower feature index, so results are reproducible.
"""

from __future__ import annotations

import torch

__all__ = ["top_k_per_class", "coverage_per_class", "label_free_scores", "select_from_statistics", "SELECTION_METHODS"]

SELECTION_METHODS = ("histogram", "coverage", "label-free", "contribution")


def _rank(scores: torch.Tensor) -> torch.Tensor:
    """Feature indices per row by descending score; equal scores keep ascending index order."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def top_k_per_class(scores: torch.Tensor, k: int) -> list[list[int]]:
    """Algorithm 1's last step: the k highest-scoring features of every class.

    Args:
        scores: (C, d), e.g. the histogram of top-k1 indices.
        k: k2, the size of every set, 1 <= k <= d.
    """
    num_features = scores.shape[1]
    if not 1 <= k <= num_features:
        raise ValueError(f"k2={k} must be between 1 and d={num_features} (the feature width)")
    return _rank(scores)[:, :k].tolist()


def coverage_per_class(histogram: torch.Tensor, coverage: float) -> list[list[int]]:
    """Per class, the smallest set of most frequent indices holding ``coverage`` of its histogram mass.

    Args:
        histogram: (C, d) non-negative counts.
        coverage: fraction in (0, 1], e.g. 0.5 for 50 %.
    """
    if not 0.0 < coverage <= 1.0:
        raise ValueError(f"coverage={coverage} must be a fraction in (0, 1] (e.g. 0.5 for 50 %)")
    order = _rank(histogram)
    sorted_counts = histogram.gather(1, order).double()
    totals = sorted_counts.sum(1, keepdim=True)
    # how many of the sorted bins are needed: count bins whose preceding mass is still short of p
    preceding = sorted_counts.cumsum(1) - sorted_counts
    sizes = (preceding < coverage * totals - 1e-9).sum(1).clamp(min=1)
    return [order[c, : int(n)].tolist() for c, n in enumerate(sizes)]


def label_free_scores(weight: torch.Tensor, feature_mean: torch.Tensor) -> torch.Tensor:
    """score_cj = W_cj * mean_j: a feature's expected push on class c's logit, with no labels needed."""
    return weight.double() * feature_mean.double()[None, :]


def select_from_statistics(
    statistics,
    *,
    k1: int,
    k2: int | None = None,
    coverage: float | None = None,
    method: str = "histogram",
    weight: torch.Tensor | None = None,
) -> tuple[list[list[int]], list[int]]:
    """Index sets from one pass of :class:`~hf_decomp.method.statistics.ClassStatistics`.

    Args:
        statistics: the gathered statistics.
        k1: which top-k1 histogram to use.
        k2: size of every set (``histogram`` and ``label-free``).
        coverage: instead of k2, per class the smallest set covering this fraction of the histogram.
        method: ``histogram`` (Algorithm 1), ``coverage`` (implied by ``coverage``), ``label-free`` or
            ``contribution`` (W_cj * (mean_c(x_j) - mean(x_j)), see :mod:`hf_decomp.method.criteria`).
        weight: (C, d) classifier weight; needed by ``label-free`` and for classes without samples.

    Returns:
        (index sets, classes that had no samples and fell back to the label-free ranking).
    """
    if method not in SELECTION_METHODS:
        from ..utils.errors import DecompValueError

        raise DecompValueError(f"method={method!r} is not one of {', '.join(SELECTION_METHODS)}")
    if coverage is not None and k2 is not None:
        raise ValueError("give either k2 or coverage, not both")
    if coverage is None and k2 is None:
        raise ValueError("give k2 (set size) or coverage (fraction of histogram mass)")
    label_free = None
    if weight is not None:
        label_free = label_free_scores(weight.cpu(), statistics.overall_mean().cpu())
    if method == "label-free":
        if label_free is None:
            raise ValueError("method='label-free' needs the classifier weight (weight=...)")
        return top_k_per_class(label_free, k2 if k2 is not None else 1), []
    if method == "contribution":
        from .criteria import check_k_for_means, criterion_scores

        if coverage is not None or weight is None:
            raise ValueError("method='contribution' needs k2 (not coverage) and the classifier weight (weight=...)")
        check_k_for_means(k2, statistics.overall_mean(), method)
        sets = top_k_per_class(criterion_scores(method, statistics, weight), k2)
    else:
        histogram = statistics.histogram(k1).cpu()
        sets = coverage_per_class(histogram, coverage) if coverage is not None else top_k_per_class(histogram, k2)
    empty = statistics.empty_classes()
    if empty:
        if label_free is None:
            raise ValueError(f"classes {empty} have no samples; pass weight= to rank their features without labels")
        size = k2 if k2 is not None else max(1, round(sum(map(len, sets)) / len(sets)))
        fallback = top_k_per_class(label_free, size)
        for c in empty:
            sets[c] = fallback[c]
    return sets, empty
