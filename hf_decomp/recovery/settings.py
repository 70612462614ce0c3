"""``RefitSettings`` and ``FinetuneSettings``: every setting of ``hf-decomp refit`` / ``finetune``, validated once.

Like :class:`~hf_decomp.analysis.settings.AnalysisSettings`: the field names are the dests of the
commands' flags (``--val-split`` -> ``val_split``), ``__post_init__`` checks them before any model or data
is loaded, and ``metrics.json`` records them under ``settings``. ``FinetuneSettings`` is ``RefitSettings``
plus the training flags. :func:`~hf_decomp.recovery.heads.build_recovered_head` and
:func:`~hf_decomp.recovery.heads.finetune_recovered_head` take them (or the same names as keywords).

This module imports nothing heavy (the CLI builds settings before torch is loaded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from ..method.criteria import get_criterion, list_criteria
from ..utils.checks import check_positive_int
from ..utils.errors import DecompValueError
from ..utils.settings import CommandSettings

__all__ = ["RefitSettings", "FinetuneSettings", "parse_val_split", "DEFAULT_VAL_SIZE", "CIFAR_RESNETS",
           "MEMORISED_NOTE"]

DEFAULT_VAL_SIZE = 5000  # = hf_decomp.data.holdout.DEFAULT_VAL_SIZE (that module imports torch; a test ties them)
# the pretrained CIFAR ResNets were trained on all 50,000 CIFAR-10 training images
CIFAR_RESNETS = ("cifar10_resnet20", "cifar10_resnet32", "cifar10_resnet44", "cifar10_resnet56")
MEMORISED_NOTE = ("memorised: the pretrained {model} was trained on every {split} image, so accuracy on images held "
                  "out of {split} is near 100 % and says little; only the evaluation split measures generalisation")
_PATH_FIELDS = ("weights", "dataset", "label_map", "cache_dir", "out")  # kept as str: JSON-serialisable


def parse_val_split(value) -> int | str:
    """``--val-split``: a whole number >= 1 of images to hold out, or the name of a split.

    ``"5000"`` / 5000 -> 5000; ``"validation"`` -> ``"validation"``; anything that reads as a number
    (``"-5"``, ``"0"``, ``"0.1"``, ``"1e3"``) must be a whole number >= 1, else it is refused in one line.
    """
    hint = ("give a number of training images to hold out (e.g. --val-split 5000) or the name of a validation "
            "split (e.g. --val-split validation)")
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DecompValueError(f"--val-split {value!r} is neither a number of images nor a split name; {hint}")
    text = str(value).strip()
    if not text:
        raise DecompValueError(f"--val-split is empty; {hint}")
    try:
        number = int(text)
    except ValueError:
        try:
            float(text)
        except ValueError:
            return text  # a split name
        raise DecompValueError(f"--val-split {text}: a number of images must be a whole number; {hint}") from None
    if number < 1:
        raise DecompValueError(f"--val-split {text}: at least 1 image must be held out; {hint}")
    return number


def _check_fraction(name: str, value, low: float, high: float, *, low_open: bool = False, high_open: bool = False,
                    flag: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise DecompValueError(f"{name}={value!r} must be a number ({flag})")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        interval = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
        raise DecompValueError(f"{name}={value!r} must be in {interval} ({flag})")


@dataclass
class RefitSettings(CommandSettings):
    """What ``hf-decomp refit`` does. Every field is the dest of the flag of the same name.

    Args:
        model (`str`, defaults to ``cifar10_resnet20``), weights (`str`, *optional*): the classifier
            (see :func:`~hf_decomp.models.load_classifier`) and a local weights file for it.
        dataset, stats_split, eval_split, image_column, label_column, label_map, streaming, limit,
            eval_limit, batch_size, num_workers: the data, as for ``analyze``.
        k1 (`int`), k2 (`int`): top features voted per sample / kept per class. criterion (`str`, defaults
            to ``pruning``): a criterion sized by k. bias_correction (`bool`).
        max_iter (`int`): L-BFGS iterations of each refit. keep (`list[float]`): fractions kept per
            pruning step to try; the one best on validation is used.
        val_split (`int` or `str`, defaults to 5000): images held out of ``stats_split`` (seeded by
            ``val_seed``, stratified by class) or the name of a validation split; never the evaluation
            split. val_seed (`int`).
        cache_dir (`str`, *optional*): feature cache folder. out (`str`, *optional*), overwrite (`bool`):
            the results folder (written by the command). seed (`int`): data subsets and training.

    Example:
        >>> RefitSettings(k2=3, val_split="500").val_split
        500
    """

    COMMAND: ClassVar[str] = "refit"
    RENAMED: ClassVar[dict[str, str]] = {"method": "criterion", "k": "k2", "checkpoint": "weights", "out_dir": "out"}

    model: str | None = "cifar10_resnet20"
    weights: str | None = None
    dataset: str | None = None
    stats_split: str = "train"
    eval_split: str | None = None
    image_column: str | None = None
    label_column: str | None = None
    label_map: dict | str | None = None
    streaming: bool = False
    limit: int | None = None
    eval_limit: int | None = None
    batch_size: int = 256
    num_workers: int | None = None
    k1: int = 5
    k2: int = 5
    criterion: str = "pruning"
    bias_correction: bool = False
    max_iter: int = 100
    keep: list[float] = field(default_factory=lambda: [0.5, 0.75])
    val_split: int | str = DEFAULT_VAL_SIZE
    val_seed: int = 0
    cache_dir: str | None = None
    out: str | None = None
    overwrite: bool = False
    seed: int = 0

    def __post_init__(self):
        for name in _PATH_FIELDS:
            if isinstance(getattr(self, name), Path):
                setattr(self, name, str(getattr(self, name)))
        for name in ("k1", "k2", "batch_size", "max_iter"):
            check_positive_int(name, getattr(self, name), f"--{name.replace('_', '-')}")
        for name in ("limit", "eval_limit"):
            if getattr(self, name) is not None:
                check_positive_int(name, getattr(self, name), f"--{name.replace('_', '-')}")
        if self.num_workers is not None and (isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int)
                                             or self.num_workers < 0):
            raise DecompValueError(f"num_workers={self.num_workers!r} must be an integer >= 0 (--num-workers)")
        criterion = get_criterion(self.criterion)  # an unknown name is refused naming the known ones
        if "k" not in criterion.set_sizes:
            raise DecompValueError(f"criterion {self.criterion!r} sizes its sets by coverage; {self.COMMAND} keeps k2 "
                                   f"per class: use one of {', '.join(list_criteria(set_size='k'))} (--criterion).")
        self.keep = [self.keep] if isinstance(self.keep, (int, float)) else list(self.keep)
        if not self.keep:
            raise DecompValueError("keep is empty; give at least one fraction in (0, 1) (--keep 0.5 0.75)")
        for fraction in self.keep:
            _check_fraction("keep", fraction, 0.0, 1.0, low_open=True, high_open=True, flag="--keep")
        self.val_split = parse_val_split(self.val_split)
        if isinstance(self.val_split, str):
            if self.val_split == self.stats_split:
                raise DecompValueError(f"--val-split {self.val_split!r} is the training split itself (--stats-split); "
                                       f"give another split or a number of images to hold out.")
            if self.eval_split is not None:
                self.check_val_split_is_not(self.eval_split)

    def check_val_split_is_not(self, eval_split: str) -> None:
        """Refuse a validation split that is the evaluation split: choices made on it would be scored on it."""
        if self.val_split == eval_split:
            raise DecompValueError(
                f"--val-split {self.val_split!r} is the evaluation split: every choice would be made on the images "
                f"whose accuracy is reported. Hold images out of --stats-split (--val-split {DEFAULT_VAL_SIZE}) or "
                f"name another split.")

    def memorised_validation(self, stats_split_name: str | None = None) -> str | None:
        """The note that validation on held-out training images is memorised, or None.

        True for the pretrained CIFAR ResNets (no ``weights``) on CIFAR-10's ``train`` split: they were
        trained on all of it (ResNet-20: 99.6 % on held-out train vs 91.73 % on test).
        """
        split = stats_split_name or self.stats_split
        model = str(self.model or "").removeprefix("timm:")
        cifar = self.dataset is None or "cifar10" in str(self.dataset).lower().replace("-", "")
        if isinstance(self.val_split, int) and model in CIFAR_RESNETS and self.weights is None and cifar \
                and split == "train":
            return MEMORISED_NOTE.format(model=model, split=split)
        return None


@dataclass
class FinetuneSettings(RefitSettings):
    """What ``hf-decomp finetune`` does: :class:`RefitSettings` plus the training of the whole network.

    Args:
        epochs (`float`, defaults to 1.0): fractions allowed. lr (`float`): peak SGD learning rate.
        weight_decay (`float`). train_batch_size (`int`): images per training step.
        augment (`bool`): crop-and-flip augmentation. distill (`float` in [0, 1]) and temperature (`float`):
            knowledge distillation from the full model. freeze_bn (`bool`), clip_grad (`float`, *optional*),
            backbone_lr_scale (`float`), head_warmup (`float` in [0, 1)): stabilisers.
        eval_every (`float`, defaults to 0.25): validate every this many epochs and keep the best (0: the last).
    """

    COMMAND: ClassVar[str] = "finetune"

    epochs: float = 1.0
    lr: float = 0.01
    weight_decay: float = 1e-4
    train_batch_size: int = 128
    augment: bool = True
    distill: float = 0.0
    temperature: float = 4.0
    freeze_bn: bool = False
    clip_grad: float | None = None
    backbone_lr_scale: float = 1.0
    head_warmup: float = 0.0
    eval_every: float = 0.25

    def __post_init__(self):
        super().__post_init__()
        if self.streaming:
            raise DecompValueError("finetune needs a sized, shuffleable training split; drop --streaming.")
        check_positive_int("train_batch_size", self.train_batch_size, "--train-batch-size")
        _check_fraction("epochs", self.epochs, 0.0, math.inf, low_open=True, high_open=True, flag="--epochs")
        _check_fraction("lr", self.lr, 0.0, math.inf, low_open=True, high_open=True, flag="--lr")
        _check_fraction("weight_decay", self.weight_decay, 0.0, math.inf, high_open=True, flag="--weight-decay")
        _check_fraction("distill", self.distill, 0.0, 1.0, flag="--distill")
        _check_fraction("temperature", self.temperature, 0.0, math.inf, low_open=True, high_open=True,
                        flag="--temperature")
        if self.clip_grad is not None:
            _check_fraction("clip_grad", self.clip_grad, 0.0, math.inf, low_open=True, high_open=True,
                            flag="--clip-grad")
        _check_fraction("backbone_lr_scale", self.backbone_lr_scale, 0.0, math.inf, high_open=True,
                        flag="--backbone-lr-scale")
        _check_fraction("head_warmup", self.head_warmup, 0.0, 1.0, high_open=True, flag="--head-warmup")
        _check_fraction("eval_every", self.eval_every, 0.0, math.inf, high_open=True,
                        flag="--eval-every (epochs; 0 = keep the last)")
