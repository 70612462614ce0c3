"""``--decode cpu-fast``: JPEG decoded by libjpeg-turbo straight into an array, resized by torch's SIMD kernel.

The default CPU path decodes with PIL and runs the model's own transform on the PIL image; on
ImageNet-size JPEGs PIL's bicubic resize takes about 2/3 of that time. Here the same steps run as:

- decode: ``simplejpeg`` (libjpeg-turbo, accurate DCT, fancy upsampling: the decoder settings PIL uses),
  into an (H, W, 3) uint8 array with no PIL image in between. Pixels are identical to PIL's decode.
  JPEGs that are not plain 3-channel YCbCr/RGB (grayscale, CMYK) and other formats take the PIL path.
- resize: ``torch.nn.functional.interpolate`` on the uint8 image with antialiasing, the separable
  kernel torch ported from Pillow-SIMD (the same filter support and a = -0.5 bicubic), so values
  differ from PIL's by at most two grey levels (measured: 0.04-0.3 % of the values on ImageNet-size JPEGs;
  upscaling small images accounts for most). EfficientNet-Lite0's predictions on the 1,000 bundled
  ImageNet samples are unchanged (benchmarks/bench_decode.py --predictions).
- crop: torchvision's ``center_crop`` on the tensor, the same offsets as on the PIL image.

Only transforms made of ``Resize`` (bilinear or bicubic, antialiased) and ``CenterCrop`` before the
``ToTensor`` / ``Normalize`` pair (timm's and torchvision's eval transforms) are understood; anything
else is refused with the reason, never approximated. Opt-in because pixels may differ by two levels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from ..utils.errors import DecompValueError
from .preprocessing import UInt8Preprocessing, _flatten

__all__ = ["CPU_FAST", "FastGeometry", "check_fast_decode", "decode_jpeg_rgb"]

CPU_FAST = "cpu-fast"
_MODES = {InterpolationMode.BILINEAR: "bilinear", InterpolationMode.BICUBIC: "bicubic"}
_JPEG_MAGIC = b"\xff\xd8\xff"
_PLAIN_COLORSPACES = ("YCbCr", "RGB")  # what libjpeg-turbo turns into RGB exactly as PIL does


def check_fast_decode() -> None:
    """Refuse ``--decode cpu-fast`` when ``simplejpeg`` is not installed (one line, with the fix)."""
    try:
        import simplejpeg  # noqa: F401
    except ImportError:
        raise DecompValueError("--decode cpu-fast needs the simplejpeg package: pip install simplejpeg "
                               "(or pip install 'hf-decomp[fast-decode]'), or use --decode cpu") from None


def decode_jpeg_rgb(data) -> np.ndarray | None:
    """(H, W, 3) uint8 RGB of plain JPEG bytes, or None for anything PIL should decode instead.

    Corrupt or truncated JPEGs raise ``ValueError`` (``strict``: libjpeg's warnings are errors, as PIL's
    ``load()`` refuses a truncated file), which the loader counts as an unreadable image.
    """
    import simplejpeg

    if not isinstance(data, (bytes, bytearray)) or bytes(data[:3]) != _JPEG_MAGIC:
        return None
    _, _, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    if colorspace not in _PLAIN_COLORSPACES:
        return None
    return simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False, strict=True)


@dataclass(frozen=True)
class FastGeometry:
    """A transform's geometric steps as torch ops on (H, W, 3) uint8 arrays: ``("resize", size, max_size,
    mode)`` and ``("crop", (height, width))`` in order."""

    steps: tuple

    @classmethod
    def from_plan(cls, plan: UInt8Preprocessing | None, model: str = "the model") -> "FastGeometry":
        """The fast equivalent of ``plan.geometric``, or a DecompValueError naming the step it cannot do."""
        if plan is None:
            raise DecompValueError(f"--decode cpu-fast: {model}'s transform does not split into uint8 geometric "
                                   f"steps + normalisation; use --decode cpu")
        steps = []
        for step in _flatten(plan.geometric):
            if isinstance(step, T.Resize) and step.interpolation in _MODES and step.antialias is not False:
                steps.append(("resize", step.size, step.max_size, _MODES[step.interpolation]))
            elif isinstance(step, T.CenterCrop):
                steps.append(("crop", tuple(step.size)))
            else:
                raise DecompValueError(
                    f"--decode cpu-fast only does antialiased bilinear/bicubic Resize and CenterCrop (timm eval "
                    f"transforms); {model}'s transform has {step!r}. Use --decode cpu.")
        return cls(tuple(steps))

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        """(H, W, 3) uint8 -> (3, h, w) uint8, maybe a view (a crop): the caller's stack makes the one copy,
        in planar order, which is what the resize kernel writes (a transposing copy to (h, w, 3) would cost
        a third of the resize)."""
        image = torch.from_numpy(pixels).permute(2, 0, 1)  # (3, H, W) view of the HWC array
        for step in self.steps:
            if step[0] == "resize":
                _, size, max_size, mode = step
                height, width = image.shape[1:]
                out = TF._compute_resized_output_size([height, width], size if isinstance(size, (list, tuple))
                                                      else [size], max_size)
                if list(out) != [height, width]:  # PIL returns an unchanged copy at the same size, so do we
                    image = F.interpolate(image[None], size=list(out), mode=mode, antialias=True,
                                          align_corners=False)[0]
            else:
                image = TF.center_crop(image, list(step[1]))
        return image
