"""The fast decomposed-head kernels: shape-based choice, exact equality with the paper's formula."""

from __future__ import annotations

import pytest
import torch

from hf_decomp.portable.decomposed_head import (
    DecomposedLinear,
    choose_kernel,
    decomposed_logits,
    embedding_bag_logits,
    gather_decomposed_logits,
    pad_index_sets,
)


def test_kernel_choice_by_shape():
    assert choose_kernel(10, 64, 5) == "dense"  # CIFAR-10: 640 weights, one BLAS call wins
    assert choose_kernel(1000, 2048, 50) == "embedding-bag"
    assert choose_kernel(21843, 2048, 50) == "embedding-bag"
    assert choose_kernel(1000, 2048, 1024) == "dense"  # half the features kept: not sparse enough


def test_embedding_bag_literal_example():
    features = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    indices, valid = pad_index_sets([[0, 2], [1]], 3)
    weight = torch.tensor([[10.0, 100.0], [1000.0, 0.0]]) * valid  # class 1 has one padding slot
    bias = torch.tensor([0.5, -0.5])
    logits = embedding_bag_logits(features, indices, weight, bias)
    # class 0: 10*x0 + 100*x2 + 0.5 ; class 1: 1000*x1 - 0.5
    assert logits.tolist() == [[310.5, 1999.5], [400.5, -1000.5]]


@pytest.mark.parametrize("shape", [(7, 40, 6, 5), (300, 512, 20, 9)])
def test_kernels_equal_reference_with_ragged_sets(shape):
    num_classes, num_features, kmax, batch = shape
    generator = torch.Generator().manual_seed(1)
    sets = [torch.randperm(num_features, generator=generator)[: 1 + c % kmax].tolist() for c in range(num_classes)]
    weight = torch.randn(num_classes, num_features, generator=generator)
    bias = torch.randn(num_classes, generator=generator)
    x = torch.randn(batch, num_features, generator=generator)
    reference_head = DecomposedLinear(weight, bias, sets)
    reference = gather_decomposed_logits(x, reference_head.indices, reference_head.kept_weight, reference_head.bias)
    # the reference really is the sparse formula: compare one entry by hand
    c = 3
    by_hand = sum(float(weight[c, j] * x[2, j]) for j in sets[c]) + float(bias[c])
    assert reference[2, c].item() == pytest.approx(by_hand, abs=1e-4)
    for kernel in ("dense", "embedding-bag"):
        head = DecomposedLinear(weight, bias, sets, kernel=kernel)
        assert head.kernel == kernel
        torch.testing.assert_close(head(x), reference, atol=1e-5, rtol=1e-5)
        with torch.inference_mode():
            torch.testing.assert_close(head(x), reference, atol=1e-5, rtol=1e-5)
        kept = reference_head.kept_weight * reference_head.valid
        torch.testing.assert_close(decomposed_logits(x, reference_head.indices, kept, bias, kernel), reference,
                                   atol=1e-5, rtol=1e-5)


def test_kernels_have_equal_gradients():
    generator = torch.Generator().manual_seed(2)
    weight, bias = torch.randn(6, 30, generator=generator), torch.randn(6, generator=generator)
    sets = [[0, 5, 7], [1], [2, 3], [29, 4, 8, 9], [10], [11, 12]]
    grads = {}
    for kernel in ("dense", "embedding-bag"):
        head = DecomposedLinear(weight, bias, sets, kernel=kernel)
        x = torch.randn(4, 30, generator=torch.Generator().manual_seed(3), requires_grad=True)
        (head(x) * torch.arange(6.0)).sum().backward()
        grads[kernel] = (head.kept_weight.grad, head.bias.grad, x.grad)
        # padding slots get no gradient, so training keeps them at zero
        assert head.kept_weight.grad[~head.valid].abs().sum() == 0
    for dense_grad, bag_grad in zip(grads["dense"], grads["embedding-bag"]):
        torch.testing.assert_close(dense_grad, bag_grad, atol=1e-5, rtol=1e-5)


def test_inference_cache_follows_parameter_updates():
    head = DecomposedLinear(torch.ones(2, 3), torch.zeros(2), [[0], [1, 2]])
    x = torch.tensor([[1.0, 2.0, 3.0]])
    with torch.no_grad():
        assert head(x).tolist() == [[1.0, 5.0]]
        head.kept_weight.mul_(2)  # an in-place update, as an optimizer step or load_state_dict does
        assert head(x).tolist() == [[2.0, 10.0]]
    head.load_state_dict({**head.state_dict(), "kept_weight": torch.tensor([[3.0, 0.0], [1.0, 0.0]])})
    with torch.no_grad():
        assert head(x).tolist() == [[3.0, 2.0]]
        assert head.double()(x.double()).dtype == torch.float64


def test_unknown_kernel_lists_the_known_ones():
    with pytest.raises(ValueError, match="dense, embedding-bag"):
        DecomposedLinear(torch.ones(2, 3), None, [[0], [1]], kernel="csr")
