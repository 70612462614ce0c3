"""Build a :class:`DecomposedForImageClassification` from analysis results and save it with its card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..analysis.results import AnalysisMetrics
from ..analysis.thumbnails import THUMBNAILS_FILE
from ..analysis.top_images import TOP_IMAGES_FILE
from ..method.indices import INDICES_JSON, InfluentialIndices
from ..portable.decomposed_head import choose_kernel
from ..portable.modeling_decomp import DecomposedForImageClassification
from ..utils.errors import DecompFileError, DecompValueError
from ..utils.files import finish_replace_before_reading, staged_output_dir
from .model_card import card_is_generated, public_name, write_model_card

# Small: the top images' content keys and a thumbnail of each one the Class view shows (about 1 MB for CIFAR).
_TOP_IMAGE_FILES = (TOP_IMAGES_FILE, TOP_IMAGES_FILE.replace(".safetensors", ".json"), THUMBNAILS_FILE)

__all__ = ["build_decomposed_model", "save_decomposed_model", "write_extras", "indices_from_config",
           "summarize_metrics", "load_run"]


def summarize_metrics(metadata: dict, metrics: AnalysisMetrics | dict | None = None) -> dict:
    """The few numbers a model config carries: accuracies, rho, splits and sample counts, noise ablation.

    Args:
        metadata: ``InfluentialIndices.metadata`` (written by analyze).
        metrics: the same analyze run's metrics (``AnalysisMetrics`` or its ``metrics.json`` dict), when available.
    """
    measured = dict(metadata.get("metrics") or {})
    summary = {
        "full_accuracy": measured.get("full_accuracy"),
        "decomposed_accuracy": measured.get("decomposed_accuracy"),
        "rho": measured.get("rho"),
        "statistics_split": metadata.get("split"),
        "statistics_samples": metadata.get("samples"),
        "eval_split": metadata.get("eval_split"),
    }
    if metrics:
        m = metrics if isinstance(metrics, AnalysisMetrics) else AnalysisMetrics.from_dict(metrics)
        evaluation = m.data.get("evaluation", {})
        summary.update(
            full_accuracy=m.full_accuracy, decomposed_accuracy=m.decomposed_accuracy, rho=m.rho,
            eval_split=evaluation.get("split", summary["eval_split"]), eval_dataset=public_name(evaluation.get("dataset")),
            eval_samples=m.evaluation.eval_samples, noise_ablation=m.noise_ablation.to_dict(),
            multiply_adds=m.multiply_adds.to_dict(),
        )
    return {k: v for k, v in summary.items() if v is not None}


def build_decomposed_model(adapter, indices: InfluentialIndices, metrics: dict | None = None):
    """A :class:`DecomposedForImageClassification` from a classifier and its influential indices.

    Args:
        adapter: the ``ClassifierAdapter`` the indices were computed for.
        indices: the per-class index sets (``analyze(...).indices`` or ``InfluentialIndices.load``).
        metrics: the analyze run's ``metrics.json`` (optional; adds eval details to config and card).
    """
    if indices.num_features != adapter.num_features or indices.num_classes != adapter.num_classes:
        raise DecompValueError(
            f"The indices are for d={indices.num_features} features and {indices.num_classes} classes, but model "
            f"{adapter.name!r} has d={adapter.num_features} and {adapter.num_classes} classes; export with the "
            f"model the indices were computed for (--model)."
        )
    meta = indices.metadata
    kernel = choose_kernel(indices.num_classes, indices.num_features, max(len(s) for s in indices.sets))
    try:
        # Local paths (where the model or data sat on this machine) are not published in config.json.
        return DecomposedForImageClassification.from_classifier(
            adapter, indices, dataset=public_name(meta.get("dataset")),
            base_model=public_name(meta.get("base_model") or adapter.name),
            metrics=summarize_metrics(meta, metrics), head_kernel=kernel,
        )
    except ValueError as e:
        raise DecompValueError(str(e)) from e


def indices_from_config(config) -> InfluentialIndices:
    """The index sets of a decomposed model as the standalone indices artifact."""
    metadata = {"base_model": config.base_model, "dataset": config.dataset, "k1": config.k1, "k2": config.k2,
                "coverage": config.coverage, "method": config.selection_method}
    metrics = config.metrics or {}
    metadata.update({"split": metrics.get("statistics_split"), "samples": metrics.get("statistics_samples"),
                     "eval_split": metrics.get("eval_split"),
                     "metrics": {k: metrics.get(k) for k in ("full_accuracy", "decomposed_accuracy", "rho")}})
    return InfluentialIndices(sets=config.index_sets, num_features=int(config.num_features),
                              label_names=[config.id2label[c] for c in range(config.num_labels)], metadata=metadata)


def write_extras(model, directory: str | Path) -> None:
    """What hf-decomp adds to ``model.save_pretrained(directory)``: the indices files and the model card
    (a hand-written README.md is kept)."""
    indices_from_config(model.config).save(directory)
    write_model_card(directory, model.config)


def load_run(run_dir: str | Path) -> tuple[InfluentialIndices, AnalysisMetrics | None]:
    """The indices and (if present) the typed metrics.json of an ``hf-decomp analyze`` results folder."""
    run_dir = Path(run_dir)
    finish_replace_before_reading(run_dir)  # a results folder a killed run left mid-replace: finish it first
    if not (run_dir / INDICES_JSON).is_file():
        raise DecompFileError(
            f"{str(run_dir)!r} holds no {INDICES_JSON}; give the --out folder of `hf-decomp analyze`."
        )
    indices = InfluentialIndices.load(run_dir)
    metrics_file = run_dir / "metrics.json"
    metrics = AnalysisMetrics.from_dict(json.loads(metrics_file.read_text()), where=str(metrics_file)) \
        if metrics_file.is_file() else None
    return indices, metrics


def save_decomposed_model(
    model, out_dir: str | Path, *, overwrite: bool = False, overwrite_card: bool = False,
    figures_from: str | Path | None = None, repo_id: str | None = None,
) -> Path:
    """Save a decomposed model folder atomically: weights, config, code, preprocessor config, indices, card.

    Args:
        model: a :class:`DecomposedForImageClassification`.
        out_dir: the folder to write (refused when it holds files, unless ``overwrite``).
        overwrite_card: replace a hand-written README.md already in ``out_dir``.
        figures_from: a folder whose ``*.png`` figures (histograms, overlaps) go into ``figures/``, and whose
            top images with their thumbnails (an analyze results folder's) are copied for the explorer.
        repo_id: the Hub repo the card's how-to-load snippet names.
    """
    out_dir = Path(out_dir)
    old_readme = out_dir / "README.md"
    keep_readme = (old_readme.read_text(encoding="utf-8") if old_readme.is_file() and not overwrite_card
                   and not card_is_generated(old_readme) else None)
    with staged_output_dir(out_dir, overwrite, inputs={"--indices": figures_from}) as staging:
        model.save_pretrained(staging)
        indices_from_config(model.config).save(staging)
        pngs = sorted(Path(figures_from).glob("*.png")) if figures_from else []
        if pngs:
            (staging / "figures").mkdir()
            for png in pngs:
                shutil.copy2(png, staging / "figures" / png.name)
        for name in _TOP_IMAGE_FILES:  # the explorer's (and the Space's) Class view images
            if figures_from and (Path(figures_from) / name).is_file():
                shutil.copy2(Path(figures_from) / name, staging / name)
        if keep_readme is not None:
            (staging / "README.md").write_text(keep_readme, encoding="utf-8")
        else:
            write_model_card(staging, model.config, overwrite_card=True, repo_id=repo_id)
    return out_dir
