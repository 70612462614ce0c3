"""Per-channel class votes (Algorithm 1's histogram, restricted to a class subset) at chosen layers.

A layer's output, after a ReLU, is averaged over space; each sample of a chosen class votes for its
top-k1 channels (k1 a fraction of the layer's width). A channel's score is the fraction of each
class's samples that voted for it, averaged over the chosen classes, so every class has the same say
whatever its sample count. The histograms are the streaming
:class:`~hf_decomp.method.statistics.ClassStatistics` of the final-layer analysis, fed by the per-layer
analysis' :class:`~hf_decomp.layers.capture.LayerCapture` hooks.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers.capture import LayerCapture
from ..method.statistics import ClassStatistics
from ..utils.checks import check_width_fraction

__all__ = ["gather_votes", "vote_scores"]


def vote_scores(stats: ClassStatistics, k1: int) -> torch.Tensor:
    """(d,) mean over classes of the fraction of the class's samples whose top-k1 held channel j."""
    counts = stats.sample_counts.clamp(min=1).to(torch.float64)[:, None]
    return (stats.histogram(k1).to(torch.float64) / counts).mean(0)


@torch.no_grad()
def gather_votes(model: nn.Module, capture_points: dict[str, str], pixels: torch.Tensor, labels: torch.Tensor,
                 k1_fraction: float, batch_size: int = 256) -> dict[str, torch.Tensor]:
    """Vote scores (:func:`vote_scores`) per batch norm, read at the module ``capture_points[norm]`` names.

    ``labels`` are positions 0..C-1 of the chosen classes.
    """
    check_width_fraction("k1_fraction", k1_fraction)
    num_classes = int(labels.max()) + 1
    stats: dict[str, ClassStatistics] = {}
    k1: dict[str, int] = {}
    model.eval()
    with LayerCapture(model, sorted(set(capture_points.values())), activation=F.relu) as capture:
        for start in range(0, pixels.shape[0], batch_size):
            model(pixels[start:start + batch_size])
            pooled = capture.take()
            for norm, point in capture_points.items():
                x = pooled[point]
                if norm not in stats:
                    k1[norm] = max(1, int(round(k1_fraction * x.shape[1])))
                    stats[norm] = ClassStatistics(num_classes, x.shape[1], {k1[norm]})
                stats[norm].update(x.cpu(), labels[start:start + batch_size])
    return {norm: vote_scores(s, k1[norm]) for norm, s in stats.items()}
