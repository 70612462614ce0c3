"""Selectivity measures as pure functions of streamed statistics (no per-sample storage).

- Psi_k (Badola et al.'s code): per sample, sort the pooled activations, normalise them to sum 1 and
  count the channels whose cumulative mass is still below k; Psi = (d - median count) / d per class
  (``psi``), or with the mean count (``psi_mean``). A class whose samples spread their activation over
  few channels has a high Psi. The counts are kept as a per-class histogram (d + 1 bins), which is
  exact and adds up across shards.
- mu, the class selectivity index (Morcos et al. 2018; Leavitt & Morcos 2020): per channel
  (mu_max - mu_-max) / (mu_max + mu_-max) over the class-conditional mean activations, mu_-max being the
  mean over the other classes; 0 = equally active for all classes, 1 = active for one class only.
- pairwise MI between classes' top-k1 vote histograms, three measures of the authors' code, each under
  its own name (entropies in nats of vectors read as distributions, the authors' ``info.p_entropy``:
  eps = 1e-6 added to every entry of a vector that has a zero). Lower MI means the classes' votes
  overlap less.

  * :func:`above_mean_vote_mi` (the MI of their ``indices_experiment.py``, applied here to the sample votes;
    that script counts votes over the rows of each class's Gram matrix X_c^T X_c instead): each histogram
    becomes the indicator of the channels voted more often than its own mean; MI = H(a) + H(b) - H(a | b).
  * :func:`authors_pairwise_mi` ``variant="prob"`` (``calc_pairwise_mi`` in their ``main.py``, printed by
    ``main.py calc_mi``): over the vote distributions p_i = hist_i / sum(hist_i),
    MI = H(p_i) + H(p_j) - H(p_i + p_j).
  * :func:`authors_pairwise_mi` ``variant="select"`` (same function): over the indicators of the channels
    with any vote, MI = H(s_i) + H(s_j) - H(s_i | s_j).
- fractional k: a per-class k1 from the activation mass (the mean count of channels below the
  fraction), whose top-k1 histogram is then cut by coverage as today.
"""

from __future__ import annotations

import math

import torch

__all__ = ["mass_counts", "psi_per_class", "class_selectivity_index", "above_mean_vote_mi", "authors_pairwise_mi",
           "histogram_mutual_information", "AUTHORS_MI_VARIANTS", "mass_k1_per_class", "per_class_k1_histogram"]

AUTHORS_MI_VARIANTS = ("prob", "select")


def mass_counts(features: torch.Tensor, fraction: float) -> torch.Tensor:
    """(B,) int64: per sample, how many of its largest channels hold less than ``fraction`` of its mass.

    Negative activations (a layer before its ReLU) carry no mass: they are clipped to 0. A sample with
    no mass at all counts d (its activation is concentrated in no channel).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction} must be in (0, 1] (e.g. 0.5 for half the activation mass)")
    values = features.double().clamp(min=0).sort(dim=1, descending=True).values
    totals = values.sum(dim=1, keepdim=True)
    cumulative = values.cumsum(dim=1) / totals.clamp(min=torch.finfo(torch.float64).tiny)
    return (cumulative < fraction - 1e-12).sum(dim=1)  # an all-zero row has cumulative 0 everywhere: count d


def _median_from_histogram(histogram: torch.Tensor) -> torch.Tensor:
    """Per row, the median of the values 0..d counted by ``histogram`` (mean of the two middle ones)."""
    totals = histogram.sum(dim=1)
    cumulative = histogram.cumsum(dim=1)
    low_rank = (totals - 1) // 2  # 0-based ranks of the middle sample(s)
    high_rank = totals // 2
    low = (cumulative <= low_rank[:, None]).sum(dim=1)
    high = (cumulative <= high_rank[:, None]).sum(dim=1)
    return (low + high).double() / 2


def psi_per_class(count_histogram: torch.Tensor) -> dict[str, torch.Tensor]:
    """Psi from a (C, d + 1) histogram of :func:`mass_counts`: ``psi`` (median) and ``psi_mean`` per class.

    Classes without samples get NaN.
    """
    num_features = count_histogram.shape[1] - 1
    histogram = count_histogram.long()
    totals = histogram.sum(dim=1)
    values = torch.arange(num_features + 1, dtype=torch.float64)
    mean = (histogram.double() * values).sum(dim=1) / totals.clamp(min=1)
    median = _median_from_histogram(histogram)
    empty = totals == 0
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    return {"psi": torch.where(empty, nan, (num_features - median) / num_features),
            "psi_mean": torch.where(empty, nan, (num_features - mean) / num_features),
            "median_count": torch.where(empty, nan, median), "mean_count": torch.where(empty, nan, mean)}


def class_selectivity_index(class_means: torch.Tensor, sample_counts: torch.Tensor | None = None,
                            eps: float = 1e-7) -> torch.Tensor:
    """(d,) selectivity index per channel from (C, d) class-conditional mean activations.

    Classes without samples (``sample_counts == 0``) are left out. ``eps`` keeps dead channels
    (all means 0) at 0 instead of 0/0, as in the authors' code.
    """
    means = class_means.double()
    if sample_counts is not None:
        means = means[sample_counts > 0]
    if means.shape[0] < 2:
        raise ValueError("the selectivity index needs class means of at least 2 classes with samples")
    top = means.sort(dim=0, descending=True).values
    mu_max, mu_rest = top[0], top[1:].mean(dim=0)
    return (mu_max - mu_rest) / (mu_max + mu_rest + eps)


def _entropy(weights: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Entropy (nats) of each row read as a distribution; rows with a zero get ``eps`` added everywhere."""
    weights = weights.double()
    weights = torch.where((weights == 0).any(dim=-1, keepdim=True), weights + eps, weights)
    totals = weights.sum(dim=-1, keepdim=True)
    return -((weights / totals) * (weights.log() - totals.log())).sum(dim=-1)


def _pairwise_mean(matrix: torch.Tensor, sample_counts: torch.Tensor | None) -> dict:
    """The (C, C) matrix with a NaN diagonal and its mean over ordered pairs of classes with samples."""
    num_classes = matrix.shape[0]
    matrix.fill_diagonal_(float("nan"))
    keep = torch.ones(num_classes, dtype=torch.bool) if sample_counts is None else sample_counts.cpu() > 0
    pairs = keep[:, None] & keep[None, :] & ~torch.eye(num_classes, dtype=torch.bool)
    mean = float(matrix[pairs].mean()) if bool(pairs.any()) else math.nan
    return {"matrix": matrix, "mean": mean}


def _indicator_mi(indicators: torch.Tensor, sample_counts: torch.Tensor | None) -> dict:
    """MI = H(a) + H(b) - H(a | b) between every two rows of a (C, d) 0/1 matrix."""
    indicators = indicators.long()
    single = _entropy(indicators)
    union = _entropy(indicators[:, None, :] | indicators[None, :, :])
    return _pairwise_mean(single[:, None] + single[None, :] - union, sample_counts)


def above_mean_vote_mi(histogram: torch.Tensor, sample_counts: torch.Tensor | None = None) -> dict:
    """Pairwise MI (nats) between the indicators of the channels each class votes for more often than its mean.

    The MI of the authors' ``indices_experiment.py`` (which counts its votes over the rows of each class's
    Gram matrix; here the votes are the samples' top-k1): row c of the (C, d) top-k1 histogram becomes
    ``1[hist_c > mean(hist_c)]``; for classes a != b, MI = H(a) + H(b) - H(a | b) (``|`` the union).
    Returns the (C, C) matrix (NaN diagonal) and its mean; classes without samples are left out of the mean.
    """
    return _indicator_mi(histogram.double() > histogram.double().mean(dim=1, keepdim=True), sample_counts)


def authors_pairwise_mi(histogram: torch.Tensor, variant: str = "prob",
                        sample_counts: torch.Tensor | None = None) -> dict:
    """Pairwise MI (nats) between classes' top-k1 vote histograms, as the authors' ``calc_pairwise_mi``.

    Args:
        histogram: (C, d) top-k1 vote counts per class.
        variant: ``"prob"``: over the vote distributions p_i = hist_i / sum(hist_i),
            MI_ij = H(p_i) + H(p_j) - H(p_i + p_j); ``"select"``: over the indicators s_i of the channels
            with any vote, MI_ij = H(s_i) + H(s_j) - H(s_i | s_j). Entropies as their ``info.p_entropy``.
        sample_counts: (C,) classes with 0 samples are left out of the mean.

    Returns:
        ``{"matrix": (C, C) float64 with a NaN diagonal, "mean": mean over ordered pairs i != j}``.

    Example:
        >>> round(authors_pairwise_mi(torch.tensor([[2, 2, 0], [0, 2, 2]]), "select")["mean"], 4)
        0.2877
    """
    if variant not in AUTHORS_MI_VARIANTS:
        raise ValueError(f"variant={variant!r} is not one of {', '.join(AUTHORS_MI_VARIANTS)}")
    counts = histogram.double()
    if variant == "select":
        return _indicator_mi(counts != 0, sample_counts)
    probs = counts / counts.sum(dim=1, keepdim=True).clamp(min=1e-300)
    single = _entropy(probs)
    joint = _entropy(probs[:, None, :] + probs[None, :, :])
    return _pairwise_mean(single[:, None] + single[None, :] - joint, sample_counts)


def histogram_mutual_information(histogram: torch.Tensor, sample_counts: torch.Tensor | None = None) -> dict:
    """Deprecated name of :func:`above_mean_vote_mi` (it is not the authors' ``calc_pairwise_mi``)."""
    import warnings

    warnings.warn("histogram_mutual_information() is now above_mean_vote_mi(); the authors' calc_pairwise_mi is "
                  "authors_pairwise_mi(); the old name will be removed in the next release", FutureWarning,
                  stacklevel=2)
    return above_mean_vote_mi(histogram, sample_counts)


def mass_k1_per_class(count_histogram: torch.Tensor) -> torch.Tensor:
    """(C,) int64 per-class k1 for fractional k: the rounded mean count of channels below the mass fraction.

    At least 1 and at most d; classes without samples get 1.
    """
    num_features = count_histogram.shape[1] - 1
    mean = psi_per_class(count_histogram)["mean_count"].nan_to_num(1.0)
    return mean.round().long().clamp(1, num_features)


def per_class_k1_histogram(rank_counts: torch.Tensor, k1_per_class: torch.Tensor) -> torch.Tensor:
    """(C, d) top-k1 histogram with a k1 of its own per class, from (C, d, d) rank counts.

    ``rank_counts[c, j, r]`` counts class-c samples whose rank-r channel (0 = largest) was j, so the
    top-k histogram of class c is the sum over r < k.
    """
    num_features = rank_counts.shape[2]
    ranks = torch.arange(num_features, device=rank_counts.device)
    within = ranks[None, :] < k1_per_class.to(rank_counts.device)[:, None]  # (C, d) over ranks
    return (rank_counts * within[:, None, :]).sum(dim=2)
