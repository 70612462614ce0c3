"""The decomposed softmax head, logit_c = W_c[I_c] . x[I_c] + b_c, and its kernels.

Each class sees only its own feature subset. The kept weights are the module's parameters (so they
can be re-fit or fine-tuned); the subsets are buffers. Torch-only: exported models import this file
as remote code, the library imports it as ``hf_decomp.DecomposedLinear``.

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

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .index_sets import check_index_sets

__all__ = ["KERNELS", "DecomposedLinear", "choose_kernel", "decomposed_logits", "dense_masked_logits",
           "embedding_bag_logits", "gather_decomposed_logits", "pad_index_sets"]

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




def pad_index_sets(index_sets: Sequence[Sequence[int]], num_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged per-class index lists -> (indices (C, kmax) long, valid (C, kmax) bool).

    Padding slots point at feature 0 and are marked invalid. The sets are checked first
    (:func:`check_index_sets`): non-empty, distinct, integer, inside [0, num_features).
    """
    sets = check_index_sets(index_sets, num_features)
    kmax = max(len(s) for s in sets)
    indices = torch.zeros(len(sets), kmax, dtype=torch.long)
    valid = torch.zeros(len(sets), kmax, dtype=torch.bool)
    for c, subset in enumerate(sets):
        indices[c, : len(subset)] = torch.tensor(subset, dtype=torch.long)
        valid[c, : len(subset)] = True
    return indices, valid


def gather_decomposed_logits(
    features: torch.Tensor, indices: torch.Tensor, kept_weight: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """Reference formula (the paper's): gather x[:, I_c] per class and dot with W_c[I_c].

    features (B, d), indices (C, k), kept_weight (C, k) with zeros at padding, bias (C,) -> (B, C).
    """
    return (features[:, indices] * kept_weight).sum(-1) + bias


class DecomposedLinear(nn.Module):
    """A linear classifier in which class c only reads the features in its index set I_c.

    Args:
        weight: (C, d) weight of the original dense layer.
        bias: (C,) bias of the original layer (or None for zeros).
        index_sets: per class, the feature indices it keeps.

    Example:
        >>> dense = nn.Linear(4, 2)
        >>> head = DecomposedLinear(dense.weight, dense.bias, [[0, 1, 2, 3], [0, 1, 2, 3]])
        >>> x = torch.randn(3, 4)
        >>> torch.allclose(head(x), dense(x), atol=1e-6)
        True
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, index_sets: Sequence[Sequence[int]],
                 *, kernel: str = "auto"):
        super().__init__()
        if kernel not in KERNELS:
            raise ValueError(f"kernel={kernel!r} is not one of {', '.join(KERNELS)}")
        num_classes, num_features = weight.shape
        if len(index_sets) != num_classes:
            raise ValueError(f"got {len(index_sets)} index sets for a layer with {num_classes} classes")
        indices, valid = pad_index_sets(index_sets, num_features)
        weight = weight.detach()
        self.num_features = num_features
        self.register_buffer("indices", indices.to(weight.device))
        self.register_buffer("valid", valid.to(weight.device))
        self.kept_weight = nn.Parameter(weight.gather(1, self.indices) * self.valid)
        bias = torch.zeros(num_classes, dtype=weight.dtype, device=weight.device) if bias is None else bias
        self.bias = nn.Parameter(bias.detach().clone())
        # Shapes are fixed after construction, so the kernel is chosen once (see hf_decomp.portable.decomposed_head).
        self.kernel = choose_kernel(num_classes, num_features, indices.shape[1]) if kernel == "auto" else kernel
        self._dense_cache: tuple | None = None

    @property
    def num_classes(self) -> int:
        return self.indices.shape[0]

    @property
    def multiply_adds(self) -> int:
        """Per-sample multiply-adds: sum_c |I_c| (a dense layer needs C * d)."""
        return int(self.valid.sum())

    def mask(self) -> torch.Tensor:
        """(C, d) bool: True where class c uses feature j."""
        # scatter_add, not scatter_: padding slots also point at feature 0, and a scattered False
        # could overwrite a real True there (duplicate indices make scatter_ order-dependent).
        counts = torch.zeros(self.num_classes, self.num_features, dtype=torch.long, device=self.indices.device)
        return counts.scatter_add_(1, self.indices, self.valid.long()) > 0

    def dense_weight(self) -> torch.Tensor:
        """(C, d) weight with zeros outside each class's set (differentiable in kept_weight)."""
        dense = torch.zeros(self.num_classes, self.num_features, dtype=self.kept_weight.dtype,
                            device=self.kept_weight.device)
        return dense.scatter_add(1, self.indices, self.kept_weight * self.valid)

    def contributions(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, kmax): W_c[j] * x[j] for the kept features of every class (zero in padding slots)."""
        return features[:, self.indices] * (self.kept_weight * self.valid)

    def index_sets(self) -> list[list[int]]:
        """Per class, its kept feature indices (padding removed)."""
        return [row[ok].tolist() for row, ok in zip(self.indices.cpu(), self.valid.cpu())]

    def _inference_dense_weight(self) -> torch.Tensor:
        # Without autograd the masked weight is rebuilt only when the parameters change, so the
        # small-head path costs one F.linear. In-place updates (optimizer steps, load_state_dict) bump
        # _version; _apply (.to, .float, ...) clears the cache. _parameters/_buffers directly:
        # Module.__getattr__ is slow.
        key = (self._parameters["kept_weight"]._version, self._buffers["indices"]._version,
               self._buffers["valid"]._version)
        cache = self._dense_cache
        if cache is None or cache[0] != key:
            cache = self._dense_cache = (key, self.dense_weight().detach())
        return cache[1]

    def _apply(self, fn, *args, **kwargs):
        self._dense_cache = None
        return super()._apply(fn, *args, **kwargs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.kernel == "dense":
            weight = self.dense_weight() if torch.is_grad_enabled() else self._inference_dense_weight()
            return nn.functional.linear(features, weight, self._parameters["bias"])
        # Masking padded slots keeps them at zero even after the kept weights are trained.
        return decomposed_logits(features, self.indices, self.kept_weight * self.valid, self.bias, self.kernel)

    def extra_repr(self) -> str:
        return (f"num_features={self.num_features}, num_classes={self.num_classes}, "
                f"multiply_adds={self.multiply_adds} (dense {self.num_classes * self.num_features})")
