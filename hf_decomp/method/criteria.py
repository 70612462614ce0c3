"""Selection criteria, one registry: per class a score for every feature; the highest-scoring are kept.

Every criterion is one function decorated with :func:`register_criterion`. It takes
:class:`CriterionInputs` (the tensors it declared in ``needs``) and returns (C, d) float64 scores,
higher = more influential; :mod:`hf_decomp.method.selection` turns scores into index sets (top k per
class, or the fewest covering a fraction of the votes). Notation: W (C, d) classifier weight, x the
pooled features, mean_c(x_j) the mean of feature j over the samples of class c, mean(x_j) over all.

================  ==============================================  =====================================
name              score_cj                                        needs
================  ==============================================  =====================================
``histogram``     #{samples of c with j in their top-k1}          labels (Algorithm 1, paper)
``contribution``  W_cj * (mean_c(x_j) - mean(x_j))                labels
``label-free``    W_cj * mean(x_j)                                no labels
``sparse-glm``    order in which W_cj enters an L1 path           labels + the features themselves
``pruning``       W'_cj * (mean_c(x_j) - mean(x_j)), W' refit     labels + features (refits as it prunes)
``coverage``      as ``histogram``; sets hold a fraction of votes labels
================  ==============================================  =====================================

A new criterion is one decorated function (and its test)::

    @register_criterion("weight-magnitude", needs=("weight",), help="|W_cj|")
    def weight_magnitude(inputs: CriterionInputs):
        return inputs.weight.double().abs()

after which ``analyze(..., criterion="weight-magnitude")``, ``decompose_head`` and the CLI's ``choices``
know it. This module imports no torch at module level (``hf-decomp analyze --help`` lists the names
without loading it): the functions use tensor methods, and import torch inside where they must.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

from ..utils.errors import DecompValueError

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "Criterion",
    "CriterionInputs",
    "register_criterion",
    "get_criterion",
    "list_criteria",
    "contribution_scores",
    "label_free_scores",
    "sparse_glm_scores",
    "check_k_for_means",
]

# How each input is given, for the error that names a missing one.
_HOW_TO_GIVE = {
    "weight": "the classifier weight (weight=...)",
    "histogram": "the top-k1 vote histogram (labelled statistics)",
    "class_means": "per-class feature means (labelled statistics)",
    "overall_mean": "the mean feature (statistics or features)",
    "features": "the training features themselves (decompose_head / `hf-decomp refit`; streamed statistics are not enough)",
    "labels": "the training labels (a labelled split)",
    "k": "the set size k",
}
_LABELLED = frozenset({"histogram", "class_means", "labels"})
SET_SIZES = ("k", "coverage")


@dataclass(frozen=True)
class CriterionInputs:
    """What a criterion may read; each criterion declares the fields it needs.

    Args:
        weight: (C, d) classifier weight.
        histogram: (C, d) counts of samples of class c with feature j among their top-k1 (Algorithm 1).
        class_means: (C, d) mean_c(x_j); zero rows for classes without samples.
        overall_mean: (d,) mean(x_j) over all samples.
        features: (N, d) training features; labels: (N,) class ids (criteria that fit on features).
        k: the set size wanted (a stop rule for path criteria; checks of mean-based criteria).
    """

    weight: Tensor | None = None
    histogram: Tensor | None = None
    class_means: Tensor | None = None
    overall_mean: Tensor | None = None
    features: Tensor | None = None
    labels: Tensor | None = None
    k: int | None = None

    @classmethod
    def from_statistics(cls, statistics, *, weight: Tensor | None = None, k1: int | None = None,
                        k: int | None = None) -> CriterionInputs:
        """Inputs from one pass of :class:`~hf_decomp.method.statistics.ClassStatistics` (k1: which histogram;
        default the smallest gathered)."""
        return cls(
            weight=None if weight is None else weight.detach().cpu(),
            histogram=statistics.histogram(k1 if k1 is not None else statistics.k1_values[0]).cpu(),
            class_means=statistics.class_means().cpu(),
            overall_mean=statistics.overall_mean().cpu(),
            k=k,
        )


_INPUT_NAMES = tuple(f.name for f in fields(CriterionInputs))


@dataclass(frozen=True)
class Criterion:
    """A registered criterion: its scoring function and what callers must know about it.

    Attributes:
        name: the registry name (the ``--criterion`` value).
        function: ``function(inputs: CriterionInputs) -> (C, d) scores``.
        needs: the :class:`CriterionInputs` fields the function reads.
        set_sizes: how sets may be sized from its scores: ``"k"`` (top k per class) and/or
            ``"coverage"`` (fewest features holding a fraction of the scores' mass; vote counts only).
        active_only: scores are 0 for features whose mean is 0, so k must not exceed the active features.
        refits: selection alternates with refits of the head (:func:`~hf_decomp.recovery.refit.prune_and_refit`
            re-scores the refit weights with ``function`` at each step).
        help: one line for the CLI's help.
    """

    name: str
    function: Callable[[CriterionInputs], Tensor]
    needs: tuple[str, ...]
    set_sizes: tuple[str, ...] = ("k",)
    active_only: bool = False
    refits: bool = False
    help: str = ""

    @property
    def needs_labels(self) -> bool:
        """Reads class-conditional inputs, so only a labelled split can give them."""
        return bool(_LABELLED.intersection(self.needs))

    @property
    def needs_weight(self) -> bool:
        return "weight" in self.needs

    @property
    def streamable(self) -> bool:
        """Computable from streamed :class:`~hf_decomp.method.statistics.ClassStatistics` (``analyze``)."""
        return not {"features", "labels"}.intersection(self.needs) and not self.refits

    def check_k(self, k: int, overall_mean: Tensor) -> None:
        """Refuse a k this criterion cannot rank (see ``active_only``)."""
        if self.active_only:
            check_k_for_means(k, overall_mean, self.name)

    def scores(self, inputs: CriterionInputs) -> Tensor:
        """(C, d) scores; refuses missing inputs by name, and (with ``inputs.k``) a k it cannot rank."""
        missing = [name for name in self.needs if getattr(inputs, name) is None]
        if missing:
            raise DecompValueError(f"criterion {self.name!r} needs {', '.join(_HOW_TO_GIVE[m] for m in missing)}.")
        if inputs.k is not None and inputs.overall_mean is not None:
            self.check_k(inputs.k, inputs.overall_mean)
        return self.function(inputs)


_REGISTRY: dict[str, Criterion] = {}


def register_criterion(name: str, *, needs: tuple[str, ...], set_sizes: tuple[str, ...] = ("k",),
                       active_only: bool = False, refits: bool = False, help: str = ""):
    """Decorator: register ``function(inputs: CriterionInputs) -> (C, d) scores`` under ``name``.

    Example:
        >>> @register_criterion("weight-magnitude", needs=("weight",), help="|W_cj|")  # doctest: +SKIP
        ... def weight_magnitude(inputs):
        ...     return inputs.weight.double().abs()
    """
    unknown = [n for n in needs if n not in _INPUT_NAMES]
    if unknown:
        raise ValueError(f"criterion {name!r}: needs {unknown} are not CriterionInputs fields {_INPUT_NAMES}")
    bad_sizes = [s for s in set_sizes if s not in SET_SIZES]
    if bad_sizes or not set_sizes:
        raise ValueError(f"criterion {name!r}: set_sizes {set_sizes} must be a non-empty subset of {SET_SIZES}")

    def decorate(function: Callable[[CriterionInputs], Tensor]):
        if name in _REGISTRY:
            raise ValueError(f"a criterion named {name!r} is already registered ({_REGISTRY[name].function.__module__}."
                             f"{_REGISTRY[name].function.__qualname__}); choose another name")
        _REGISTRY[name] = Criterion(name, function, tuple(needs), tuple(set_sizes), active_only, refits,
                                    help or (function.__doc__ or "").strip().split("\n")[0])
        return function

    return decorate


def list_criteria(*, set_size: str | None = None, **properties) -> list[str]:
    """Registered names in registration order; only those matching the filters if given.

    Args:
        set_size: only criteria whose sets may be sized this way (``"k"`` or ``"coverage"``).
        properties: :class:`Criterion` attributes that must equal the given value, e.g.
            ``streamable=True`` (what ``analyze`` can compute) or ``needs_labels=False``.
    """
    for key in properties:
        if not hasattr(Criterion, key) and key not in {f.name for f in fields(Criterion)}:
            raise TypeError(f"list_criteria() got an unknown filter {key!r}")
    return [name for name, criterion in _REGISTRY.items()
            if (set_size is None or set_size in criterion.set_sizes)
            and all(getattr(criterion, key) == value for key, value in properties.items())]


def get_criterion(name: str) -> Criterion:
    """The registered criterion ``name``; an unknown name is refused naming close matches and all names."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise DecompValueError(f"Unknown selection criterion {name!r}.{hint} Known criteria: "
                               f"{', '.join(_REGISTRY)}.") from None


def check_k_for_means(k: int, overall_mean: Tensor, method: str) -> None:
    """Mean-based scores are 0 for features that are never active; refuse k that would keep such features."""
    active = int((overall_mean != 0).sum())
    if k > active:
        raise DecompValueError(
            f"k={k} is larger than the {active} features with a non-zero mean (of d={overall_mean.numel()}); "
            f"criterion {method!r} cannot rank the other {overall_mean.numel() - active}. Use k <= {active}."
        )


def contribution_scores(weight: Tensor, class_means: Tensor, overall_mean: Tensor) -> Tensor:
    """score_cj = W_cj * (mean_c(x_j) - mean(x_j)).

    How much feature j raises class c's logit on class-c samples beyond what it adds on an average
    sample. A feature that is large everywhere (a constant offset, absorbed by the bias) scores
    ~0, which the histogram criterion cannot see.
    """
    return weight.double() * (class_means.double() - overall_mean.double()[None, :])


def label_free_scores(weight: Tensor, feature_mean: Tensor) -> Tensor:
    """score_cj = W_cj * mean_j: a feature's expected push on class c's logit, with no labels needed."""
    return weight.double() * feature_mean.double()[None, :]


def sparse_glm_scores(
    features: Tensor,
    labels: Tensor,
    num_classes: int,
    k: int,
    *,
    alpha: float = 0.99,
    path_length: int = 40,
    steps_per_lambda: int = 30,
    lr: float = 0.5,
) -> Tensor:
    """Entry order of features on an elastic-net path (in the spirit of Wong et al. 2021).

    Fits softmax regression on standardised features with penalty
    lambda * (alpha * |W|_1 + (1 - alpha) / 2 * |W|_2^2) by proximal gradient, for lambdas from
    lambda_max (all W = 0) down geometrically. score_cj is higher the earlier W_cj became non-zero;
    the path stops once every class has k non-zero weights. Ties: larger |W_cj| first.

    Args:
        features: (N, d) training features; labels: (N,) in [0, num_classes).
        k: features wanted per class (stop criterion).

    Returns:
        (C, d) float64 scores.
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    features = features.float()
    mean, std = features.mean(0), features.std(0).clamp(min=1e-6)
    z = (features - mean) / std
    onehot = F.one_hot(labels.long(), num_classes).float()
    num_samples, num_features = z.shape
    weight = torch.zeros(num_classes, num_features)
    bias = torch.log(onehot.mean(0).clamp(min=1e-6))
    # at W = 0 the gradient is (p - y)^T z / N; its largest entry is where the first weight enters
    gradient = (torch.softmax(bias.expand(num_samples, -1), 1) - onehot).T @ z / num_samples
    lambda_max = float(gradient.abs().max()) / alpha
    entered_at = torch.full((num_classes, num_features), float(path_length))
    for step, lam in enumerate(tqdm(torch.logspace(0, -3, path_length).tolist(), desc="sparse-glm path",
                                    leave=False)):
        lam = lam * lambda_max
        for _ in range(steps_per_lambda):
            probs = torch.softmax(z @ weight.T + bias, 1)
            residual = (probs - onehot) / num_samples
            weight = weight - lr * (residual.T @ z + lam * (1 - alpha) * weight)
            weight = torch.sign(weight) * (weight.abs() - lr * lam * alpha).clamp(min=0)  # soft threshold
            bias = bias - lr * residual.sum(0)
        newly = (weight != 0) & (entered_at == path_length)
        entered_at[newly] = step
        if bool(((weight != 0).sum(1) >= k).all()):
            break
    # earlier entry -> higher score; within a step, larger standardised weight first
    return (path_length - entered_at).double() + weight.abs().double() / (weight.abs().max().double() + 1e-12)


# --- the registered criteria, in the order the CLI lists them -------------------------------------------------


@register_criterion("histogram", needs=("histogram",), set_sizes=("k", "coverage"),
                    help="Algorithm 1 (paper): how often feature j is among a class-c sample's top-k1")
def histogram(inputs: CriterionInputs) -> Tensor:
    return inputs.histogram.double()


@register_criterion("contribution", needs=("weight", "class_means", "overall_mean"), active_only=True,
                    help="W_cj * (mean_c(x_j) - mean(x_j))")
def contribution(inputs: CriterionInputs) -> Tensor:
    return contribution_scores(inputs.weight, inputs.class_means, inputs.overall_mean)


@register_criterion("label-free", needs=("weight", "overall_mean"), active_only=True,
                    help="W_cj * mean(x_j), no labels needed")
def label_free(inputs: CriterionInputs) -> Tensor:
    return label_free_scores(inputs.weight, inputs.overall_mean)


@register_criterion("sparse-glm", needs=("weight", "features", "labels", "k"),
                    help="order of entry on an elastic-net path over the features")
def sparse_glm(inputs: CriterionInputs) -> Tensor:
    return sparse_glm_scores(inputs.features, inputs.labels, inputs.weight.shape[0], inputs.k)


@register_criterion("pruning", needs=("weight", "class_means", "overall_mean"), active_only=True, refits=True,
                    help="iterative contribution pruning with refits (best, slowest)")
def pruning(inputs: CriterionInputs) -> Tensor:
    # one step: the contribution of the current (refit) weights; prune_and_refit iterates
    return contribution_scores(inputs.weight, inputs.class_means, inputs.overall_mean)


@register_criterion("coverage", needs=("histogram",), set_sizes=("coverage",),
                    help="Algorithm 1's histogram; per class the fewest features holding a fraction of the votes")
def coverage(inputs: CriterionInputs) -> Tensor:
    return inputs.histogram.double()
