"""Evaluation of a decomposition in one pass over the eval features.

Counts, per class, the samples the full layer and the decomposed head classify correctly, and the
paper's Gaussian-noise ablation: the true class's influential features (or all its other features)
replaced by N(0, 1) noise, then classified by the full layer. All counts are additive.

This is the one evaluation path: ``analyze`` feeds it batches of a live feature pass, the studies
batches of cached features (:func:`evaluate_features`). Each sample's noise is seeded by ``seed`` and
the sample's content key (a hash of its image bytes, or of its feature values where no image key is
known), so the numbers do not depend on batch size, row order, process count or a resume.
:func:`correct_predictions` is the one place that decides which predictions are right; every accuracy
in the package counts through it.
"""

from __future__ import annotations

import math

import torch

from ..portable.decomposed_head import DecomposedLinear
from ..utils.errors import DecompValueError

__all__ = ["EvaluationAccumulator", "evaluate_features", "noise_ablation_inputs", "per_sample_noise", "feature_keys",
           "correct_predictions", "count_correct", "accuracy_percent"]


def correct_predictions(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) bool: whether the top-1 class of each row of ``logits`` (B, C) is its label (B,)."""
    return logits.argmax(dim=1) == labels.to(logits.device)


def count_correct(logits: torch.Tensor, labels: torch.Tensor) -> int:
    """How many rows of ``logits`` (B, C) put their label (B,) on top."""
    return int(correct_predictions(logits, labels).sum())


def accuracy_percent(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent of ``logits`` (N, C) against ``labels`` (N,); N must be > 0."""
    return 100.0 * count_correct(logits, labels) / labels.numel()


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


def feature_keys(features: torch.Tensor) -> torch.Tensor:
    """(B,) int64 content keys of feature rows (a hash of their float32 bit patterns): the noise key of a
    sample whose image is not known (features computed elsewhere), equal for equal rows wherever they are."""
    bits = features.detach().float().contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    key = torch.full(bits.shape[:1], features.shape[1], dtype=torch.int64, device=features.device)
    for column in range(bits.shape[1]):
        key = _mix64(key * _GOLDEN + bits[:, column])
    return _shift_right(key, 1)  # 63 bits, non-negative like the image keys


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
        seed: seed of the ablation noise (with each sample's content key, see :func:`per_sample_noise`).
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
        num_classes = self.weight.shape[0]
        counters = self.COUNTERS + tuple(f"{name}_correct" for name in self.extra_heads)
        self.counts = {name: torch.zeros(num_classes, dtype=torch.int64, device=device) for name in counters}
        self.nonfinite_samples = torch.zeros((), dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor | None = None) -> None:
        """Add a batch. The ablation noise is :func:`per_sample_noise` of ``keys`` (B,), the images' content
        keys, seeded by ``seed``; without ``keys``, of :func:`feature_keys` of the (finite) features."""
        finite = torch.isfinite(features).all(dim=1)
        if not bool(finite.all()):
            self.nonfinite_samples += (~finite).sum()
            features, labels = features[finite], labels[finite]
            keys = None if keys is None else keys[finite.cpu()]
        features = features.to(self.weight.dtype)

        def tally(name: str, logits: torch.Tensor) -> None:
            self.counts[name].index_add_(0, labels, correct_predictions(logits, labels).long())

        self.counts["samples"].index_add_(0, labels, torch.ones_like(labels))
        tally("full_correct", torch.nn.functional.linear(features, self.weight, self.bias))
        tally("decomposed_correct", self.head(features))
        for name, extra in self.extra_heads.items():
            tally(f"{name}_correct", extra(features))
        keys = feature_keys(features) if keys is None else keys
        noise = per_sample_noise(keys, features.shape[1], self.seed, features.device)
        influential_noised, others_noised = noise_ablation_inputs(features, self.mask[labels], noise=noise)
        tally("influential_noise_correct", torch.nn.functional.linear(influential_noised, self.weight, self.bias))
        tally("non_influential_noise_correct", torch.nn.functional.linear(others_noised, self.weight, self.bias))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.counts, "nonfinite_samples": self.nonfinite_samples}

    def per_class_rho(self, label_names: list[str]) -> dict[str, float | None]:
        """Per class with samples: decomposed / full correct count (None where the full layer got none right)."""
        samples, full, decomposed = (self.counts[name].cpu().tolist() for name in
                                     ("samples", "full_correct", "decomposed_correct"))
        return {name: (decomposed[c] / full[c] if full[c] else None)
                for c, name in enumerate(label_names) if samples[c]}

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


def evaluate_features(
    batches, weight: torch.Tensor, bias: torch.Tensor, head: DecomposedLinear, seed: int = 0,
    extra_heads: dict[str, DecomposedLinear] | None = None,
) -> EvaluationAccumulator:
    """Score ``head`` (and ``extra_heads``) against the dense layer (``weight``, ``bias``) on feature batches.

    ``batches`` yields (features (B, d), labels (B,)) or (features, labels, keys (B,)); without keys each
    sample's noise is keyed by its feature values. Returns the filled accumulator: ``.result(label_names)``
    for the numbers analyze reports, ``.per_class_rho(label_names)`` for the studies.
    """
    accumulator = EvaluationAccumulator(weight, bias, head, seed=seed, extra_heads=extra_heads)
    with torch.no_grad():
        for batch in batches:
            accumulator.update(*batch)
    return accumulator
