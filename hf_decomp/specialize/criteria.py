"""Pruning criteria for class specialists: one registry, each criterion one decorated function.

A criterion scores every channel group of the prepared, unpruned network (head restricted to the
chosen classes) and returns :data:`~.importance.GroupScores`. The allocation rule (uniform or global)
and the recovery are the same for every criterion, so a comparison isolates the criterion.

- ``magnitude``: L1 norm of the group's weights (Torch-Pruning ``GroupMagnitudeImportance``); class-blind.
- ``votes-bn``: the chosen classes' top-k1 votes at every batch norm, after a ReLU (the earlier
  "class-aware" criterion; at a residual block's last norm this reads ``relu(bn2(.))``, which the
  block never forms).
- ``votes-block``: the same votes where the network computes: a residual block's last norm is read
  at the block's output, after the residual sum and its ReLU.
- ``taylor``: first-order Taylor importance (Torch-Pruning ``GroupTaylorImportance``) of the
  cross-entropy over the chosen classes' logits, squared per batch and summed (Molchanov et al. 2019).
- ``propagated``: the paper's class-specific features at the final layer, weighted by the classes'
  head weights, propagated to every layer through absolute weights (NISP, Yu et al. 2018).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch_pruning as tp

from ..method.statistics import ClassStatistics
from ..utils.errors import DecompValueError
from .importance import GroupScores, channel_groups, freeze_importance, group_scores_from_layers
from .votes import gather_votes

__all__ = ["CriterionInputs", "PRUNING_CRITERIA", "register_pruning_criterion", "score_groups",
           "block_output_names", "propagated_layer_scores", "final_feature_scores", "taylor_group_scores"]


@dataclass
class CriterionInputs:
    """What a criterion may read: the chosen classes' training images and the Torch-Pruning set-up.

    ``model`` is the prepared network with its head restricted to the chosen classes (logit i is
    class ``class_ids[i]``); ``labels`` are positions in ``class_ids``.
    """

    model: nn.Module
    input_size: Sequence[int]
    pixels: torch.Tensor
    labels: torch.Tensor
    customized_pruners: dict
    k1_fraction: float = 0.25
    batch_size: int = 256
    taylor_images: int = 2048


Criterion = Callable[[CriterionInputs], GroupScores]
PRUNING_CRITERIA: dict[str, Criterion] = {}


def register_pruning_criterion(name: str) -> Callable[[Criterion], Criterion]:
    """Add a criterion to :data:`PRUNING_CRITERIA` under ``name`` (``--criterion name``)."""
    def decorate(fn: Criterion) -> Criterion:
        if name in PRUNING_CRITERIA:
            raise ValueError(f"pruning criterion {name!r} is registered twice")
        PRUNING_CRITERIA[name] = fn
        return fn
    return decorate


def score_groups(criterion: str, inputs: CriterionInputs) -> GroupScores:
    """Run the registered ``criterion`` on ``inputs``."""
    if criterion not in PRUNING_CRITERIA:
        raise DecompValueError(f"--criterion {criterion!r} is unknown; choose from {', '.join(PRUNING_CRITERIA)}.")
    return PRUNING_CRITERIA[criterion](inputs)


@register_pruning_criterion("magnitude")
def magnitude_scores(inputs: CriterionInputs) -> GroupScores:
    return freeze_importance(inputs.model, inputs.input_size,
                             tp.importance.GroupMagnitudeImportance(p=1, normalizer=None), inputs.customized_pruners)


def block_output_names(model: nn.Module) -> dict[str, str]:
    """Last batch norm of each residual block -> the block's name (its output is the residual sum).

    A residual block is a module with a ``shortcut`` or ``downsample`` child; its last norm is the
    last :class:`~torch.nn.BatchNorm2d` among its direct children (``bn2`` of a BasicBlock, ``bn3``
    of a Bottleneck).
    """
    mapping = {}
    for name, module in model.named_modules():
        children = dict(module.named_children())
        if "shortcut" not in children and "downsample" not in children:
            continue
        norms = [n for n, m in children.items() if isinstance(m, nn.BatchNorm2d)]
        if norms:
            mapping[f"{name}.{norms[-1]}" if name else norms[-1]] = name
    return mapping


def _norm_names(model: nn.Module) -> list[str]:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    if not names:
        raise DecompValueError("the model has no BatchNorm2d layers; vote and propagated criteria score batch norms.")
    return names


@register_pruning_criterion("votes-bn")
def votes_bn_scores(inputs: CriterionInputs) -> GroupScores:
    points = {n: n for n in _norm_names(inputs.model)}
    layer = gather_votes(inputs.model, points, inputs.pixels, inputs.labels, inputs.k1_fraction, inputs.batch_size)
    return group_scores_from_layers(inputs.model, inputs.input_size, layer, inputs.customized_pruners)


@register_pruning_criterion("votes-block")
def votes_block_scores(inputs: CriterionInputs) -> GroupScores:
    outputs = block_output_names(inputs.model)
    points = {n: outputs.get(n, n) for n in _norm_names(inputs.model)}
    layer = gather_votes(inputs.model, points, inputs.pixels, inputs.labels, inputs.k1_fraction, inputs.batch_size)
    return group_scores_from_layers(inputs.model, inputs.input_size, layer, inputs.customized_pruners)


def taylor_group_scores(model: nn.Module, input_size, pixels, labels, customized_pruners: dict,
                        batch_size: int = 256) -> GroupScores:
    """Σ over batches of (Torch-Pruning's group Taylor importance |w · ∂L/∂w| of that batch)², L the CE.

    The loss is the cross-entropy of the restricted logits against the chosen classes' labels. The
    distillation loss from the restricted full model would be exactly zero, with zero gradient, on
    the unpruned network, so it cannot rank channels before pruning. Squaring per batch keeps the
    signal that a whole-set gradient of a trained network averages away.
    """
    model = copy.deepcopy(model).eval().requires_grad_(True)
    groups = channel_groups(model, input_size, customized_pruners)
    names = {m: n for n, m in model.named_modules()}
    importance = tp.importance.GroupTaylorImportance(normalizer=None)
    totals: GroupScores = {}
    for start in range(0, pixels.shape[0], batch_size):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(pixels[start:start + batch_size]), labels[start:start + batch_size]).backward()
        with torch.no_grad():
            for group in groups:
                name = names[group[0].dep.target.module]
                value = importance(group).to(torch.float64).cpu() ** 2
                totals[name] = totals[name] + value if name in totals else value
    return totals


@register_pruning_criterion("taylor")
def taylor_scores(inputs: CriterionInputs) -> GroupScores:
    generator = torch.Generator().manual_seed(0)
    take = torch.randperm(inputs.pixels.shape[0], generator=generator)[:inputs.taylor_images]
    return taylor_group_scores(inputs.model, inputs.input_size, inputs.pixels[take], inputs.labels[take],
                               inputs.customized_pruners, batch_size=min(inputs.batch_size, 128))


@torch.no_grad()
def final_feature_scores(model: nn.Module, pixels, labels, k1_fraction: float, batch_size: int = 256) -> torch.Tensor:
    """(d,) Σ_c |W_c[j]| · share of class c's images whose top-k1 pooled features hold j (soft I_c).

    The paper's influential features of each chosen class, weighted by the class's head weight on
    them; ``model``'s head must already be restricted to the chosen classes.
    """
    model.eval()
    features = torch.cat([model.forward_head(model.forward_features(pixels[i:i + batch_size]), pre_logits=True)
                          for i in range(0, pixels.shape[0], batch_size)])
    num_classes = model.get_classifier().out_features
    k1 = max(1, int(round(k1_fraction * features.shape[1])))
    stats = ClassStatistics(num_classes, features.shape[1], {k1})
    stats.update(features.float(), labels)
    share = stats.histogram(k1).to(torch.float64) / stats.sample_counts.clamp(min=1).to(torch.float64)[:, None]
    weight = model.get_classifier().weight.detach().abs().to(torch.float64).cpu()
    return (weight * share).sum(0)


def propagated_layer_scores(model: nn.Module, input_size, final_scores: torch.Tensor) -> dict[str, torch.Tensor]:
    """NISP: importance of every batch norm's output channels, from the final features' scores.

    s_in = |W|ᵀ s_out through every layer. Computed as the gradient of ``final_scores · f(1)`` in a
    copy of the network with absolute weights, zero biases and batch norms reduced to their positive
    scale |γ| / σ: with a positive input every pre-activation is non-negative, so each ReLU passes
    its input and its gradient unchanged and the copy is the linear map NISP propagates through.
    A channel's score is its gradient summed over positions.
    """
    net = copy.deepcopy(model).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                module.weight.abs_()
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d):
                module.weight.abs_()
                module.bias.zero_()
                module.running_mean.zero_()
    grads: dict[str, torch.Tensor] = {}
    handles = []

    def keep_grad(name):
        def hook(module, args, output):
            output.register_hook(lambda g: grads.__setitem__(name, g.sum(dim=(0, 2, 3)).to(torch.float64)))
        return hook

    for name in _norm_names(net):
        handles.append(net.get_submodule(name).register_forward_hook(keep_grad(name)))
    try:
        x = torch.ones(1, *input_size, requires_grad=True)
        features = net.forward_head(net.forward_features(x), pre_logits=True)
        (features[0].to(torch.float64) * final_scores.to(features.device, torch.float64)).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
    return grads


@register_pruning_criterion("propagated")
def propagated_scores(inputs: CriterionInputs) -> GroupScores:
    final = final_feature_scores(inputs.model, inputs.pixels, inputs.labels, inputs.k1_fraction, inputs.batch_size)
    layer = propagated_layer_scores(inputs.model, inputs.input_size, final)
    return group_scores_from_layers(inputs.model, inputs.input_size, layer, inputs.customized_pruners)
