"""Fast kernels for the decomposed head, chosen by shape; all equal the reference formula.

The paper's formulation gathers ``x[:, I]`` into a (B, C, k) tensor and multiplies: it moves C*k*B
numbers through memory and is slower than the dense layer it replaces. Two kernels do better:

- ``dense``: one ``F.linear`` with the masked (C, d) weight. Best when C*d is small (CIFAR-10:
  10 x 64), where any sparse bookkeeping costs more than the multiply-adds it saves.
- ``embedding-bag``: ``F.embedding_bag`` over the transposed features: bag c sums rows ``I_c`` of
  x^T (d, B), weighted by W_c[I_c]. That is logits^T = sum_j W_cj x_j^T, exactly the decomposed
  logit, read from contiguous rows (the gathered-transpose layout) by a fused, multi-threaded kernel
  with no (B, C, k) intermediate. Differentiable in the features and the weights.

Measured speedups are printed by ``benchmarks/bench_head.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["KERNELS", "choose_kernel", "dense_masked_logits", "embedding_bag_logits", "decomposed_logits"]

KERNELS = ("auto", "dense", "embedding-bag")

# Below this many dense weights, one BLAS call beats any sparse kernel (overheads dominate).
DENSE_MAX_WEIGHTS = 16_384
# Above this fraction of kept features, the dense matmul does little extra work.
DENSE_MIN_DENSITY = 0.25


def choose_kernel(num_classes: int, num_features: int, max_set_size: int) -> str:
    """``dense`` for small or dense-ish heads, ``embedding-bag`` for large sparse ones."""
    if num_classes * num_features <= DENSE_MAX_WEIGHTS or max_set_size > DENSE_MIN_DENSITY * num_features:
        return "dense"
    return "embedding-bag"


def dense_masked_logits(features: torch.Tensor, dense_weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x W'^T + b with W' zero outside each class's set."""
    return F.linear(features, dense_weight, bias)


def embedding_bag_logits(features: torch.Tensor, indices: torch.Tensor, kept_weight: torch.Tensor,
                         bias: torch.Tensor) -> torch.Tensor:
    """logits (B, C) = sum_k kept_weight[c, k] * features[:, indices[c, k]] + bias[c].

    Args:
        features: (B, d). indices: (C, k) long. kept_weight: (C, k), zero at padding slots.
        bias: (C,).
    """
    table = features.t().contiguous()  # (d, B): each kept feature is one contiguous row
    summed = F.embedding_bag(indices, table, per_sample_weights=kept_weight.to(table.dtype), mode="sum")
    return (summed + bias.to(summed.dtype)[:, None]).t()


def decomposed_logits(features: torch.Tensor, indices: torch.Tensor, kept_weight: torch.Tensor,
                      bias: torch.Tensor, kernel: str = "auto") -> torch.Tensor:
    """The decomposed logits with the chosen kernel (``auto``: by shape, see :func:`choose_kernel`).

    ``kept_weight`` must already be zero at padding slots.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel={kernel!r} is not one of {', '.join(KERNELS)}")
    num_classes, max_set_size = indices.shape
    if kernel == "auto":
        kernel = choose_kernel(num_classes, features.shape[-1], max_set_size)
    if kernel == "embedding-bag":
        return embedding_bag_logits(features, indices, kept_weight, bias)
    dense = torch.zeros(num_classes, features.shape[-1], dtype=kept_weight.dtype, device=kept_weight.device)
    return dense_masked_logits(features, dense.scatter_add(1, indices, kept_weight), bias)
