"""From an :class:`ImageSplit` to batches of model inputs, skipping (and counting) unreadable images."""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader

from .datasets import ImageSplit

__all__ = ["ImageBatchCollator", "make_dataloader", "decode_image"]

_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode_image(value) -> Image.Image:
    """An RGB PIL image from a datasets image cell (PIL image, {'bytes', 'path'} dict, bytes, path).

    Grayscale, palette, RGBA and CMYK images are converted to RGB; ``load()`` forces the full decode
    so truncated files fail here rather than inside the transform.
    """
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, dict):
        image = Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else Image.open(value["path"])
    elif isinstance(value, (bytes, bytearray)):
        image = Image.open(io.BytesIO(value))
    elif isinstance(value, (str, os.PathLike)):
        image = Image.open(value)
    else:
        raise ValueError(f"cannot read an image from a {type(value).__name__}")
    image.load()
    return image if image.mode == "RGB" else image.convert("RGB")


class ImageBatchCollator:
    """Decode, transform and stack a list of rows; unreadable images are dropped and counted.

    Returns a dict with ``pixel_values`` (B, 3, H, W), ``labels`` (B,) and ``skipped`` (int).
    """

    def __init__(self, transform: Callable, image_column: str, label_column: str | None):
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column

    def __call__(self, rows: list[dict]) -> dict:
        pixels, labels, skipped = [], [], 0
        for row in rows:
            try:
                pixels.append(self.transform(decode_image(row[self.image_column])))
            except _DECODE_ERRORS:
                skipped += 1
                continue
            labels.append(int(row[self.label_column]) if self.label_column else -1)
        if not pixels:
            return {"pixel_values": torch.empty(0), "labels": torch.empty(0, dtype=torch.long), "skipped": skipped}
        return {"pixel_values": torch.stack(pixels), "labels": torch.tensor(labels, dtype=torch.long),
                "skipped": skipped}


def default_num_workers() -> int:
    return min(4, max(1, (os.cpu_count() or 1)))


def make_dataloader(
    split: ImageSplit, transform: Callable, batch_size: int = 256, num_workers: int | None = None
) -> DataLoader:
    """A DataLoader over the split in its stored order (no shuffling: results are reproducible)."""
    num_workers = default_num_workers() if num_workers is None else num_workers
    if split.streaming:
        # an iterable dataset gives each worker whole shards; more workers than shards would idle
        num_workers = min(num_workers, max(1, getattr(split.dataset, "num_shards", 1)))
    return DataLoader(
        split.dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=ImageBatchCollator(transform, split.image_column, split.label_column),
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
