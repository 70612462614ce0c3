"""``ClassStatistics`` plus the sums the selectivity measures need, still mergeable and streaming.

Extra fields (all sums, so shards and resumed runs add up exactly):
- ``mass_count_histograms[k]``: (C, d + 1) histogram of per-sample mass counts for fraction k (Psi_k);
- ``rank_counts`` (optional): (C, d, d) counts of "channel j had rank r", from which the top-k1
  histogram for any per-class k1 follows (fractional k). It costs O(C d^2): only for narrow layers.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..method.statistics import ClassStatistics
from .selectivity import mass_counts

__all__ = ["LayerStatistics"]


class LayerStatistics(ClassStatistics):
    """Per-class statistics of one layer's pooled activations.

    Args:
        num_classes, num_features, k1_values, device: as :class:`~hf_decomp.method.statistics.ClassStatistics`.
        mass_fractions: fractions k of Psi_k whose count histograms are kept.
        rank_histograms: also keep (C, d, d) rank counts (fractional k selection).
    """

    def __init__(self, num_classes: int, num_features: int, k1_values: Iterable[int] = (5,),
                 device: str | torch.device | None = None, mass_fractions: Iterable[float] = (),
                 rank_histograms: bool = False):
        super().__init__(num_classes, num_features, k1_values, device=device)
        self.mass_fractions = tuple(sorted({float(k) for k in mass_fractions}))
        for k in self.mass_fractions:
            if not 0.0 < k <= 1.0:
                raise ValueError(f"mass fraction {k} must be in (0, 1] (e.g. 0.5)")
        self.mass_count_histograms = {
            k: torch.zeros(num_classes, num_features + 1, dtype=torch.int64, device=device)
            for k in self.mass_fractions}
        self.rank_counts = (torch.zeros(num_classes, num_features, num_features, dtype=torch.int64, device=device)
                            if rank_histograms else None)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        super().update(features, labels)
        if not self.mass_fractions and self.rank_counts is None:
            return
        finite = torch.isfinite(features).all(dim=1)
        features = features[finite].to(self.sample_counts.device)
        labels = labels.to(self.sample_counts.device)[finite]
        if features.shape[0] == 0:
            return
        width = self.num_features
        for k, histogram in self.mass_count_histograms.items():
            flat = labels * (width + 1) + mass_counts(features, k)
            histogram.view(-1).add_(torch.bincount(flat, minlength=histogram.numel()))
        if self.rank_counts is not None:
            order = features.argsort(dim=1, descending=True, stable=True)
            ranks = torch.arange(width, device=order.device)
            flat = (labels[:, None] * width + order) * width + ranks[None, :]
            self.rank_counts.view(-1).add_(torch.bincount(flat.flatten(), minlength=self.rank_counts.numel()))

    def mass_count_histogram(self, fraction: float) -> torch.Tensor:
        """(C, d + 1) histogram of per-sample counts of channels below ``fraction`` of the mass."""
        if float(fraction) not in self.mass_count_histograms:
            raise ValueError(f"mass fraction {fraction} was not gathered; gathered: {list(self.mass_fractions)}")
        return self.mass_count_histograms[float(fraction)]

    def _layout(self) -> tuple:
        return (self.num_classes, self.num_features, self.k1_values, self.mass_fractions,
                self.rank_counts is not None)

    def merge_(self, other: "ClassStatistics") -> "LayerStatistics":
        if not isinstance(other, LayerStatistics) or other._layout() != self._layout():
            layout = other._layout() if isinstance(other, LayerStatistics) else type(other).__name__
            raise ValueError(f"cannot merge statistics laid out as {layout} into {self._layout()} "
                             f"(classes, width, k1 values, mass fractions, rank counts)")
        return super().merge_(other)

    def state_dict(self) -> dict[str, torch.Tensor]:
        tensors = super().state_dict()
        tensors.update({f"mass_counts.k={k!r}": v for k, v in self.mass_count_histograms.items()})
        if self.rank_counts is not None:
            tensors["rank_counts"] = self.rank_counts
        return tensors

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor]) -> "LayerStatistics":
        k1_values = [int(name.split("=")[1]) for name in tensors if name.startswith("topk_counts.")]
        fractions = [float(name.split("=")[1]) for name in tensors if name.startswith("mass_counts.")]
        num_classes, num_features = tensors["feature_sums"].shape
        stats = cls(num_classes, num_features, k1_values, device=tensors["feature_sums"].device,
                    mass_fractions=fractions, rank_histograms="rank_counts" in tensors)
        for name, tensor in stats.state_dict().items():
            tensor.copy_(tensors[name])
        return stats

    def to(self, device: str | torch.device) -> "LayerStatistics":
        return LayerStatistics.from_state_dict({k: v.to(device) for k, v in self.state_dict().items()})
