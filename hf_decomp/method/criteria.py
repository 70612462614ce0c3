"""Selection criteria: per class, a score for every feature; the k highest-scoring features are kept.

Every criterion is a pure tensor function of the one-pass statistics (:class:`ClassStatistics`) and
the classifier weight, except ``sparse-glm``, which needs the cached features themselves. Higher
score = more influential. Notation: W (C, d) classifier weight, x the pooled features,
mean_c(x_j) the mean of feature j over the samples of class c, mean(x_j) over all samples.

===============  =============================================  ============================
name             score_cj                                       needs
===============  =============================================  ============================
``histogram``    #{samples of c with j in their top-k1}          labels (Algorithm 1, paper)
``contribution`` W_cj * (mean_c(x_j) - mean(x_j))                labels
``label-free``   W_cj * mean(x_j)                                no labels
``sparse-glm``   order in which W_cj enters an L1 path           labels + features
===============  =============================================  ============================
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..utils.errors import DecompValueError
from .selection import label_free_scores  # score_cj = W_cj * mean(x_j); one definition, re-exported

__all__ = [
    "CRITERIA",
    "histogram_scores",
    "contribution_scores",
    "label_free_scores",
    "sparse_glm_scores",
    "criterion_scores",
    "check_criterion",
    "check_k_for_means",
]

# Criteria computable from ClassStatistics alone; "sparse-glm" needs the features (see sparse_glm_scores).
STATISTICS_CRITERIA = ("histogram", "contribution", "label-free")
CRITERIA = STATISTICS_CRITERIA + ("sparse-glm",)


def check_criterion(name: str, allowed=CRITERIA) -> str:
    """Return ``name`` if it is a known criterion, else raise listing the known ones."""
    if name not in allowed:
        raise DecompValueError(f"Unknown selection method {name!r}; known methods: {', '.join(allowed)}.")
    return name


def histogram_scores(histogram: torch.Tensor) -> torch.Tensor:
    """Algorithm 1: score_cj = how often feature j was among the top-k1 features of a class-c sample."""
    return histogram.double()


def contribution_scores(weight: torch.Tensor, class_means: torch.Tensor, overall_mean: torch.Tensor) -> torch.Tensor:
    """score_cj = W_cj * (mean_c(x_j) - mean(x_j)).

    How much feature j raises class c's logit on class-c samples beyond what it adds on an average
    sample. A feature that is large everywhere (a constant offset, absorbed by the bias) scores
    ~0, which the histogram criterion cannot see.
    """
    return weight.double() * (class_means.double() - overall_mean.double()[None, :])


def check_k_for_means(k: int, overall_mean: torch.Tensor, method: str) -> None:
    """Mean-based scores are 0 for features that are never active; refuse k that would keep such features."""
    active = int((overall_mean != 0).sum())
    if k > active:
        raise DecompValueError(
            f"k={k} is larger than the {active} features with a non-zero mean (of d={overall_mean.numel()}); "
            f"method {method!r} cannot rank the other {overall_mean.numel() - active}. Use k <= {active}."
        )


def criterion_scores(method: str, statistics, weight: torch.Tensor | None = None, k1: int | None = None) -> torch.Tensor:
    """(C, d) scores of a statistics-based criterion (``histogram``, ``contribution``, ``label-free``).

    Args:
        method: the criterion's name.
        statistics: a :class:`~hf_decomp.method.statistics.ClassStatistics`.
        weight: (C, d) classifier weight (``contribution`` and ``label-free``).
        k1: which histogram (``histogram``); default the smallest gathered.
    """
    check_criterion(method, STATISTICS_CRITERIA)
    if method == "histogram":
        return histogram_scores(statistics.histogram(k1 if k1 is not None else statistics.k1_values[0]).cpu())
    if weight is None:
        raise DecompValueError(f"method={method!r} needs the classifier weight (weight=...)")
    weight = weight.detach().cpu()
    if method == "label-free":
        return label_free_scores(weight, statistics.overall_mean().cpu())
    return contribution_scores(weight, statistics.class_means().cpu(), statistics.overall_mean().cpu())


def sparse_glm_scores(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    k: int,
    *,
    alpha: float = 0.99,
    path_length: int = 40,
    steps_per_lambda: int = 30,
    lr: float = 0.5,
) -> torch.Tensor:
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
