"""From an :class:`ImageSplit` to batches of model inputs, skipping (and counting) unreadable images."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader

from ..utils.errors import DecompValueError
from .dali_decode import DALI, DaliDecoder, check_dali
from .datasets import ImageSplit, image_cell_bytes
from .fast_decode import CPU_FAST, FastGeometry, check_fast_decode, decode_jpeg_rgb
from .gpu_decode import decode_on_device, gpu_decode_available, is_jpeg
from .image_modes import to_rgb
from .labels import label_index
from .preprocessing import split_preprocessing

__all__ = ["ImageBatchCollator", "make_dataloader", "decode_image", "image_key", "default_num_workers",
           "compute_threads", "DECODERS"]

# where images are decoded: PIL in the workers; libjpeg-turbo + torch's SIMD resize in the workers
# (:mod:`.fast_decode`); nvJPEG through torchvision (:mod:`.gpu_decode`); NVIDIA DALI (:mod:`.dali_decode`)
DECODERS = ("cpu", CPU_FAST, "gpu", DALI)
_ON_DEVICE = ("gpu", DALI)  # the batch carries the encoded bytes, the main process decodes on the device

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

    When the transform splits into a geometric part and a normalisation
    (:func:`~hf_decomp.data.preprocessing.split_preprocessing`), ``pixel_values`` is **uint8** and the
    batch carries ``pixel_scale``: :func:`~hf_decomp.data.preprocessing.batch_to_device` finishes it
    on the device. Otherwise ``pixel_values`` is the transform's float output and ``pixel_scale`` None.

    Args:
        transform: PIL image -> (3, H, W) tensor.
        image_column / label_column: the row keys to read; a missing label reads as -1 (rejected later).
        input_size: (3, H, W) the model expects; an image whose transform gives another size (a
            transform without resize, e.g. CIFAR models fed 64 px images) is resized to it and counted.
            Images already at this size skip the geometric part when it would leave them unchanged.
        uint8: hand over uint8 batches when the transform allows it (False: always the float path).
        decode: ``"gpu"`` and ``"dali"`` leave JPEG bytes undecoded: the batch holds ``encoded`` (a list of
            1-D uint8 byte tensors, or (3, H, W) uint8 images for other formats) for
            :meth:`device_decoder`. Needs a transform with a uint8 split. ``"cpu-fast"`` decodes JPEGs with
            libjpeg-turbo and resizes with torch (:mod:`~hf_decomp.data.fast_decode`; refused, with the
            reason, for transforms it cannot reproduce).
    """

    def __init__(self, transform: Callable, image_column: str, label_column: str | None,
                 input_size: tuple[int, int, int] | None = None, with_keys: bool = False, uint8: bool = True,
                 decode: str = "cpu"):
        self.transform = transform
        self.image_column = image_column
        self.label_column = label_column
        self.input_size = tuple(input_size) if input_size is not None else None
        self.with_keys = with_keys
        self.preprocessing = split_preprocessing(transform) if uint8 else None
        self.skip_at_input_size = (self.preprocessing is not None and self.input_size is not None
                                   and self.preprocessing.identity_at(*self.input_size[1:]))
        if decode not in DECODERS:
            raise DecompValueError(f"decode={decode!r} is not one of {', '.join(DECODERS)} (--decode)")
        self.fast_geometry = None
        if decode in (CPU_FAST, DALI):  # refused rather than silently decoded another way
            if decode == CPU_FAST:
                check_fast_decode()
            self.fast_geometry = FastGeometry.from_plan(self.preprocessing if uint8 else None)
            if decode == DALI and input_size is None:
                raise DecompValueError("--decode dali needs the model's input size to batch images on the device")
        self.decode = decode if self.preprocessing is not None and input_size is not None else "cpu"
        if decode == CPU_FAST:
            self.decode = CPU_FAST

    def device_decoder(self, device, batch_size: int = 256):
        """For ``decode="gpu"`` / ``"dali"`` batches: ``encoded`` list -> uint8 (B, 3, H, W) on ``device``; else None."""
        if self.decode == DALI:
            return DaliDecoder(self.fast_geometry, device, self.input_size, batch_size)
        if self.decode != "gpu":
            return None
        return partial(decode_on_device, plan=self.preprocessing, device=device, input_size=self.input_size,
                       skip_at_input_size=self.skip_at_input_size)

    def _encoded(self, cell) -> torch.Tensor:
        """JPEG bytes as a 1-D uint8 tensor, else the decoded image as (3, H, W) uint8."""
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if is_jpeg(data):
            return torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return torch.from_numpy(np.asarray(decode_image(cell)).copy()).permute(2, 0, 1)

    def _pixels(self, image: Image.Image) -> tuple[torch.Tensor, bool]:
        pixels = self.transform(image)
        if self.input_size is None or tuple(pixels.shape) == self.input_size:
            return pixels, False
        height, width = self.input_size[1:]
        return self.transform(image.resize((width, height), Image.Resampling.BILINEAR)), True

    def _uint8_pixels(self, image: Image.Image) -> tuple[np.ndarray, bool]:
        """(H, W, 3) uint8; the same resize fallback as :meth:`_pixels`."""
        if self.skip_at_input_size and image.size == (self.input_size[2], self.input_size[1]):
            return np.asarray(image), False
        pixels = self.preprocessing.to_uint8(image)
        if self.input_size is None or pixels.shape[:2] == self.input_size[1:]:
            return pixels, False
        height, width = self.input_size[1:]
        return self.preprocessing.to_uint8(image.resize((width, height), Image.Resampling.BILINEAR)), True

    def _fast_uint8_pixels(self, cell) -> tuple[torch.Tensor, bool]:
        """``decode="cpu-fast"``: (3, H, W) uint8 of a cell; JPEG through libjpeg-turbo and torch, others
        (and images the model's steps leave at another size) through :meth:`_uint8_pixels`."""
        pixels = decode_jpeg_rgb(cell.get("bytes") if isinstance(cell, dict) else cell)
        if pixels is not None:
            if self.skip_at_input_size and pixels.shape[:2] == self.input_size[1:]:
                return torch.from_numpy(pixels).permute(2, 0, 1), False
            out = self.fast_geometry(pixels)
            if self.input_size is None or tuple(out.shape) == self.input_size:
                return out, False
            image = Image.fromarray(pixels)
        else:
            image = decode_image(cell)
        array, resized = self._uint8_pixels(image)  # the PIL path, its resize fallback counted there
        return torch.from_numpy(np.array(array)).permute(2, 0, 1), resized  # np.asarray of PIL is read-only

    def _cell_pixels(self, cell) -> tuple:
        if self.decode == CPU_FAST:
            return self._fast_uint8_pixels(cell)
        if self.preprocessing is None:
            return self._pixels(decode_image(cell))
        return self._uint8_pixels(decode_image(cell))

    def __call__(self, rows: list[dict]) -> dict:
        if self.decode in _ON_DEVICE:
            return self._encoded_batch(rows)
        pixels, labels, keys, skipped, resized = [], [], [], 0, 0
        for row in rows:
            try:
                array, was_resized = self._cell_pixels(row[self.image_column])
            except _DECODE_ERRORS:
                skipped += 1
                continue
            pixels.append(array)
            resized += was_resized
            label = row[self.label_column] if self.label_column else None
            labels.append(label_index(label))  # -1: no label; INVALID_LABEL: not a class index (refused later)
            if self.with_keys:
                keys.append(image_key(row[self.image_column]))
        if not pixels:
            stacked = torch.empty(0)
        elif self.preprocessing is None or self.decode == CPU_FAST:  # (3, H, W) tensors: one planar copy
            stacked = torch.stack(pixels)
        else:  # (B, H, W, 3) in one block, seen as (B, 3, H, W): channels-last strides, no copy
            stacked = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2)
        batch = {"pixel_values": stacked, "labels": torch.tensor(labels, dtype=torch.long), "skipped": skipped,
                 "resized": resized, "pixel_scale": None if self.preprocessing is None else self.preprocessing.scale}
        if self.with_keys:
            batch["keys"] = torch.tensor(keys, dtype=torch.long)
        return batch


    def _encoded_batch(self, rows: list[dict]) -> dict:
        encoded, labels, keys, skipped = [], [], [], 0
        for row in rows:
            try:
                encoded.append(self._encoded(row[self.image_column]))
            except _DECODE_ERRORS:
                skipped += 1
                continue
            label = row[self.label_column] if self.label_column else None
            labels.append(label_index(label))  # -1: no label; INVALID_LABEL: not a class index (refused later)
            if self.with_keys:
                keys.append(image_key(row[self.image_column]))
        batch = {"encoded": encoded, "labels": torch.tensor(labels, dtype=torch.long), "skipped": skipped,
                 "resized": 0, "pixel_scale": self.preprocessing.scale}
        if self.with_keys:
            batch["keys"] = torch.tensor(keys, dtype=torch.long)
        return batch


def image_key(value) -> int:
    """A 63-bit hash of an image cell's content (bytes, else path), stable across runs and machines."""
    return int.from_bytes(hashlib.blake2b(image_cell_bytes(value), digest_size=8).digest(), "little") >> 1


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the whole machine)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_num_workers(device: torch.device | str | None = None) -> int:
    """Loader workers for this machine without oversubscribing its cores.

    On a GPU the main process only feeds the device, so all but one core decode. On the CPU the main
    process computes with torch's threads and every worker takes a core from it: uint8 batches make
    decoding a small share of the work, so 2 cores decode in the main process (0 workers: the serial
    decode costs less than a worker preempting a compute thread), larger machines give it 1 core in 8.
    See :func:`compute_threads` for the matching torch thread count.
    """
    cores = available_cores()
    if torch.device(device or "cpu").type == "cuda":
        return min(16, max(1, cores - 1))
    return 0 if cores <= 2 else min(4, max(1, cores // 8))


def compute_threads(num_workers: int) -> int:
    """torch threads for the main process next to ``num_workers`` one-thread workers: never more than
    the cores left (workers + threads <= cores), never more than already set (a caller's choice wins)."""
    return max(1, min(torch.get_num_threads(), available_cores() - num_workers))


def make_dataloader(
    split: ImageSplit, transform: Callable, batch_size: int = 256, num_workers: int | None = None,
    input_size: tuple[int, int, int] | None = None, with_keys: bool = False, device: torch.device | str | None = None,
    uint8: bool = True, decode: str = "cpu",
) -> DataLoader:
    """A DataLoader over the split in its stored order (no shuffling: results are reproducible).

    ``input_size``, ``with_keys`` and ``uint8`` are passed to :class:`ImageBatchCollator`: batches
    are uint8 when the transform allows it, finish them with
    :func:`~hf_decomp.data.preprocessing.batch_to_device`. ``device`` (default: CUDA when present)
    sets the default workers and pins memory only for CUDA. ``decode="gpu"`` (JPEG on a CUDA device)
    leaves JPEG bytes for :func:`~hf_decomp.data.gpu_decode.decode_on_device`; elsewhere it is ignored.
    ``decode="dali"`` is refused without DALI or a CUDA device; ``"cpu-fast"`` without simplejpeg.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    num_workers = default_num_workers(device) if num_workers is None else num_workers
    if decode == DALI:
        check_dali(device)
    elif decode == "gpu" and not gpu_decode_available(device):
        decode = "cpu"
    if split.streaming:
        # an iterable dataset gives each worker whole shards; more workers than shards would idle
        num_workers = min(num_workers, max(1, getattr(split.dataset, "num_shards", 1)))
    return DataLoader(
        split.dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        collate_fn=ImageBatchCollator(transform, split.image_column, split.label_column, input_size, with_keys,
                                      uint8=uint8, decode=decode),
        persistent_workers=False,
        pin_memory=device.type == "cuda",
    )
