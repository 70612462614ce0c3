"""What each explorer tab shows, as plain functions of an :class:`ExploredModel` (no Gradio here).

Figures are written as PNG files into a cache folder and returned as paths; the same inputs give the
same file, so a figure is drawn once.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..utils.markdown import markdown_table
from .source import ExploredModel
from .space_explorer import shared_features, strips_image

__all__ = ["predict", "contribution_figure", "activation_figure", "class_summary", "histogram_figure",
           "model_summary", "strips_image", "TOP"]

TOP = 5


@torch.no_grad()
def predict(explored: ExploredModel, image: Image.Image) -> dict:
    """Full and decomposed top-5 ({label: probability}), the decomposed prediction, and per feature of its
    influential set the contribution W_cj * x_j (largest magnitude first)."""
    adapter = explored.adapter
    device = adapter.weight.device
    pixels = adapter.transform(image.convert("RGB"))[None].to(device)
    features = adapter.forward_features(pixels).float()
    decomposed = explored.head.to(device)(features)[0].softmax(-1)
    full = adapter.classifier(features)[0].float().softmax(-1) if explored.has_full_weight else None
    predicted = int(decomposed.argmax())
    weight_row = explored.head.dense_weight()[predicted].to(device)
    contributions = sorted(((j, float(weight_row[j] * features[0, j])) for j in explored.index_sets[predicted]),
                           key=lambda item: -abs(item[1]))

    def top(probabilities):
        values, indices = probabilities.topk(min(TOP, probabilities.numel()))
        return {explored.label_names[int(i)]: float(v) for v, i in zip(values, indices)}

    return {"decomposed_top": top(decomposed), "full_top": None if full is None else top(full),
            "predicted": predicted, "predicted_label": explored.label_names[predicted],
            "full_predicted_label": None if full is None else explored.label_names[int(full.argmax())],
            "contributions": contributions, "bias": float(explored.head.bias[predicted])}


_PLOTTING_LOCK = threading.Lock()


def import_pyplot() -> None:
    """pyplot (Agg), before the app serves: Gradio switches matplotlib's backend around every request,
    which breaks a pyplot import under way in a handler's thread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401


def _plotting():
    """hf-decomp's plotting helpers on first use (the app starts without them), imported by one thread."""
    with _PLOTTING_LOCK:
        from ..studies.plotting import plt, save_figure
    return plt, save_figure


def warm_up() -> None:
    """Import what the figures need (studies, matplotlib helpers), e.g. in a thread once the app serves."""
    _plotting()
    with _PLOTTING_LOCK:
        from ..studies import activation_maps  # noqa: F401


def _cached_path(cache_dir: Path, kind: str, *parts) -> Path:
    digest = hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{kind}-{digest}.png"


def contribution_figure(explored: ExploredModel, prediction: dict, cache_dir: Path) -> Path:
    """Bar chart of W_cj * x_j over the predicted class's influential features."""
    path = _cached_path(cache_dir, "contributions", prediction["predicted"], prediction["contributions"])
    if path.is_file():
        return path
    plt, save_figure = _plotting()
    features = [f"#{j}" for j, _ in prediction["contributions"]]
    values = [v for _, v in prediction["contributions"]]
    fig, ax = plt.subplots(figsize=(max(3.0, 0.45 * len(values) + 1.5), 2.6))
    ax.bar(features, values, color=["#d62728" if v >= 0 else "#1f77b4" for v in values])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylabel("W_cj · x_j", fontsize=8)
    ax.set_xlabel("influential feature j", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_title(f"contributions to '{prediction['predicted_label']}' (bias {prediction['bias']:+.2f})", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def activation_figure(explored: ExploredModel, image: Image.Image, cls: int, cache_dir: Path) -> Path | None:
    """Activation maps of all / non-influential / influential channels of class ``cls`` (Table 7)."""
    adapter = explored.adapter
    if not adapter.has_feature_maps:
        return None
    path = _cached_path(cache_dir, "maps", cls, hashlib.sha256(np.asarray(image.convert("RGB")).tobytes()).hexdigest())
    if path.is_file():
        return path
    _plotting()
    from ..studies.activation_maps import compute_activation_rows, plot_activation_grid

    rows = compute_activation_rows(adapter, [(image.convert("RGB"), int(cls))], explored.index_sets)
    title = (f"class activation maps of '{explored.label_names[cls]}'" if explored.has_full_weight else
             "activation maps (exported model: W outside I_c is not stored, so the non-influential map is 0)")
    return plot_activation_grid(rows, explored.label_names, path, title, cell=2.0)


def class_summary(explored: ExploredModel, c: int) -> dict:
    """The class's influential set and, for each of its features, the other classes that also use it."""
    sets = explored.index_sets
    shared = {j: [explored.label_names[o] for o in others] for j, others in shared_features(sets, c).items()}
    return {"class": explored.label_names[c], "influential": list(sets[c]), "shared_with": shared}


def class_markdown(explored: ExploredModel, c: int) -> str:
    summary = class_summary(explored, c)
    per_class = (explored.metrics.get("evaluation", {}).get("per_class") or {})
    accuracy = per_class.get(summary["class"]) if isinstance(per_class, dict) else None
    lines = [f"### {summary['class']}", f"Influential set I_c ({len(summary['influential'])} of "
             f"{explored.adapter.num_features} features): **{' '.join(map(str, summary['influential']))}**"]
    if accuracy:
        lines.append("\nPer-class accuracy: " + ", ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                                       for k, v in accuracy.items()))
    lines.append("")
    lines.append(markdown_table(["feature", "also influential for"],
                                [[f"#{j}", ", ".join(others) or "– (only this class)"]
                                 for j, others in summary["shared_with"].items()]))
    return "\n".join(lines)


def histogram_figure(explored: ExploredModel, c: int, cache_dir: Path) -> Path | None:
    """The class's top-k1 vote histogram over all d features, influential bins red and labelled by index."""
    stats = explored.statistics
    if stats is None:
        return None
    k1 = explored.k1 if explored.k1 in stats.k1_values else stats.k1_values[0]
    path = _cached_path(cache_dir, "histogram", c, k1)
    if path.is_file():
        return path
    plt, save_figure = _plotting()
    counts = stats.histogram(k1)[c].double().cpu()
    share = (counts / counts.sum().clamp(min=1)).numpy()
    d = len(share)
    influential = list(explored.index_sets[c])
    colors = np.full(d, "#9aa5b1", dtype=object)
    colors[influential] = "#d62728"
    fig, ax = plt.subplots(figsize=(12, 4))
    ax.bar(np.arange(d), share, width=1.0, color=list(colors))
    for j in influential:
        ax.annotate(f"#{j}", (j, share[j]), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=10,
                    color="#d62728")
    ax.set_xlim(-0.5, d - 0.5)
    ax.set_ylim(0, max(float(share.max()), 1e-9) * 1.18)
    ax.set_xlabel("feature j", fontsize=11)
    ax.set_ylabel(f"share of top-{k1} votes", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.set_title(f"top-{k1} votes of '{explored.label_names[c]}' over its {int(counts.sum())} votes "
                 f"(red: the influential set I_c)", fontsize=12)
    fig.tight_layout()
    return save_figure(fig, path)


def model_summary(explored: ExploredModel) -> str:
    """rho, accuracies and the per-class decomposed accuracy as markdown."""
    m = explored.metrics
    lines = [f"### {explored.name}"]
    facts = [("full accuracy", m.get("full_accuracy"), "%"), ("decomposed accuracy", m.get("decomposed_accuracy"), "%"),
             ("rho = decomposed / full", m.get("rho"), "")]
    lines += [f"- {name}: **{value:.4g}**{unit and ' ' + unit}" for name, value, unit in facts if value is not None]
    sets = explored.index_sets
    lines.append(f"- {len(sets)} classes, d = {explored.adapter.num_features} features, mean |I_c| = "
                 f"{sum(map(len, sets)) / len(sets):.1f}")
    if not explored.has_full_weight:
        lines.append("- exported model: only W_c[I_c] is stored, so full-model predictions are not available")
    per_class = m.get("evaluation", {}).get("per_class")
    if isinstance(per_class, dict) and per_class:
        columns = sorted({k for v in per_class.values() if isinstance(v, dict) for k in v})
        rows = [[name] + [_fmt(v.get(k)) for k in columns] for name, v in per_class.items() if isinstance(v, dict)]
        lines += ["", markdown_table(["class"] + columns, rows)]
    return "\n".join(lines)


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)
