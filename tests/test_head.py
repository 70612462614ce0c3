import pytest
import torch
import torch.nn as nn

from hf_decomp.portable.decomposed_head import DecomposedLinear, gather_decomposed_logits


def test_all_indices_equal_the_dense_layer():
    dense = nn.Linear(64, 10)
    head = DecomposedLinear(dense.weight, dense.bias, [list(range(64))] * 10)
    x = torch.randn(32, 64)
    torch.testing.assert_close(head(x), dense(x), atol=1e-5, rtol=1e-5)
    assert head.multiply_adds == 640


def test_hand_set_weights_give_the_literal_decomposed_logits():
    weight = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    head = DecomposedLinear(weight, torch.tensor([0.5, -1.0]), [[2], [0, 1]])
    x = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0]])
    assert head(x).tolist() == [[3.5, 8.0], [3.5, 7.0]]
    assert head.mask().tolist() == [[False, False, True], [True, True, False]]
    assert head.multiply_adds == 3


def test_forward_matches_the_papers_gather_formula_with_ragged_sets():
    dense = nn.Linear(16, 4)
    sets = [[3, 1], [0, 5, 9, 15], [2], [7, 8, 11]]
    head = DecomposedLinear(dense.weight, dense.bias, sets)
    x = torch.randn(8, 16)
    reference = gather_decomposed_logits(x, head.indices, head.kept_weight * head.valid, head.bias)
    torch.testing.assert_close(head(x), reference)


@pytest.mark.parametrize("kernel", ["dense", "embedding-bag"])
def test_padding_slots_stay_inert_after_training(kernel):
    # Class 0 keeps feature 0 only; its two padding slots also point at feature 0. One SGD step on
    # sum(logits) with x = 1 (batch of 3) moves the real weight 1 -> 1 - 3 = -2. Were the padding
    # slots trained too, each would add -3 to feature 0 and the logit of class 0 would read -8.
    head = DecomposedLinear(torch.ones(2, 4), None, [[0], [1, 2, 3]], kernel=kernel)
    optimizer = torch.optim.SGD(head.parameters(), lr=1.0)
    head(torch.ones(3, 4)).sum().backward()
    optimizer.step()
    assert head.dense_weight()[0].tolist() == [-2.0, 0.0, 0.0, 0.0]
    assert head(torch.ones(1, 4)).tolist() == [[-2.0 - 3.0, -6.0 - 3.0]]  # bias 0 - 3 after the step


@pytest.mark.parametrize(
    "sets, message",
    [([[0], []], "class 1 has an empty index set"),
     ([[0], [4]], r"class 1: indices \[4\] are outside \[0, 4\)"),
     ([[1, 1], [0]], "duplicate"),
     ([[0]], "1 index sets for a layer with 2 classes")],
)
def test_bad_index_sets_are_named(sets, message):
    with pytest.raises(ValueError, match=message):
        DecomposedLinear(torch.ones(2, 4), None, sets)
