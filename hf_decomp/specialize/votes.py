"""Per-channel class votes at every batch-norm layer (Algorithm 1's histogram, restricted to a class subset).

Every batch norm's output, after the ReLU that follows it, is averaged over space; each sample of a
chosen class votes for its top-k1 channels (k1 a fraction of the layer's width). A channel's score is
the fraction of each class's samples that voted for it, averaged over the chosen classes, so every
class has the same say whatever its sample count. The histograms are the same streaming
:class:`~hf_decomp.method.statistics.ClassStatistics` as the final-layer analysis, fed by the per-layer
analysis' :class:`~hf_decomp.layers.capture.LayerCapture` hooks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.capture import LayerCapture
from ..method.statistics import ClassStatistics
from ..utils.checks import check_width_fraction
from ..utils.errors import DecompValueError

__all__ = ["gather_channel_votes", "vote_scores"]


def vote_scores(stats: ClassStatistics, k1: int) -> torch.Tensor:
    """(d,) mean over classes of the fraction of the class's samples whose top-k1 held channel j."""
    counts = stats.sample_counts.clamp(min=1).to(torch.float64)[:, None]
    return (stats.histogram(k1).to(torch.float64) / counts).mean(0)


@torch.no_grad()
def gather_channel_votes(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, num_classes: int,
                         k1_fractions: Sequence[float] = (0.25,), batch_size: int = 256
                         ) -> dict[float, dict[str, torch.Tensor]]:
    """Per k1 fraction, per batch-norm module name, a (d,) vote score for each output channel.

    Args:
        pixels / labels: images of the chosen classes, labels as positions 0..num_classes-1.
        k1_fractions: each sample votes for its top ``round(fraction * d)`` channels (at least 1) of a
            layer; all fractions come from the same pass.
    """
    for fraction in k1_fractions:
        check_width_fraction("k1_fraction", fraction)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    if not layers:
        raise DecompValueError("the model has no BatchNorm2d layers; class-aware pruning votes at batch norms")
    stats: dict[str, ClassStatistics] = {}
    k1s: dict[str, dict[float, int]] = {}
    was_training = model.training
    model.eval()
    try:
        with LayerCapture(model, list(layers), activation=F.relu) as capture:  # hooks removed on exit
            for start in range(0, pixels.shape[0], batch_size):
                model(pixels[start:start + batch_size])
                y = labels[start:start + batch_size]
                for name, x in capture.take().items():
                    if name not in stats:
                        k1s[name] = {f: max(1, int(round(f * x.shape[1]))) for f in k1_fractions}
                        stats[name] = ClassStatistics(num_classes, x.shape[1], set(k1s[name].values()))
                    stats[name].update(x.cpu(), y)
    finally:
        model.train(was_training)
    return {f: {name: vote_scores(s, k1s[name][f]) for name, s in stats.items()} for f in k1_fractions}
