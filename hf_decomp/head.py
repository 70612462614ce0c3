"""The decomposed softmax head: logit_c = W_c[I_c] . x[I_c] + b_c.

Each class sees only its own feature subset. The kept weights are the module's parameters (so they
can be re-fit or fine-tuned); the subsets are buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .fast_head import KERNELS, choose_kernel, decomposed_logits

__all__ = ["DecomposedLinear", "pad_index_sets", "gather_decomposed_logits"]


def pad_index_sets(index_sets: Sequence[Sequence[int]], num_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged per-class index lists -> (indices (C, kmax) long, valid (C, kmax) bool).

    Padding slots point at feature 0 and are marked invalid.
    """
    if len(index_sets) == 0:
        raise ValueError("index_sets is empty: expected one index list per class")
    kmax = max(len(s) for s in index_sets)
    indices = torch.zeros(len(index_sets), kmax, dtype=torch.long)
    valid = torch.zeros(len(index_sets), kmax, dtype=torch.bool)
    for c, subset in enumerate(index_sets):
        if len(subset) == 0:
            raise ValueError(f"class {c} has an empty index set; every class needs at least one feature")
        row = torch.as_tensor(list(subset), dtype=torch.long)
        if int(row.min()) < 0 or int(row.max()) >= num_features:
            bad = [int(i) for i in row if not 0 <= int(i) < num_features]
            raise ValueError(f"class {c}: indices {bad} are outside [0, {num_features})")
        if row.unique().numel() != row.numel():
            raise ValueError(f"class {c}: index set {row.tolist()} has duplicate indices")
        indices[c, : len(row)] = row
        valid[c, : len(row)] = True
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
        # Shapes are fixed after construction, so the kernel is chosen once (see hf_decomp.fast_head).
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
