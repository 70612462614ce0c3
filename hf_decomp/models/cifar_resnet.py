"""CIFAR-10 ResNets (He et al. 2016, Sec. 4.2) registered in timm's model registry.

After ``import hf_decomp``, ``timm.create_model("cifar10_resnet20", pretrained=True)`` builds the
network and loads the bundled checkpoint (``shared/models/cifar10-resnets``), converted once to
safetensors in the hf_decomp cache. Another checkpoint is given the timm way:
``pretrained_cfg_overlay=dict(file="/path/resnet20.th")``.

The architecture itself is ``hf_decomp.portable.cifar_resnet`` (exported models carry it).
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..portable.cifar_resnet import CifarResNet
from ..utils.errors import DecompFileError, DecompValueError
from ..utils.files import atomic_write_file
from ..utils.paths import cache_dir, shared_dir

__all__ = ["CifarResNet", "CIFAR10_LABELS", "convert_checkpoint"]

CIFAR10_LABELS = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
_CHECKPOINT_GLOBS = {
    "cifar10_resnet20": "resnet20-*.th",
    "cifar10_resnet32": "resnet32-*.th",
    "cifar10_resnet44": "resnet44-*.th",
    "cifar10_resnet56": "resnet56-*.th",
}


def _strip_data_parallel(state_dict: dict, model: nn.Module | None = None) -> dict:
    """Checkpoints were saved from DataParallel: drop the ``module.`` prefix."""
    state_dict = state_dict.get("state_dict", state_dict)
    return {k.removeprefix("module."): v for k, v in state_dict.items()}


def convert_checkpoint(source: str | Path) -> Path:
    """Convert an original ``.th`` checkpoint to safetensors in the cache; return the new path.

    Loads with ``weights_only=True``. The cache name carries the source's content hash, so a
    changed source is converted again.
    """
    source = Path(source)
    if source.suffix == ".safetensors":
        return source
    if not source.is_file():
        raise DecompFileError(f"CIFAR ResNet checkpoint {str(source)!r} does not exist.")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:12]
    target = cache_dir() / f"{source.stem}-{digest}.safetensors"
    if not target.is_file():
        try:
            checkpoint = torch.load(source, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
            raise DecompValueError(
                f"Could not read CIFAR ResNet checkpoint {source} safely ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else 'empty or truncated'}). Only tensors are loaded "
                f"(weights_only=True); use the original checkpoint or re-save it as a plain state dict."
            ) from e
        state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise DecompValueError(
                f"CIFAR ResNet checkpoint {source} holds no state dict of tensors (found {type(checkpoint).__name__}); "
                f"use the original checkpoint (a dict with 'state_dict')."
            )
        tensors = {k: v.contiguous() for k, v in _strip_data_parallel(checkpoint).items()}
        # Processes starting together on a cold cache all convert: each writes its own temporary file and
        # renames it into place, so every reader finds one complete file.
        atomic_write_file(target, lambda tmp: save_file(tensors, tmp, metadata={"source": source.name}))
    return target


def _bundled_checkpoint(variant: str) -> Path:
    root = shared_dir()
    folder = root / "models" / "cifar10-resnets" if root is not None else None
    matches = sorted(folder.glob(_CHECKPOINT_GLOBS[variant])) if folder and folder.is_dir() else []
    if not matches:
        raise DecompFileError(
            f"No pretrained weights for {variant}: looked for {_CHECKPOINT_GLOBS[variant]!r} in "
            f"{folder or 'shared/models/cifar10-resnets (no shared/ folder found)'}. Set "
            f"HF_DECOMP_SHARED_DIR to the folder holding models/cifar10-resnets, or pass "
            f"pretrained_cfg_overlay=dict(file='/path/to/checkpoint.th')."
        )
    return matches[0]


def _create(variant: str, depth: int, pretrained: bool = False, **kwargs) -> CifarResNet:
    overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
    if pretrained:
        overlay["file"] = str(convert_checkpoint(overlay.get("file") or _bundled_checkpoint(variant)))
    return build_model_with_cfg(
        CifarResNet,
        variant,
        pretrained,
        pretrained_cfg_overlay=overlay,
        pretrained_filter_fn=_strip_data_parallel,
        depth=depth,
        **kwargs,
    )


def _cfg(**kwargs) -> dict:
    return {
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (8, 8),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "conv1",
        "classifier": "linear",
        "label_names": CIFAR10_LABELS,
        "license": "bsd-2-clause",
        "paper_ids": "arXiv:1512.03385",
        "origin_url": "https://github.com/akamaster/pytorch_resnet_cifar10",
        **kwargs,
    }


default_cfgs = generate_default_cfgs({f"cifar10_resnet{depth}": _cfg() for depth in (20, 32, 44, 56)})


@register_model
def cifar10_resnet20(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-20 for CIFAR-10 (0.27 M params)."""
    return _create("cifar10_resnet20", 20, pretrained, **kwargs)


@register_model
def cifar10_resnet32(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-32 for CIFAR-10 (0.46 M params)."""
    return _create("cifar10_resnet32", 32, pretrained, **kwargs)


@register_model
def cifar10_resnet44(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-44 for CIFAR-10 (0.66 M params)."""
    return _create("cifar10_resnet44", 44, pretrained, **kwargs)


@register_model
def cifar10_resnet56(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-56 for CIFAR-10 (0.85 M params)."""
    return _create("cifar10_resnet56", 56, pretrained, **kwargs)
