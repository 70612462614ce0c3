import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_decomp.passes.evaluation import (
    EvaluationAccumulator,
    accuracy_percent,
    count_correct,
    evaluate_features,
    feature_keys,
    noise_ablation_inputs,
)
from hf_decomp.portable.decomposed_head import DecomposedLinear


def test_noise_replaces_exactly_the_masked_features():
    features = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[True, False, False], [False, True, True]])
    influential, others = noise_ablation_inputs(features, mask, torch.Generator().manual_seed(0))
    noise = torch.randn((2, 3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(influential, torch.where(mask, noise, features))
    assert torch.equal(others, torch.where(mask, features, noise))
    assert influential[0, 1:].tolist() == [2.0, 3.0] and others[0, 0].item() == 1.0


def test_accuracies_per_class_and_rho_on_a_hand_built_head():
    # Class 0 reads feature 0, class 1 reads feature 1; the dense layer also looks at feature 2,
    # which flips the third sample's full prediction to class 1.
    weight = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    bias = torch.zeros(2)
    head = DecomposedLinear(weight, bias, [[0], [1]])
    evaluator = EvaluationAccumulator(weight, bias, head)
    features = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.0, 3.0], [0.0, 1.0, 0.0]])
    evaluator.update(features, torch.tensor([0, 1, 0, 1]))
    result = evaluator.result(["a", "b"])
    assert result["full_accuracy"] == 75.0
    assert result["decomposed_accuracy"] == 100.0
    assert result["rho"] == 100.0 / 75.0
    assert result["per_class"]["a"] == {"samples": 2, "full_accuracy": 50.0, "decomposed_accuracy": 100.0}
    assert result["eval_samples"] == 4


def test_influential_noise_hurts_more_than_other_noise_when_signal_is_in_the_sets():
    torch.manual_seed(0)
    num_classes, d = 4, 32
    weight = torch.zeros(num_classes, d)
    sets = [list(range(c * 8, c * 8 + 3)) for c in range(num_classes)]
    for c, subset in enumerate(sets):
        weight[c, subset] = 1.0
    labels = torch.arange(num_classes).repeat(250)
    features = torch.zeros(labels.numel(), d)
    for i, c in enumerate(labels.tolist()):
        features[i, sets[c]] = 3.0
    features += 0.01 * torch.rand(features.shape)  # distinct samples: each one's noise is keyed by its content
    evaluator = EvaluationAccumulator(weight, torch.zeros(num_classes), DecomposedLinear(weight, None, sets))
    evaluator.update(features, labels)
    noise = evaluator.result([str(c) for c in range(num_classes)])["noise_ablation"]
    assert noise["non_influential_to_noise_accuracy"] == 100.0  # noise outside the sets is ignored by W
    # the true class then wins only where its noise sums above the others' near-zero logits: about half
    assert 40.0 < noise["influential_to_noise_accuracy"] < 60.0


def test_extra_heads_are_scored_on_the_same_features():
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    head = DecomposedLinear(weight, torch.zeros(2), [[0], [1]])
    shifted = DecomposedLinear(weight, torch.tensor([0.0, 5.0]), [[0], [1]])  # always predicts class 1
    evaluator = EvaluationAccumulator(weight, torch.zeros(2), head, extra_heads={"shifted": shifted})
    evaluator.update(torch.tensor([[2.0, 0.0], [0.0, 2.0], [3.0, 1.0]]), torch.tensor([0, 1, 0]))
    result = evaluator.result(["a", "b"])
    assert result["decomposed_accuracy"] == 100.0
    assert result["extra_heads"]["shifted"]["decomposed_accuracy"] == 100.0 / 3
    assert result["extra_heads"]["shifted"]["rho"] == pytest.approx(1 / 3)


def test_correct_predictions_are_counted_once_by_top_class():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = torch.tensor([1, 1, 1, 0])
    assert count_correct(logits, labels) == 3
    assert accuracy_percent(logits, labels) == 75.0


def test_feature_keys_depend_on_the_row_content_only():
    rows = torch.tensor([[1.0, 2.0], [1.0, 2.0], [2.0, 1.0], [1.0, 2.000001]])
    keys = feature_keys(rows).tolist()
    assert keys[0] == keys[1] and len({keys[0], keys[2], keys[3]}) == 3
    assert feature_keys(rows[2:3]).tolist() == [keys[2]]  # the same alone as in a batch
    assert all(k >= 0 for k in keys)


def _scored(features, labels, keys, head, weight, batch_size):
    batches = [(features[i:i + batch_size], labels[i:i + batch_size])
               + (() if keys is None else (keys[i:i + batch_size],)) for i in range(0, len(labels), batch_size)]
    return evaluate_features(batches, weight, torch.zeros(weight.shape[0]), head, seed=7).result(["a", "b", "c"])


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 40), batch_size=st.integers(1, 50), with_keys=st.booleans(),
       data_seed=st.integers(0, 2**16), order_seed=st.integers(0, 2**16))
def test_evaluation_is_independent_of_batch_size_and_row_order(n, batch_size, with_keys, data_seed, order_seed):
    generator = torch.Generator().manual_seed(data_seed)
    weight = torch.randn(3, 6, generator=generator)
    features = torch.randn(n, 6, generator=generator)
    labels = torch.randint(0, 3, (n,), generator=generator)
    keys = torch.randint(0, 2**62, (n,), generator=generator) if with_keys else None
    head = DecomposedLinear(weight, None, [[0, 1], [2], [3, 4, 5]])
    order = torch.randperm(n, generator=torch.Generator().manual_seed(order_seed))
    whole = _scored(features, labels, keys, head, weight, n)
    shuffled = _scored(features[order], labels[order], None if keys is None else keys[order], head, weight, batch_size)
    assert shuffled == whole
