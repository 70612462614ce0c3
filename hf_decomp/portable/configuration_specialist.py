"""Configuration of a class-specialist sub-network: a channel-pruned timm backbone over a class subset.

Self-contained (imports only transformers): the pruned widths live here, so ``from_pretrained``
rebuilds the smaller network before it reads ``model.safetensors``.
"""

from __future__ import annotations

from transformers import PretrainedConfig

__all__ = ["SpecialistConfig"]


class SpecialistConfig(PretrainedConfig):
    r"""
    Configuration of a [`SpecialistForImageClassification`].

    Args:
        architecture (`str`, *optional*):
            timm architecture of the unpruned network (e.g. `"cifar10_resnet56"`).
        pretrained_cfg (`dict`, *optional*):
            timm's pretrained config (mean, std, input size): it rebuilds the eval transform.
        module_shapes (`dict[str, list[int]]`, *optional*):
            per pruned module (name as `named_modules()` prints it): `[out, in]` channels of a
            convolution or linear layer, `[num_features]` of a batch norm.
        shortcuts (`dict[str, dict]`, *optional*):
            per channel-scattering shortcut (option-A ResNet shortcuts): `src` and `dst` channel
            lists, `out_channels` and `stride`.
        class_ids (`list[int]`, *optional*):
            the kept classes' ids in the base model (row ``i`` of the head is class ``class_ids[i]``).
        base_model (`str`, *optional*): the model that was pruned.
        macs_budget (`float`, *optional*): the requested fraction of the base model's multiply-adds.
        pruning_method (`str`, *optional*): the pruning criterion (e.g. `"taylor"`, `"magnitude"`).
        metrics (`dict`, *optional*): numbers measured when the model was built.
    """

    model_type = "hf-decomp-specialist"
    # save_pretrained copies this file and writes an auto_map: the folder loads with trust_remote_code=True
    _auto_class = "AutoConfig"

    def __init__(
        self,
        architecture: str | None = None,
        pretrained_cfg: dict | None = None,
        module_shapes: dict | None = None,
        shortcuts: dict | None = None,
        class_ids: list[int] | None = None,
        base_model: str | None = None,
        macs_budget: float | None = None,
        pruning_method: str | None = None,
        metrics: dict | None = None,
        **kwargs,
    ):
        self.architecture = architecture
        # written as "timm_pretrained_cfg" (see to_dict); older folders wrote "pretrained_cfg"
        self.pretrained_cfg = dict(pretrained_cfg if pretrained_cfg is not None else kwargs.pop("timm_pretrained_cfg", None)
                                   or {})
        self.module_shapes = {k: list(v) for k, v in (module_shapes or {}).items()}
        self.shortcuts = dict(shortcuts or {})
        self.class_ids = list(class_ids or [])
        self.base_model = base_model
        self.macs_budget = macs_budget
        self.pruning_method = pruning_method
        self.metrics = dict(metrics or {})
        super().__init__(**kwargs)

    def to_dict(self) -> dict:
        output = super().to_dict()
        # transformers treats any config.json with a "pretrained_cfg" key as a timm checkpoint and reads its
        # image processor from it; the folder's preprocessor_config.json is the one to read.
        output["timm_pretrained_cfg"] = output.pop("pretrained_cfg", None) or {}
        return output
