"""Choosing each class's influential features: pure functions from statistics to index sets.

Index sets are lists (one per class) of feature indices in rank order, most influential first.
Ties are broken towards the lower feature index, so results are reproducible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..utils.checks import check_k
from ..utils.errors import DecompValueError
from ..utils.settings import resolve_renamed
from .criteria import Criterion, CriterionInputs, get_criterion, label_free_scores, list_criteria

if TYPE_CHECKING:
    import torch

__all__ = ["top_k_per_class", "coverage_per_class", "label_free_scores", "check_selection", "select_from_statistics"]


def _rank(scores: torch.Tensor) -> torch.Tensor:
    """Feature indices per row by descending score; equal scores keep ascending index order."""
    return scores.sort(dim=1, descending=True, stable=True).indices


def top_k_per_class(scores: torch.Tensor, k: int) -> list[list[int]]:
    """Algorithm 1's last step: the k highest-scoring features of every class.

    Args:
        scores: (C, d), e.g. the histogram of top-k1 indices.
        k: k2, the size of every set, 1 <= k <= d.
    """
    check_k("k2", k, scores.shape[1])
    return _rank(scores)[:, :k].tolist()


def coverage_per_class(histogram: torch.Tensor, coverage: float) -> list[list[int]]:
    """Per class, the smallest set of most frequent indices holding ``coverage`` of its histogram mass.

    Args:
        histogram: (C, d) non-negative counts.
        coverage: fraction in (0, 1], e.g. 0.5 for 50 %.
    """
    if not 0.0 < coverage <= 1.0:
        raise DecompValueError(f"coverage={coverage} must be a fraction in (0, 1] (e.g. 0.5 for 50 %)")
    order = _rank(histogram)
    sorted_counts = histogram.gather(1, order).double()
    totals = sorted_counts.sum(1, keepdim=True)
    # how many of the sorted bins are needed: count bins whose preceding mass is still short of p
    preceding = sorted_counts.cumsum(1) - sorted_counts
    sizes = (preceding < coverage * totals - 1e-9).sum(1).clamp(min=1)
    return [order[c, : int(n)].tolist() for c, n in enumerate(sizes)]


def check_selection(name: str, *, k2: int | float | None = None, coverage: float | None = None) -> Criterion:
    """The criterion ``name`` if ``analyze`` can use it with this set size; checked before any pass over data.

    Exactly one of ``k2`` (set size) and ``coverage`` (fraction of the vote histogram) must be given,
    and the criterion must be computable from streamed statistics and accept that kind of size.
    """
    criterion = get_criterion(name)
    if not criterion.streamable:
        raise DecompValueError(
            f"criterion {name!r} needs the training features themselves, not only streamed statistics: use it "
            f"with `hf-decomp refit` (decompose_head). From statistics: {', '.join(list_criteria(streamable=True))}.")
    if coverage is not None and k2 is not None:
        raise DecompValueError("give either k2 or coverage, not both")
    if coverage is None and k2 is None:
        raise DecompValueError("give k2 (set size) or coverage (fraction of histogram mass)")
    if coverage is not None and "coverage" not in criterion.set_sizes:
        raise DecompValueError(
            f"criterion {name!r} keeps k2 features per class; coverage (a fraction of the vote histogram) works "
            f"with {', '.join(list_criteria(set_size='coverage'))}. Give k2 (--k2) instead.")
    if k2 is not None and "k" not in criterion.set_sizes:
        raise DecompValueError(f"criterion {name!r} sizes its sets by coverage; give coverage (a fraction, "
                               f"--coverage 0.5) instead of k2")
    return criterion


def select_from_statistics(
    statistics,
    *,
    k1: int,
    k2: int | None = None,
    coverage: float | None = None,
    criterion: str | None = None,
    weight: torch.Tensor | None = None,
    **renamed,
) -> tuple[list[list[int]], list[int]]:
    """Index sets from one pass of :class:`~hf_decomp.method.statistics.ClassStatistics`.

    Args:
        statistics: the gathered statistics.
        k1: which top-k1 histogram to use.
        k2: size of every set.
        coverage: instead of k2, per class the smallest set covering this fraction of the histogram.
        criterion: a criterion computable from statistics (``list_criteria(streamable=True)``: ``histogram``
            (Algorithm 1, the default), ``contribution``, ``label-free``, ``coverage``; see
            :mod:`hf_decomp.method.criteria`).
        weight: (C, d) classifier weight; needed by criteria that read it and for classes without samples.
        renamed: the old name ``method=`` (now ``criterion=``), with one FutureWarning.

    Returns:
        (index sets, classes that had no samples and fell back to the label-free ranking).
    """
    name = resolve_renamed("select_from_statistics", renamed, {"method": "criterion"},
                           {"criterion": criterion})["criterion"]
    criterion = check_selection(name if name is not None else "histogram", k2=k2, coverage=coverage)
    inputs = CriterionInputs.from_statistics(statistics, weight=weight, k1=k1, k=k2)
    scores = criterion.scores(inputs)
    sets = coverage_per_class(scores, coverage) if coverage is not None else top_k_per_class(scores, k2)
    empty = statistics.empty_classes() if criterion.needs_labels else []
    if empty:
        if weight is None:
            raise DecompValueError(f"classes {empty} have no samples; pass weight= to rank their features "
                                   f"without labels")
        size = k2 if k2 is not None else max(1, round(sum(map(len, sets)) / len(sets)))
        fallback = top_k_per_class(label_free_scores(inputs.weight, inputs.overall_mean), size)
        for c in empty:
            sets[c] = fallback[c]
    return sets, empty
