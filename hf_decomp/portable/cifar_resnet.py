"""CIFAR ResNets (He et al. 2016, Sec. 4.2): the architecture alone, torch-only.

3x3 conv stem 3->16 + BN + ReLU, three stages of n BasicBlocks (n = (depth - 2) / 6) with 16/32/64
channels and strides 1/2/2, option-A shortcuts (subsample + zero-pad channels), global average
pooling, ``linear`` 64 -> num_classes (an identity when num_classes=0). Parameter names match the
original checkpoints. ``hf_decomp.models.cifar_resnet`` registers these in timm and loads weights;
exported models rebuild their backbone from this file where hf-decomp is not installed.
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CifarResNet", "CIFAR_RESNET_NAME", "cifar_resnet_depth"]

CIFAR_RESNET_NAME = re.compile(r"^cifar(?:10|100)_resnet(\d+)$")


def cifar_resnet_depth(architecture: str | None) -> int | None:
    """20 for ``cifar10_resnet20``; None when the name is not a CIFAR ResNet."""
    match = CIFAR_RESNET_NAME.match(architecture or "")
    return int(match.group(1)) if match else None


class _ShortcutA(nn.Module):
    """Option-A shortcut: take every other pixel and zero-pad the new channels on both sides."""

    def __init__(self, pad_channels: int):
        super().__init__()
        self.pad_channels = pad_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad_channels, self.pad_channels))


class _BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        changes_shape = stride != 1 or in_planes != planes
        self.shortcut = _ShortcutA(planes // 4) if changes_shape else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs with timm's model interface."""

    def __init__(self, depth: int = 20, num_classes: int = 10, in_chans: int = 3, **kwargs):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"depth={depth} is not of the form 6n+2 (20, 32, 44, 56, 110, ...)")
        blocks_per_stage = (depth - 2) // 6
        self.num_classes = num_classes
        self.num_features = self.head_hidden_size = 64
        self.conv1 = nn.Conv2d(in_chans, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for stage, (planes, stride) in enumerate(((16, 1), (32, 2), (64, 2)), start=1):
            blocks = []
            for i in range(blocks_per_stage):
                blocks.append(_BasicBlock(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
        self.linear = nn.Linear(64, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def get_classifier(self) -> nn.Module:
        return self.linear

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.linear = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
