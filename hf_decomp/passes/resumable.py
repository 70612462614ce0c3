"""One resumable, multi-process pass over a split: restore, run, checkpoint, sum, check exactly-once."""

from __future__ import annotations

import logging

import torch

from ..data import ImageSplit
from ..data.labels import null_label_rows
from ..models import ClassifierAdapter
from ..utils.errors import DecompValueError
from .distributed import check_exact_once, per_process, raise_if_any_failed, reduce_count, reduce_sum_
from .feature_cache import feature_cache_key
from .features import FeaturePass
from .resume import CheckpointConfig, PassCheckpoint

__all__ = ["check_labels", "finish_pass", "pass_checkpoint", "pass_counters", "resumable_pass"]

logger = logging.getLogger(__name__)


def check_labels(labels: torch.Tensor, num_classes: int, split: ImageSplit) -> None:
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        bad = sorted({int(v) for v in labels if not 0 <= int(v) < num_classes})[:10]
        nulls = null_label_rows(split.dataset, split.label_column) if -1 in bad else None
        if nulls is not None:  # read as -1 ("no label"), but the cells are empty: say so, and where
            count, rows = nulls
            where = ", ".join(map(str, rows)) + (", ..." if count > len(rows) else "")
            raise DecompValueError(
                f"{split.name} [{split.split}]: label column {split.label_column!r} has {count} null row(s) (rows "
                f"{where}); drop or fill them (e.g. dataset.filter(lambda r: r[{split.label_column!r}] is not None)), "
                f"or pick the label column with --label-column."
            )
        raise DecompValueError(
            f"{split.name} [{split.split}] has labels {bad} outside the model's {num_classes} classes "
            f"[0, {num_classes}); use a dataset labelled for this model, or pick the label column with --label-column."
            + (" Label -1 marks unlabeled rows (e.g. imagenet-1k's test split): use a labelled split such as "
               "validation." if -1 in bad else "")
        )


def pass_checkpoint(checkpoints: CheckpointConfig | None, name: str, adapter: ClassifierAdapter, split: ImageSplit,
                     accelerator, batch_size: int, num_workers: int | None, extra: dict) -> PassCheckpoint | None:
    if checkpoints is None:
        return None
    key = feature_cache_key(adapter, split, {"batch_size": batch_size, **extra})
    if split.streaming:  # the order of a streamed split depends on how many workers read its shards
        key["num_workers"] = num_workers
    return checkpoints.for_pass(name, key, accelerator.process_index, accelerator.num_processes)


def _run_pass(feature_pass: FeaturePass, checkpoint: PassCheckpoint | None, accumulate, tensors) -> BaseException | None:
    """Feed every batch to ``accumulate``, checkpointing ``tensors`` (the sums) and the position when due.

    Returns the error instead of raising it, so that all processes can fail together.
    """
    try:
        for batch in feature_pass:
            accumulate(*batch)
            if checkpoint is not None and checkpoint.due(feature_pass.position):
                checkpoint.save(tensors, feature_pass.position, **pass_counters(feature_pass))
        if checkpoint is not None:
            checkpoint.save(tensors, feature_pass.position, complete=True, **pass_counters(feature_pass))
    except Exception as e:  # noqa: BLE001 - re-raised by raise_if_any_failed on every process
        return e
    return None


def pass_counters(feature_pass: FeaturePass) -> dict:
    return {"seen_images": feature_pass.seen_images, "skipped_images": feature_pass.skipped_images,
            "resized_images": feature_pass.resized_images}


def _restore(checkpoint: PassCheckpoint | None, feature_pass: FeaturePass, tensors: dict) -> bool:
    """Load a checkpoint into ``tensors`` and ``feature_pass``; True when that pass already completed."""
    loaded = checkpoint.load() if checkpoint is not None else None
    if loaded is None:
        return False
    saved, state = loaded
    missing = set(tensors) ^ set(saved)
    if missing:
        raise DecompValueError(f"Checkpoint {checkpoint.path} lacks or adds tensors {sorted(missing)}; "
                               f"delete it or drop --resume.")
    wrong = [f"{name} {tuple(saved[name].shape)} {saved[name].dtype} (expected {tuple(t.shape)} {t.dtype})"
             for name, t in tensors.items() if saved[name].shape != t.shape or saved[name].dtype != t.dtype]
    if wrong:
        raise DecompValueError(f"Checkpoint {checkpoint.path} holds tensors of another shape or type: "
                               f"{'; '.join(wrong[:3])}; delete it or drop --resume.")
    for name, tensor in tensors.items():
        tensor.copy_(saved[name])
    feature_pass.start_batch = int(state["position"])
    for name, value in pass_counters(feature_pass).items():
        setattr(feature_pass, name, int(state.get(name, value)))
    logger.info("resuming %s from batch %d (%s)", checkpoint.name, feature_pass.start_batch, checkpoint.path)
    return bool(state["complete"])


def resumable_pass(feature_pass: FeaturePass, checkpoint: PassCheckpoint | None, accumulate, tensors: dict,
                    split: ImageSplit, accelerator, unsummed: dict | None = None) -> dict:
    """Restore, run and checkpoint one pass, then sum ``tensors`` over processes (all fail together).

    ``unsummed`` tensors are checkpointed too but not summed (the caller merges them, e.g. top-N lists).
    """
    error = None
    saved = {**tensors, **(unsummed or {})}
    try:
        complete = _restore(checkpoint, feature_pass, saved)
    except Exception as e:  # noqa: BLE001 - re-raised by raise_if_any_failed on every process
        error, complete = e, True
    if not complete:
        error = _run_pass(feature_pass, checkpoint, accumulate, saved)
    raise_if_any_failed(error, accelerator)
    reduce_sum_(tensors, accelerator)  # the tensors are sums: add the processes' shares
    return finish_pass(feature_pass, split, accelerator, int(tensors["nonfinite_samples"]))


def finish_pass(feature_pass: FeaturePass, split: ImageSplit, accelerator, nonfinite: int) -> dict:
    """Counters summed over processes, after checking each row was read exactly once."""
    totals = {name: reduce_count(value, accelerator) for name, value in pass_counters(feature_pass).items()}
    check_exact_once(split, totals["seen_images"] + totals["skipped_images"])
    totals["rows_per_process"] = per_process(feature_pass.seen_images + feature_pass.skipped_images, accelerator)
    totals["rows"] = totals["seen_images"] + totals["skipped_images"]
    totals["nonfinite_samples"] = nonfinite
    return totals
