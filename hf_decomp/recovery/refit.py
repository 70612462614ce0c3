"""Head refit: re-fit the kept weights W_c[I_c] and the biases b_c on training features, backbone frozen.

Minimises the cross-entropy of the decomposed head over cached features (the features never change,
so the problem is a small convex softmax regression restricted to each class's set):

- :func:`refit_head`: full batch, L-BFGS (default; seconds for CIFAR-10's 50k x 64) or Adam.
- :func:`refit_head_streaming`: Adam over batches read again each epoch (features too large for memory,
  e.g. streamed from :class:`~hf_decomp.passes.feature_cache.FeatureCache` shards).
- :func:`prune_and_refit`: selection and refit together (method ``pruning``): start from all
  features, repeatedly keep the top fraction by the contribution score of the *refit* weights,
  W_cj * (mean_c(x_j) - mean(x_j)), and refit, until k per class remain.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..method.bias_correction import bias_corrected_head, corrected_bias
from ..method.criteria import CriterionInputs, get_criterion, list_criteria
from ..method.selection import top_k_per_class
from ..method.statistics import ClassStatistics
from ..portable.decomposed_head import DecomposedLinear
from ..utils.checks import check_k
from ..utils.errors import DecompValueError
from ..utils.settings import resolve_renamed

__all__ = ["check_labelled", "refit_head", "refit_head_streaming", "prune_and_refit", "pruning_schedule", "decompose_head",
           "check_refit_criterion",
           "REFIT_OPTIMIZERS"]

REFIT_OPTIMIZERS = ("lbfgs", "adam")
DECOMPOSE_HEAD_RENAMED = {"method": "criterion", "k": "k2"}  # decompose_head's old keyword names


def check_labelled(labels: torch.Tensor | None, num_classes: int, what: str = "refit") -> None:
    """Refuse unlabelled data (labels None, empty or -1) and labels outside [0, C)."""
    if labels is None or labels.numel() == 0:
        raise DecompValueError(f"{what} needs a labelled training split, but no labelled samples were given. "
                               f"Pass --stats-split naming a split with a label column (or set --label-column).")
    if bool((labels < 0).any()):
        missing = int((labels < 0).sum())
        raise DecompValueError(f"{what} needs a labelled training split, but {missing} of {labels.numel()} samples "
                               f"have no label (-1). Use a labelled split or set --label-column.")
    if int(labels.max()) >= num_classes:
        raise DecompValueError(f"{what}: labels go up to {int(labels.max())} but the head has {num_classes} "
                               f"classes [0, {num_classes}); use the dataset the model was trained on.")


def _check_features(head: DecomposedLinear, features: torch.Tensor, labels: torch.Tensor) -> None:
    if features.ndim != 2 or features.shape[1] != head.num_features:
        raise DecompValueError(f"features have shape {tuple(features.shape)}; the head expects (N, "
                               f"{head.num_features}). Use features of the model the head was built from.")
    if features.shape[0] != labels.shape[0]:
        raise DecompValueError(f"{features.shape[0]} feature rows but {labels.shape[0]} labels")


def refit_head(
    head: DecomposedLinear,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    optimizer: str = "lbfgs",
    max_iter: int = 100,
    epochs: int = 30,
    lr: float = 1e-2,
    batch_size: int = 4096,
    weight_decay: float = 0.0,
) -> DecomposedLinear:
    """A copy of ``head`` whose kept weights and biases minimise the cross-entropy on ``features``.

    Args:
        head: the decomposed head (its sets stay fixed; padding slots stay zero).
        features: (N, d) training features of the frozen backbone; labels: (N,) class ids.
        optimizer: ``lbfgs`` (full batch, ``max_iter`` iterations) or ``adam`` (``epochs`` over
            shuffled mini-batches of ``batch_size`` with learning rate ``lr``).
        weight_decay: L2 penalty on the kept weights (per sample).

    Returns:
        The refit head (the input head is left unchanged).
    """
    if optimizer not in REFIT_OPTIMIZERS:
        raise DecompValueError(f"optimizer={optimizer!r} is not one of {', '.join(REFIT_OPTIMIZERS)}")
    check_labelled(labels, head.num_classes)
    _check_features(head, features, labels)
    refit = copy.deepcopy(head).float().train()
    features, labels = features.float().to(refit.bias.device), labels.long().to(refit.bias.device)
    params = [refit.kept_weight, refit.bias]

    def loss_of(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(refit(x), y)
        return loss + weight_decay * (refit.kept_weight * refit.valid).square().sum() if weight_decay else loss

    with torch.enable_grad():
        if optimizer == "lbfgs":
            lbfgs = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20,
                                      line_search_fn="strong_wolfe")

            def closure():
                lbfgs.zero_grad()
                loss = loss_of(features, labels)
                loss.backward()
                return loss

            lbfgs.step(closure)
        else:
            adam = torch.optim.Adam(params, lr=lr)
            generator = torch.Generator().manual_seed(0)
            for _ in tqdm(range(epochs), desc="refit (adam)", leave=False):
                for batch in torch.randperm(features.shape[0], generator=generator).split(batch_size):
                    adam.zero_grad()
                    loss_of(features[batch], labels[batch]).backward()
                    adam.step()
    with torch.no_grad():
        refit.kept_weight.mul_(refit.valid)
    return refit.eval()


def refit_head_streaming(
    head: DecomposedLinear,
    batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
    *,
    epochs: int = 3,
    lr: float = 1e-2,
) -> DecomposedLinear:
    """Refit with Adam, reading (features, labels) batches anew each epoch (nothing held in memory).

    Args:
        head: the decomposed head.
        batches: called once per epoch; yields (features (B, d), labels (B,)), e.g.
            ``FeatureCache(dir).iter_shards`` or a fresh :class:`~hf_decomp.passes.features.FeaturePass`.
        epochs: passes over the data. lr: Adam's learning rate.
    """
    refit = copy.deepcopy(head).float().train()
    adam = torch.optim.Adam([refit.kept_weight, refit.bias], lr=lr)
    seen = 0
    with torch.enable_grad():
        for _ in range(epochs):
            for features, labels in tqdm(batches(), desc="refit (streaming)", leave=False):
                check_labelled(labels, refit.num_classes)
                _check_features(refit, features, labels)
                adam.zero_grad()
                F.cross_entropy(refit(features.float().to(refit.bias.device)),
                                labels.long().to(refit.bias.device)).backward()
                adam.step()
                seen += labels.numel()
    if seen == 0:
        check_labelled(None, refit.num_classes)
    with torch.no_grad():
        refit.kept_weight.mul_(refit.valid)
    return refit.eval()


def pruning_schedule(num_features: int, k: int, keep: float = 0.5) -> list[int]:
    """Set sizes from d down to k, shrinking by ``keep`` per step (d=64, k=5: 32, 16, 8, 5).

    ``refit``/``finetune``/``compare_methods.py`` try several ``keep`` values (0.5 and 0.75) and use
    the one best on the validation split: on ResNet-20/CIFAR-10 that was 0.75 at k = 2, 3 and 5.
    """
    check_k("k", k, num_features)
    if not 0.0 < keep < 1.0:
        raise DecompValueError(f"keep={keep} must be a fraction in (0, 1)")
    sizes, size = [], num_features
    while size > k:
        size = max(k, min(size - 1, math.floor(size * keep)))
        sizes.append(size)
    return sizes or [k]


def prune_and_refit(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    features: torch.Tensor,
    labels: torch.Tensor,
    k: int,
    *,
    schedule: Sequence[int] | None = None,
    keep: float = 0.5,
    max_iter: int = 100,
    criterion: str = "pruning",
) -> DecomposedLinear:
    """Iterative contribution pruning: keep the top sets by W'_cj (mean_c(x_j) - mean(x_j)) and refit, repeatedly.

    W' are the current (refit) weights, so a feature's score accounts for the features already
    dropped. Each step folds the dropped features' mean contribution into the bias, then refits.

    Args:
        weight: (C, d) dense weight; bias: (C,).
        features: (N, d) labelled training features; labels: (N,).
        k: final set size per class.
        schedule: decreasing set sizes ending at k (default :func:`pruning_schedule` with ``keep``).
        criterion: the registered criterion that re-scores the refit weights at each step.
    """
    score = get_criterion(criterion).scores
    num_classes, num_features = weight.shape
    check_labelled(labels, num_classes, "pruning")
    schedule = list(schedule) if schedule is not None else pruning_schedule(num_features, k, keep)
    if not schedule or schedule[-1] != k or any(b >= a for a, b in zip(schedule, schedule[1:])):
        raise DecompValueError(f"schedule={schedule} must be strictly decreasing and end at k={k}")
    features, labels = features.float(), labels.long()
    overall_mean = features.double().mean(0)
    counts = torch.bincount(labels, minlength=num_classes).clamp(min=1)
    class_means = torch.zeros(num_classes, num_features, dtype=torch.float64).index_add_(
        0, labels, features.double()) / counts[:, None]
    current_w = weight.detach().float().cpu()
    current_b = torch.zeros(num_classes) if bias is None else bias.detach().float().cpu()
    mask = torch.ones(num_classes, num_features, dtype=torch.bool)
    head = None
    for size in tqdm(schedule, desc="pruning", leave=False):
        inputs = CriterionInputs(weight=current_w, class_means=class_means, overall_mean=overall_mean,
                                 features=features, labels=labels)
        scores = score(inputs).masked_fill(~mask, -math.inf)
        sets = top_k_per_class(scores, size)
        new_mask = torch.zeros_like(mask).scatter_(1, torch.tensor(sets), True)
        start_bias = corrected_bias(current_w * mask, current_b, new_mask, overall_mean.float())
        head = refit_head(DecomposedLinear(current_w, start_bias, sets), features, labels, max_iter=max_iter)
        current_w, current_b, mask = head.dense_weight().detach(), head.bias.detach(), new_mask
    return head


def check_refit_criterion(name: str):
    """The registered criterion ``name`` if :func:`decompose_head` can keep k features per class with it."""
    criterion = get_criterion(name)
    if "k" not in criterion.set_sizes:
        raise DecompValueError(f"criterion {name!r} sizes its sets by coverage; the refit keeps k per class: "
                               f"use one of {', '.join(list_criteria(set_size='k'))}.")
    return criterion


def decompose_head(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    features: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    criterion: str | None = None,
    k2: int | None = None,
    k1: int = 5,
    bias_correction: bool = True,
    refit: bool = True,
    max_iter: int = 100,
    keep: float = 0.5,
    **renamed,
) -> DecomposedLinear:
    """Select k features per class, fold the dropped ones into the bias, refit: the whole recovery on features.

    Args:
        weight: (C, d) dense weight; bias: (C,).
        features: (N, d) training features; labels: (N,) class ids (None only for ``label-free``
            without refit).
        criterion: a criterion of ``list_criteria(set_size="k")`` (see :mod:`hf_decomp.method.criteria`;
            default ``contribution``); one that ``refits`` (``pruning``) always corrects and refits, through
            :func:`prune_and_refit`.
        k2: features kept per class (default 5). k1: top-k1 of the ``histogram`` criterion.
        bias_correction: b_c += sum_{j not in I_c} W_cj mean(x_j) (see :mod:`hf_decomp.method.bias_correction`).
        refit: refit kept weights and biases with L-BFGS (see :func:`refit_head`).
        keep: fraction kept per step of the ``pruning`` schedule (see :func:`pruning_schedule`).
        renamed: the old names ``method=`` (now ``criterion=``) and ``k=`` (now ``k2=``), with one FutureWarning.
    """
    names = resolve_renamed("decompose_head", renamed, DECOMPOSE_HEAD_RENAMED, {"criterion": criterion, "k2": k2})
    method = names["criterion"] if names["criterion"] is not None else "contribution"
    k = names["k2"] if names["k2"] is not None else 5
    criterion = check_refit_criterion(method)
    num_classes, num_features = weight.shape
    check_k("k2", k, num_features)
    if labels is not None or criterion.needs_labels or refit:
        check_labelled(labels, num_classes, f"criterion {method!r}" + (" with refit" if refit else ""))
    features = features.float()
    overall_mean = features.double().mean(0)
    if criterion.refits:
        criterion.check_k(k, overall_mean)
        return prune_and_refit(weight, bias, features, labels, k, keep=keep, max_iter=max_iter, criterion=method)
    statistics = None
    if labels is not None:
        statistics = ClassStatistics(num_classes, num_features, [min(k1, num_features)])
        statistics.update(features, labels)
    inputs = CriterionInputs(
        weight=weight.detach().cpu(),
        histogram=None if statistics is None else statistics.histogram(min(k1, num_features)).cpu(),
        class_means=None if statistics is None else statistics.class_means().cpu(),
        # the statistics' mean where there are labels (as analyze), else the features' own
        overall_mean=overall_mean if statistics is None else statistics.overall_mean().cpu(),
        features=features, labels=labels, k=k)
    head = DecomposedLinear(weight.detach().float().cpu(), None if bias is None else bias.detach().float().cpu(),
                            top_k_per_class(criterion.scores(inputs), k))
    if bias_correction:
        head = bias_corrected_head(head, weight.detach().float().cpu(), overall_mean.float())
    if refit:
        head = refit_head(head, features, labels, max_iter=max_iter)
    return head
