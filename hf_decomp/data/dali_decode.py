"""``--decode dali``: JPEG decoded, resized and cropped on the CUDA device by NVIDIA DALI.

Workers only read the bytes (as for ``--decode gpu``); the main process hands each batch to a DALI
pipeline: ``fn.decoders.image`` on the device (nvJPEG / nvImageCodec, "mixed"), ``fn.resize`` with
antialiasing and ``fn.slice`` for the crop. The output size of every resize and the offset of every
crop are computed on the CPU from the JPEG header with torchvision's own rules, so the geometry is
the model's transform's; the resampling is DALI's, so pixels may differ by a few levels from the CPU
path (opt-in, like ``--decode gpu``). Images that are not JPEG are decoded by the workers and finished
by the same torch ops as ``--decode cpu-fast``.

Install with ``pip install nvidia-dali-cuda130`` (CUDA 13; about 200 MB). Without DALI or without a
CUDA device the option is refused in one line, never silently replaced by another decoder.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from ..utils.errors import DecompValueError
from .fast_decode import FastGeometry

__all__ = ["DALI", "check_dali", "DaliDecoder", "geometry_plan"]

DALI = "dali"


def check_dali(device) -> None:
    """Refuse ``--decode dali`` without the DALI package or without a CUDA device (one line, with the fix)."""
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        raise DecompValueError("--decode dali needs NVIDIA DALI: pip install nvidia-dali-cuda130 (on a machine with "
                               "a CUDA GPU), or use --decode cpu / cpu-fast") from None
    if torch.device(device).type != "cuda" or not torch.cuda.is_available():
        raise DecompValueError("--decode dali decodes on a CUDA GPU and this run has none; use --decode cpu / "
                               "cpu-fast")


def geometry_plan(geometry: FastGeometry, height: int, width: int) -> list[tuple]:
    """Per step, what DALI must do to a (height, width) image: ("resize", (h, w)) or ("crop", (top, left, h, w)),
    sizes and offsets by torchvision's rules (``Resize`` truncates the long side, ``CenterCrop`` rounds)."""
    plan = []
    for step in geometry.steps:
        if step[0] == "resize":
            _, size, max_size, _ = step
            out = TF._compute_resized_output_size([height, width], size if isinstance(size, (list, tuple))
                                                  else [size], max_size)
            if list(out) != [height, width]:
                plan.append(("resize", (int(out[0]), int(out[1]))))
                height, width = out
        else:
            crop_h, crop_w = step[1]
            top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
            plan.append(("crop", (top, left, crop_h, crop_w)))
            height, width = crop_h, crop_w
    return plan


def _interp(mode: str):
    from nvidia.dali import types

    return types.INTERP_CUBIC if mode == "bicubic" else types.INTERP_LINEAR


class DaliDecoder:
    """A list of encoded JPEGs (1-D uint8 tensors) and decoded images ((3, H, W) uint8) -> (B, 3, h, w) uint8
    on ``device``. One DALI pipeline per distinct step plan (images of one size share it), built on first use."""

    def __init__(self, geometry: FastGeometry, device, input_size, max_batch: int, num_threads: int = 2):
        check_dali(device)
        self.geometry = geometry
        self.device = torch.device(device)
        self.input_size = tuple(input_size)
        self.max_batch = max_batch
        self.num_threads = num_threads
        self._pipelines: dict[tuple, object] = {}

    def _pipeline(self, kinds: tuple):
        """A pipeline for a sequence of step kinds; sizes and offsets come in per sample."""
        if kinds in self._pipelines:
            return self._pipelines[kinds]
        from nvidia.dali import fn, pipeline_def, types

        modes = [step[3] for step in self.geometry.steps if step[0] == "resize"]

        @pipeline_def(batch_size=self.max_batch, num_threads=self.num_threads,
                      device_id=self.device.index or 0, prefetch_queue_depth=1)
        def pipeline():
            images = fn.decoders.image(fn.external_source(name="jpegs", dtype=types.UINT8, ndim=1), device="mixed",
                                       output_type=types.RGB, jpeg_fancy_upsampling=True,  # as libjpeg / PIL
                                       adjust_orientation=False)  # PIL's path ignores EXIF orientation too
            resized = 0
            for i, kind in enumerate(kinds):
                if kind == "resize":
                    height = fn.external_source(name=f"step{i}y", dtype=types.FLOAT, ndim=0)
                    width = fn.external_source(name=f"step{i}x", dtype=types.FLOAT, ndim=0)
                    images = fn.resize(images, resize_y=height, resize_x=width, interp_type=_interp(modes[resized]),
                                       antialias=True)
                    resized += 1
                else:
                    start = fn.external_source(name=f"step{i}a", dtype=types.INT32, ndim=1)
                    shape = fn.external_source(name=f"step{i}s", dtype=types.INT32, ndim=1)
                    images = fn.slice(images, start=start, shape=shape, axis_names="HW", out_of_bounds_policy="pad",
                                      fill_values=0)  # torchvision's CenterCrop pads with zeros too
            return fn.transpose(images, perm=[2, 0, 1])

        self._pipelines[kinds] = pipe = pipeline()
        pipe.build()
        return pipe

    def _run(self, encoded: list[torch.Tensor]) -> list[torch.Tensor]:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        groups: dict[tuple, list[int]] = {}
        plans = []
        for i, item in enumerate(encoded):
            width, height = Image.open(io.BytesIO(item.numpy().tobytes())).size  # the header only
            plans.append(geometry_plan(self.geometry, height, width))
            groups.setdefault(tuple(kind for kind, _ in plans[-1]), []).append(i)
        out: list = [None] * len(encoded)
        for kinds, rows in groups.items():
            pipe = self._pipeline(kinds)
            for start in range(0, len(rows), self.max_batch):
                chunk = rows[start:start + self.max_batch]
                inputs = {"jpegs": [encoded[i].numpy() for i in chunk]}
                for s, kind in enumerate(kinds):
                    values = [plans[i][s][1] for i in chunk]
                    if kind == "resize":
                        inputs[f"step{s}y"] = [np.array(v[0], dtype=np.float32) for v in values]
                        inputs[f"step{s}x"] = [np.array(v[1], dtype=np.float32) for v in values]
                    else:
                        inputs[f"step{s}a"] = [np.array(v[:2], dtype=np.int32) for v in values]
                        inputs[f"step{s}s"] = [np.array(v[2:], dtype=np.int32) for v in values]
                (images,) = pipe.run(**inputs)
                images = images.as_tensor()
                batch = torch.empty(images.shape(), dtype=torch.uint8, device=self.device)
                feed_ndarray(images, batch, cuda_stream=torch.cuda.current_stream(self.device))
                for i, image in zip(chunk, batch):
                    out[i] = image
        return out

    def __call__(self, items: list) -> torch.Tensor:
        encoded = [i for i, item in enumerate(items) if item.ndim == 1]
        out: list = [None] * len(items)
        for i, image in zip(encoded, self._run([items[i] for i in encoded]) if encoded else []):
            out[i] = image
        for i, item in enumerate(items):
            if item.ndim == 3:  # decoded by the worker: the cpu-fast geometry, then to the device
                out[i] = self.geometry(item.permute(1, 2, 0).numpy()).contiguous().to(self.device)
        return torch.stack(out)
