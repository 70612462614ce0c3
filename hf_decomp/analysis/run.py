"""``analyze``: statistics pass -> Algorithm 1 -> decomposed head -> evaluation pass -> results folder."""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..data import ImageSplit, default_eval_split, load_image_split, split_names
from ..data.dali_decode import DALI, check_dali
from ..data.datasets import unreadable_split_message
from ..data.labels import align_labels
from ..layers import FINAL, resolve_k, resolve_layers
from ..method.criteria import list_criteria
from ..method.indices import InfluentialIndices
from ..method.selection import check_selection, select_from_statistics
from ..method.statistics import ClassStatistics
from ..models import ClassifierAdapter, load_classifier
from ..passes.distributed import (
    single_process_launch_warning,
)
from ..passes.evaluation import EvaluationAccumulator
from ..passes.features import FeaturePass, make_accelerator
from ..passes.resumable import check_labels, pass_checkpoint, resumable_pass
from ..passes.resume import CheckpointConfig, default_checkpoint_dir, key_digest
from ..portable.decomposed_head import DecomposedLinear
from ..utils.errors import DecompError, DecompValueError
from ..utils.files import atomic_write_json, atomic_write_text, check_output_dir, staged_output_dir
from .results import (
    AnalysisMetrics,
    BiasCorrected,
    ClassAccuracy,
    EvaluationSummary,
    LayerSummary,
    ModelInfo,
    MultiplyAdds,
    NoiseAblation,
    Processes,
    Selection,
    StatisticsSummary,
)
from .settings import AnalysisSettings
from .summary import render_analysis_report
from .top_images import TopImages

__all__ = ["analyze", "AnalysisResult", "AnalysisSettings", "AnalysisMetrics", "gather_statistics",
           "evaluate_decomposition"]

logger = logging.getLogger(__name__)


@dataclass
class AnalysisResult:
    """What :func:`analyze` produced (also written to ``out_dir`` when one was given)."""

    indices: InfluentialIndices
    statistics: ClassStatistics
    head: DecomposedLinear
    metrics: AnalysisMetrics  # reads like the metrics.json dict too: metrics["rho"] == metrics.rho
    out_dir: Path | None = None
    warnings: list[str] = field(default_factory=list)
    examples: TopImages | None = None  # per feature (and class) the most activating statistics images

    def top_images(self, feature: int, class_: int | None = None) -> list[dict]:
        """The statistics split's most activating images of ``feature`` (among class ``class_``), as row ids
        {dataset, split, image_column, key, activation}, most activating first (see :mod:`hf_decomp.analysis.top_images`)."""
        if self.examples is None:
            raise DecompValueError("this analysis kept no top images (top_images=0)")
        return self.examples.query(feature, class_)
    layer_indices: dict[str, InfluentialIndices] = field(default_factory=dict)  # --layers: name -> sets
    layer_statistics: dict[str, ClassStatistics] = field(default_factory=dict)


def _align(splits: list[ImageSplit], adapter: ClassifierAdapter, label_map) -> tuple[list[ImageSplit], dict]:
    """Renumber each split's labels into the model's class order (or refuse); what was done, per split."""
    aligned, infos = [], {}
    for split in splits:
        split, info = align_labels(split, adapter.label_names, label_map, model=f"model {adapter.name!r}")
        aligned.append(split)
        infos[split.split] = info
    return aligned, infos


def _label_warnings(label_info: dict) -> list[str]:
    warnings = [info["warning"] for info in label_info.values() if info and "warning" in info]
    return warnings + [f"labels of [{split}] renumbered to the model's class order (matched by "
                       f"{info['matched_by']})" for split, info in label_info.items() if info and info["remapped"]]


def gather_statistics(
    adapter: ClassifierAdapter, split: ImageSplit, k1_values, accelerator=None, batch_size: int = 256,
    num_workers: int | None = None, checkpoints: CheckpointConfig | None = None, run_key: dict | None = None,
    channels_last: bool = False, decode: str = "cpu", top_images: int = 0,
) -> tuple[ClassStatistics, dict]:
    """One pass over ``split``: per-class top-k1 histograms (for every k1), counts and feature sums.

    ``split``'s labels are read in the model's class order when it went through
    :func:`~hf_decomp.data.align_labels` (as :func:`analyze` does); otherwise as stored.
    With ``top_images`` = N > 0 the same pass also keeps, per feature and per (class, feature), the N
    most activating images as content keys (:class:`~hf_decomp.analysis.top_images.TopImages`), returned as
    ``info["top_images"]`` and merged over processes.

    With ``checkpoints``, the sums and the position are saved as the pass goes and, with
    ``checkpoints.resume``, a previous run's checkpoint is continued; ``run_key`` (seed, limit, ...) is
    added to what a checkpoint must match. Statistics are summed over processes at the end.
    """
    accelerator = accelerator or make_accelerator()
    stats = ClassStatistics(adapter.num_classes, adapter.num_features, k1_values, device=accelerator.device)
    top = TopImages(adapter.num_features, adapter.num_classes, top_images, device=accelerator.device,
                    source={"dataset": split.name, "split": split.split, "image_column": split.image_column}
                    ) if top_images else None
    feature_pass = FeaturePass(adapter, split, accelerator, batch_size, num_workers, f"statistics [{split.split}]",
                               channels_last=channels_last, decode=decode, with_keys=top is not None)
    checkpoint = pass_checkpoint(checkpoints, "statistics", adapter, split, accelerator, batch_size, num_workers,
                                  {"k1_values": list(stats.k1_values), **(run_key or {}),
                                   **({"top_images": top_images} if top else {})})
    tensors = stats.state_dict()
    unsummed = {f"top_images.{k}": v for k, v in top.state_dict().items()} if top else None

    def accumulate(features, labels, keys=None):
        check_labels(labels, adapter.num_classes, split)
        stats.update(features, labels)
        if top is not None:
            top.update(features, labels, keys)

    info = resumable_pass(feature_pass, checkpoint, accumulate, tensors, split, accelerator, unsummed)
    if top is not None:
        info["top_images"] = top.merge_across_processes_(accelerator).to("cpu")
    return stats.to("cpu"), info


def evaluate_decomposition(
    adapter: ClassifierAdapter, head: DecomposedLinear, split: ImageSplit, accelerator=None,
    batch_size: int = 256, num_workers: int | None = None, seed: int = 0,
    checkpoints: CheckpointConfig | None = None, run_key: dict | None = None, channels_last: bool = False,
    extra_heads: dict[str, DecomposedLinear] | None = None, decode: str = "cpu",
) -> dict:
    """One pass over ``split``: full and decomposed accuracy, per class, and the noise ablation.

    ``extra_heads`` (name -> head) are scored on the same features, reported under ``extra_heads``.

    The ablation noise of each sample is seeded by ``seed`` and the sample's content, so the numbers
    do not depend on the number of processes, the batch size or a resume.
    """
    accelerator = accelerator or make_accelerator()
    device = accelerator.device
    evaluator = EvaluationAccumulator(adapter.weight.float().to(device), adapter.bias.float().to(device),
                                      head.to(device), seed=seed,
                                      extra_heads={k: h.to(device) for k, h in (extra_heads or {}).items()})
    feature_pass = FeaturePass(adapter, split, accelerator, batch_size, num_workers, f"evaluation [{split.split}]",
                               with_keys=True, channels_last=channels_last, decode=decode)
    sets_key = key_digest({"indices": head.indices.tolist(), "valid": head.valid.tolist()})
    if extra_heads:  # their counters are part of the checkpoint
        run_key = {**(run_key or {}), "extra_heads": sorted(extra_heads)}
    checkpoint = pass_checkpoint(checkpoints, "evaluation", adapter, split, accelerator, batch_size, num_workers,
                                  {"seed": seed, "head": sets_key, **(run_key or {})})
    tensors = evaluator.state_dict()

    def accumulate(features, labels, keys):
        check_labels(labels, adapter.num_classes, split)
        evaluator.update(features, labels, keys)

    info = resumable_pass(feature_pass, checkpoint, accumulate, tensors, split, accelerator)
    if info["rows"] and info["skipped_images"] == info["rows"]:
        raise DecompValueError(unreadable_split_message(split, info["rows"]))
    result = evaluator.result(adapter.label_names)
    result["skipped_images"] = info["skipped_images"]
    result["resized_images"] = info["resized_images"]
    result["rows_per_process"] = info["rows_per_process"]
    head.to("cpu")
    for extra in (extra_heads or {}).values():
        extra.to("cpu")
    return result


def analyze(
    model: str | ClassifierAdapter | None = None,
    dataset: str | None = None,
    settings: AnalysisSettings | None = None,
    *,
    accelerator=None,
    **overrides,
) -> AnalysisResult:
    """Find each class's influential features and measure the decomposed classifier.

    Args:
        model / dataset: shortcuts for ``settings.model`` / ``settings.dataset`` (they win when given).
        settings: an :class:`~hf_decomp.analysis.settings.AnalysisSettings` (default: its defaults); every
            field is also accepted as a keyword argument, e.g. ``analyze("cifar10_resnet20", k2=8)``, which
            overrides it. The settings are validated before any data is read and recorded in ``metrics.json``.
        accelerator: an ``accelerate.Accelerator`` to run on (default: one made here, honouring
            ``settings.mixed_precision``; under ``accelerate launch`` its config decides).

    What the main settings do (see :class:`~hf_decomp.analysis.settings.AnalysisSettings` for all):
        k1: features per sample that vote in the histogram. k2: features kept per class.
        coverage: instead of k2, keep per class the fewest features covering this fraction of votes.
        criterion: a selection criterion computable from statistics (``list_criteria(streamable=True)``):
            ``histogram`` (Algorithm 1), ``contribution`` (W_cj (mean_c(x_j) - mean(x_j))) or ``label-free``.
        bias_correction: also evaluate the head with b_c += sum_{j not in I_c} W_cj mean(x_j)
            (scored in the same evaluation pass; reported as ``metrics.bias_corrected``, the headline
            numbers stay those of the uncorrected head).
        out: where to write indices, statistics, metrics.json and report.md (atomically).
        label_map: which dataset class is which model class, ``{dataset label: model label}`` (names or
            indices) or a JSON file of it; needed only where the class names do not say it. Without it,
            a dataset listing the model's classes in another order is renumbered to the model's order
            (``metrics.labels``) and one with other class names is refused.
        resume: continue from the saved state of an interrupted run with the same settings.
        save_every / save_every_minutes: save each pass's sums and position every this many batches /
            minutes (atomically; ``resume`` alone saves every 10 minutes).
        resume_dir: where that state goes; default ``.<out name>.checkpoints`` beside ``out``. It is
            removed once the results folder is written.
        decode: ``"gpu"`` decodes JPEG images on the CUDA device (nvJPEG); ``"cpu"`` (default, and the
            fallback without CUDA) decodes them in the data-loader workers.
        top_images: keep per feature (and per class and feature) this many most activating statistics
            images as row ids, in the same pass (``result.top_images(feature=j, class_=c)``); 0: none.
        layers: also find sets at these layers (module names, ``all-blocks``, ``final``; see
            :func:`hf_decomp.layers.resolve_layers`), all in the same statistics pass. k1 / k2 may then be
            fractions of each layer's width (e.g. 0.1). Saved under ``layers/`` in ``out``.

    The keyword arguments of earlier releases (``method``, ``checkpoint``, ``out_dir``, ``checkpoint_every``,
    ``checkpoint_minutes``, ``checkpoint_dir``) still work, with a FutureWarning naming the new ones.

    Returns:
        :class:`AnalysisResult`; its ``metrics`` is an :class:`~hf_decomp.analysis.results.AnalysisMetrics`.

    Example:
        >>> result = analyze("cifar10_resnet20", k1=5, k2=5, limit=1000, eval_limit=500)  # doctest: +SKIP
        >>> round(result.metrics.rho, 3)  # doctest: +SKIP
    """
    if model is not None:
        overrides["model"] = model
    if dataset is not None:
        overrides["dataset"] = dataset
    settings = AnalysisSettings.with_overrides(settings, overrides)
    return _analyze(settings, accelerator)


def _analyze(settings: AnalysisSettings, accelerator) -> AnalysisResult:
    s = settings
    model, dataset, k1, k2, coverage, method = s.model, s.dataset, s.k1, s.k2, s.coverage, s.criterion
    out_dir, checkpoint_dir, limit, eval_limit, seed = s.out, s.resume_dir, s.limit, s.eval_limit, s.seed
    channels_last, top_images, layers = s.channels_last, s.top_images, s.layers
    if out_dir is not None:  # fail before hours of work, not after; never write over an input
        check_output_dir(out_dir, s.overwrite, inputs={
            "dataset": dataset if isinstance(dataset, (str, Path)) else None, "checkpoint": s.weights,
            "checkpoint_dir": checkpoint_dir, "model": model if isinstance(model, (str, Path)) else None})
    if coverage is not None:
        method, k2 = ("coverage" if method == "histogram" else method), None
    criterion = check_selection(method, k2=k2, coverage=coverage)  # before any pass over the data
    accelerator = accelerator or make_accelerator(mixed_precision=s.mixed_precision)
    checkpoints = _checkpoint_config(out_dir, checkpoint_dir, s.resume, s.save_every, s.save_every_minutes)
    adapter = model if isinstance(model, ClassifierAdapter) else load_classifier(
        model or "cifar10_resnet20", checkpoint=s.weights)
    adapter.to(accelerator.device)
    if channels_last:
        adapter.to(memory_format=torch.channels_last)
    k1_requested, k2_requested = k1, k2  # ints, or fractions of each layer's width
    inner_layers = [name for name in resolve_layers(adapter, layers) if name != FINAL] if layers else []
    if inner_layers and criterion.needs_weight:  # inner layers have no classifier weight
        raise DecompValueError(f"--layers works with criteria computed from the statistics alone "
                               f"({', '.join(list_criteria(streamable=True, needs_weight=False))}), not {method!r}")
    k1 = resolve_k("k1", k1, adapter.num_features)
    k2 = None if k2 is None else resolve_k("k2", k2, adapter.num_features)

    if s.decode == DALI:  # refuse before any data is read (or downloaded)
        check_dali(accelerator.device)
    eval_split = s.eval_split or default_eval_split(dataset)
    split_kwargs = dict(streaming=s.streaming, image_column=s.image_column, label_column=s.label_column, seed=seed)
    train = load_image_split(dataset, s.stats_split, limit=limit, **split_kwargs)
    test = load_image_split(dataset, eval_split, limit=eval_limit, **split_kwargs)
    (train, test), label_info = _align([train, test], adapter, s.label_map)
    for split in (train, test):
        if split.num_rows == 0:
            raise DecompValueError(f"Dataset {split.name!r} split {split.split!r} is empty (0 rows); "
                                   f"available splits: {split_names(dataset)}. Choose a split with data.")
    if checkpoints is not None and not checkpoints.resume and accelerator.is_main_process:
        _clear_checkpoints(checkpoints)  # a fresh run must never be mixed with an older one's sums
    accelerator.wait_for_everyone()

    loader_kwargs = dict(accelerator=accelerator, batch_size=s.batch_size, num_workers=s.num_workers,
                         checkpoints=checkpoints, channels_last=channels_last, decode=s.decode)
    layer_stats, warnings = {}, []
    if inner_layers:  # every layer, the final one included, in the same single pass
        from ..layers import gather_layer_statistics

        if top_images:
            warnings.append("top images per feature are not kept in a --layers run; run analyze without "
                            "--layers for `hf-decomp explore`'s image strips")
            top_images = 0
        layer_stats, stats_info = gather_layer_statistics(
            adapter, train, [*inner_layers, FINAL], [k1_requested, k1], return_info=True,
            run_key={"seed": seed, "limit": limit}, **loader_kwargs)
        stats = layer_stats.pop(FINAL)
    else:
        stats, stats_info = gather_statistics(adapter, train, [k1], run_key={"seed": seed, "limit": limit},
                                              top_images=top_images, **loader_kwargs)
    if stats.num_samples == 0:
        if stats_info["nonfinite_samples"]:
            raise DecompValueError(
                f"All {stats_info['nonfinite_samples']} features of {train.name} [{train.split}] are NaN/inf: "
                f"the model produces non-finite features (a broken checkpoint, or fp16 overflow). Check the "
                f"weights (--weights) and try without --mixed-precision.")
        if stats_info["skipped_images"] and stats_info["skipped_images"] == stats_info.get("rows"):
            raise DecompValueError(unreadable_split_message(train, stats_info["rows"]))
        raise DecompValueError(f"No readable labelled samples in {train.name} [{train.split}] "
                               f"({stats_info['skipped_images']} unreadable images skipped); nothing to analyze.")
    sets, empty = select_from_statistics(stats, k1=k1, k2=k2, coverage=coverage, criterion=method,
                                         weight=adapter.weight.detach())
    if empty:
        names = [adapter.label_names[c] for c in empty]
        warnings.append(f"classes without samples in the statistics split: {names}; their sets come from "
                        f"the label-free ranking W_cj * mean(x_j)")
    if stats_info["skipped_images"]:
        warnings.append(f"{stats_info['skipped_images']} unreadable images skipped in [{train.split}]")
    if stats_info["resized_images"]:
        warnings.append(f"{stats_info['resized_images']} images of another size resized to the model's "
                        f"{adapter.input_size[1]}x{adapter.input_size[2]} in [{train.split}]")
    if stats_info["nonfinite_samples"]:
        warnings.append(f"{stats_info['nonfinite_samples']} samples with NaN/inf features ignored in [{train.split}]")
    launch_warning = single_process_launch_warning(accelerator)
    if launch_warning:
        warnings.append(launch_warning)
    for message in warnings:
        logger.warning(message)
    warnings += _label_warnings(label_info)  # align_labels has logged these

    head = DecomposedLinear(adapter.weight.detach().float().cpu(), adapter.bias.detach().float().cpu(), sets)
    extra_heads = {}
    if s.bias_correction:
        from ..method.bias_correction import bias_corrected_head

        extra_heads["bias_corrected"] = bias_corrected_head(
            head, adapter.weight.detach().float().cpu(), stats.overall_mean().float())
    evaluation = evaluate_decomposition(adapter, head, test, seed=seed, run_key={"limit": eval_limit},
                                        extra_heads=extra_heads, **loader_kwargs)
    corrected = None
    if s.bias_correction:  # scored in the same evaluation pass, no second read of the images
        corrected = BiasCorrected(**evaluation["extra_heads"]["bias_corrected"],
                                  bias=extra_heads["bias_corrected"].bias.tolist())
    if evaluation["skipped_images"]:
        warnings.append(f"{evaluation['skipped_images']} unreadable images skipped in [{test.split}]")
    if evaluation["resized_images"]:
        warnings.append(f"{evaluation['resized_images']} images of another size resized in [{test.split}]")
    if evaluation["nonfinite_samples"]:
        warnings.append(f"{evaluation['nonfinite_samples']} samples with NaN/inf features ignored in [{test.split}]")

    d, num_classes = adapter.num_features, adapter.num_classes
    metrics = AnalysisMetrics(
        model=ModelInfo(adapter.name, adapter.source, d, num_classes),
        data={"statistics": train.describe(), "evaluation": test.describe()},
        labels=label_info,
        selection=Selection(criterion=method, k1=k1, k2=k2, coverage=coverage, k1_over_d=k1 / d,
                            k2_over_d=None if k2 is None else k2 / d, mean_set_size=sum(map(len, sets)) / num_classes),
        full_accuracy=evaluation["full_accuracy"], decomposed_accuracy=evaluation["decomposed_accuracy"],
        rho=evaluation["rho"], noise_ablation=NoiseAblation(**evaluation["noise_ablation"]),
        multiply_adds=MultiplyAdds(d * num_classes, head.multiply_adds, head.multiply_adds / (d * num_classes)),
        statistics=StatisticsSummary(
            samples=stats.num_samples, samples_per_class=dict(zip(adapter.label_names, stats.sample_counts.tolist())),
            classes_without_samples=[adapter.label_names[c] for c in empty], skipped_images=stats_info["skipped_images"],
            resized_images=stats_info["resized_images"], nonfinite_samples=int(stats.nonfinite_samples)),
        evaluation=EvaluationSummary(
            eval_samples=evaluation["eval_samples"], skipped_images=evaluation["skipped_images"],
            resized_images=evaluation["resized_images"], nonfinite_samples=evaluation["nonfinite_samples"],
            per_class={name: ClassAccuracy(**c) for name, c in evaluation["per_class"].items()}),
        processes=Processes(accelerator.num_processes,  # how the work was split
                            {"statistics": stats_info["rows_per_process"], "evaluation": evaluation["rows_per_process"]}),
        seed=seed, warnings=warnings, versions=_versions(), bias_corrected=corrected, settings=settings.to_dict(),
    )
    indices = InfluentialIndices(
        sets=sets, num_features=d, label_names=adapter.label_names,
        metadata={"base_model": adapter.name, "dataset": train.name, "split": train.split, "k1": k1, "k2": k2,
                  "coverage": coverage, "method": method, "samples": stats.num_samples,
                  "samples_per_class": stats.sample_counts.tolist(),
                  "metrics": {"full_accuracy": metrics.full_accuracy, "decomposed_accuracy": metrics.decomposed_accuracy,
                              "rho": metrics.rho},
                  "eval_split": test.split},
    )
    layer_indices = {}
    if layer_stats:
        from ..layers.artifacts import layer_index_sets

        layer_indices = layer_index_sets(
            layer_stats, adapter.label_names, k1=k1_requested, k2=k2_requested if coverage is None else None,
            coverage=coverage, metadata={"base_model": adapter.name, "dataset": train.name, "split": train.split})
        metrics.layers = {name: LayerSummary(width=sets_.num_features, k1=sets_.metadata["k1"], k2=sets_.metadata["k2"],
                                             mean_set_size=sets_.multiply_adds / sets_.num_classes)
                          for name, sets_ in layer_indices.items()}
        indices.metadata.update(layer="final", width=d)
    result = AnalysisResult(indices=indices, statistics=stats, head=head, metrics=metrics, warnings=warnings,
                            layer_indices=layer_indices, layer_statistics=layer_stats,
                            examples=stats_info.get("top_images"))
    if out_dir is not None and accelerator.is_main_process:
        result.out_dir = write_results(result, out_dir, s.overwrite)
    if checkpoints is not None:  # the results are safe on disk: the checkpoints have served
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            _clear_checkpoints(checkpoints)
    return result


def _checkpoint_config(out_dir, checkpoint_dir, resume: bool, every: int | None,
                       minutes: float | None) -> CheckpointConfig | None:
    if not (resume or every or minutes):
        return None
    if checkpoint_dir is None and out_dir is None:
        raise DecompValueError("Resumable passes (resume / save_every / save_every_minutes) need a place: give "
                               "out (--out) or resume_dir (--resume-dir).")
    if every is None and minutes is None:
        minutes = 10.0
    return CheckpointConfig(checkpoint_dir or default_checkpoint_dir(out_dir), every, minutes, resume)


def _clear_checkpoints(checkpoints: CheckpointConfig) -> None:
    for path in checkpoints.directory.glob("*.rank*-of-*"):
        path.unlink(missing_ok=True)
    if checkpoints.directory.is_dir() and not any(checkpoints.directory.iterdir()):
        checkpoints.directory.rmdir()


def write_results(result: AnalysisResult, out_dir: str | Path, overwrite: bool = False) -> Path:
    """Write indices, statistics, metrics and the report; the folder appears complete or not at all."""
    with staged_output_dir(out_dir, overwrite) as staging:
        result.indices.save(staging)
        save_file({k: v.contiguous() for k, v in result.statistics.state_dict().items()},
                  staging / "statistics.safetensors", metadata={"format": "hf-decomp-statistics/1"})
        atomic_write_json(staging / "metrics.json", result.metrics.to_dict())
        if result.examples is not None:
            result.examples.save(staging)
            _write_thumbnails(staging, result)
        atomic_write_text(staging / "report.md", render_analysis_report(result.metrics, result.indices))
        if result.layer_indices:
            from ..layers.artifacts import save_layer_indices

            save_layer_indices(staging, result.layer_indices)
    return Path(out_dir)


def _write_thumbnails(staging: Path, result: AnalysisResult) -> None:
    """The explorer's Class view images (hashes the statistics split once, now rather than at each view)."""
    from .thumbnails import write_thumbnails

    try:
        write_thumbnails(staging, result.examples, result.indices.sets)
    except (DecompError, OSError) as e:  # the results stand without them; the explorer then reads the split
        logger.warning("no thumbnails of the top images (%s); `hf-decomp explore` will read them from the dataset", e)


def _versions() -> dict:
    import timm
    import transformers

    from ..utils.version import __version__

    return {"hf_decomp": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}
