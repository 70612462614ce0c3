"""A short markdown report of one analysis (tables rendered from metrics.json)."""

from __future__ import annotations

from ..method.indices import InfluentialIndices
from ..utils.markdown import markdown_table

__all__ = ["render_analysis_report"]


def render_analysis_report(metrics: dict, indices: InfluentialIndices, max_classes: int = 50) -> str:
    sel, macs, noise = metrics["selection"], metrics["multiply_adds"], metrics["noise_ablation"]
    data = metrics["data"]
    rho = metrics["rho"]
    size = f"k2 = {sel['k2']}" if sel["k2"] is not None else f"coverage = {sel['coverage']:.0%}"
    parts = [
        f"# Decomposition of `{metrics['model']['name']}`",
        "",
        f"Statistics on `{data['statistics']['dataset']}` [{data['statistics']['split']}] "
        f"({metrics['statistics']['samples']} samples), evaluation on [{data['evaluation']['split']}] "
        f"({metrics['evaluation']['eval_samples']} samples). Selection: {sel['method']}, k1 = {sel['k1']}, {size}, "
        f"d = {metrics['model']['num_features']}.",
        "",
        markdown_table(
            ["full acc. (%)", "decomposed acc. (%)", "rho", "k1/d", "mean set size",
             "final-layer MACs full", "decomposed"],
            [[metrics["full_accuracy"], metrics["decomposed_accuracy"], f"{rho:.4f}" if rho else None,
              f"{sel['k1_over_d']:.3f}", f"{sel['mean_set_size']:.1f}", macs["full"], macs["decomposed"]]],
        ),
        "",
        "## Gaussian-noise ablation (full layer)",
        "",
        markdown_table(["influential features -> noise (%)", "non-influential features -> noise (%)"],
                       [[noise["influential_to_noise_accuracy"], noise["non_influential_to_noise_accuracy"]]]),
        "",
        "## Per class",
        "",
    ]
    per_class = metrics["evaluation"]["per_class"]
    rows = []
    for name, subset in list(zip(indices.label_names, indices.sets))[:max_classes]:
        pc = per_class.get(name, {})
        rows.append([name, pc.get("full_accuracy"), pc.get("decomposed_accuracy"), " ".join(map(str, subset))])
    parts.append(markdown_table(["class", "full (%)", "decomposed (%)", "influential features"], rows))
    if indices.num_classes > max_classes:
        parts.append(f"\n({indices.num_classes - max_classes} more classes in indices.json)")
    if metrics.get("warnings"):
        parts += ["", "## Warnings", ""] + [f"- {w}" for w in metrics["warnings"]]
    return "\n".join(parts) + "\n"
