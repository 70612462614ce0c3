"""A hand-set two-block model whose per-layer influential sets are known exactly."""

from __future__ import annotations

import torch
import torch.nn as nn
from helpers_models import ColourNet


class _PointwiseBlock(nn.Module):
    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.conv = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=False)
        self.act = nn.ReLU()
        with torch.no_grad():
            self.conv.weight.copy_(weight[:, :, None, None])

    def forward(self, x):
        return self.act(self.conv(x))


class _Energy(nn.Module):
    """Returns a scalar: a module whose output is not (B, C, ...)."""

    def forward(self, x):
        return x.square().sum()


class ColourBlocksNet(ColourNet):
    """Colour images (red=0, green=1, blue=2; pixels in [0, 1]) through two 1x1-conv blocks.

    blocks.0 (4 channels): (R, G, B, (R+G+B)/4) -> red's top-2 are {0, 3}, green's {1, 3}, blue's {2, 3}.
    blocks.1 (6 channels): (2*B', 2*G', 2*R', R'/2, G'/2, B'/2) of blocks.0's (R', G', B')
        -> red {2, 3}, green {1, 4}, blue {0, 5}.
    The linear head reads each colour's two blocks.1 channels, so the final sets equal blocks.1's.
    """

    def __init__(self):
        super().__init__()
        eye = torch.eye(3)
        first = torch.cat([eye, torch.full((1, 3), 0.25)])
        flip = eye.flip(0)
        second = torch.cat([torch.cat([2 * flip, torch.zeros(3, 1)], 1), torch.cat([0.5 * eye, torch.zeros(3, 1)], 1)])
        self.blocks = nn.Sequential(_PointwiseBlock(first), _PointwiseBlock(second))
        self.energy = _Energy()
        del self.conv
        with torch.no_grad():
            self.fc.weight.copy_(torch.cat([flip, eye], dim=1))
            self.fc.bias.zero_()

    def forward_features(self, x):
        self.energy(x)
        return self.blocks(x)
