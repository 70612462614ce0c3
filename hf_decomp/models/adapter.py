"""One interface for every classifier: pooled features, the final linear layer, labels, preprocessing.

Everything downstream (statistics, selection, evaluation, studies) talks only to
:class:`ClassifierAdapter`, never to timm or transformers directly.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from ..utils.errors import UnsupportedHeadError

__all__ = ["ClassifierAdapter", "split_linear_head", "concatenated_linear_head"]

# Modules that may sit around the final linear layer without changing the decision in eval mode.
_PASSTHROUGH_HEAD_MODULES = (nn.Flatten, nn.Dropout, nn.Identity)


def split_linear_head(head: nn.Module, model_name: str) -> nn.Linear:
    """Return the single ``nn.Linear`` of a classification head, or raise naming what the head is."""
    if isinstance(head, nn.Linear):
        return head
    if isinstance(head, nn.Sequential):
        linears = [m for m in head if isinstance(m, nn.Linear)]
        others = [m for m in head if not isinstance(m, (nn.Linear, *_PASSTHROUGH_HEAD_MODULES))]
        if len(linears) == 1 and not others:
            return linears[0]
    raise UnsupportedHeadError(
        f"{model_name}: the classification head is not one linear layer over pooled features, it is "
        f"{head.__class__.__name__}:\n{head}\nhf-decomp decomposes heads of the form "
        f"logits = W x + b. Pick a model with a linear classifier (most CNNs and ViTs)."
    )


def concatenated_linear_head(heads, model_name: str) -> nn.Linear:
    """One ``nn.Linear`` over the concatenated inputs of K heads whose outputs are averaged.

    timm's distilled models (DeiT) answer ``(head(cls) + head_dist(dist)) / 2`` in eval mode, which is
    exactly ``[W_1/K, ..., W_K/K] . [x_1; ...; x_K] + mean(b_k)``: a linear layer over the concatenated
    head inputs, so the decomposition applies to that vector (width ``sum(d_k)``).
    """
    linears = [split_linear_head(head, model_name) for head in heads]
    num_classes = {linear.out_features for linear in linears}
    if len(num_classes) != 1:
        raise UnsupportedHeadError(
            f"{model_name}: its {len(linears)} classifier heads have different numbers of classes "
            f"{sorted(num_classes)}; hf-decomp decomposes heads whose outputs are averaged into one logit vector."
        )
    k = len(linears)
    reference = linears[0].weight
    combined = nn.Linear(sum(linear.in_features for linear in linears), num_classes.pop(),
                         device=reference.device, dtype=reference.dtype)
    with torch.no_grad():
        combined.weight.copy_(torch.cat([linear.weight for linear in linears], dim=1) / k)
        biases = [linear.bias if linear.bias is not None else torch.zeros_like(combined.bias) for linear in linears]
        combined.bias.copy_(torch.stack(biases).sum(dim=0) / k)
    combined.requires_grad_(False)
    return combined


def capture_head_inputs(model: nn.Module, heads: list[nn.Module], run: Callable[[], object]) -> torch.Tensor:
    """Run ``run()`` and return the inputs the ``heads`` received, concatenated (B, sum d_k)."""
    captured: dict[int, torch.Tensor] = {}
    handles = [head.register_forward_pre_hook(lambda module, args, k=k: captured.__setitem__(k, args[0]))
               for k, head in enumerate(heads)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    if len(captured) != len(heads) or any(captured[k].ndim != 2 for k in captured):
        raise UnsupportedHeadError(f"{type(model).__name__}: its classifier heads did not all receive pooled (B, d) inputs")
    return torch.cat([captured[k] for k in range(len(heads))], dim=1)


class ClassifierAdapter(nn.Module):
    """A classifier seen as ``logits = W @ features + b``.

    Args:
        model: the wrapped network, in eval mode.
        classifier: its final linear layer (W: C x d, b: C).
        features_fn: pixel values (B, 3, H, W) -> pooled penultimate features (B, d).
        feature_maps_fn: pixel values -> last convolutional maps (B, d, h, w) whose spatial mean is
            the pooled feature, or None when the model has no such maps.
        transform: PIL image -> pixel values (3, H, W), the model's own eval preprocessing.
        label_names: one name per class.
        name: how the model was asked for (``timm:resnet50.a1_in1k``, a path, ...).
        source: ``"timm"`` or ``"transformers"``.
        config: JSON-safe facts to rebuild the backbone (architecture, pretrained_cfg, ...).
    """

    def __init__(
        self,
        model: nn.Module,
        classifier: nn.Linear,
        features_fn: Callable[[torch.Tensor], torch.Tensor],
        transform: Callable,
        label_names: list[str],
        name: str,
        source: str,
        input_size: tuple[int, int, int],
        feature_maps_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
        config: dict | None = None,
    ):
        super().__init__()
        self.model = model.eval()
        self.classifier = classifier
        self._features_fn = features_fn
        self._feature_maps_fn = feature_maps_fn
        self.transform = transform
        self.label_names = list(label_names)
        self.name = name
        self.source = source
        self.input_size = tuple(input_size)
        self.config = dict(config or {})
        repeated = sorted({n for n in self.label_names if self.label_names.count(n) > 1})
        if repeated:  # sets are stored by class name: two classes may not share one
            self.label_names = [f"{n} ({c})" if n in repeated else n for c, n in enumerate(self.label_names)]
        if len(self.label_names) != self.num_classes:
            raise ValueError(
                f"{name}: {len(self.label_names)} label names for {self.num_classes} classes"
            )

    @property
    def weight(self) -> torch.Tensor:
        return self.classifier.weight

    @property
    def bias(self) -> torch.Tensor:
        if self.classifier.bias is None:
            return torch.zeros(self.num_classes, device=self.weight.device, dtype=self.weight.dtype)
        return self.classifier.bias

    @property
    def num_features(self) -> int:
        return self.classifier.in_features

    @property
    def num_classes(self) -> int:
        return self.classifier.out_features

    @property
    def has_feature_maps(self) -> bool:
        return self._feature_maps_fn is not None

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Pooled penultimate features (B, d): the input of the final linear layer."""
        return self._features_fn(pixel_values)

    def forward_feature_maps(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Last convolutional feature maps (B, d, h, w) that are averaged into the features."""
        if self._feature_maps_fn is None:
            raise UnsupportedHeadError(
                f"{self.name} has no convolutional feature maps before its pooling "
                f"(it is not a CNN, or a layer sits between the maps and the pooled features); "
                f"studies that need maps (activation maps) do not apply to it."
            )
        return self._feature_maps_fn(pixel_values)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Logits of the original model, computed as W x + b."""
        return self.classifier(self.forward_features(pixel_values))

    @torch.no_grad()
    def verify_linear_head(self, atol: float = 1e-3) -> None:
        """Check on a random input that the model's logits equal W x + b of the adapter's features.

        Catches heads our name-based lookup misreads (distillation heads, extra layers).
        """
        device = self.weight.device
        probe = torch.randn(2, *self.input_size, generator=torch.Generator().manual_seed(0)).to(device)
        expected = self._model_logits(probe)
        got = self.classifier(self.forward_features(probe))
        if expected.shape != got.shape or not torch.allclose(expected, got, atol=atol, rtol=1e-3):
            raise UnsupportedHeadError(
                f"{self.name}: the model's logits are not W x + b of the features entering its "
                f"final linear layer {tuple(self.weight.shape)}; its head does more than one linear "
                f"layer over pooled features, which hf-decomp cannot decompose."
            )

    def _model_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values)
        return getattr(out, "logits", out)
