"""The test-half protocol: choose on one seeded half of the test split, report the other, then swap.

The pretrained CIFAR checkpoints were trained on all 50,000 training images, so a split held out
from train is memorised and cannot tell choices apart. Instead the evaluation split is cut into two
halves, stratified by class; every choice is made on half A and its accuracy read on half B, then
the roles swap, and the two readings are averaged (cross-fitting).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

__all__ = ["stratified_halves", "crossfit_choice", "half_standard_error"]


def stratified_halves(labels: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted row indices of halves A and B: each class's rows shuffled (seeded) and cut in two.

    A class with an odd count gives its extra row to A for even class ids and to B for odd ones, so
    the halves differ by at most one row per two classes. The halves are disjoint and cover the split.
    """
    labels = torch.as_tensor(labels).long().cpu()
    generator = torch.Generator().manual_seed(seed)
    half_a, half_b = [], []
    for cls in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == cls).flatten()
        rows = rows[torch.randperm(rows.numel(), generator=generator)]
        cut = rows.numel() // 2 + (rows.numel() % 2 if cls % 2 == 0 else 0)
        half_a.append(rows[:cut])
        half_b.append(rows[cut:])
    return torch.cat(half_a).sort().values, torch.cat(half_b).sort().values


def crossfit_choice(scores_a: Mapping[str, float], scores_b: Mapping[str, float]) -> dict:
    """Choose the best option on each half and read it on the other.

    Args:
        scores_a / scores_b: option -> accuracy (percent) on half A / half B; the same options.

    Returns:
        ``{"chosen_on_a", "chosen_on_b", "a_to_b", "b_to_a", "accuracy"}``: the options chosen, the
        accuracy each reads on the other half, and their mean. Ties go to the option listed first.
    """
    if set(scores_a) != set(scores_b) or not scores_a:
        raise ValueError(f"both halves must score the same options, got {sorted(scores_a)} and {sorted(scores_b)}")
    options: Sequence[str] = list(scores_a)
    on_a = max(options, key=lambda o: (scores_a[o], -options.index(o)))
    on_b = max(options, key=lambda o: (scores_b[o], -options.index(o)))
    a_to_b, b_to_a = float(scores_b[on_a]), float(scores_a[on_b])
    return {"chosen_on_a": on_a, "chosen_on_b": on_b, "a_to_b": a_to_b, "b_to_a": b_to_a,
            "accuracy": (a_to_b + b_to_a) / 2}


def half_standard_error(accuracy: float, half_size: int) -> float:
    """Binomial standard error (percentage points) of an accuracy read on one half of ``half_size`` images."""
    p = accuracy / 100.0
    return 100.0 * math.sqrt(max(p * (1 - p), 0.0) / max(1, half_size))
