"""Validation split for recovery: every choice is made on it, the test split is read once at the end.

``--val-split`` is either a number of images held out from the training split (default 5,000:
seeded, stratified by class, so each class keeps its share) or the name of a split the dataset has
(e.g. ``validation``). Statistics, refit features and fine-tuning use the rest of the training split.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..utils.errors import DecompValueError
from . import ImageSplit, load_image_split

__all__ = ["DEFAULT_VAL_SIZE", "stratified_split", "parse_val_split", "ValidationSplit", "hold_out"]

DEFAULT_VAL_SIZE = 5000


def stratified_split(labels: torch.Tensor, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices (rest, held out) with ``size`` rows held out, each class in proportion to its count.

    Per class ``floor(size * n_c / N)`` rows, the remaining ones to the largest remainders (ties to
    the lower class id); within a class the rows are a seeded random draw. Both index lists are sorted.
    """
    labels = labels.long().cpu()
    total = labels.numel()
    if not 0 < size < total:
        raise DecompValueError(f"--val-split {size}: must hold out between 1 and {total - 1} of the {total} "
                               f"training rows; give a smaller number or the name of a validation split.")
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * size / total
    quota = exact.floor().long()
    remainder = exact - quota
    extra = size - int(quota.sum())
    order = sorted(range(len(classes)), key=lambda i: (-float(remainder[i]), int(classes[i])))
    for i in order[:extra]:
        quota[i] += 1
    generator = torch.Generator().manual_seed(seed)
    held = []
    for cls, take in zip(classes.tolist(), quota.tolist()):
        rows = torch.nonzero(labels == cls).flatten()
        held.append(rows[torch.randperm(rows.numel(), generator=generator)[:take]])
    held_out = torch.cat(held).sort().values
    keep = torch.ones(total, dtype=torch.bool)
    keep[held_out] = False
    return torch.nonzero(keep).flatten(), held_out


def parse_val_split(value: str | int) -> int | str:
    """``"5000"`` -> 5000 (images held out from train); any other text names a split."""
    text = str(value).strip()
    if text.isdigit():
        return int(text)
    if not text:
        raise DecompValueError("--val-split is empty; give a number of images to hold out or a split name.")
    return text


@dataclass
class ValidationSplit:
    """The training split without its held-out rows, the validation split, and how they were made."""

    fit: ImageSplit
    validation: ImageSplit
    fit_rows: torch.Tensor | None  # row indices of the training split that ``fit`` keeps (None: all)
    validation_rows: torch.Tensor | None  # rows of the training split held out (None: a named split)
    description: dict


def _subset(split: ImageSplit, rows: torch.Tensor, name: str) -> ImageSplit:
    return replace(split, dataset=split.dataset.select(rows.tolist()), split=name, subset=True)


def hold_out(train: ImageSplit, val_split: str | int, *, seed: int = 0, dataset: str | None = None,
             **split_kwargs) -> ValidationSplit:
    """Split ``train`` into fit and validation parts according to ``--val-split``.

    Args:
        train: the (sized) training split.
        val_split: a count of rows to hold out (stratified by the label column, seeded by ``seed``)
            or the name of another split of ``dataset`` (loaded with ``split_kwargs``).
    """
    val_split = parse_val_split(val_split)
    if isinstance(val_split, str):
        if val_split == train.split:
            raise DecompValueError(f"--val-split {val_split!r} is the training split itself; give another "
                                   f"split or a number of images to hold out.")
        validation = load_image_split(dataset, val_split, **split_kwargs)
        return ValidationSplit(train, validation, None, None,
                               {"kind": "named", "split": val_split, "rows": validation.num_rows})
    if train.streaming:
        raise DecompValueError(f"--val-split {val_split} holds rows out of a sized split; drop --streaming "
                               f"or name a validation split.")
    if train.label_column is None:
        raise DecompValueError("--val-split with a count stratifies by class and needs a labelled training split.")
    labels = torch.as_tensor(list(train.dataset[train.label_column]))
    fit_rows, val_rows = stratified_split(labels, val_split, seed)
    fit = _subset(train, fit_rows, f"{train.split}[-val{val_split}/seed{seed}]")
    validation = _subset(train, val_rows, f"{train.split}[val{val_split}/seed{seed}]")
    return ValidationSplit(fit, validation, fit_rows, val_rows,
                           {"kind": "held-out", "from": train.split, "rows": val_split, "seed": seed,
                            "stratified": True, "fit_rows": int(fit_rows.numel())})
