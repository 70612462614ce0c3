"""A class-specialist sub-network as a transformers model: a channel-pruned timm network.

The unpruned architecture is built by timm, then every pruned module is replaced by one of the
widths stored in the config (:class:`SpecialistConfig`), so ``from_pretrained`` reads the pruned
weights from ``model.safetensors`` without pickle. Option-A ResNet shortcuts (subsample and zero-pad
channels) become :class:`ChannelShortcut`, which scatters the kept input channels onto the kept
output channels: after pruning, the padding is no longer a contiguous block.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention

from .cifar_resnet import CifarResNet, cifar_resnet_depth
from .configuration_specialist import SpecialistConfig

__all__ = ["ChannelShortcut", "SpecialistForImageClassification", "module_shapes", "shortcut_specs",
           "resize_modules"]


class ChannelShortcut(nn.Module):
    """``out[:, dst[i]] = x[:, src[i], ::stride, ::stride]``; every other output channel is zero.

    The option-A shortcut of the CIFAR ResNets is ``src = 0..C-1``, ``dst = src + C/2``.
    """

    def __init__(self, src: list[int], dst: list[int], in_channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        if len(src) != len(dst):
            raise ValueError(f"src has {len(src)} channels, dst {len(dst)}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.register_buffer("src", torch.tensor(src, dtype=torch.long))
        self.register_buffer("dst", torch.tensor(dst, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        out = x.new_zeros(x.shape[0], self.out_channels, *x.shape[2:])
        return out.index_copy(1, self.dst, x.index_select(1, self.src))

    def spec(self) -> dict:
        return {"src": self.src.tolist(), "dst": self.dst.tolist(), "in_channels": self.in_channels,
                "out_channels": self.out_channels, "stride": self.stride}


def module_shapes(model: nn.Module) -> dict[str, list[int]]:
    """Channel widths of every convolution, batch norm and linear layer (what pruning changes)."""
    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            shapes[name] = [module.out_channels, module.in_channels]
        elif isinstance(module, nn.Linear):
            shapes[name] = [module.out_features, module.in_features]
        elif isinstance(module, nn.BatchNorm2d):
            shapes[name] = [module.num_features]
    return shapes


def shortcut_specs(model: nn.Module) -> dict[str, dict]:
    return {name: m.spec() for name, m in model.named_modules() if isinstance(m, ChannelShortcut)}


def _resized(module: nn.Module, shape: list[int]) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        out_channels, in_channels = shape
        depthwise = module.groups == module.in_channels == module.out_channels and module.groups > 1
        groups = in_channels if depthwise else module.groups
        return nn.Conv2d(in_channels, out_channels, module.kernel_size, module.stride, module.padding,
                         module.dilation, groups, module.bias is not None, module.padding_mode)
    if isinstance(module, nn.Linear):
        return nn.Linear(shape[1], shape[0], bias=module.bias is not None)
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm2d(shape[0], module.eps, module.momentum, module.affine, module.track_running_stats)
    raise ValueError(f"cannot resize a {type(module).__name__}")


def resize_modules(model: nn.Module, shapes: dict[str, list[int]], shortcuts: dict[str, dict]) -> nn.Module:
    """Replace, in place, the modules whose widths differ from ``shapes`` and the listed shortcuts."""
    for name, spec in shortcuts.items():
        model.set_submodule(name, ChannelShortcut(**spec))
    current = module_shapes(model)
    for name, shape in shapes.items():
        if name not in current:
            raise ValueError(f"the config names module {name!r}, which the rebuilt architecture does not have")
        if list(current[name]) != list(shape):
            model.set_submodule(name, _resized(model.get_submodule(name), shape))
    return model


def _create_backbone(config: SpecialistConfig) -> nn.Module:
    num_classes = len(config.class_ids)
    if cifar_resnet_depth(config.architecture):  # the sibling file: no timm registration needed
        model = CifarResNet(cifar_resnet_depth(config.architecture), num_classes=num_classes)
    else:
        import timm

        if not timm.is_model(config.architecture):
            raise ValueError(f"Cannot build architecture={config.architecture!r}: timm {timm.__version__} has no "
                             f"such model; install a timm version that has it (`pip install -U timm`).")
        model = timm.create_model(config.architecture, pretrained=False, num_classes=num_classes)
    model.pretrained_cfg = dict(config.pretrained_cfg or {})
    return resize_modules(model, config.module_shapes, config.shortcuts)


class SpecialistPreTrainedModel(PreTrainedModel):
    config_class = SpecialistConfig
    base_model_prefix = "backbone"
    main_input_name = "pixel_values"
    accepts_loss_kwargs = False

    def _init_weights(self, module: nn.Module) -> None:
        # every weight comes from the checkpoint
        pass


class SpecialistForImageClassification(SpecialistPreTrainedModel):
    r"""
    A channel-pruned image classifier that only serves the classes ``config.class_ids`` of its base model.

    Example:
        ```python
        >>> model = SpecialistForImageClassification.from_pretrained("path/to/specialist")
        >>> model(pixel_values=images).logits.argmax(-1)  # index into config.id2label
        ```
    """

    # save_pretrained copies this file and its siblings and writes an auto_map (trust_remote_code=True)
    _auto_class = "AutoModelForImageClassification"

    def __init__(self, config: SpecialistConfig):
        super().__init__(config)
        self.backbone = _create_backbone(config)
        self.post_init()

    def forward(self, pixel_values: torch.Tensor, labels: torch.LongTensor | None = None,
                return_dict: bool | None = None) -> ImageClassifierOutputWithNoAttention | tuple:
        r"""
        labels (`torch.LongTensor` of shape `(batch_size,)`, *optional*):
            positions in ``config.class_ids``; when given, the cross-entropy loss is returned.
        return_dict (`bool`, *optional*):
            an [`ImageClassifierOutputWithNoAttention`] (true) or a tuple (false); defaults to `config.return_dict`.
        """
        # No **kwargs: a misspelled argument is a TypeError, not silently ignored (as transformers' models).
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        logits = self.backbone(pixel_values)
        loss = F.cross_entropy(logits.float(), labels.to(logits.device).view(-1)) if labels is not None else None
        output = ImageClassifierOutputWithNoAttention(loss=loss, logits=logits)
        return output if return_dict else output.to_tuple()

    @classmethod
    def from_pruned(cls, pruned: nn.Module, *, architecture: str, pretrained_cfg: dict, class_ids: list[int],
                    label_names: list[str], **facts) -> "SpecialistForImageClassification":
        """Wrap a pruned timm network (its head already restricted to ``class_ids``)."""
        config = SpecialistConfig(
            architecture=architecture, pretrained_cfg=pretrained_cfg, module_shapes=module_shapes(pruned),
            shortcuts=shortcut_specs(pruned), class_ids=list(class_ids),
            id2label={i: label_names[c] for i, c in enumerate(class_ids)}, **facts)
        model = cls(config)
        model.backbone.load_state_dict(pruned.state_dict(), strict=True)
        return model.eval()
