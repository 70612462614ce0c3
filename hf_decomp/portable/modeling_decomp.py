"""A decomposed image classifier as a transformers model: backbone + class-specific linear head.

logit_c = W_c[I_c] . x[I_c] + b_c, where x are the backbone's pooled features and I_c the
influential features of class c (Badola et al., "Decomposing the Deep").

Self-contained on purpose: ``save_pretrained`` copies this file, ``configuration_decomp.py`` and the
siblings they import (the head kernels, the CIFAR ResNets) next to the weights, so the folder loads
with ``trust_remote_code=True`` where hf-decomp is not installed. It imports only torch,
transformers, (for timm backbones) timm and those siblings.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

from .cifar_resnet import CifarResNet, cifar_resnet_depth
from .configuration_decomp import DecompConfig, DecompConfigError
from .decomposed_head import DecomposedLinear

__all__ = ["DecomposedForImageClassification", "DecomposedClassifierOutput"]

PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"
# pretrained_cfg entries that point at local files or download locations: never shipped.
_PRIVATE_PRETRAINED_CFG_KEYS = ("file", "state_dict", "url", "hf_hub_filename")


@dataclass
class DecomposedClassifierOutput(ImageClassifierOutputWithNoAttention):
    """[`ImageClassifierOutputWithNoAttention`] plus what the decomposed head saw.

    Args:
        features (`torch.FloatTensor` of shape `(batch_size, num_features)`, *optional*):
            pooled backbone features (returned with `output_contributions=True`).
        contributions (`torch.FloatTensor` of shape `(batch_size, num_labels, max_set_size)`, *optional*):
            per class, `W_c[j] * x[j]` for each kept feature j (zero in padding slots); with the bias
            they sum to the logits.
    """

    features: torch.FloatTensor | None = None
    contributions: torch.FloatTensor | None = None


def _create_timm_backbone(config: DecompConfig) -> nn.Module:
    """The timm backbone with its classifier removed, built without downloading anything."""
    architecture = config.architecture
    try:
        import timm
    except ImportError:
        timm = None
    if timm is not None and timm.is_model(architecture):
        model = timm.create_model(architecture, pretrained=False, num_classes=0)
    elif cifar_resnet_depth(architecture):
        model = CifarResNet(cifar_resnet_depth(architecture), num_classes=0)
    else:
        found = f"timm {timm.__version__} has no such model" if timm is not None else "timm is not installed"
        raise ValueError(
            f"Cannot build the backbone architecture={architecture!r}: {found}. The architecture is "
            f"rebuilt locally (weights come from model.safetensors, nothing is downloaded); install a timm "
            f"version that has it (`pip install -U timm`), or import the package that registers it with "
            f"timm's @register_model before loading."
        )
    model.pretrained_cfg = dict(config.pretrained_cfg or {})
    return model


def _create_transformers_backbone(config: DecompConfig) -> nn.Module:
    """The transformers classifier with its final linear layer replaced by an identity."""
    from transformers import AutoConfig, AutoModelForImageClassification

    backbone_dict = dict(config.backbone_transformers_config or {})
    model_type = backbone_dict.pop("model_type", None)
    try:
        backbone_config = AutoConfig.for_model(model_type, **backbone_dict)
    except ValueError as e:
        raise ValueError(
            f"Cannot build the transformers backbone: model_type={model_type!r} is unknown to transformers "
            f"({e}). Upgrade transformers or register the backbone's config class first."
        ) from e
    model = AutoModelForImageClassification.from_config(backbone_config)
    parent_name, _, child_name = config.backbone_head_path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    head = getattr(parent, child_name, None)
    if isinstance(head, nn.Linear):
        model._decomp_feature_width = head.in_features  # d, checked against config.num_features on load
    setattr(parent, child_name, nn.Identity())
    return model


class DecomposedPreTrainedModel(PreTrainedModel):
    config_class = DecompConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["DecomposedLinear"]
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        # Everything comes from the checkpoint (missing keys are an error, see from_pretrained);
        # only non-persistent buffers (never saved) are recomputed, as transformers' timm wrapper does.
        if hasattr(module, "init_non_persistent_buffers"):
            module.init_non_persistent_buffers()


class DecomposedForImageClassification(DecomposedPreTrainedModel):
    r"""
    An image classifier whose final layer is decomposed: class c only reads its influential
    features `config.index_sets[c]` of the backbone's pooled features.

    Args:
        config ([`DecompConfig`]): backbone reference, labels and index sets.

    Example:
        ```python
        >>> from transformers import pipeline
        >>> classifier = pipeline("image-classification", model="path/or/user-repo", trust_remote_code=True)
        >>> classifier(image)[0]["label"]
        ```
    """

    # In the class itself, as register_for_auto_class would set it: save_pretrained copies the code files
    # and writes the auto_map whether or not hf_decomp.hub was imported.
    _auto_class = "AutoModelForImageClassification"

    def __init__(self, config: DecompConfig):
        super().__init__(config)
        if config.index_sets is None:
            raise ValueError("DecompConfig.index_sets is None: a decomposed model needs one index set per class")
        if config.backbone_library == "timm":
            self.backbone = _create_timm_backbone(config)
        else:
            self.backbone = _create_transformers_backbone(config)
        # Zero weights: from_pretrained fills them (missing weights are an error there).
        self.head = DecomposedLinear(torch.zeros(len(config.index_sets), config.num_features), None,
                                     config.index_sets, kernel=config.head_kernel)
        self.post_init()

    def extract_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, d): the input of the decomposed head."""
        if self.config.backbone_library == "timm" and self.config.backbone_head_names:
            return self._concatenated_head_inputs(pixel_values)
        if self.config.backbone_library == "timm":
            return self.backbone.forward_head(self.backbone.forward_features(pixel_values), pre_logits=True)
        return self.backbone(pixel_values=pixel_values).logits  # head replaced by an identity

    def _concatenated_head_inputs(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Distilled backbones: what each (identity) head receives, concatenated, e.g. [cls; dist]."""
        heads = [self.backbone.get_submodule(name) for name in self.config.backbone_head_names]
        captured = {}
        handles = [head.register_forward_pre_hook(lambda module, args, k=k: captured.__setitem__(k, args[0]))
                   for k, head in enumerate(heads)]
        try:
            self.backbone(pixel_values)
        finally:
            for handle in handles:
                handle.remove()
        return torch.cat([captured[k] for k in range(len(heads))], dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.LongTensor | None = None,
        output_contributions: bool = False,
        return_dict: bool | None = None,
    ) -> DecomposedClassifierOutput | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            class ids; when given, the cross-entropy loss is returned.
        output_contributions (`bool`, *optional*, defaults to `False`):
            also return the pooled features and, per class, the contribution of each kept feature.
        return_dict (`bool`, *optional*):
            a [`DecomposedClassifierOutput`] (true) or a tuple (false); defaults to `config.return_dict`.
        """
        # No **kwargs: a misspelled argument (output_contribution=True) is a TypeError, not silently ignored.
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        features = self.extract_features(pixel_values)
        logits = self.head(features.to(self.head.kept_weight.dtype))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels.to(logits.device).view(-1))
        contributions = self.head.contributions(features) if output_contributions else None
        output = DecomposedClassifierOutput(
            loss=loss, logits=logits, features=features if output_contributions else None,
            contributions=contributions,
        )
        return output if return_dict else output.to_tuple()

    # ---- building and saving ---------------------------------------------------------------------
    @classmethod
    def from_classifier(cls, adapter, index_sets, **facts) -> "DecomposedForImageClassification":
        """Build from an hf-decomp ``ClassifierAdapter`` (timm or transformers) and per-class index sets.

        Args:
            adapter: the classifier (its backbone weights and final linear layer are copied).
            index_sets: one list of feature indices per class, an ``InfluentialIndices``, or a
                ``DecomposedLinear`` (e.g. a refit head: its sets, kept weights and bias are used
                instead of the classifier's).
            facts: more ``DecompConfig`` fields (k1, k2, selection_method, base_model, dataset, metrics).
        """
        head = index_sets if isinstance(index_sets, DecomposedLinear) else None
        metadata = getattr(index_sets, "metadata", None) or {}
        sets = head.index_sets() if head is not None else getattr(index_sets, "sets", index_sets)
        facts = {
            "k1": metadata.get("k1"), "k2": metadata.get("k2"), "coverage": metadata.get("coverage"),
            "selection_method": metadata.get("method") or "histogram",
            "base_model": metadata.get("base_model", adapter.name), "dataset": metadata.get("dataset"),
            "metrics": metadata.get("metrics") or {}, **facts,
        }
        id2label = dict(enumerate(adapter.label_names))
        head_names = adapter.config.get("concatenated_heads") or None  # distilled: several averaged heads
        classifier_name = None if head_names else next(
            name for name, m in adapter.model.named_modules() if m is adapter.classifier)
        common = dict(num_features=adapter.num_features, index_sets=[list(s) for s in sets], id2label=id2label,
                      **facts)
        if adapter.source == "timm":
            pretrained_cfg = {k: v for k, v in (adapter.config.get("pretrained_cfg") or {}).items()
                              if k not in _PRIVATE_PRETRAINED_CFG_KEYS}
            pretrained_cfg.update(num_classes=adapter.num_classes, label_names=list(adapter.label_names))
            config = DecompConfig(backbone_library="timm", architecture=adapter.config.get("architecture"),
                                  pretrained_cfg=pretrained_cfg, backbone_head_names=head_names, **common)
        else:
            config = DecompConfig(backbone_library="transformers",
                                  backbone_transformers_config=adapter.model.config.to_dict(),
                                  backbone_head_path=classifier_name,
                                  backbone_processor_config=adapter.config.get("processor_config"), **common)
        model = cls(config)
        dropped = head_names or [classifier_name]
        state = {k: v for k, v in adapter.model.state_dict().items()
                 if not any(k == name or k.startswith(f"{name}.") for name in dropped)}
        try:
            model.backbone.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(
                f"{adapter.name}: the backbone rebuilt from its config ({config.architecture or config.backbone_head_path}) "
                f"does not hold the same weights as the loaded model ({e}); models created with extra "
                f"arguments cannot be exported."
            ) from e
        with torch.no_grad():
            if head is None:
                weight, bias = adapter.weight.detach().float().cpu(), adapter.bias.detach().float().cpu()
                model.head.kept_weight.copy_(weight.gather(1, model.head.indices) * model.head.valid)
                model.head.bias.copy_(bias)
            else:
                model.head.kept_weight.copy_((head.kept_weight * head.valid).detach().cpu())
                model.head.bias.copy_(head.bias.detach().cpu())
        return model.eval()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """``PreTrainedModel.save_pretrained`` plus the preprocessor config. The same files whatever else is
        imported; ``hf_decomp.hub.save_decomposed_model`` adds the indices files and the model card."""
        super().save_pretrained(save_directory, *args, **kwargs)
        umask = os.umask(0)
        os.umask(umask)
        for name in os.listdir(save_directory):  # safetensors writes 0600; a model folder is meant to be shared
            if name.endswith(".safetensors"):
                os.chmod(os.path.join(save_directory, name), 0o666 & ~umask)
        processor = self.preprocessor_dict()
        if processor is not None:
            with open(os.path.join(save_directory, PREPROCESSOR_CONFIG_NAME), "w", encoding="utf-8") as f:
                json.dump(processor, f, indent=2, sort_keys=True)
                f.write("\n")

    def preprocessor_dict(self) -> dict | None:
        """The image processor config: timm's eval transform for timm backbones, else the backbone's own."""
        if self.config.backbone_library == "timm" and not self.config.needs_timm_processor:
            # CIFAR ResNets: timm's transform at 32x32 is rescale + normalize; ViTImageProcessor does that without timm.
            cfg = self.config.pretrained_cfg or {}
            return {"image_processor_type": "ViTImageProcessor", "do_resize": False, "do_rescale": True,
                    "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(cfg.get("mean", (0.5,) * 3)),
                    "image_std": list(cfg.get("std", (0.5,) * 3)), "do_convert_rgb": True}
        if self.config.backbone_library == "timm":
            return {"image_processor_type": "TimmWrapperImageProcessor", "architecture": self.config.architecture,
                    "pretrained_cfg": self.config.pretrained_cfg}
        return getattr(self.config, "backbone_processor_config", None)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """``PreTrainedModel.from_pretrained``, but missing weights are an error (never random) and the
        head's stored index sets must equal the config's."""
        wants_info = kwargs.pop("output_loading_info", False)
        try:
            model, info = super().from_pretrained(*args, output_loading_info=True, **kwargs)
        except RuntimeError as e:
            if "mismatched" not in str(e) and "size mismatch" not in str(e):
                raise
            raise DecompConfigError(
                "model.safetensors holds tensors whose sizes differ from what config.json describes (index_sets, "
                "id2label or the backbone); one of the two files was edited. Re-export the model."
            ) from e
        if info.get("missing_keys"):
            raise DecompConfigError(
                f"The checkpoint lacks weights {sorted(info['missing_keys'])[:10]}; it does not belong to this "
                f"config (architecture={model.config.architecture!r}). Re-export the model."
            )
        if model.head.index_sets() != model.config.index_sets:
            raise DecompConfigError(
                "model.safetensors holds index sets that differ from config.json's index_sets; one of the two "
                "files was edited. Re-export the model."
            )
        width = model.backbone_feature_width()
        if width is not None and width != model.config.num_features:
            raise DecompConfigError(
                f"config.json says num_features={model.config.num_features}, but its backbone "
                f"({model.config.architecture or model.config.backbone_head_path}) yields {width} features; "
                f"config.json was edited. Re-export the model."
            )
        return (model, info) if wants_info else model

    def backbone_feature_width(self) -> int | None:
        """d as the backbone defines it (None when it does not say)."""
        if self.config.backbone_library == "timm":
            width = getattr(self.backbone, "head_hidden_size", None) or getattr(self.backbone, "num_features", None)
            if isinstance(width, int) and self.config.backbone_head_names:
                width *= len(self.config.backbone_head_names)  # concatenated inputs of the averaged heads
        else:
            width = getattr(self.backbone, "_decomp_feature_width", None)
        return int(width) if isinstance(width, int) else None
