"""Labels we can trust: a label column of class indices, read exactly, in the model's class order.

* :func:`check_label_column` refuses, when the split is loaded, a label column that holds no class
  indices (text, images, fractional or NaN floats), naming the column, its type and the fix.
* :func:`label_index` reads one cell in the data-loader workers; a value that is no class index
  becomes :data:`INVALID_LABEL`, which :func:`to_model_labels` turns into that same error in the
  main process (streamed data can only be checked as it is read).
* :func:`align_labels` matches the dataset's class names with the model's
  (:mod:`~hf_decomp.data.label_names`) and :func:`to_model_labels` renumbers each batch's labels
  into the model's order.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re

import datasets
import numpy as np
import pyarrow.compute as pc
import torch

from ..utils.errors import DecompValueError
from .label_names import (
    LabelMatch,
    first_synonym,
    is_placeholder_names,
    match_label_names,
    order_from_label_map,
    read_label_map,
)

__all__ = ["INVALID_LABEL", "check_label_column", "label_index", "align_labels", "to_model_labels", "imagenet_wnids",
           "null_label_rows"]

logger = logging.getLogger(__name__)

INVALID_LABEL = -2  # -1 stays "no label" (how the Hub marks unlabeled rows)
_UNMAPPED = -3
_WNID = re.compile(r"n\d{8}")
_FIX = "name the column of integer class indices (or a ClassLabel) with --label-column (label_column=...)"


def _dtype(feature) -> str:
    if isinstance(feature, datasets.Value):
        return feature.dtype
    if isinstance(feature, datasets.ClassLabel):
        return "ClassLabel"
    return type(feature).__name__


def _integer_columns(features: datasets.Features) -> list[str]:
    return [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)
            or (isinstance(f, datasets.Value) and re.fullmatch(r"u?int\d+", f.dtype))]


def check_label_column(dataset, features: datasets.Features, column: str, name: str) -> None:
    """Refuse a label column that does not hold class indices (checked on the whole column when it is on disk).

    ClassLabel and integer columns pass; float columns pass only when every value is a whole number.
    """
    feature = features[column]
    dtype = _dtype(feature)
    others = [c for c in _integer_columns(features) if c != column]
    hint = f"; integer columns of this dataset: {others}" if others else ""
    if isinstance(feature, datasets.ClassLabel) or (isinstance(feature, datasets.Value)
                                                     and re.fullmatch(r"u?int\d+", feature.dtype)):
        return
    if isinstance(feature, datasets.Value) and feature.dtype.startswith("float"):
        if isinstance(dataset, datasets.Dataset):
            _check_float_values(dataset, column, dtype, name, hint)
        return
    raise DecompValueError(f"Label column {column!r} of {name!r} holds {dtype} values, not class indices; "
                           f"{_FIX}{hint}.")


def _check_float_values(dataset: datasets.Dataset, column: str, dtype: str, name: str, hint: str) -> None:
    values = dataset.with_format("numpy")[column] if len(dataset) else np.zeros(0)
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        examples = sorted({repr(float(v)) for v in values[bad][:100]})[:5]
        raise DecompValueError(
            f"Label column {column!r} of {name!r} has dtype {dtype} and {int(bad.sum())} values that are not "
            f"whole class indices (e.g. {', '.join(examples)}); truncating them would silently relabel those rows. "
            f"Fix the labels, or {_FIX}{hint}.")


def label_index(value) -> int:
    """One label cell -> class index; -1 for a missing label, :data:`INVALID_LABEL` for a value that is none."""
    if value is None:
        return -1
    if isinstance(value, (bool, np.bool_)):
        return INVALID_LABEL
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and math.isfinite(value) and float(value).is_integer():
        return int(value)
    return INVALID_LABEL


def null_label_rows(dataset, column: str | None) -> tuple[int, list[int]] | None:
    """(how many, the first 10 row positions) of the null cells of ``column``; None when it has none or
    they cannot be counted (a streamed split). Read on the error path only: one column of the split."""
    if column is None or not isinstance(dataset, datasets.Dataset) or column not in (dataset.column_names or []):
        return None
    values = dataset.select_columns([column]).with_format("arrow")[:][column]
    if not values.null_count:
        return None
    rows = pc.indices_nonzero(pc.is_null(values)).to_pylist()
    return len(rows), rows[:10]


def imagenet_wnids(names: list[str] | None) -> list[str] | None:
    """WordNet ids of ImageNet-1k classes named in timm's (canonical) order, else None.

    Accepts the wnids themselves, timm's full descriptions ("tench, Tinca tinca") or their first
    synonyms ("tench", as timm models and many transformers configs name them).
    """
    if not names or len(names) != 1000:
        return None
    if all(_WNID.fullmatch(str(n).strip()) for n in names):
        return [str(n).strip() for n in names]
    import timm

    info = timm.data.ImageNetInfo("imagenet-1k")
    if all(first_synonym(n) == first_synonym(info.index_to_description(i)) for i, n in enumerate(names)):
        return [info.index_to_label_name(i) for i in range(1000)]
    return None


def dataset_wnids(dataset, label_column: str, wnid_column: str = "wnid") -> list[str] | None:
    """Per-label WordNet ids from a ``wnid`` column next to integer labels (the bundled ImageNet samples).

    None when there is no such column, the data is streamed, or labels and wnids do not pair one to one
    over 0..max label.
    """
    if not isinstance(dataset, datasets.Dataset) or wnid_column not in (dataset.column_names or []):
        return None
    table = dataset.select_columns([label_column, wnid_column]).data
    pairs = set(zip(table.column(label_column).to_pylist(), table.column(wnid_column).to_pylist()))
    by_label = dict(pairs)
    if len(by_label) != len(pairs) or len(set(by_label.values())) != len(by_label) \
            or sorted(by_label) != list(range(len(by_label))):
        return None
    return [str(by_label[i]) for i in range(len(by_label))]


def align_labels(split, model_names: list[str], label_map: dict | str | None = None, model: str = "the model"):
    """``split`` with its labels renumbered into the model's class order, and what was done.

    Returns ``(split, info)``; ``info`` (for metrics.json) says how the classes were matched, whether
    labels were renumbered and, for a dataset without class names, that indices were trusted as they are.

    Args:
        split: an :class:`~hf_decomp.data.ImageSplit` with a label column.
        model_names: the model's class names (``ClassifierAdapter.label_names``).
        label_map: ``{dataset label: model label}`` (names or indices) or the path of a JSON file
            holding one: states the correspondence where the names do not say it.
    """
    if split.label_column is None:
        return split, None
    dataset_desc = f"Dataset {split.name!r}"
    if label_map is not None:
        label_map = read_label_map(label_map) if not isinstance(label_map, dict) else label_map
        mapping = order_from_label_map(label_map, split.label_names or split.label_wnids, model_names)
        info = {"matched_by": "label map", "remapped": any(j != i for j, i in mapping.items()),
                "order": {str(j): i for j, i in sorted(mapping.items())}}
        logger.warning("labels of %s [%s] renumbered by the label map (%d classes)", split.name, split.split,
                       len(mapping))
        return dataclasses.replace(split, label_order=mapping), info
    if split.label_names is not None and len(split.label_names) != len(model_names) \
            and (is_placeholder_names(split.label_names) or is_placeholder_names(model_names)):
        raise DecompValueError(f"{dataset_desc} has {len(split.label_names)} classes but {model} has "
                               f"{len(model_names)}; decompose a model trained on this dataset, or state which "
                               f"dataset class is which model class with --label-map FILE.json (label_map=...).")
    names = None if is_placeholder_names(split.label_names) else split.label_names
    names = names or split.label_wnids
    if names is None or is_placeholder_names(model_names):
        missing = "the dataset has no class names" if names is None else "the model has no class names"
        warning = (f"{split.name} [{split.split}]: {missing}, so its label indices are taken to be the model's "
                   f"classes in the model's order, unchecked")
        logger.warning(warning)
        return split, {"matched_by": "index (unchecked)", "remapped": False, "warning": warning}
    match: LabelMatch = match_label_names(names, model_names, split.label_wnids, imagenet_wnids(model_names),
                                          dataset=dataset_desc, model=model)
    info = {"matched_by": match.how, "remapped": not match.is_identity}
    if match.ambiguous:
        info["paired_in_order"] = match.ambiguous
    if match.is_identity:
        return split, info
    moved = match.moved(names, model_names)
    info["order"] = match.order
    info["examples"] = moved
    logger.warning("%s [%s] lists the model's classes in another order: labels renumbered to the model's "
                   "(matched by %s; e.g. %s)", split.name, split.split, match.how, "; ".join(moved[:3]))
    return dataclasses.replace(split, label_order=dict(enumerate(match.order))), info


def to_model_labels(labels: torch.Tensor, split) -> torch.Tensor:
    """A batch's labels in the model's class order; refuses values that were no class index."""
    invalid = labels == INVALID_LABEL
    if bool(invalid.any()):
        feature = (split.dataset.features or {}).get(split.label_column) if split.dataset.features else None
        dtype = _dtype(feature) if feature is not None else "unknown"
        raise DecompValueError(
            f"Label column {split.label_column!r} of {split.name!r} [{split.split}] (dtype {dtype}) holds "
            f"{int(invalid.sum())} values in this batch that are not whole class indices (text, NaN or fractions); "
            f"fix the labels, or {_FIX}.")
    if split.label_order is None:
        return labels
    keys = torch.tensor(sorted(split.label_order), dtype=torch.long)
    lookup = torch.full((int(keys.max()) + 1,), _UNMAPPED, dtype=torch.long)
    lookup[keys] = torch.tensor([split.label_order[int(k)] for k in keys], dtype=torch.long)
    lookup = lookup.to(labels.device)
    known = (labels >= 0) & (labels < lookup.numel())
    mapped = labels.clone()
    mapped[known] = lookup[labels[known]]
    unmapped = (labels >= 0) & (~known | (mapped == _UNMAPPED))
    if bool(unmapped.any()):
        bad = sorted({int(v) for v in labels[unmapped].tolist()})[:10]
        raise DecompValueError(
            f"{split.name} [{split.split}] has labels {bad} that the label mapping does not send to any model "
            f"class; add them to --label-map (label_map=...).")
    return mapped
