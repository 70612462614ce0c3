"""Class-Specific Gates (Liang et al., 2020) as a baseline for Algorithm 1 (paper Table 1).

CSG learns a gate matrix G (d x C) in [0, 1]: during training, the last feature maps of a class-c
sample are multiplied by column G[:, c]. With the backbone frozen, gating the maps channel-wise
before global average pooling equals gating the pooled features (the mean is linear), so here CSG
trains on the cached pooled features: the linear layer (from the pretrained one) and G, with

- alternating steps: a standard step (CE of W x + b) and a gated step (CE of W (x * G[:, y]) + b
  plus the sparsity loss ``relu(|G|_1 - 0.2 * numel(G))`` weighted 1e-3);
- after every step G is clamped to [0, 1] and each feature's row is divided by its max over classes.

At test time labels are unknown, so CSG's accuracy is that of its (re-trained) linear layer without
gates. Its top-k gates per class give index sets, compared with Algorithm 1 at the same k on the
original layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..method.selection import label_free_scores, top_k_per_class
from ..passes.evaluation import accuracy_percent
from ..utils.checks import check_k_values
from ..utils.errors import DecompValueError
from ..utils.markdown import markdown_table
from .common import ModelFeatures, StudyResult, evaluate_sets
from .histograms import gather_class_statistics

__all__ = ["CSGConfig", "CSGResult", "normalize_gates_", "sparsity_loss", "train_csg", "csg_index_sets", "csg_study"]


@dataclass
class CSGConfig:
    """Training settings (defaults: a few epochs over 50k pooled features take seconds on a CPU)."""

    epochs: int = 5
    batch_size: int = 256
    lr: float = 0.01
    gate_lr: float = 1.0  # 0.01 leaves every gate near 1 after row normalisation; 1.0 reaches the 0.2 budget
    momentum: float = 0.9
    sparsity_weight: float = 1e-3
    sparsity_target: float = 0.2
    init: float = 0.5
    seed: int = 0


@dataclass
class CSGResult:
    gates: torch.Tensor  # (d, C)
    weight: torch.Tensor  # (C, d) linear layer after CSG training
    bias: torch.Tensor  # (C,)
    history: list[dict]


@torch.no_grad()
def normalize_gates_(gates: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1], then divide each feature's row by its max over classes (rows of zeros stay zero)."""
    gates.clamp_(0.0, 1.0)
    gates.div_(gates.max(dim=1, keepdim=True).values.clamp(min=1e-12))
    return gates


def sparsity_loss(gates: torch.Tensor, target: float = 0.2) -> torch.Tensor:
    """relu(|G|_1 - target * numel(G)): only gate mass above the budget is penalised."""
    return F.relu(gates.abs().sum() - target * gates.numel())


def train_csg(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
              config: CSGConfig | None = None, progress: bool = True) -> CSGResult:
    """Train the linear layer and the gates on pooled features (alternating standard / gated steps)."""
    config = config or CSGConfig()
    if features.shape[0] == 0:
        raise DecompValueError("CSG needs training features; the statistics split is empty")
    threads = torch.get_num_threads()
    # (batch x d) @ (d x C) steps are tiny: extra threads only add overhead (40x slower on a busy 2-core box)
    torch.set_num_threads(1)
    try:
        return _train_csg(features, labels, weight, bias, config, progress)
    finally:
        torch.set_num_threads(threads)


def _train_csg(features, labels, weight, bias, config: CSGConfig, progress: bool) -> CSGResult:
    torch.manual_seed(config.seed)
    num_classes, d = weight.shape
    linear = torch.nn.Linear(d, num_classes)
    with torch.no_grad():
        linear.weight.copy_(weight)
        linear.bias.copy_(bias)
    gates = torch.nn.Parameter(torch.full((d, num_classes), config.init))
    optimizer = torch.optim.SGD([{"params": linear.parameters(), "lr": config.lr},
                                 {"params": [gates], "lr": config.gate_lr}], momentum=config.momentum)
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    step = 0
    for epoch in tqdm(range(config.epochs), desc="CSG", disable=not progress):
        order = torch.randperm(features.shape[0], generator=generator)
        totals = {"standard_loss": 0.0, "gated_loss": 0.0, "batches": 0}
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            x, y = features[batch], labels[batch]
            gated = step % 2 == 1  # alternate: standard step, gated step
            if gated:
                logits = linear(x * gates.T[y])
                loss = F.cross_entropy(logits, y) + config.sparsity_weight * sparsity_loss(gates, config.sparsity_target)
            else:
                loss = F.cross_entropy(linear(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            normalize_gates_(gates.data)
            totals["gated_loss" if gated else "standard_loss"] += float(loss.detach())
            totals["batches"] += 1
            step += 1
        half = max(totals["batches"] / 2, 1)
        history.append({"epoch": epoch, "standard_loss": totals["standard_loss"] / half,
                        "gated_loss": totals["gated_loss"] / half,
                        "gate_l1_fraction": float(gates.detach().abs().mean())})
    return CSGResult(gates.detach().clone(), linear.weight.detach().clone(), linear.bias.detach().clone(), history)


def csg_index_sets(gates: torch.Tensor, k: int, tie_break: torch.Tensor | None = None) -> tuple[list[list[int]], int]:
    """Per class, the k features with the largest gates; equal gates are ordered by ``tie_break`` (C, d).

    Trained gates are close to binary (many exactly 1 or 0), so ties are common; without a tie-break
    the lowest feature indices would win. Returns (index sets, number of classes whose k-th and
    (k+1)-th gates tie).
    """
    scores = gates.T.double()  # (C, d)
    order = torch.arange(scores.shape[1]).expand_as(scores)
    if tie_break is not None:
        order = torch.sort(tie_break.double(), dim=1, descending=True, stable=True).indices
    second = torch.sort(scores.gather(1, order), dim=1, descending=True, stable=True).indices
    ranked = order.gather(1, second)
    sorted_gates = scores.gather(1, ranked)
    ties = int((sorted_gates[:, k - 1] == sorted_gates[:, k]).sum()) if k < scores.shape[1] else 0
    return ranked[:, :k].tolist(), ties


def _accuracy(weight, bias, features, labels) -> float:
    with torch.no_grad():
        return accuracy_percent(F.linear(features, weight, bias), labels)


def csg_study(mf: ModelFeatures, *, k_values=(5,), k1: int = 5, config: CSGConfig | None = None,
              progress: bool = True, stats=None) -> StudyResult:
    """STD vs CSG accuracy (Table 1) and rho of CSG top-k gate sets vs Algorithm 1 at the same k."""
    config = config or CSGConfig()
    k_values = check_k_values("k", k_values, mf.num_features)
    trained = train_csg(mf.train_features, mf.train_labels, mf.weight, mf.bias, config, progress)
    std_acc = _accuracy(mf.weight, mf.bias, mf.test_features, mf.test_labels)
    csg_acc = _accuracy(trained.weight, trained.bias, mf.test_features, mf.test_labels)
    with torch.no_grad():
        gated_logits = F.linear(mf.test_features * trained.gates.T[mf.test_labels], trained.weight, trained.bias)
    gated_acc = accuracy_percent(gated_logits, mf.test_labels)
    if stats is None or k1 not in stats.k1_values:
        stats = gather_class_statistics(mf, [k1])
    tie_break = label_free_scores(mf.weight, stats.overall_mean())
    comparisons = []
    for k in k_values:
        csg_sets, ties = csg_index_sets(trained.gates, k, tie_break)
        alg_sets = top_k_per_class(stats.histogram(k1).cpu(), k)
        csg_eval, alg_eval = evaluate_sets(mf, csg_sets), evaluate_sets(mf, alg_sets)
        overlap = sum(len(set(a) & set(b)) for a, b in zip(csg_sets, alg_sets)) / sum(map(len, alg_sets))
        comparisons.append({"k": k, "csg_rho": csg_eval["rho"], "algorithm1_rho": alg_eval["rho"],
                            "csg_decomposed_accuracy": csg_eval["decomposed_accuracy"],
                            "algorithm1_decomposed_accuracy": alg_eval["decomposed_accuracy"],
                            "shared_indices_fraction": overlap, "classes_with_tied_kth_gate": ties,
                            "csg_sets": csg_sets})
    gates = trained.gates
    data = {"std_accuracy": std_acc, "csg_accuracy": csg_acc, "csg_gated_accuracy_with_true_label": gated_acc,
            "gate_mean": float(gates.mean()), "gates_above_half_fraction": float((gates > 0.5).double().mean()),
            "k1": k1, "comparisons": comparisons, "config": vars(config), "history": trained.history}
    table1 = markdown_table(["model", "STD acc. (%)", "CSG acc. (%)", "CSG gated with true label (%)"],
                            [[mf.name, std_acc, csg_acc, gated_acc]])
    table_k = markdown_table(
        ["k", "rho CSG top-k", "rho Algorithm 1 (k1 = %d, k2 = k)" % k1, "decomposed acc. CSG (%)",
         "decomposed acc. Algorithm 1 (%)", "shared indices"],
        [[c["k"], f"{c['csg_rho']:.4f}", f"{c['algorithm1_rho']:.4f}", c["csg_decomposed_accuracy"],
          c["algorithm1_decomposed_accuracy"], f"{c['shared_indices_fraction']:.0%}"] for c in comparisons])
    markdown = (
        "Liang et al.'s Class-Specific Gates trained with the backbone frozen: gating the last feature maps "
        "channel-wise before average pooling equals gating the pooled features, so G (d x C) and the linear "
        f"layer are trained on the cached pooled features of the statistics split ({mf.train_features.shape[0]} "
        f"samples, {config.epochs} epochs, alternating standard / gated steps, sparsity 1e-3 * relu(|G|_1 - 0.2 "
        f"numel(G))). CSG accuracy is its linear layer without gates (labels are unknown at test time).\n\n"
        + table1 + "\n\nDecomposed heads on the original layer, built from CSG's k largest gates per class vs "
        "Algorithm 1's k most frequent top-k1 indices (equal gates ordered by W_cj * mean_j of the features):\n\n"
        + table_k
        + f"\n\nAfter training, mean gate {data['gate_mean']:.3f}; {data['gates_above_half_fraction']:.1%} of gates "
          f"exceed 0.5."
    )
    return StudyResult("csg", "Class-Specific Gates baseline (Table 1)", markdown, data, [])
