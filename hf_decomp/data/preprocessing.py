"""A model's preprocessing cut in two: the geometric part on uint8 images (data loader workers) and
the conversion to float + normalisation, once per batch on the device (timm's ``PrefetchLoader``).

Workers then ship uint8 batches (4x less inter-process traffic than float32) and the arithmetic runs
as three vectorised ops on the whole batch instead of per image. The split reproduces the model's own
transform: the geometric steps are the very same objects applied to the same uint8 PIL image, and the
device ops are the ones ``ToTensor`` + ``Normalize`` (timm) or rescale + normalize (transformers
image processors) perform, so results agree within float rounding (bit for bit for timm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

__all__ = ["UInt8Preprocessing", "split_preprocessing", "normalize_pixels", "batch_to_device"]

# timm's MaybeToTensor and torchvision's ToTensor: PIL uint8 -> float / 255
_TO_TENSOR_NAMES = ("ToTensor", "MaybeToTensor")
# geometric steps that treat every image of a (N, C, H, W) batch alike and the same as one image
_BATCHABLE = (T.Resize, T.CenterCrop, T.Pad)


@dataclass(frozen=True)
class UInt8Preprocessing:
    """``geometric``: RGB PIL image -> PIL image or (3, H, W) uint8 tensor (resize, crop, augmentations
    on uint8); then on the device ``(x / divisor - mean) / std`` per channel.
    """

    geometric: Callable
    divisor: float = 255.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def to_uint8(self, image: Image.Image) -> np.ndarray:
        """(H, W, 3) uint8 array of the geometric part."""
        out = self.geometric(image)
        if isinstance(out, torch.Tensor):
            return out.permute(1, 2, 0).numpy()
        return np.asarray(out.convert("RGB") if out.mode != "RGB" else out)

    def identity_at(self, height: int, width: int) -> bool:
        """True when an image already (height, width) passes the geometric part unchanged (skip it)."""
        probe = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        try:
            return np.array_equal(self.to_uint8(Image.fromarray(probe)), probe)
        except Exception:  # noqa: BLE001 - a transform that cannot run on the probe is simply not skipped
            return False

    @property
    def batched(self) -> bool:
        """True when ``geometric`` also takes a (N, 3, H, W) tensor batch: only torchvision's deterministic
        tensor transforms (random ones would draw once for the whole batch)."""
        steps = _flatten(self.geometric)
        return all(isinstance(step, _BATCHABLE) for step in steps)

    @property
    def scale(self) -> tuple:
        """What a batch carries so the device can finish it: (divisor, mean, std)."""
        return (self.divisor, self.mean, self.std)


def _flatten(transform) -> list:
    if isinstance(transform, T.Compose):
        return [step for inner in transform.transforms for step in _flatten(inner)]
    return [transform]


def _from_compose(transform) -> UInt8Preprocessing | None:
    steps = _flatten(transform)
    to_tensor = [i for i, step in enumerate(steps) if type(step).__name__ in _TO_TENSOR_NAMES]
    if len(to_tensor) != 1:
        return None
    # every step before ToTensor already works on the uint8 PIL image: the same objects run in the worker
    before, after = steps[:to_tensor[0]], steps[to_tensor[0] + 1:]
    if not after:
        return UInt8Preprocessing(T.Compose(before))
    if len(after) != 1 or not isinstance(after[0], T.Normalize):
        return None  # e.g. RandomErasing after Normalize: keep the float path
    normalize = after[0]
    return UInt8Preprocessing(T.Compose(before), 255.0, _floats(normalize.mean), _floats(normalize.std))


def _floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in torch.as_tensor(values).flatten())


class _ProcessorGeometry:
    """An image processor's resize / crop only (no rescale, no normalisation): uint8 in, uint8 out."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        pixels = self.processor(images=image, do_rescale=False, do_normalize=False, return_tensors="pt")
        return pixels["pixel_values"][0].round().clamp(0, 255).to(torch.uint8)


def _from_processor(processor) -> UInt8Preprocessing | None:
    timm_transform = getattr(processor, "val_transforms", None)  # TimmWrapperImageProcessor
    if timm_transform is not None:
        return _from_compose(timm_transform)
    if not all(hasattr(processor, name) for name in ("do_rescale", "rescale_factor", "do_normalize")):
        return None
    probe = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 41, 3), dtype=np.uint8))
    try:
        raw = processor(images=probe, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"]
    except (TypeError, ValueError):  # a processor without these switches
        return None
    if raw.is_floating_point() and not torch.equal(raw, raw.round()):
        return None  # its resize leaves fractions: rounding to uint8 would not match, keep the float path
    divisor = 1.0 / float(processor.rescale_factor) if processor.do_rescale else 1.0
    if processor.do_normalize:
        mean, std = _floats(processor.image_mean), _floats(processor.image_std)
    else:
        mean = std = None
    return UInt8Preprocessing(_ProcessorGeometry(processor), divisor, mean, std)


def split_preprocessing(transform) -> UInt8Preprocessing | None:
    """The uint8 / device split of a model's transform, or None when it cannot be split exactly.

    Understood: torchvision/timm ``Compose`` pipelines ending in ``ToTensor`` [+ ``Normalize``]
    (nested ones too, e.g. augmentations before a model's eval transform) and transformers image
    processors wrapped by :class:`~hf_decomp.models.loading` (``_ProcessorTransform``). Anything else
    (a custom callable, ops after ``Normalize``) keeps the float path, which stays correct.
    """
    processor = getattr(transform, "processor", None)
    if processor is not None:
        return _from_processor(processor)
    if isinstance(transform, T.Compose):
        return _from_compose(transform)
    return None


def normalize_pixels(pixels: torch.Tensor, scale: tuple | None) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float32 model inputs, the ops ``ToTensor`` + ``Normalize`` do per image.

    ``scale`` is a batch's ``pixel_scale`` (divisor, mean, std); None means already float inputs.
    """
    if scale is None:
        return pixels
    if pixels.numel() == 0:  # a batch in which no image was readable: nothing to normalise (the pass skips it)
        return pixels.to(torch.float32)
    divisor, mean, std = scale
    pixels = pixels.to(torch.float32).div_(divisor)
    if mean is not None:
        shape = (1, -1, 1, 1)
        pixels = pixels.sub_(torch.tensor(mean, device=pixels.device).view(shape))
        pixels = pixels.div_(torch.tensor(std, device=pixels.device).view(shape))
    return pixels


def batch_to_device(batch: dict, device: torch.device, memory_format=torch.contiguous_format, decoder=None) -> dict:
    """A loader batch with ``pixel_values`` as float model inputs on ``device`` and labels moved too.

    The uint8 copy is non-blocking (pinned memory on CUDA); normalisation runs on the device. A batch
    of still-encoded images (``encoded``, from ``decode="gpu"``) is decoded there by ``decoder``.
    """
    if "encoded" in batch:
        if decoder is None:
            raise ValueError("this batch holds encoded images: pass decoder= (see hf_decomp.data.gpu_decode)")
        pixels = decoder(batch["encoded"]) if batch["encoded"] else torch.empty(0, device=device)
    else:
        pixels = batch["pixel_values"].to(device, non_blocking=True)
    pixels = normalize_pixels(pixels, batch.get("pixel_scale"))
    out = dict(batch)
    out["pixel_values"] = pixels.contiguous(memory_format=memory_format) if pixels.ndim == 4 else pixels
    out["labels"] = batch["labels"].to(device, non_blocking=True)
    return out


def device_batches(loader, device: torch.device, memory_format=torch.contiguous_format, decoder=None):
    """Iterate ``loader`` yielding :func:`batch_to_device` batches (``decoder``: for ``decode="gpu"``).

    On CUDA the next batch is copied and normalised on a side stream while the current one computes
    (timm's ``PrefetchLoader``); elsewhere batches are converted in turn.
    """
    device = torch.device(device)
    if device.type != "cuda":
        for batch in loader:
            yield batch_to_device(batch, device, memory_format, decoder)
        return
    stream = torch.cuda.Stream(device)
    pending = None
    for batch in loader:
        with torch.cuda.stream(stream):
            ready = batch_to_device(batch, device, memory_format, decoder)
        if pending is not None:
            yield pending
        torch.cuda.current_stream(device).wait_stream(stream)
        for value in (ready["pixel_values"], ready["labels"]):
            value.record_stream(torch.cuda.current_stream(device))
        pending = ready
    if pending is not None:
        yield pending
