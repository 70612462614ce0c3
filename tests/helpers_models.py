"""Tiny models for tests, saved to folders the way users save them (timm save_for_hf, save_pretrained)."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn as nn


def save_tiny_timm_model(folder: Path, num_classes: int = 3, input_size: int = 32) -> Path:
    """timm's ``test_resnet`` with random weights, saved with timm's own ``save_for_hf``."""
    model = timm.create_model("test_resnet", num_classes=num_classes, pretrained=False)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, input_size, input_size), "crop_pct": 1.0}
    timm.models.save_for_hf(model, str(folder),
                            model_config={"label_names": [f"colour_{i}" for i in range(num_classes)]})
    return folder


def save_tiny_transformers_model(folder: Path, num_classes: int = 3, image_size: int = 32) -> Path:
    """A 2-stage transformers ResNet with random weights plus its image processor."""
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                          num_labels=num_classes, id2label={i: f"c{i}" for i in range(num_classes)},
                          label2id={f"c{i}": i for i in range(num_classes)})
    ResNetForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


class ColourNet(nn.Module):
    """Hand-set timm-style model: 1x1 conv makes features (R, G, B, R/2, G/2, B/2), pooled, then a
    linear layer that only reads each colour's two features. Influential sets are known exactly:
    red -> {0, 3}, green -> {1, 4}, blue -> {2, 5}."""

    def __init__(self):
        super().__init__()
        self.num_classes, self.num_features = 3, 6
        self.conv = nn.Conv2d(3, 6, 1, bias=False)
        self.fc = nn.Linear(6, 3)
        with torch.no_grad():
            eye = torch.eye(3)
            self.conv.weight.copy_(torch.cat([eye, 0.5 * eye])[:, :, None, None])
            self.fc.weight.copy_(torch.cat([eye, eye], dim=1))
            self.fc.bias.zero_()
        self.pretrained_cfg = {"input_size": (3, 16, 16), "crop_pct": 1.0, "interpolation": "bilinear",
                               "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
                               "label_names": ["red", "green", "blue"], "architecture": "colournet"}

    def get_classifier(self):
        return self.fc

    def forward_features(self, x):
        return self.conv(x)

    def forward_head(self, x, pre_logits: bool = False):
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))
