"""Data, accuracy and latency for class-specialist sub-networks.

Everything works on in-memory pixel tensors of the chosen classes (a class subset of CIFAR-10 is
15,000 images at most), so scoring, recalibration, distillation and evaluation never decode an image twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
import torch.nn as nn

from ..data import ImageSplit
from ..data.loader import decode_image
from ..passes.evaluation import accuracy_percent
from ..utils.errors import DecompValueError

__all__ = ["class_rows", "load_class_images", "accuracy", "latency_ms", "one_thread_latency"]


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


def load_class_images(split: ImageSplit, rows: Sequence[int], class_ids: Sequence[int],
                      transform) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel values (N, 3, H, W) and labels as positions in ``class_ids`` of the given rows."""
    position = {c: i for i, c in enumerate(class_ids)}
    subset = split.dataset.select(list(rows))
    pixels = torch.stack([transform(decode_image(v)) for v in subset[split.image_column]])
    labels = torch.tensor([position[int(v)] for v in subset[split.label_column]])
    return pixels, labels


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


def one_thread_latency(model: nn.Module, input_size: Sequence[int]) -> dict:
    """``{"batch1", "batch64"}`` milliseconds (:func:`latency_ms`) with one thread, as the model card states."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {"batch1": latency_ms(model, input_size, 1), "batch64": latency_ms(model, input_size, 64)}
    finally:
        torch.set_num_threads(threads)
