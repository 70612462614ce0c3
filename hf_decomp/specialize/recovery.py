"""Data, features, head refit, accuracy and latency for class-specialist sub-networks.

Everything works on in-memory pixel tensors of the chosen classes (a class subset of CIFAR-10 is
15,000 images at most), so the votes, the cached features of each pruned candidate and the
evaluations never decode an image twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn as nn

from ..data import ImageSplit
from ..data.loader import decode_image
from ..passes.evaluation import accuracy_percent
from ..portable.decomposed_head import DecomposedLinear
from ..recovery.refit import refit_head
from ..utils.errors import DecompValueError

__all__ = ["class_rows", "load_class_images", "pooled_features", "refit_linear_head", "accuracy", "latency_ms",
           "split_rows"]


def class_rows(split: ImageSplit, class_ids: Sequence[int]) -> dict[int, list[int]]:
    """Row numbers of each chosen class in ``split`` (one read of the label column)."""
    if split.label_column is None or split.streaming:
        raise DecompValueError(f"{split.name} [{split.split}] must be a labelled, non-streaming split")
    labels = torch.as_tensor(split.dataset[split.label_column])
    rows = {c: torch.nonzero(labels == c).flatten().tolist() for c in class_ids}
    empty = [c for c, r in rows.items() if not r]
    if empty:
        raise DecompValueError(f"{split.name} [{split.split}] has no images of class ids {empty}")
    return rows


def split_rows(rows: dict[int, list[int]], held_out: int, limit: int | None = None,
               seed: int = 0) -> tuple[list[int], list[int]]:
    """Per class, a seeded ``held_out`` rows for validation and up to ``limit`` of the rest for training."""
    generator = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in sorted(rows):
        order = torch.tensor(rows[c])[torch.randperm(len(rows[c]), generator=generator)].tolist()
        val += order[:held_out]
        train += order[held_out:][:limit] if limit else order[held_out:]
    return train, val


def load_class_images(split: ImageSplit, rows: Sequence[int], class_ids: Sequence[int],
                      transform) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel values (N, 3, H, W) and labels as positions in ``class_ids`` of the given rows."""
    position = {c: i for i, c in enumerate(class_ids)}
    subset = split.dataset.select(list(rows))
    pixels = torch.stack([transform(decode_image(v)) for v in subset[split.image_column]])
    labels = torch.tensor([position[int(v)] for v in subset[split.label_column]])
    return pixels, labels


@torch.no_grad()
def pooled_features(model: nn.Module, pixels: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Input of the classifier (timm ``forward_head(..., pre_logits=True)``) for every image."""
    model.eval()
    return torch.cat([model.forward_head(model.forward_features(pixels[i:i + batch_size]), pre_logits=True)
                      for i in range(0, pixels.shape[0], batch_size)])


def refit_linear_head(head: nn.Linear, features: torch.Tensor, labels: torch.Tensor,
                      weight_decay: float = 0.0) -> nn.Linear:
    """A new linear head fitted (L-BFGS softmax regression, :func:`~hf_decomp.recovery.refit.refit_head`) on features."""
    every = [list(range(head.in_features))] * head.out_features
    dense = DecomposedLinear(head.weight.detach().float().cpu(), head.bias.detach().float().cpu(), every, kernel="dense")
    fitted = refit_head(dense, features.float().cpu(), labels.cpu(), weight_decay=weight_decay)
    new = nn.Linear(head.in_features, head.out_features)
    with torch.no_grad():
        weight = torch.zeros_like(new.weight).scatter_(1, fitted.indices, fitted.kept_weight * fitted.valid)
        new.weight.copy_(weight)
        new.bias.copy_(fitted.bias)
    return new.to(head.weight.device)


@torch.no_grad()
def accuracy(logits_or_model, pixels: torch.Tensor | None, labels: torch.Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy in percent of logits (N, C), or of a model run on ``pixels``."""
    if isinstance(logits_or_model, nn.Module):
        logits_or_model.eval()
        logits = torch.cat([logits_or_model(pixels[i:i + batch_size]) for i in range(0, pixels.shape[0], batch_size)])
    else:
        logits = logits_or_model
    return accuracy_percent(logits.cpu(), labels.cpu())


@torch.inference_mode()
def latency_ms(model: nn.Module, input_size: Sequence[int], batch: int, repeats: int = 10) -> float:
    """Median wall time (ms) of one forward pass of a batch on CPU, after two warm-up passes."""
    model = model.eval().cpu()
    x = torch.randn(batch, *input_size)
    for _ in range(2):
        model(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * sorted(times)[len(times) // 2]
