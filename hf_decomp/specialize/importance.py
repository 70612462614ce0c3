"""Channel-group scores computed once on the unpruned network, replayed to Torch-Pruning.

Every criterion ends as one score vector per channel group, keyed by the name of the group's root
module (the convolution whose output channels the group prunes). Scores are computed once on the
prepared, unpruned network: the budget bisection prunes many deep copies, and a copy carries neither
gradients (Taylor) nor the data the scores came from. :class:`FrozenImportance` hands the stored
vectors to Torch-Pruning, divided by their group's mean so that ``global_pruning`` ranks channels of
different groups on one scale (Torch-Pruning's own ``normalizer="mean"``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch_pruning as tp

from ..utils.errors import DecompValueError

__all__ = ["channel_groups", "FrozenImportance", "freeze_importance", "group_scores_from_layers",
           "GroupScores"]

GroupScores = dict[str, torch.Tensor]  # root module name -> one score per channel of the group


def channel_groups(model: nn.Module, input_size: Sequence[int], customized_pruners: dict) -> list:
    """Torch-Pruning's channel groups of ``model`` in the order its pruner visits them (head excluded)."""
    example = torch.zeros(1, *input_size, device=next(model.parameters()).device)
    graph = tp.DependencyGraph().build_dependency(model.eval().requires_grad_(True), example,
                                                  customized_pruners=customized_pruners)
    return list(graph.get_all_groups(ignored_layers=[model.get_classifier()],
                                     root_module_types=[nn.Conv2d, nn.Linear]))


def _root_name(group, names: dict[nn.Module, str]) -> str:
    return names[group[0].dep.target.module]


def freeze_importance(model: nn.Module, input_size: Sequence[int], importance: Callable,
                      customized_pruners: dict) -> GroupScores:
    """Score every channel group of ``model`` with a Torch-Pruning ``importance`` (raw, unnormalised)."""
    names = {m: n for n, m in model.named_modules()}
    return {_root_name(g, names): importance(g).detach().to(torch.float64).cpu()
            for g in channel_groups(model, input_size, customized_pruners)}


def _root_positions(group) -> list[tuple[nn.Module, object, torch.Tensor, list[int]]]:
    """(module, handler, positions in the root's channels, the module's own channel indices) per member."""
    members = []
    for item in group:
        dep, idxs = item.dep, item.idxs
        root = getattr(item, "root_idxs", None)
        members.append((dep.target.module, dep.handler, torch.as_tensor(list(root if root is not None else idxs)),
                        list(idxs)))
    return members


def group_scores_from_layers(model: nn.Module, input_size: Sequence[int], layer_scores: dict[str, torch.Tensor],
                             customized_pruners: dict) -> GroupScores:
    """Per-batch-norm channel scores -> per-group scores: a channel's score is the sum over the group's norms.

    A residual stage is one group across all its blocks, so its channel j is scored by every batch
    norm that the group prunes at j (the stem's and each block's last one).
    """
    names = {m: n for n, m in model.named_modules()}
    modules = {model.get_submodule(n): s for n, s in layer_scores.items()}
    scores: GroupScores = {}
    for group in channel_groups(model, input_size, customized_pruners):
        total, found = torch.zeros(len(group[0].idxs), dtype=torch.float64), False
        for module, handler, root, idxs in _root_positions(group):
            if handler != tp.pruner.function.prune_batchnorm_out_channels or module not in modules:
                continue
            total.index_add_(0, root, modules[module].to(torch.float64).cpu()[idxs])
            found = True
        if not found:
            raise DecompValueError(f"no channel scores for the group of {_root_name(group, names)!r}: this criterion "
                                   f"scores batch norms, so it needs a batch norm after every pruned convolution.")
        scores[_root_name(group, names)] = total
    return scores


class FrozenImportance(tp.importance.Importance):
    """Torch-Pruning importance that returns stored per-group scores, mean-normalised per group."""

    def __init__(self, scores: GroupScores, model: nn.Module | None = None):
        self.scores = scores
        self._names = {m: n for n, m in model.named_modules()} if model is not None else {}

    def bind(self, model: nn.Module) -> "FrozenImportance":
        """The same scores, resolving the groups of ``model`` (a pruned copy) by module name."""
        return FrozenImportance(self.scores, model)

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        name = _root_name(group, self._names)
        if name not in self.scores:
            raise DecompValueError(f"no stored scores for the channel group of {name!r}; the scores were computed "
                                   f"on another architecture.")
        score = self.scores[name].to(torch.float32)
        if score.numel() != len(group[0].idxs):
            raise DecompValueError(f"the group of {name!r} has {len(group[0].idxs)} channels but {score.numel()} "
                                   f"stored scores: scores must come from the unpruned network.")
        return score / score.mean().clamp_min(1e-12)
