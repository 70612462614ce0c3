"""Channel pruning to a multiply-add budget with Torch-Pruning, class-aware or by L1 magnitude.

Torch-Pruning traces the network and groups every coupled channel (a residual stage's channels are
one group across all its blocks). Option-A shortcuts (subsample + zero-pad, the CIFAR ResNets) are
not a plain op for its tracer: :func:`prepare_for_pruning` swaps them for :class:`ChannelShortcut`,
which Torch-Pruning prunes through :class:`ChannelShortcutPruner` as a layer whose input channels
(the previous stage) and output channels (the next stage) are pruned independently, so the two
stages keep their own channel sets and the zero-padding follows the kept channels.

Channels are scored once per group by a criterion (:mod:`.criteria`) and pruned by an allocation
rule: ``uniform`` prunes the same fraction of every group (``global_pruning=False``), so a criterion
only decides which channels of a layer go; ``global`` ranks the mean-normalised scores of all groups
together (``global_pruning=True``), so the widths follow the scores. The ratio is found by bisection
on the multiply-adds counted by ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch_pruning as tp
from torch.utils.flop_counter import FlopCounterMode

from ..portable.modeling_specialist import ChannelShortcut
from ..utils.errors import DecompValueError
from .importance import FrozenImportance, GroupScores
from .vocabulary import ALLOCATIONS

__all__ = ["count_macs", "prepare_for_pruning", "ChannelShortcutPruner", "CUSTOMIZED_PRUNERS", "ALLOCATIONS",
           "check_allocation", "restrict_head", "prune_to_budget", "check_budget", "prune_by_ratio",
           "max_pruning_ratio", "resolve_classes"]


def resolve_classes(spec: str | Sequence, label_names: Sequence[str]) -> list[int]:
    """``"cat,dog"`` or ``"3,5"`` (or a list of either) -> sorted distinct class ids of the model."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [str(s).strip() for s in spec]
    items = [s for s in items if s]
    lookup = {name.lower(): i for i, name in enumerate(label_names)}
    ids = []
    for item in items:
        if item.isdigit() and int(item) < len(label_names):
            ids.append(int(item))
        elif item.lower() in lookup:
            ids.append(lookup[item.lower()])
        else:
            raise DecompValueError(f"class {item!r} is not one of the model's {len(label_names)} labels "
                                   f"({', '.join(label_names)}); give names from that list or ids 0-{len(label_names) - 1}.")
    ids = sorted(set(ids))
    if len(ids) < 2:
        raise DecompValueError(f"--classes needs at least two distinct classes, got {items}; a one-class "
                               f"specialist has nothing to decide.")
    return ids


def count_macs(model: nn.Module, input_size: Sequence[int]) -> int:
    """Multiply-adds of one forward pass on a batch of one image (``torch.utils.flop_counter`` / 2)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, *input_size, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2


def prepare_for_pruning(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose option-A shortcuts are :class:`ChannelShortcut` (same outputs)."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        if type(module).__name__ == "_ShortcutA":
            # the channels it receives are the block's input width: read it from the block's first conv
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            in_channels = parent.conv1.in_channels
            pad = module.pad_channels
            model.set_submodule(name, ChannelShortcut(list(range(in_channels)), [c + pad for c in range(in_channels)],
                                                      in_channels, in_channels + 2 * pad, stride=2))
    return model


def _remove(index: torch.Tensor, channels: torch.Tensor, idxs: Sequence[int], width: int):
    """Drop the entries of ``index`` that point at pruned ``idxs``; renumber the rest (also in ``channels``)."""
    keep = torch.ones(width, dtype=torch.bool)
    keep[list(idxs)] = False
    renumber = torch.cumsum(keep.long(), 0) - 1
    alive = keep[index.cpu()]
    return renumber[index.cpu()[alive]].to(index.device), channels[alive.to(channels.device)]


class ChannelShortcutPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning's view of a :class:`ChannelShortcut`: in and out channels are independent."""

    TARGET_MODULES = ChannelShortcut

    def prune_out_channels(self, layer: ChannelShortcut, idxs: Sequence[int]) -> ChannelShortcut:
        layer.dst, layer.src = _remove(layer.dst, layer.src, idxs, layer.out_channels)
        layer.out_channels -= len(set(idxs))
        return layer

    def prune_in_channels(self, layer: ChannelShortcut, idxs: Sequence[int]) -> ChannelShortcut:
        layer.src, layer.dst = _remove(layer.src, layer.dst, idxs, layer.in_channels)
        layer.in_channels -= len(set(idxs))
        return layer

    def get_out_channels(self, layer: ChannelShortcut) -> int:
        return layer.out_channels

    def get_in_channels(self, layer: ChannelShortcut) -> int:
        return layer.in_channels


def restrict_head(model: nn.Module, class_ids: Sequence[int]) -> nn.Module:
    """Keep only the rows of ``class_ids`` in the classifier (in place; timm ``get_classifier``)."""
    head = model.get_classifier()
    new = nn.Linear(head.in_features, len(class_ids), bias=head.bias is not None).to(head.weight.device)
    with torch.no_grad():
        new.weight.copy_(head.weight[list(class_ids)])
        if head.bias is not None:
            new.bias.copy_(head.bias[list(class_ids)])
    name = next(n for n, m in model.named_modules() if m is head)
    model.set_submodule(name, new)
    if hasattr(model, "num_classes"):
        model.num_classes = len(class_ids)
    return model


CUSTOMIZED_PRUNERS = {ChannelShortcut: ChannelShortcutPruner()}


def check_allocation(allocation: str) -> str:
    if allocation not in ALLOCATIONS:
        raise DecompValueError(f"--allocation {allocation!r} is unknown; choose from {', '.join(ALLOCATIONS)}.")
    return allocation


def prune_by_ratio(model: nn.Module, input_size, importance, ratio: float, allocation: str = "uniform") -> nn.Module:
    """A copy of ``model`` with ``ratio`` of its channels pruned by ``importance`` (Torch-Pruning).

    ``uniform``: that fraction of every group; ``global``: that fraction of all channels, the lowest
    normalised scores first, no group losing more than :func:`max_pruning_ratio` of its channels.
    """
    check_allocation(allocation)
    model = copy.deepcopy(model).eval().requires_grad_(True)  # Torch-Pruning traces through autograd
    if ratio <= 0:
        return model
    example = torch.zeros(1, *input_size, device=next(model.parameters()).device)
    if hasattr(importance, "bind"):
        importance = importance.bind(model)
    pruner = tp.pruner.MetaPruner(
        model, example, importance=importance, pruning_ratio=ratio, global_pruning=allocation == "global",
        max_pruning_ratio=max_pruning_ratio(model), ignored_layers=[model.get_classifier()],
        customized_pruners=CUSTOMIZED_PRUNERS,
    )
    pruner.step()
    return model


def max_pruning_ratio(model: nn.Module) -> float:
    """The largest per-group ratio that keeps at least one channel in the narrowest convolution.

    Torch-Pruning prunes ``C - int(C * (1 - ratio))`` channels of a C-channel group and skips a
    group that this would empty, so a larger ratio would leave the narrowest layers unpruned.
    """
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    return 1.0 - 1.0 / min(widths) - 1e-6 if widths else 0.0


def _refuse_unreachable(budget: float, smallest: float) -> None:
    if smallest > budget:
        raise DecompValueError(f"--macs {budget} cannot be reached: keeping one channel in the narrowest layer "
                               f"(the same fraction pruned everywhere) leaves {smallest:.4f} of the full model's "
                               f"multiply-adds; the smallest reachable budget is {smallest:.4f}.")


def check_budget(model: nn.Module, input_size: Sequence[int], budget: float, reference_macs: int) -> float:
    """Refuse a budget outside (0, 1] or below the smallest reachable one (which is returned), before any data is read.

    Every group loses the same fraction of its channels whatever the importance, so the smallest
    reachable budget does not depend on the method.
    """
    if not 0.0 < budget <= 1.0:
        raise DecompValueError(f"--macs {budget} must be a fraction in (0, 1] of the full model's multiply-adds")
    smallest = count_macs(prune_by_ratio(model, input_size, tp.importance.GroupMagnitudeImportance(p=1),
                                         max_pruning_ratio(model)), input_size) / reference_macs
    _refuse_unreachable(budget, smallest)
    return smallest


def prune_to_budget(model: nn.Module, input_size: Sequence[int], budget: float, *, scores: GroupScores,
                    allocation: str = "global", reference_macs: int | None = None,
                    tolerance: float = 0.002) -> tuple[nn.Module, dict]:
    """Prune ``model`` (prepared, head restricted) to at most ``budget`` x ``reference_macs`` multiply-adds.

    Args:
        scores: per channel group, one score per channel (:func:`~.criteria.score_groups`).
        allocation: ``global`` or ``uniform`` (see :func:`prune_by_ratio`).
        reference_macs: the full model's multiply-adds (default: this model's).

    Returns:
        the pruned model and ``{"pruning_ratio", "macs", "macs_fraction"}``.
    """
    if not 0.0 < budget <= 1.0:
        raise DecompValueError(f"--macs {budget} must be a fraction in (0, 1] of the full model's multiply-adds")
    reference_macs = reference_macs or count_macs(model, input_size)
    importance = FrozenImportance(scores)

    def fraction(ratio):
        pruned = prune_by_ratio(model, input_size, importance, ratio, allocation)
        return pruned, count_macs(pruned, input_size) / reference_macs

    best = prune_by_ratio(model, input_size, importance, 0.0, allocation), count_macs(model, input_size) / reference_macs
    if best[1] <= budget:
        return best[0], {"pruning_ratio": 0.0, "macs": round(best[1] * reference_macs), "macs_fraction": best[1]}
    top = max_pruning_ratio(model)
    smallest = fraction(top)
    _refuse_unreachable(budget, smallest[1])
    low, high, best = 0.0, top, (smallest[0], smallest[1], top)
    while high - low > 1e-3:
        mid = (low + high) / 2
        pruned, macs = fraction(mid)
        if macs <= budget:
            high, best = mid, (pruned, macs, mid)
            if budget - macs < tolerance:
                break
        else:
            low = mid
    pruned, macs, ratio = best
    return pruned, {"pruning_ratio": ratio, "macs": round(macs * reference_macs), "macs_fraction": macs}
