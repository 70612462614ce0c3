"""``analyze``: statistics pass -> Algorithm 1 -> decomposed head -> evaluation pass -> results folder."""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from .data import ImageSplit, default_eval_split, load_image_split
from .errors import DecompValueError
from .evaluation import EvaluationAccumulator
from .features import FeaturePass, make_accelerator
from .head import DecomposedLinear
from .indices import InfluentialIndices
from .io_utils import atomic_write_json, atomic_write_text, check_output_dir, staged_output_dir
from .models import ClassifierAdapter, load_classifier
from .report import render_analysis_report
from .selection import select_from_statistics
from .statistics import ClassStatistics

__all__ = ["analyze", "AnalysisResult", "gather_statistics", "evaluate_decomposition"]

logger = logging.getLogger(__name__)


@dataclass
class AnalysisResult:
    """What :func:`analyze` produced (also written to ``out_dir`` when one was given)."""

    indices: InfluentialIndices
    statistics: ClassStatistics
    head: DecomposedLinear
    metrics: dict
    out_dir: Path | None = None
    warnings: list[str] = field(default_factory=list)


def _check_labels(labels: torch.Tensor, num_classes: int, split: ImageSplit) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = sorted({int(v) for v in labels if not 0 <= int(v) < num_classes})[:10]
        raise DecompValueError(
            f"{split.name} [{split.split}] has labels {bad} outside the model's {num_classes} classes "
            f"[0, {num_classes}); use a dataset labelled for this model, or pick the label column with --label-column."
        )


def _check_class_count(split: ImageSplit, adapter: ClassifierAdapter) -> None:
    if split.label_names is not None and len(split.label_names) != adapter.num_classes:
        raise DecompValueError(
            f"Dataset {split.name!r} has {len(split.label_names)} classes but model {adapter.name!r} has "
            f"{adapter.num_classes}; decompose a model trained on this dataset."
        )


def gather_statistics(
    adapter: ClassifierAdapter, split: ImageSplit, k1_values, accelerator=None, batch_size: int = 256,
    num_workers: int | None = None,
) -> tuple[ClassStatistics, dict]:
    """One pass over ``split``: per-class top-k1 histograms (for every k1), counts and feature sums."""
    accelerator = accelerator or make_accelerator()
    stats = ClassStatistics(adapter.num_classes, adapter.num_features, k1_values, device=accelerator.device)
    feature_pass = FeaturePass(adapter, split, accelerator, batch_size, num_workers, f"statistics [{split.split}]")
    for features, labels in feature_pass:
        _check_labels(labels, adapter.num_classes, split)
        stats.update(features, labels)
    for tensor in stats.state_dict().values():  # statistics are sums: reduce them across processes
        tensor.copy_(accelerator.reduce(tensor, reduction="sum"))
    skipped = int(accelerator.reduce(torch.tensor(feature_pass.skipped_images, device=accelerator.device), "sum"))
    return stats.to("cpu"), {"skipped_images": skipped}


def evaluate_decomposition(
    adapter: ClassifierAdapter, head: DecomposedLinear, split: ImageSplit, accelerator=None,
    batch_size: int = 256, num_workers: int | None = None, seed: int = 0,
) -> dict:
    """One pass over ``split``: full and decomposed accuracy, per class, and the noise ablation."""
    accelerator = accelerator or make_accelerator()
    device = accelerator.device
    evaluator = EvaluationAccumulator(adapter.weight.float().to(device), adapter.bias.float().to(device),
                                      head.to(device), seed=seed + accelerator.process_index)
    feature_pass = FeaturePass(adapter, split, accelerator, batch_size, num_workers, f"evaluation [{split.split}]")
    for features, labels in feature_pass:
        _check_labels(labels, adapter.num_classes, split)
        evaluator.update(features, labels)
    for tensor in evaluator.state_dict().values():
        tensor.copy_(accelerator.reduce(tensor, reduction="sum"))
    result = evaluator.result(adapter.label_names)
    result["skipped_images"] = int(
        accelerator.reduce(torch.tensor(feature_pass.skipped_images, device=device), "sum"))
    head.to("cpu")
    return result


def _validate_k(name: str, value: int | None, num_features: int) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 1 <= value <= num_features:
        raise DecompValueError(f"{name}={value} must be between 1 and d={num_features} (the model's feature width)")


def analyze(
    model: str | ClassifierAdapter | None = None,
    dataset: str | None = None,
    *,
    k1: int = 5,
    k2: int | None = 5,
    coverage: float | None = None,
    method: str = "histogram",
    stats_split: str = "train",
    eval_split: str | None = None,
    out_dir: str | Path | None = None,
    overwrite: bool = False,
    limit: int | None = None,
    eval_limit: int | None = None,
    streaming: bool = False,
    image_column: str | None = None,
    label_column: str | None = None,
    checkpoint: str | Path | None = None,
    batch_size: int = 256,
    num_workers: int | None = None,
    seed: int = 0,
    accelerator=None,
) -> AnalysisResult:
    """Find each class's influential features and measure the decomposed classifier.

    Args:
        model: a name understood by :func:`~hf_decomp.models.load_classifier` or an adapter;
            default ``cifar10_resnet20``.
        dataset: Hub name or local folder; default the bundled CIFAR-10 (``uoft-cs/cifar10`` if absent).
        k1: features per sample that vote in the histogram. k2: features kept per class.
        coverage: instead of k2, keep per class the fewest features covering this fraction of votes.
        method: ``histogram`` (Algorithm 1) or ``label-free``.
        stats_split / eval_split: splits for the statistics and the evaluation (default test/validation).
        out_dir: where to write indices, statistics, metrics.json and report.md (atomically).
        overwrite: replace an existing results folder.
        limit / eval_limit: use a seeded random subset of the statistics / eval split (quick runs).

    Example:
        >>> result = analyze("cifar10_resnet20", k1=5, k2=5, limit=1000, eval_limit=500)  # doctest: +SKIP
        >>> round(result.metrics["rho"], 3)  # doctest: +SKIP
    """
    if out_dir is not None:
        check_output_dir(out_dir, overwrite)  # fail before hours of work, not after
    if coverage is not None:
        method, k2 = ("coverage" if method == "histogram" else method), None
    accelerator = accelerator or make_accelerator()
    adapter = model if isinstance(model, ClassifierAdapter) else load_classifier(
        model or "cifar10_resnet20", checkpoint=checkpoint)
    adapter.to(accelerator.device)
    _validate_k("k1", k1, adapter.num_features)
    _validate_k("k2", k2, adapter.num_features)

    eval_split = eval_split or default_eval_split(dataset)
    split_kwargs = dict(streaming=streaming, image_column=image_column, label_column=label_column, seed=seed)
    train = load_image_split(dataset, stats_split, limit=limit, **split_kwargs)
    test = load_image_split(dataset, eval_split, limit=eval_limit, **split_kwargs)
    _check_class_count(train, adapter)

    loader_kwargs = dict(accelerator=accelerator, batch_size=batch_size, num_workers=num_workers)
    stats, stats_info = gather_statistics(adapter, train, [k1], **loader_kwargs)
    if stats.num_samples == 0:
        raise DecompValueError(f"No readable labelled samples in {train.name} [{train.split}]; nothing to analyze.")
    sets, empty = select_from_statistics(stats, k1=k1, k2=k2, coverage=coverage, method=method,
                                         weight=adapter.weight.detach())
    warnings = []
    if empty:
        names = [adapter.label_names[c] for c in empty]
        warnings.append(f"classes without samples in the statistics split: {names}; their sets come from "
                        f"the label-free ranking W_cj * mean(x_j)")
    if stats_info["skipped_images"]:
        warnings.append(f"{stats_info['skipped_images']} unreadable images skipped in [{train.split}]")
    for message in warnings:
        logger.warning(message)

    head = DecomposedLinear(adapter.weight.detach().float().cpu(), adapter.bias.detach().float().cpu(), sets)
    evaluation = evaluate_decomposition(adapter, head, test, seed=seed, **loader_kwargs)
    if evaluation["skipped_images"]:
        warnings.append(f"{evaluation['skipped_images']} unreadable images skipped in [{test.split}]")

    d, num_classes = adapter.num_features, adapter.num_classes
    metrics = {
        "model": {"name": adapter.name, "source": adapter.source, "num_features": d, "num_classes": num_classes},
        "data": {"statistics": train.describe(), "evaluation": test.describe()},
        "selection": {"method": method, "k1": k1, "k2": k2, "coverage": coverage,
                      "k1_over_d": k1 / d, "k2_over_d": None if k2 is None else k2 / d,
                      "mean_set_size": sum(map(len, sets)) / num_classes},
        **{k: evaluation[k] for k in ("full_accuracy", "decomposed_accuracy", "rho", "noise_ablation")},
        "multiply_adds": {"full": d * num_classes, "decomposed": head.multiply_adds,
                          "ratio": head.multiply_adds / (d * num_classes)},
        "statistics": {"samples": stats.num_samples,
                       "samples_per_class": dict(zip(adapter.label_names, stats.sample_counts.tolist())),
                       "classes_without_samples": [adapter.label_names[c] for c in empty],
                       "skipped_images": stats_info["skipped_images"],
                       "nonfinite_samples": int(stats.nonfinite_samples)},
        "evaluation": {k: evaluation[k] for k in ("eval_samples", "skipped_images", "nonfinite_samples", "per_class")},
        "seed": seed,
        "warnings": warnings,
        "versions": _versions(),
    }
    indices = InfluentialIndices(
        sets=sets, num_features=d, label_names=adapter.label_names,
        metadata={"base_model": adapter.name, "dataset": train.name, "split": train.split, "k1": k1, "k2": k2,
                  "coverage": coverage, "method": method, "samples": stats.num_samples,
                  "samples_per_class": stats.sample_counts.tolist(),
                  "metrics": {k: metrics[k] for k in ("full_accuracy", "decomposed_accuracy", "rho")},
                  "eval_split": test.split},
    )
    result = AnalysisResult(indices=indices, statistics=stats, head=head, metrics=metrics, warnings=warnings)
    if out_dir is not None and accelerator.is_main_process:
        result.out_dir = write_results(result, out_dir, overwrite)
    return result


def write_results(result: AnalysisResult, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write indices, statistics, metrics and the report; the folder appears complete or not at all."""
    with staged_output_dir(out_dir, overwrite) as staging:
        result.indices.save(staging)
        save_file({k: v.contiguous() for k, v in result.statistics.state_dict().items()},
                  staging / "statistics.safetensors", metadata={"format": "hf-decomp-statistics/1"})
        atomic_write_json(staging / "metrics.json", result.metrics)
        atomic_write_text(staging / "report.md", render_analysis_report(result.metrics, result.indices))
    return Path(out_dir)


def _versions() -> dict:
    import timm
    import transformers

    from . import __version__

    return {"hf_decomp": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}
