"""Class overlap and disentanglement of the influential sets.

- Jaccard matrix |I_a & I_b| / |I_a | I_b| between the classes' sets (heatmap).
- How many classes each feature serves (0 = used by no class, 1 = class-specific).
- Mutual information between each feature and each class, the measure Liang et al. (2020) use to
  compare class-specific filters: MI(a_j; 1[y = c]) with the pooled activation a_j discretised into
  equal-count bins. ``MIS`` is its mean over features of the max over classes (higher = features
  are more class-specific). We also report the mean MI of the (class, feature) pairs a selection
  keeps, which compares selections (Algorithm 1, CSG gates) on the same features.
- Next to MIS, the mean pairwise MI between the classes' top-k1 vote histograms, each measure of the
  authors' code under its own name (lower = classes vote for more distinct features): their
  ``calc_pairwise_mi`` ``prob`` and ``select`` (:func:`hf_decomp.layers.selectivity.authors_pairwise_mi`) and
  the MI of their ``indices_experiment.py`` over above-mean vote indicators
  (:func:`hf_decomp.layers.selectivity.above_mean_vote_mi`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..layers.selectivity import above_mean_vote_mi, authors_pairwise_mi
from ..utils.markdown import markdown_table
from .common import ModelFeatures, StudyResult
from .plotting import annotated_heatmap, plt, save_figure

__all__ = ["jaccard_matrix", "classes_per_feature", "feature_class_mutual_information", "mutual_information_score",
           "selected_pair_information", "overlap_study"]


def _membership(index_sets, num_features: int) -> torch.Tensor:
    mask = torch.zeros(len(index_sets), num_features, dtype=torch.bool)
    for c, subset in enumerate(index_sets):
        mask[c, list(subset)] = True
    return mask


def jaccard_matrix(index_sets, num_features: int) -> torch.Tensor:
    """(C, C) float64 Jaccard similarity of the index sets (1 on the diagonal)."""
    mask = _membership(index_sets, num_features).double()
    inter = mask @ mask.T
    sizes = mask.sum(1)
    union = sizes[:, None] + sizes[None, :] - inter
    return inter / union.clamp(min=1)


def classes_per_feature(index_sets, num_features: int) -> torch.Tensor:
    """(d,) int64: in how many classes' sets each feature appears."""
    return _membership(index_sets, num_features).sum(0).long()


def feature_class_mutual_information(features: torch.Tensor, labels: torch.Tensor, num_classes: int,
                                     bins: int = 8) -> torch.Tensor:
    """(C, d) MI in bits between binned feature j and the indicator of class c.

    Each feature is cut into ``bins`` equal-count bins (quantiles over the given samples), so the
    estimate does not depend on the feature's scale. Ties (e.g. many exact zeros after ReLU) share a bin.
    """
    features = features.double()
    n, d = features.shape
    if n == 0:
        raise ValueError("no samples to estimate mutual information from")
    quantiles = torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1]
    edges = torch.quantile(features, quantiles, dim=0).T.contiguous()  # (d, bins-1)
    binned = torch.searchsorted(edges, features.T.contiguous(), right=True).T  # (n, d) in [0, bins)
    labels = labels.long()
    joint_in = torch.zeros(num_classes, d, bins, dtype=torch.float64)  # P(y=c, bin=b) per feature
    for b in range(bins):  # one (n, d) indicator at a time: memory O(n d), not O(n C d)
        joint_in[:, :, b].index_add_(0, labels, (binned == b).double())
    joint_in /= n
    p_bin = joint_in.sum(0)  # (d, bins): every sample has one class
    p_class = joint_in[:, 0, :].sum(-1)  # (C,)
    joint_out = p_bin[None] - joint_in  # P(y!=c, bin=b)

    def term(joint, marginal_class):
        expected = marginal_class[:, None, None] * p_bin[None]
        ratio = torch.where(joint > 0, joint / expected.clamp(min=1e-300), torch.ones_like(joint))
        return (joint * torch.log2(ratio)).sum(-1)

    return (term(joint_in, p_class) + term(joint_out, 1 - p_class)).clamp(min=0)


def mutual_information_score(mi: torch.Tensor) -> float:
    """MIS: mean over features of the max over classes of MI(feature; class)."""
    return float(mi.max(dim=0).values.mean())


def selected_pair_information(mi: torch.Tensor, index_sets) -> dict:
    """Mean MI (bits) of the (class, feature) pairs in the sets and of all other pairs."""
    mask = _membership(index_sets, mi.shape[1])
    inside = mi[mask]
    outside = mi[~mask]
    return {"selected_pairs": float(inside.mean()) if inside.numel() else None,
            "other_pairs": float(outside.mean()) if outside.numel() else None}


def plot_overlap(jaccard: torch.Tensor, per_feature: torch.Tensor, label_names, path, title: str) -> Path:
    num_classes = jaccard.shape[0]
    show_numbers = num_classes <= 20
    fig, (ax_left, ax_right) = plt.subplots(1, 2, figsize=(11, 4.6), gridspec_kw={"width_ratios": [1.2, 1]})
    if show_numbers:
        image = annotated_heatmap(ax_left, jaccard.numpy(), label_names, label_names, fmt="{:.2f}", cmap="magma",
                                  vmin=0, vmax=1, fontsize=7)
        ax_left.tick_params(axis="x", labelrotation=60, labelsize=8)
        ax_left.tick_params(axis="y", labelsize=8)
    else:
        image = ax_left.imshow(jaccard.numpy(), cmap="magma", vmin=0, vmax=1)
        ax_left.set_xlabel("class")
        ax_left.set_ylabel("class")
    fig.colorbar(image, ax=ax_left, fraction=0.046, label="Jaccard |I_a & I_b| / |I_a | I_b|")
    ax_left.set_title("overlap of influential sets", fontsize=10)
    counts = np.bincount(per_feature.numpy(), minlength=int(per_feature.max()) + 1)
    ax_right.bar(np.arange(len(counts)), counts, color="#1f77b4")
    for x, y in enumerate(counts):
        ax_right.text(x, y, str(y), ha="center", va="bottom", fontsize=8)
    ax_right.set_xticks(np.arange(len(counts)))
    ax_right.set_xlabel("number of classes a feature serves")
    ax_right.set_ylabel("features")
    ax_right.set_title("classes per feature", fontsize=10)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def overlap_study(mf: ModelFeatures, index_sets, out_dir, *, bins: int = 8, selection: str = "Algorithm 1",
                  extra_selections: dict | None = None, histogram: torch.Tensor | None = None) -> StudyResult:
    """Jaccard heatmap, classes-per-feature histogram and MI scores of ``index_sets``.

    Args:
        extra_selections: other index sets (e.g. ``{"CSG top-k": sets}``) whose selected-pair MI is reported too.
        histogram: the (C, d) top-k1 histogram the sets were drawn from; adds the classes' pairwise
            histogram MI next to MIS.
    """
    d = mf.num_features
    jaccard = jaccard_matrix(index_sets, d)
    per_feature = classes_per_feature(index_sets, d)
    mi = feature_class_mutual_information(mf.test_features, mf.test_labels, mf.num_classes, bins)
    figure = plot_overlap(jaccard, per_feature, mf.label_names, Path(out_dir) / "overlap.png",
                          f"{mf.name}: {selection} sets")
    off_diagonal = jaccard[~torch.eye(len(index_sets), dtype=torch.bool)]
    selections = {selection: selected_pair_information(mi, index_sets)}
    for name, sets in (extra_selections or {}).items():
        selections[name] = selected_pair_information(mi, sets)
    data = {
        "mean_jaccard_off_diagonal": float(off_diagonal.mean()) if off_diagonal.numel() else 0.0,
        "max_jaccard_off_diagonal": float(off_diagonal.max()) if off_diagonal.numel() else 0.0,
        "classes_per_feature": per_feature.tolist(),
        "features_unused": int((per_feature == 0).sum()),
        "features_class_specific": int((per_feature == 1).sum()),
        "features_shared": int((per_feature > 1).sum()),
        "mutual_information_score_bits": mutual_information_score(mi),
        "mi_bins": bins,
        "selected_pair_mi_bits": selections,
        "jaccard": jaccard.tolist(),
    }
    histogram_mi = ""
    if histogram is not None:
        histogram = histogram.cpu()
        measures = {"authors_pairwise_mi_prob_nats": authors_pairwise_mi(histogram, "prob")["mean"],
                    "authors_pairwise_mi_select_nats": authors_pairwise_mi(histogram, "select")["mean"],
                    "above_mean_vote_mi_nats": above_mean_vote_mi(histogram)["mean"]}
        data.update(measures)
        histogram_mi = (" Mean pairwise MI between the classes' top-k1 vote histograms (nats; lower = more distinct "
                        "votes): the authors' calc_pairwise_mi \"prob\" (vote distributions) "
                        f"{measures['authors_pairwise_mi_prob_nats']:.4f}, \"select\" (channels with any vote) "
                        f"{measures['authors_pairwise_mi_select_nats']:.4f}; above-mean vote indicators (the MI of the "
                        f"authors' indices_experiment.py) {measures['above_mean_vote_mi_nats']:.4f}.")
    rows = [[name, f"{v['selected_pairs']:.4f}", f"{v['other_pairs']:.4f}" if v["other_pairs"] is not None else None]
            for name, v in selections.items()]
    markdown = (
        f"Mean off-diagonal Jaccard {data['mean_jaccard_off_diagonal']:.3f} (max "
        f"{data['max_jaccard_off_diagonal']:.3f}). Of d = {d} features, {data['features_unused']} serve no class, "
        f"{data['features_class_specific']} exactly one, {data['features_shared']} several.\n\n"
        f"![overlap](overlap.png)\n\n"
        f"Mutual information between features and classes (eval split, {bins} equal-count bins per feature): "
        f"MIS = mean_j max_c MI(a_j; 1[y=c]) = {data['mutual_information_score_bits']:.4f} bits.{histogram_mi} "
        f"Mean MI of the "
        f"(class, feature) pairs each selection keeps vs all other pairs:\n\n"
        + markdown_table(["selection", "selected pairs (bits)", "other pairs (bits)"], rows)
    )
    return StudyResult("overlap", "Class overlap and disentanglement", markdown, data, [figure])
