"""Evaluation of a decomposition in one pass over the eval features.

Counts, per class, the samples the full layer and the decomposed head classify correctly, and the
paper's Gaussian-noise ablation: the true class's influential features (or all its other features)
replaced by N(0, 1) noise, then classified by the full layer. All counts are additive.
"""

from __future__ import annotations

import math

import torch

from ..portable.decomposed_head import DecomposedLinear
from ..utils.errors import DecompValueError

__all__ = ["EvaluationAccumulator", "noise_ablation_inputs", "per_sample_noise"]


def noise_ablation_inputs(
    features: torch.Tensor, class_mask: torch.Tensor, generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two ablated copies of a batch.

    Args:
        features: (B, d) pooled features.
        class_mask: (B, d) bool, True at the influential features of each sample's true class.
        generator: source of the N(0, 1) noise (on the features' device), used when ``noise`` is None.
        noise: (B, d) the noise itself, e.g. from :func:`per_sample_noise`.

    Returns:
        (influential replaced by noise, non-influential replaced by noise), both (B, d).
    """
    if noise is None:
        noise = torch.randn(features.shape, generator=generator, device=features.device, dtype=features.dtype)
    noise = noise.to(device=features.device, dtype=features.dtype)
    return torch.where(class_mask, noise, features), torch.where(class_mask, features, noise)


# splitmix64 constants as signed int64 (torch has no uint64 arithmetic; int64 products wrap the same way)
_GOLDEN = 0x9E3779B97F4A7C15 - 2**64
_MIX1 = 0xBF58476D1CE4E5B9 - 2**64
_MIX2 = 0x94D049BB133111EB - 2**64


def _shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (``>>`` is arithmetic: it copies the sign bit)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser: a bijective 64-bit hash, element-wise."""
    x = (x ^ _shift_right(x, 30)) * _MIX1
    x = (x ^ _shift_right(x, 27)) * _MIX2
    return x ^ _shift_right(x, 31)


def per_sample_noise(keys: torch.Tensor, num_features: int, seed: int = 0,
                     device: str | torch.device | None = None) -> torch.Tensor:
    """(B, d) N(0, 1) noise where row i depends only on ``keys[i]`` and ``seed``.

    Counter-based (a hash of key, seed and feature index, then Box-Muller), so it is computed for the
    whole batch at once on any device, and the ablation gives the same numbers whatever the batch size,
    the number of processes or where a resumed run restarted.
    """
    keys = keys.to(device=device or keys.device, dtype=torch.int64)
    row = _mix64(keys * _GOLDEN + int(seed))
    counters = torch.arange(1, 2 * num_features + 1, device=keys.device, dtype=torch.int64) * _GOLDEN
    uniform = _shift_right(_mix64(row[:, None] + counters), 11).double() * 2.0**-53  # [0, 1), 53 bits
    radius = torch.sqrt(-2.0 * torch.log1p(-uniform[:, :num_features]))  # log(1 - u), finite: 1 - u > 0
    return (radius * torch.cos(2 * math.pi * uniform[:, num_features:])).float()


class EvaluationAccumulator:
    """Accumulates accuracy counts of the full layer, the decomposed head and the noise ablation.

    Args:
        weight: (C, d) dense weight; bias: (C,).
        head: the decomposed head built from the same layer.
        seed: seed of the ablation noise.
        extra_heads: more heads (e.g. bias-corrected) scored on the same features, so comparing
            variants needs no second pass over the images; counted as ``<name>_correct``.
    """

    COUNTERS = ("samples", "full_correct", "decomposed_correct", "influential_noise_correct",
                "non_influential_noise_correct")

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, head: DecomposedLinear, seed: int = 0,
                 extra_heads: dict[str, DecomposedLinear] | None = None):
        self.weight = weight.detach()
        self.bias = bias.detach()
        self.head = head
        self.extra_heads = dict(extra_heads or {})
        self.mask = head.mask()
        device = self.weight.device
        self.seed = seed
        self.generator = torch.Generator(device=device).manual_seed(seed)
        num_classes = self.weight.shape[0]
        counters = self.COUNTERS + tuple(f"{name}_correct" for name in self.extra_heads)
        self.counts = {name: torch.zeros(num_classes, dtype=torch.int64, device=device) for name in counters}
        self.nonfinite_samples = torch.zeros((), dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor | None = None) -> None:
        """Add a batch. With ``keys`` (B,) the ablation noise is :func:`per_sample_noise` of them
        (seeded by ``seed``), else it comes from this accumulator's generator."""
        finite = torch.isfinite(features).all(dim=1)
        if not bool(finite.all()):
            self.nonfinite_samples += (~finite).sum()
            features, labels = features[finite], labels[finite]
            keys = None if keys is None else keys[finite.cpu()]
        features = features.to(self.weight.dtype)

        def tally(name: str, logits: torch.Tensor) -> None:
            correct = (logits.argmax(dim=1) == labels).long()
            self.counts[name].index_add_(0, labels, correct)

        self.counts["samples"].index_add_(0, labels, torch.ones_like(labels))
        tally("full_correct", torch.nn.functional.linear(features, self.weight, self.bias))
        tally("decomposed_correct", self.head(features))
        for name, extra in self.extra_heads.items():
            tally(f"{name}_correct", extra(features))
        noise = None if keys is None else per_sample_noise(keys, features.shape[1], self.seed, features.device)
        influential_noised, others_noised = noise_ablation_inputs(features, self.mask[labels], self.generator, noise)
        tally("influential_noise_correct", torch.nn.functional.linear(influential_noised, self.weight, self.bias))
        tally("non_influential_noise_correct", torch.nn.functional.linear(others_noised, self.weight, self.bias))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.counts, "nonfinite_samples": self.nonfinite_samples}

    def result(self, label_names: list[str]) -> dict:
        """Accuracies (percent), rho, per-class accuracies and the ablation, as JSON-safe numbers."""
        counts = {name: tensor.cpu() for name, tensor in self.counts.items()}
        total = int(counts["samples"].sum())
        if total == 0:
            raise DecompValueError(
                f"No evaluation samples were seen: the eval split is empty, every image was unreadable, or "
                f"every feature was NaN/inf ({int(self.nonfinite_samples)} non-finite). Check the eval split "
                f"(--eval-split) and the model checkpoint."
            )

        def pct(correct: torch.Tensor) -> float:
            return 100.0 * int(correct.sum()) / total

        full, decomposed = pct(counts["full_correct"]), pct(counts["decomposed_correct"])
        per_class = {}
        for c, name in enumerate(label_names):
            n = int(counts["samples"][c])
            per_class[name] = {
                "samples": n,
                "full_accuracy": 100.0 * int(counts["full_correct"][c]) / n if n else None,
                "decomposed_accuracy": 100.0 * int(counts["decomposed_correct"][c]) / n if n else None,
            }
        return {
            "eval_samples": total,
            "full_accuracy": full,
            "decomposed_accuracy": decomposed,
            "rho": decomposed / full if full > 0 else None,
            "noise_ablation": {
                "influential_to_noise_accuracy": pct(counts["influential_noise_correct"]),
                "non_influential_to_noise_accuracy": pct(counts["non_influential_noise_correct"]),
            },
            "per_class": per_class,
            "nonfinite_samples": int(self.nonfinite_samples),
            "extra_heads": {
                name: {"decomposed_accuracy": pct(counts[f"{name}_correct"]),
                       "rho": pct(counts[f"{name}_correct"]) / full if full > 0 else None}
                for name in self.extra_heads
            },
        }
