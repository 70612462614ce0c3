"""Channel pruning to a multiply-add budget with Torch-Pruning, class-aware or by L1 magnitude.

Torch-Pruning traces the network and groups every coupled channel (a residual stage's channels are
one group across all its blocks). Option-A shortcuts (subsample + zero-pad, the CIFAR ResNets) are
not a plain op for its tracer: :func:`prepare_for_pruning` swaps them for :class:`ChannelShortcut`,
which Torch-Pruning prunes through :class:`ChannelShortcutPruner` as a layer whose input channels
(the previous stage) and output channels (the next stage) are pruned independently, so the two
stages keep their own channel sets and the zero-padding follows the kept channels.

Both methods prune the same fraction of every group (``global_pruning=False``); they differ only in
which channels of a group they keep. The fraction is found by bisection on the multiply-adds counted
by ``torch.utils.flop_counter``.
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

__all__ = ["count_macs", "prepare_for_pruning", "ChannelShortcutPruner", "VoteImportance", "restrict_head",
           "prune_to_budget", "check_budget", "prune_by_ratio", "importance_of", "max_pruning_ratio", "PRUNING_METHODS", "resolve_classes"]

PRUNING_METHODS = ("class-aware", "magnitude")


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


class VoteImportance(tp.importance.Importance):
    """Channel importance from class votes: per batch-norm layer, a score per output channel.

    A group's score for a channel is the sum of the scores of every batch norm that the group prunes
    at that channel (a residual stage's channel is voted for at the stem and at every block).
    """

    def __init__(self, scores: dict[str, torch.Tensor], model: nn.Module | None = None):
        self.named_scores = dict(scores)
        self.scores = {model.get_submodule(n): s for n, s in scores.items()} if model is not None else {}

    def bind(self, model: nn.Module) -> "VoteImportance":
        """The same scores keyed by the modules of ``model`` (Torch-Pruning hands over modules, not names)."""
        return VoteImportance(self.named_scores, model)

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        total, found = None, False
        for dep, idxs in group:
            layer = dep.target.module
            if dep.handler != tp.pruner.function.prune_batchnorm_out_channels or layer not in self.scores:
                continue
            score = self.scores[layer].to(torch.float64)[list(idxs)]
            root = torch.as_tensor(dep.root_idxs if hasattr(dep, "root_idxs") else idxs)
            if total is None:
                total = torch.zeros(len(group[0].idxs), dtype=torch.float64)
            total.index_add_(0, root, score.cpu())
            found = True
        if not found:
            names = [str(dep.target) for dep, _ in group][:3]
            raise DecompValueError(f"no class votes for the channel group of {names}: class-aware pruning needs a "
                                   f"batch norm after every pruned convolution.")
        return total


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


def importance_of(method: str, scores: dict[str, torch.Tensor] | None = None) -> tp.importance.Importance:
    """Torch-Pruning importance of a method: L1 of each group's weights, or the class votes."""
    if method == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=1)
    if method == "class-aware":
        if not scores:
            raise DecompValueError("class-aware pruning needs the chosen classes' channel votes (scores)")
        return VoteImportance(scores)
    raise DecompValueError(f"pruning method {method!r} is unknown; choose from {PRUNING_METHODS}")


def prune_by_ratio(model: nn.Module, input_size, importance, ratio: float) -> nn.Module:
    """A copy of ``model`` with ``ratio`` of every channel group pruned by ``importance`` (Torch-Pruning)."""
    model = copy.deepcopy(model).eval().requires_grad_(True)  # Torch-Pruning traces through autograd
    if ratio <= 0:
        return model
    example = torch.zeros(1, *input_size, device=next(model.parameters()).device)
    if isinstance(importance, VoteImportance):
        importance = importance.bind(model)
    pruner = tp.pruner.MetaPruner(
        model, example, importance=importance, pruning_ratio=ratio, global_pruning=False,
        ignored_layers=[model.get_classifier()], customized_pruners={ChannelShortcut: ChannelShortcutPruner()},
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
    smallest = count_macs(prune_by_ratio(model, input_size, importance_of("magnitude", None), max_pruning_ratio(model)),
                          input_size) / reference_macs
    _refuse_unreachable(budget, smallest)
    return smallest


def prune_to_budget(model: nn.Module, input_size: Sequence[int], budget: float, *, method: str,
                    scores: dict[str, torch.Tensor] | None = None, reference_macs: int | None = None,
                    tolerance: float = 0.002) -> tuple[nn.Module, dict]:
    """Prune ``model`` (prepared, head restricted) to at most ``budget`` x ``reference_macs`` multiply-adds.

    Args:
        scores: class-aware only: per batch-norm module name, one score per output channel.
        reference_macs: the full model's multiply-adds (default: this model's).

    Returns:
        the pruned model and ``{"pruning_ratio", "macs", "macs_fraction"}``.
    """
    if not 0.0 < budget <= 1.0:
        raise DecompValueError(f"--macs {budget} must be a fraction in (0, 1] of the full model's multiply-adds")
    reference_macs = reference_macs or count_macs(model, input_size)
    importance = importance_of(method, scores)

    def fraction(ratio):
        pruned = prune_by_ratio(model, input_size, importance, ratio)
        return pruned, count_macs(pruned, input_size) / reference_macs

    best = prune_by_ratio(model, input_size, importance, 0.0), count_macs(model, input_size) / reference_macs
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
