"""Bias correction: fold the expected contribution of the dropped features into each class's bias.

b_c' = b_c + sum_{j not in I_c} W_cj * mean(x_j)

The decomposed logit then equals the full logit in expectation over the data (when x_j is replaced
by its mean outside I_c) instead of being shifted by each class's missing mass. Free: no data pass
beyond the feature means that the statistics pass already has.
"""

from __future__ import annotations

import torch

from ..portable.decomposed_head import DecomposedLinear

__all__ = ["corrected_bias", "bias_corrected_head"]


def corrected_bias(weight: torch.Tensor, bias: torch.Tensor | None, mask: torch.Tensor,
                   feature_mean: torch.Tensor) -> torch.Tensor:
    """b_c + sum_{j not in I_c} W_cj * mean(x_j).

    Args:
        weight: (C, d) dense weight of the original layer.
        bias: (C,) its bias (None for zeros).
        mask: (C, d) bool, True where class c keeps feature j.
        feature_mean: (d,) mean feature over the data (e.g. ``ClassStatistics.overall_mean()``).
    """
    if weight.shape != mask.shape or feature_mean.shape != weight.shape[1:]:
        raise ValueError(f"shapes do not fit: weight {tuple(weight.shape)}, mask {tuple(mask.shape)}, "
                         f"feature_mean {tuple(feature_mean.shape)} (expected (C, d), (C, d), (d,))")
    dropped = weight.double() * (~mask.to(weight.device)).double()
    shift = dropped @ feature_mean.double().to(weight.device)
    base = torch.zeros_like(shift) if bias is None else bias.double()
    return (base + shift).to(weight.dtype)


def bias_corrected_head(head: DecomposedLinear, weight: torch.Tensor, feature_mean: torch.Tensor) -> DecomposedLinear:
    """A copy of ``head`` whose bias includes the dropped features' expected contribution.

    Args:
        head: a head built from ``weight`` (its bias is taken as the uncorrected b).
        weight: (C, d) dense weight of the original layer.
        feature_mean: (d,) mean feature.
    """
    corrected = DecomposedLinear(head.dense_weight().detach(), head.bias.detach(), head.index_sets())
    with torch.no_grad():
        corrected.bias.copy_(corrected_bias(weight.detach().to(head.bias.device), head.bias.detach(),
                                            head.mask(), feature_mean.to(head.bias.device)))
    return corrected
