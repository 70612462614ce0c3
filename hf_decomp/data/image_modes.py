"""Any decoded PIL image -> 8-bit RGB, scaling high-bit-depth images instead of clipping them.

PIL's own ``convert("RGB")`` clips 16-bit grey (``I;16``, ``I``) at 255, so a 16-bit PNG turns
almost white, and float images (``F``, e.g. float TIFF) turn black. Here integer images are scaled
from their bit depth (``I;16``: ``>> 8``; 32-bit ``I``: as 8-bit when its values fit [0, 255], else
as 16-bit) and float images from their range ([0, 1], [0, 255] or
[0, 65535]); an image whose values fit none of these cannot be scaled without guessing and is
refused (skipped and counted like an unreadable image).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["to_rgb", "UnscalableImageError"]

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_FLOAT_RANGES = ((1.0, 255.0), (255.0, 1.0), (65535.0, 255.0 / 65535.0))  # (max value, factor to 8 bit)


class UnscalableImageError(ValueError):
    """A high-bit-depth image whose value range has no unambiguous 8-bit scaling."""


def _integer_to_8(values: np.ndarray, mode: str) -> np.ndarray:
    values = values.astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise UnscalableImageError(f"{mode} image with values in [{values.min()}, {values.max()}], outside the "
                                   f"16-bit range [0, 65535]; convert it to 8 or 16 bit first")
    if mode == "I" and (values.size == 0 or values.max() <= 255):  # 8-bit values in a 32-bit container
        return values.astype(np.uint8)
    return (values >> 8).astype(np.uint8)


def _float_to_8(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    if values.size == 0:
        return values.astype(np.uint8)
    low, high = float(values.min()), float(values.max())
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0.0:
        raise UnscalableImageError(f"float image with values in [{low}, {high}]: NaN/inf or negative values have "
                                   f"no 8-bit scaling; save it scaled to [0, 1] or as an 8/16-bit image")
    for top, factor in _FLOAT_RANGES:
        if high <= top:
            return np.clip(np.rint(values * factor), 0, 255).astype(np.uint8)
    raise UnscalableImageError(f"float image with values up to {high}, above the 16-bit range; save it scaled "
                               f"to [0, 1] or as an 8/16-bit image")


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of ``image`` (the image itself when it already is RGB)."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
        grey = _integer_to_8(np.asarray(image), image.mode)
    elif image.mode == "F":
        grey = _float_to_8(np.asarray(image))
    else:  # 1, L, P, LA, PA, RGBA, CMYK, YCbCr, LAB, HSV: PIL converts these right
        return image.convert("RGB")
    return Image.fromarray(grey).convert("RGB")
