import pytest
import torch

from hf_decomp.method.statistics import ClassStatistics


def test_histograms_count_top_k1_indices_per_class():
    stats = ClassStatistics(num_classes=2, num_features=4, k1_values=(1, 2))
    features = torch.tensor([[0.0, 3.0, 1.0, 2.0], [5.0, 4.0, 0.0, 0.0], [1.0, 0.0, 0.0, 2.0]])
    stats.update(features, torch.tensor([1, 0, 0]))
    assert stats.histogram(1).tolist() == [[1, 0, 0, 1], [0, 1, 0, 0]]
    assert stats.histogram(2).tolist() == [[2, 1, 0, 1], [0, 1, 0, 1]]
    assert stats.sample_counts.tolist() == [2, 1]
    assert stats.class_means().tolist() == [[3.0, 2.0, 0.0, 1.0], [0.0, 3.0, 1.0, 2.0]]
    assert stats.overall_mean().tolist() == pytest.approx([2.0, 7 / 3, 1 / 3, 4 / 3])


def test_batches_add_up_and_merge_equals_one_pass():
    torch.manual_seed(1)
    features, labels = torch.randn(100, 8), torch.randint(0, 3, (100,))
    whole = ClassStatistics(3, 8, (2, 3))
    whole.update(features, labels)
    first, second = ClassStatistics(3, 8, (2, 3)), ClassStatistics(3, 8, (2, 3))
    first.update(features[:37], labels[:37])
    second.update(features[37:], labels[37:])
    merged = first.merge_(second)
    for name, tensor in whole.state_dict().items():
        if tensor.is_floating_point():  # float sums differ only by summation order
            torch.testing.assert_close(tensor, merged.state_dict()[name], rtol=1e-12, atol=1e-12)
        else:
            assert torch.equal(tensor, merged.state_dict()[name]), name
    restored = ClassStatistics.from_state_dict(merged.state_dict())
    assert torch.equal(restored.histogram(3), whole.histogram(3))


def test_nonfinite_rows_are_counted_and_ignored():
    stats = ClassStatistics(2, 3, (1,))
    features = torch.tensor([[1.0, 0.0, 0.0], [float("nan"), 1.0, 0.0], [0.0, float("inf"), 0.0]])
    stats.update(features, torch.tensor([0, 1, 1]))
    assert int(stats.nonfinite_samples) == 2
    assert stats.sample_counts.tolist() == [1, 0]
    assert stats.empty_classes() == [1]


@pytest.mark.parametrize("k1", [0, 5])
def test_k1_outside_feature_width_is_rejected(k1):
    with pytest.raises(ValueError, match=f"k1={k1} must be between 1 and d=4"):
        ClassStatistics(2, 4, (k1,))


def test_merge_of_mismatched_statistics_names_both_shapes():
    with pytest.raises(ValueError, match="cannot merge"):
        ClassStatistics(2, 4, (1,)).merge_(ClassStatistics(3, 4, (1,)))
