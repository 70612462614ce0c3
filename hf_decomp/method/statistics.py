"""Streaming per-class statistics of pooled features (the input of Algorithm 1).

Memory is O(C * d) whatever the number of samples: no per-sample feature is kept. Every field is a
sum, so statistics from partial runs or from several processes add up exactly (``merge_``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..utils.checks import check_k

__all__ = ["ClassStatistics"]


class ClassStatistics:
    """Per-class histograms of top-k1 feature indices, sample counts and feature sums.

    Args:
        num_classes: C.
        num_features: d, the width of the pooled features.
        k1_values: one histogram is kept per k1; all come from one ``topk`` per batch.
        device: where the accumulators live (the features' device avoids copies).

    Example:
        >>> stats = ClassStatistics(2, 4, k1_values=(1,))
        >>> stats.update(torch.tensor([[0.0, 3.0, 1.0, 2.0]]), torch.tensor([1]))
        >>> stats.histogram(1)[1].tolist()
        [0, 1, 0, 0]
    """

    def __init__(
        self,
        num_classes: int,
        num_features: int,
        k1_values: Iterable[int] = (5,),
        device: str | torch.device | None = None,
    ):
        k1_values = tuple(sorted(set(int(k) for k in k1_values)))
        if not k1_values:
            raise ValueError("k1_values is empty; give at least one k1 (e.g. k1_values=(5,))")
        for k in k1_values:
            check_k("k1", k, num_features)
        self.num_classes = num_classes
        self.num_features = num_features
        self.k1_values = k1_values
        shape = (num_classes, num_features)
        self.topk_counts = {k: torch.zeros(shape, dtype=torch.int64, device=device) for k in k1_values}
        self.sample_counts = torch.zeros(num_classes, dtype=torch.int64, device=device)
        self.feature_sums = torch.zeros(shape, dtype=torch.float64, device=device)
        self.feature_sq_sums = torch.zeros(shape, dtype=torch.float64, device=device)
        self.nonfinite_samples = torch.zeros((), dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add a batch: features (B, d), labels (B,) in [0, C). Rows with NaN/inf are counted, not used."""
        finite = torch.isfinite(features).all(dim=1)
        if not bool(finite.all()):
            self.nonfinite_samples += (~finite).sum()
            features, labels = features[finite], labels[finite]
        if features.shape[0] == 0:
            return
        labels = labels.to(self.sample_counts.device)
        features = features.to(self.sample_counts.device)
        # sorting is only needed to take nested prefixes for several k1 (and costs ~45 % of update)
        top = features.topk(max(self.k1_values), dim=1, sorted=len(self.k1_values) > 1).indices
        row_offset = labels[:, None] * self.num_features
        for k, counts in self.topk_counts.items():
            flat = (row_offset + top[:, :k]).flatten()
            counts.view(-1).add_(torch.bincount(flat, minlength=counts.numel()))
        self.sample_counts.add_(torch.bincount(labels, minlength=self.num_classes))
        features = features.double()
        self.feature_sums.index_add_(0, labels, features)
        self.feature_sq_sums.index_add_(0, labels, features.square())

    def histogram(self, k1: int) -> torch.Tensor:
        """(C, d) counts of how often feature j was among a class-c sample's top-k1 features."""
        if k1 not in self.topk_counts:
            raise ValueError(f"k1={k1} was not gathered; gathered k1 values: {list(self.k1_values)}")
        return self.topk_counts[k1]

    def class_means(self) -> torch.Tensor:
        """(C, d) mean feature per class; rows of classes without samples are zero."""
        return self.feature_sums / self.sample_counts.clamp(min=1)[:, None]

    def overall_mean(self) -> torch.Tensor:
        """(d,) mean feature over all samples of all classes."""
        return self.feature_sums.sum(0) / max(int(self.sample_counts.sum()), 1)

    @property
    def num_samples(self) -> int:
        return int(self.sample_counts.sum())

    def empty_classes(self) -> list[int]:
        return torch.nonzero(self.sample_counts == 0).flatten().tolist()

    def merge_(self, other: "ClassStatistics") -> "ClassStatistics":
        """Add another run's statistics into this one (in place)."""
        if (other.num_classes, other.num_features, other.k1_values) != (
            self.num_classes, self.num_features, self.k1_values
        ):
            raise ValueError(
                f"cannot merge statistics of shape (C={other.num_classes}, d={other.num_features}, "
                f"k1={other.k1_values}) into (C={self.num_classes}, d={self.num_features}, k1={self.k1_values})"
            )
        for name, tensor in self.state_dict().items():
            tensor.add_(other.state_dict()[name].to(tensor.device))
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors (safetensors-ready); the same objects, so in-place ops update the stats."""
        tensors = {f"topk_counts.k1={k}": v for k, v in self.topk_counts.items()}
        tensors.update(
            sample_counts=self.sample_counts,
            feature_sums=self.feature_sums,
            feature_sq_sums=self.feature_sq_sums,
            nonfinite_samples=self.nonfinite_samples,
        )
        return tensors

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor]) -> "ClassStatistics":
        k1_values = [int(name.split("=")[1]) for name in tensors if name.startswith("topk_counts.")]
        num_classes, num_features = tensors["feature_sums"].shape
        stats = cls(num_classes, num_features, k1_values, device=tensors["feature_sums"].device)
        for name, tensor in stats.state_dict().items():
            tensor.copy_(tensors[name])
        return stats

    def to(self, device: str | torch.device) -> "ClassStatistics":
        return ClassStatistics.from_state_dict({k: v.to(device) for k, v in self.state_dict().items()})
