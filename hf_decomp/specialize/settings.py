"""``SpecializeSettings``: every setting of :func:`~hf_decomp.specialize.api.specialize`, validated once.

Field names are the dests of the ``hf-decomp specialize`` flags (``--criterion`` -> ``criterion``),
checked before any image is read, and recorded in ``specialize.json``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..utils.errors import DecompValueError
from ..utils.settings import CommandSettings
from .criteria import PRUNING_CRITERIA
from .distill import DistillRecipe
from .pruning import check_allocation
from .vocabulary import DEFAULT_CRITERION

__all__ = ["SpecializeSettings", "RENAMED_SPECIALIZE_SETTINGS", "DEFAULT_CRITERION"]


# keyword arguments of specialize() before this vocabulary -> their names now
RENAMED_SPECIALIZE_SETTINGS = {"method": "criterion", "checkpoint": "weights", "out_dir": "out",
                               "finetune_epochs": "epochs", "train_split": "stats_split", "model_name": "model"}
_OLD_CRITERIA = {"class-aware": "votes-bn"}


@dataclass
class SpecializeSettings(CommandSettings):
    """What to specialize and how.

    Args:
        model (`str`): a timm classifier name (``cifar10_resnet20``); weights (`str`, *optional*): local weights.
        classes (`str` or `list`): class names or ids, ``"cat,dog"``.
        macs (`float`): budget, a fraction in (0, 1] of the full model's multiply-adds.
        criterion (`list[str]`): pruning criteria to build (:data:`~.criteria.PRUNING_CRITERIA`); with
            several, the one best on test half A is exported and read on half B (and cross-fitted).
        allocation (`str`): ``global`` (widths follow the scores) or ``uniform`` (same fraction per group).
        dataset / stats_split / eval_split: where training and evaluation images come from.
        train_per_class (`int`, *optional*): training images per class (default: all of them).
        k1_fraction (`float`): the vote and propagated criteria's top-k1, as a fraction of a layer's width.
        epochs, lr, distill, temperature: the distillation recipe (:class:`~.distill.DistillRecipe`).
        half_seed (`int`): seed of the stratified test halves; seed (`int`): seed of training.
        out (`str`, *optional*): model folder to write; overwrite (`bool`): replace it.
    """

    model: str = "cifar10_resnet20"
    classes: str | list | None = None
    macs: float | None = None
    criterion: list[str] | str = DEFAULT_CRITERION
    allocation: str = "global"
    weights: str | None = None
    dataset: str | None = None
    stats_split: str = "train"
    eval_split: str = "test"
    train_per_class: int | None = None
    k1_fraction: float = 0.25
    epochs: int = 10
    lr: float = 0.05
    distill: float = 0.9
    temperature: float = 4.0
    half_seed: int = 0
    seed: int = 0
    batch_size: int = 256
    out: str | None = None
    overwrite: bool = False

    COMMAND: ClassVar[str] = "specialize"
    RENAMED: ClassVar[dict[str, str]] = RENAMED_SPECIALIZE_SETTINGS

    def __post_init__(self):
        if isinstance(self.out, Path):
            self.out = str(self.out)
        if self.classes is None or self.macs is None:
            raise DecompValueError("specialize needs classes (e.g. --classes cat,dog) and a budget (--macs 0.3)")
        if isinstance(self.macs, bool) or not isinstance(self.macs, (int, float)) or not 0 < self.macs <= 1:
            raise DecompValueError(f"--macs {self.macs} must be a fraction in (0, 1] of the full model's multiply-adds")
        criteria = [self.criterion] if isinstance(self.criterion, str) else list(self.criterion)
        renamed = [c for c in criteria if c in _OLD_CRITERIA]
        if renamed:
            warnings.warn(", ".join(f"--criterion {c} is now {_OLD_CRITERIA[c]}" for c in renamed), FutureWarning,
                          stacklevel=3)
        criteria = [_OLD_CRITERIA.get(c, c) for c in criteria]
        unknown = [c for c in criteria if c not in PRUNING_CRITERIA]
        if unknown or not criteria:
            raise DecompValueError(f"--criterion {' '.join(unknown) or '(none)'}: choose from {', '.join(PRUNING_CRITERIA)}")
        self.criterion = list(dict.fromkeys(criteria))
        check_allocation(self.allocation)
        if self.eval_split == self.stats_split:
            raise DecompValueError(f"--eval-split {self.eval_split} is also the training split: accuracy would be read "
                                   f"on the images the specialist was trained on; give another split (e.g. test).")
        if self.train_per_class is not None and (isinstance(self.train_per_class, bool) or self.train_per_class < 1):
            raise DecompValueError(f"--train-per-class {self.train_per_class} must be >= 1 (not given: all images)")
        if not 0 < self.k1_fraction <= 1:
            raise DecompValueError(f"--k1-fraction {self.k1_fraction} must be in (0, 1]")
        self.recipe()  # validates epochs, lr, distill, batch size

    def recipe(self) -> DistillRecipe:
        return DistillRecipe(epochs=self.epochs, lr=self.lr, distill=self.distill, temperature=self.temperature)
