"""From an :class:`ImageSplit` to batches of model inputs, skipping (and counting) unreadable images."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader

from .datasets import ImageSplit
from .image_modes import to_rgb
from .labels import label_index

__all__ = ["ImageBatchCollator", "make_dataloader", "decode_image", "image_key"]

_DECODE_ERRORS = (OSError, UnidentifiedImageError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode_image(value) -> Image.Image:
    """An RGB PIL image from a datasets image cell (PIL image, {'bytes', 'path'} dict, bytes, path).

    Grayscale, palette, RGBA and CMYK images are converted to RGB, 16-bit and float images scaled to
    8 bit (:func:`~hf_decomp.data.image_modes.to_rgb`); ``load()`` forces the full decode so truncated
    files fail here rather than inside the transform. An empty cell (zero bytes, no path) is unreadable.
    """
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, dict):
        if not value.get("bytes") and not value.get("path"):
            raise ValueError("empty image cell: zero bytes and no path")
        image = Image.open(io.BytesIO(value["bytes"])) if value.get("bytes") else Image.open(value["path"])
    elif isinstance(value, (bytes, bytearray)):
        image = Image.open(io.BytesIO(value))
    elif isinstance(value, (str, os.PathLike)):
        image = Image.open(value)
    else:
        raise ValueError(f"cannot read an image from a {type(value).__name__}")
    image.load()
    return to_rgb(image)


class ImageBatchCollator:
    """Decode, transform and stack a list of rows; unreadable images are dropped and counted.

    Returns a dict with ``pixel_values`` (B, 3, H, W), ``labels`` (B,), ``skipped`` (int) and
    ``resized`` (int); with ``with_keys``, also ``keys`` (B,) int64: a hash of each image's bytes that
    identifies the sample whatever process or batch reads it (it seeds per-sample noise).

    Args:
        transform: PIL image -> (3, H, W) tensor.
        image_column / label_column: the row keys to read; a missing label reads as -1 (rejected later).
        input_size: (3, H, W) the model expects; an image whose transform gives another size (a
            transform without resize, e.g. CIFAR models fed 64 px images) is resized to it and counted.
    """

    def __init__(self, transform: Callable, image_column: str, label_column: str | None,
                 input_size: tuple[int, int, int] | None = None, with_keys: bool = False):
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.input_size = tuple(input_size) if input_size is not None else None
        self.with_keys = with_keys

    def _pixels(self, image: Image.Image) -> tuple[torch.Tensor, bool]:
        pixels = self.transform(image)
        if self.input_size is None or tuple(pixels.shape) == self.input_size:
            return pixels, False
        height, width = self.input_size[1:]
        return self.transform(image.resize((width, height), Image.Resampling.BILINEAR)), True

    def __call__(self, rows: list[dict]) -> dict:
        pixels, labels, keys, skipped, resized = [], [], [], 0, 0
        for row in rows:
            try:
                tensor, was_resized = self._pixels(decode_image(row[self.image_column]))
            except _DECODE_ERRORS:
                skipped += 1
                continue
            pixels.append(tensor)
            resized += was_resized
            label = row[self.label_column] if self.label_column else None
            labels.append(label_index(label))  # -1: no label; INVALID_LABEL: not a class index (refused later)
            if self.with_keys:
                keys.append(image_key(row[self.image_column]))
        batch = {"pixel_values": torch.stack(pixels) if pixels else torch.empty(0),
                 "labels": torch.tensor(labels, dtype=torch.long), "skipped": skipped, "resized": resized}
        if self.with_keys:
            batch["keys"] = torch.tensor(keys, dtype=torch.long)
        return batch


def image_key(value) -> int:
    """A 63-bit hash of an image cell's content (bytes, else path), stable across runs and machines."""
    if isinstance(value, dict):
        data = value.get("bytes") or str(value.get("path")).encode()
    elif isinstance(value, (bytes, bytearray)):
        data = bytes(value)
    elif isinstance(value, Image.Image):
        data = value.tobytes()
    else:
        data = str(value).encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def default_num_workers() -> int:
    return min(4, max(1, (os.cpu_count() or 1)))


def make_dataloader(
    split: ImageSplit, transform: Callable, batch_size: int = 256, num_workers: int | None = None,
    input_size: tuple[int, int, int] | None = None, with_keys: bool = False,
) -> DataLoader:
    """A DataLoader over the split in its stored order (no shuffling: results are reproducible).

    ``input_size`` and ``with_keys`` are passed to :class:`ImageBatchCollator`.
    """
    num_workers = default_num_workers() if num_workers is None else num_workers
    if split.streaming:
        # an iterable dataset gives each worker whole shards; more workers than shards would idle
        num_workers = min(num_workers, max(1, getattr(split.dataset, "num_shards", 1)))
    return DataLoader(
        split.dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=ImageBatchCollator(transform, split.image_column, split.label_column, input_size, with_keys),
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )
