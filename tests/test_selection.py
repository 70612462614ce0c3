import pytest
import torch

from hf_decomp.method.selection import (
    coverage_per_class,
    label_free_scores,
    select_from_statistics,
    top_k_per_class,
)
from hf_decomp.method.statistics import ClassStatistics


def test_top_k_takes_most_frequent_and_breaks_ties_by_lower_index():
    histogram = torch.tensor([[0, 5, 5, 1], [9, 0, 2, 2]])
    assert top_k_per_class(histogram, 2) == [[1, 2], [0, 2]]
    assert top_k_per_class(histogram, 4) == [[1, 2, 3, 0], [0, 2, 3, 1]]


def test_coverage_keeps_smallest_set_holding_the_mass():
    histogram = torch.tensor([[2, 1, 0, 1], [0, 1, 0, 1]])
    assert coverage_per_class(histogram, 0.5) == [[0], [1]]
    assert coverage_per_class(histogram, 0.75) == [[0, 1], [1, 3]]
    assert coverage_per_class(histogram, 1.0) == [[0, 1, 3], [1, 3]]


def test_label_free_score_is_weight_times_mean():
    weight = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    scores = label_free_scores(weight, torch.tensor([2.0, 1.0]))
    assert scores.tolist() == [[2.0, -2.0], [1.0, 3.0]]


@pytest.mark.parametrize("k", [0, 5])
def test_k2_outside_range_is_rejected(k):
    with pytest.raises(ValueError, match=f"k2={k} must be between 1 and d=4"):
        top_k_per_class(torch.zeros(2, 4), k)


def test_coverage_must_be_a_fraction():
    with pytest.raises(ValueError, match="coverage=50"):
        coverage_per_class(torch.ones(2, 4), 50)


def test_class_without_samples_falls_back_to_label_free_ranking():
    stats = ClassStatistics(2, 3, (1,))
    stats.update(torch.tensor([[3.0, 1.0, 2.0], [1.0, 1.0, 1.0]]), torch.tensor([0, 0]))
    weight = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 5.0]])
    sets, empty = select_from_statistics(stats, k1=1, k2=1, weight=weight)
    assert empty == [1]
    assert sets == [[0], [2]]  # class 1: scores W * mean = [0, -1, 7.5]


def test_unknown_method_lists_the_known_ones():
    stats = ClassStatistics(1, 2, (1,))
    with pytest.raises(ValueError, match="histogram"):
        select_from_statistics(stats, k1=1, k2=1, criterion="magic")
