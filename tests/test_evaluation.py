import pytest
import torch

from hf_decomp.passes.evaluation import EvaluationAccumulator, noise_ablation_inputs
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
    evaluator = EvaluationAccumulator(weight, torch.zeros(num_classes), DecomposedLinear(weight, None, sets))
    evaluator.update(features, labels)
    noise = evaluator.result([str(c) for c in range(num_classes)])["noise_ablation"]
    assert noise["non_influential_to_noise_accuracy"] == 100.0  # noise outside the sets is ignored by W
    assert noise["influential_to_noise_accuracy"] < 50.0


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
