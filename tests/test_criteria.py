"""Selection criteria: literal scores on hand-set statistics, registry errors, the k check, sparse GLM."""

from __future__ import annotations

import pytest
import torch

from hf_decomp.method.criteria import (
    CriterionInputs,
    check_k_for_means,
    contribution_scores,
    get_criterion,
    label_free_scores,
    list_criteria,
    sparse_glm_scores,
)
from hf_decomp.method.selection import select_from_statistics
from hf_decomp.method.statistics import ClassStatistics
from hf_decomp.utils.errors import DecompValueError


def _statistics() -> ClassStatistics:
    # class 0: feature 0 high; class 1: feature 1 high; feature 2 is a large constant (no class information)
    features = torch.tensor([[4.0, 0.0, 9.0], [2.0, 1.0, 9.0], [0.0, 3.0, 9.0], [1.0, 5.0, 9.0]])
    stats = ClassStatistics(2, 3, k1_values=(1,))
    stats.update(features, torch.tensor([0, 0, 1, 1]))
    return stats


def test_contribution_scores_literal():
    weight = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
    class_means = torch.tensor([[3.0, 1.0], [1.0, 2.0]])
    mean = torch.tensor([2.0, 1.5])
    # W_cj * (mean_c(x_j) - mean(x_j))
    assert contribution_scores(weight, class_means, mean).tolist() == [[1.0, 0.5], [-2.0, 0.25]]
    assert label_free_scores(weight, mean).tolist() == [[2.0, -1.5], [4.0, 0.75]]


def test_contribution_ignores_constant_features_that_histogram_and_label_free_pick():
    stats = _statistics()
    weight = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    # overall mean (1.75, 2.25, 9); class means (3, .5, 9) and (.5, 4, 9)
    scores = get_criterion("contribution").scores(CriterionInputs.from_statistics(stats, weight=weight))
    torch.testing.assert_close(scores, torch.tensor([[1.25, 0.0, 0.0], [0.0, 1.75, 0.0]], dtype=torch.float64))
    contribution, _ = select_from_statistics(stats, k1=1, k2=1, criterion="contribution", weight=weight)
    assert contribution == [[0], [1]]
    histogram, _ = select_from_statistics(stats, k1=1, k2=1, criterion="histogram", weight=weight)
    label_free, _ = select_from_statistics(stats, k1=1, k2=1, criterion="label-free", weight=weight)
    assert histogram == [[2], [2]] and label_free == [[2], [2]]  # the constant wins the vote and the mean


def test_histogram_criterion_is_algorithm_1():
    stats = _statistics()
    scores = get_criterion("histogram").scores(CriterionInputs.from_statistics(stats, k1=1))
    assert scores.tolist() == [[0.0, 0.0, 2.0], [0.0, 0.0, 2.0]]


def test_unknown_method_names_the_known_ones():
    with pytest.raises(DecompValueError, match="histogram, contribution, label-free, sparse-glm"):
        get_criterion("gradcam")
    with pytest.raises(ValueError, match="contribution"):
        select_from_statistics(_statistics(), k1=1, k2=1, criterion="gradcam")
    assert "contribution" in list_criteria(streamable=True) and list_criteria()[0] == "histogram"


def test_k_larger_than_active_features_is_refused():
    mean = torch.tensor([0.5, 0.0, 2.0, 0.0])
    check_k_for_means(2, mean, "contribution")
    with pytest.raises(DecompValueError, match=r"k=3 is larger than the 2 features with a non-zero mean"):
        check_k_for_means(3, mean, "contribution")
    stats = ClassStatistics(2, 3, k1_values=(1,))
    stats.update(torch.tensor([[1.0, 0.0, 0.0], [2.0, 0.0, 1.0]]), torch.tensor([0, 1]))
    with pytest.raises(DecompValueError, match="non-zero mean"):
        select_from_statistics(stats, k1=1, k2=3, criterion="contribution", weight=torch.ones(2, 3))


def test_sparse_glm_picks_the_informative_feature_first():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat(100)
    features = torch.rand(300, 5, generator=generator)
    features[torch.arange(300), labels] += 2.0  # class c is told by feature c alone; 3, 4 are noise
    scores = sparse_glm_scores(features, labels, 3, k=1, path_length=15, steps_per_lambda=20)
    assert scores.argmax(1).tolist() == [0, 1, 2]
    assert scores.shape == (3, 5) and bool((scores[:, 3:] < scores.max(1, keepdim=True).values).all())
