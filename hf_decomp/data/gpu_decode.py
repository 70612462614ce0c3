"""``--decode gpu``: JPEG bytes decoded on the GPU (nvJPEG through ``torchvision.io.decode_jpeg``).

Workers only read the bytes; the main process decodes a whole batch on the device, runs the model's
geometric steps (torchvision ``Resize`` / ``CenterCrop`` accept tensors) and normalises. Images that
are not JPEG are decoded by the worker on the CPU as usual. Resizing a tensor on the GPU is not PIL's
resize: pixels may differ by a few levels from the CPU path, so this is an opt-in speed option for
large JPEG datasets (ImageNet), never the default; without CUDA the CPU path is used.
"""

from __future__ import annotations

import torch

from .preprocessing import UInt8Preprocessing

__all__ = ["gpu_decode_available", "is_jpeg", "decode_on_device"]

_JPEG_MAGIC = b"\xff\xd8\xff"


def gpu_decode_available(device) -> bool:
    """True when ``device`` is CUDA and this torchvision decodes JPEG there."""
    if torch.device(device).type != "cuda":
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


def is_jpeg(data) -> bool:
    return isinstance(data, (bytes, bytearray)) and bytes(data[:3]) == _JPEG_MAGIC


def decode_on_device(items: list, plan: UInt8Preprocessing, device, input_size, skip_at_input_size: bool) -> torch.Tensor:
    """uint8 (B, 3, H, W) on ``device`` from a mix of JPEG byte tensors (1-D) and decoded (3, H, W) images.

    ``skip_at_input_size``: images already at ``input_size`` skip the geometric steps (the collator's probe).
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    encoded = [i for i, item in enumerate(items) if item.ndim == 1]
    images = [item.to(device, non_blocking=True) if item.ndim == 3 else None for item in items]
    if encoded:
        decoded = decode_jpeg([items[i] for i in encoded], mode=ImageReadMode.RGB, device=device)
        for i, image in zip(encoded, decoded):
            images[i] = image
    height, width = input_size[1:]
    out: list = [None] * len(images)
    # one geometric call per distinct image shape (a whole batch when all are alike) instead of one
    # per image: the device's kernel launches, not its arithmetic, bound a per-image resize
    by_shape: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        if tuple(image.shape[1:]) == (height, width) and skip_at_input_size:
            out[i] = image
        else:
            by_shape.setdefault(tuple(image.shape), []).append(i)
    for rows in by_shape.values():
        for i, image in zip(rows, _geometric(plan, torch.stack([images[i] for i in rows]), height, width)):
            out[i] = image
    return torch.stack(out)


def _geometric(plan: UInt8Preprocessing, images: torch.Tensor, height: int, width: int) -> list:
    """The geometric steps of same-shape images (N, 3, H, W): batched where the steps accept a batch."""
    if plan.batched:
        resized = plan.geometric(images)
        if tuple(resized.shape[2:]) == (height, width):
            return list(resized)
    return [_one_image(plan, image, height, width) for image in images]


def _one_image(plan: UInt8Preprocessing, image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    image = plan.geometric(image)
    if tuple(image.shape[1:]) != (height, width):  # the same fallback as the CPU path
        from torchvision.transforms.functional import resize

        image = plan.geometric(resize(image, [height, width], antialias=True))
    return image
