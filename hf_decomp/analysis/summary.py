"""A short markdown report of one analysis (tables rendered from metrics.json)."""

from __future__ import annotations

from ..method.indices import InfluentialIndices
from ..utils.markdown import markdown_table
from .results import AnalysisMetrics

__all__ = ["render_analysis_report"]


def render_analysis_report(metrics: AnalysisMetrics | dict, indices: InfluentialIndices, max_classes: int = 50) -> str:
    """report.md of a results folder; ``metrics`` typed or as read from metrics.json."""
    m = metrics if isinstance(metrics, AnalysisMetrics) else AnalysisMetrics.from_dict(metrics)
    sel, macs, noise, data, rho = m.selection, m.multiply_adds, m.noise_ablation, m.data, m.rho
    size = f"k2 = {sel.k2}" if sel.k2 is not None else f"coverage = {sel.coverage:.0%}"
    parts = [
        f"# Decomposition of `{m.model.name}`",
        "",
        f"Statistics on `{data['statistics']['dataset']}` [{data['statistics']['split']}] "
        f"({m.statistics.samples} samples), evaluation on [{data['evaluation']['split']}] "
        f"({m.evaluation.eval_samples} samples). Selection: {sel.criterion}, k1 = {sel.k1}, {size}, "
        f"d = {m.model.num_features}.",
        "",
        markdown_table(
            ["full acc. (%)", "decomposed acc. (%)", "rho", "k1/d", "mean set size",
             "final-layer MACs full", "decomposed"],
            [[m.full_accuracy, m.decomposed_accuracy, f"{rho:.4f}" if rho else None,
              f"{sel.k1_over_d:.3f}", f"{sel.mean_set_size:.1f}", macs.full, macs.decomposed]],
        ),
        "",
        "## Gaussian-noise ablation (full layer)",
        "",
        markdown_table(["influential features -> noise (%)", "non-influential features -> noise (%)"],
                       [[noise.influential_to_noise_accuracy, noise.non_influential_to_noise_accuracy]]),
        "",
        "## Per class",
        "",
    ]
    rows = []
    for name, subset in list(zip(indices.label_names, indices.sets))[:max_classes]:
        pc = m.evaluation.per_class.get(name)
        rows.append([name, pc and pc.full_accuracy, pc and pc.decomposed_accuracy, " ".join(map(str, subset))])
    parts.append(markdown_table(["class", "full (%)", "decomposed (%)", "influential features"], rows))
    if indices.num_classes > max_classes:
        parts.append(f"\n({indices.num_classes - max_classes} more classes in indices.json)")
    if m.warnings:
        parts += ["", "## Warnings", ""] + [f"- {w}" for w in m.warnings]
    return "\n".join(parts) + "\n"
