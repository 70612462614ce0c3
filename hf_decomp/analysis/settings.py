"""``AnalysisSettings``: every setting of :func:`~hf_decomp.analysis.run.analyze`, validated once.

Like transformers' ``TrainingArguments``: one dataclass whose field names are the ``hf-decomp analyze``
flags' dests (``--stats-split`` -> ``stats_split``), checked in ``__post_init__`` before any pass over
the data, and serialisable (``to_dict`` / ``from_dict``; ``metrics.json`` records it under ``settings``).
What every command's settings share is :class:`~hf_decomp.utils.settings.CommandSettings`.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

from ..data.loader import DECODERS as LOADER_DECODERS
from ..utils.checks import check_positive_int
from ..utils.errors import DecompValueError
from ..utils.settings import CommandSettings

__all__ = ["AnalysisSettings", "RENAMED_SETTINGS"]

# analyze's keyword arguments before the vocabulary of issue 10 -> their names now
RENAMED_SETTINGS = {
    "method": "criterion",
    "checkpoint": "weights",
    "out_dir": "out",
    "checkpoint_every": "save_every",
    "checkpoint_minutes": "save_every_minutes",
    "checkpoint_dir": "resume_dir",
}

DECODERS = LOADER_DECODERS  # cpu, cpu-fast, gpu, dali
_PATH_FIELDS = ("model", "weights", "dataset", "label_map", "out", "resume_dir")  # kept as str: JSON-serialisable
MIXED_PRECISION = (None, "no", "fp16", "bf16", "fp8")


def _check_k(name: str, value, allow_none: bool) -> None:
    """An int, or (for --layers runs) a fraction of each layer's width; the range [1, d] is checked by
    :func:`~hf_decomp.layers.resolve_k` once the model's width is known."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DecompValueError(f"{name}={value!r} must be a positive integer (or a fraction in (0, 1) of the "
                               f"width); give --{name} N.")


def _check_optional_positive(name: str, value, flag: str) -> None:
    if value is not None:
        check_positive_int(name, value, flag)


@dataclass
class AnalysisSettings(CommandSettings):
    """What to analyze and how. Every field is the dest of the ``hf-decomp analyze`` flag of the same name.

    Args:
        model (`str`, *optional*): a name understood by :func:`~hf_decomp.models.load_classifier`, or a
            ``ClassifierAdapter``; default ``cifar10_resnet20``.
        weights (`str`, *optional*): a local weights file for the model's architecture (``--weights``).
        dataset (`str`, *optional*): Hub name or local folder; default the bundled CIFAR-10.
        stats_split / eval_split (`str`): splits of the statistics and the evaluation (eval default
            test/validation).
        image_column / label_column (`str`, *optional*): columns to read (default: detected).
        label_map (`dict` or `str`, *optional*): ``{dataset label: model label}`` or a JSON file of it.
        streaming (`bool`): stream the dataset instead of downloading it.
        limit / eval_limit (`int`, *optional*): seeded random subsets of the statistics / eval split.
        batch_size (`int`, defaults to 256), num_workers (`int`, *optional*): the passes' loader.
        decode (`str`, defaults to ``"cpu"``): ``"cpu-fast"`` decodes JPEGs with libjpeg-turbo and resizes with
            torch (pixels within two levels of the model's transform); ``"gpu"`` decodes JPEGs on the CUDA
            device (nvJPEG), ``"dali"`` with NVIDIA DALI there (refused without DALI or CUDA).
        seed (`int`, defaults to 0): seeds the subsets and the ablation noise.
        k1 / k2 (`int` or `float`): features voted per sample / kept per class (fractions of each layer's
            width with ``layers``). coverage (`float`, *optional*): instead of k2, the fewest features
            covering this fraction of each class's votes.
        criterion (`str`, defaults to ``"histogram"``): how features are ranked (Algorithm 1's histogram,
            ``contribution`` or ``label-free``).
        bias_correction (`bool`): also score the head with b_c += sum_{j not in I_c} W_cj mean(x_j).
        top_images (`int`, defaults to 16): most activating statistics images kept per feature (0: none).
        layers (`list[str]`, *optional*): also find sets at these layers (see :func:`hf_decomp.layers.resolve_layers`).
        out (`str`, *optional*): results folder; overwrite (`bool`): replace an existing one.
        resume (`bool`), save_every (`int`, batches), save_every_minutes (`float`), resume_dir (`str`):
            resumable passes (see :func:`~hf_decomp.analysis.run.analyze`).
        mixed_precision (`str`, *optional*): ``"bf16"`` / ``"fp16"`` autocast; channels_last (`bool`).

    Example:
        >>> AnalysisSettings(k1=5, k2=5, limit=1000).to_dict()["limit"]
        1000
    """

    COMMAND: ClassVar[str] = "analyze"
    KIND: ClassVar[str] = "analysis"
    RENAMED: ClassVar[dict[str, str]] = RENAMED_SETTINGS

    model: object = None
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
    decode: str = "cpu"
    seed: int = 0
    k1: int | float = 5
    k2: int | float | None = 5
    coverage: float | None = None
    criterion: str = "histogram"
    bias_correction: bool = False
    top_images: int = 16
    layers: list[str] | None = None
    out: str | None = None
    overwrite: bool = False
    resume: bool = False
    save_every: int | None = None
    save_every_minutes: float | None = None
    resume_dir: str | None = None
    mixed_precision: str | None = None
    channels_last: bool = False

    def __post_init__(self):
        for name in _PATH_FIELDS:
            if isinstance(getattr(self, name), Path):
                setattr(self, name, str(getattr(self, name)))
        check_positive_int("batch_size", self.batch_size, "--batch-size")
        for name, flag in (("limit", "--limit"), ("eval_limit", "--eval-limit"), ("save_every", "--save-every")):
            _check_optional_positive(name, getattr(self, name), flag)
        if self.num_workers is not None and (isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int)
                                             or self.num_workers < 0):
            raise DecompValueError(f"num_workers={self.num_workers!r} must be an integer >= 0 (--num-workers)")
        if not isinstance(self.top_images, int) or isinstance(self.top_images, bool) or self.top_images < 0:
            raise DecompValueError(f"top_images={self.top_images!r} must be an integer >= 0 (--top-images; 0: none)")
        if self.save_every_minutes is not None and not self.save_every_minutes > 0:
            raise DecompValueError(f"save_every_minutes={self.save_every_minutes!r} must be > 0 (--save-every-minutes)")
        if self.decode not in DECODERS:
            raise DecompValueError(f"decode={self.decode!r} is not one of {', '.join(DECODERS)} (--decode)")
        if self.mixed_precision not in MIXED_PRECISION:
            raise DecompValueError(f"mixed_precision={self.mixed_precision!r} is not one of "
                                   f"{', '.join(map(str, MIXED_PRECISION[1:]))} (--mixed-precision)")
        if self.coverage is not None and not (isinstance(self.coverage, (int, float)) and 0 < self.coverage <= 1):
            raise DecompValueError(f"coverage={self.coverage!r} must be a fraction in (0, 1] of each class's votes")
        _check_k("k1", self.k1, allow_none=False)
        _check_k("k2", self.k2, allow_none=True)
        if self.k2 is None and self.coverage is None:
            raise DecompValueError("give k2 (features kept per class) or coverage (a fraction of each class's votes)")
        if self.layers is not None:
            self.layers = list(self.layers)

    def to_dict(self) -> dict:
        """JSON-safe settings; a model given as an adapter is recorded by its name."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["layers"] = None if self.layers is None else list(self.layers)
        data["label_map"] = dict(self.label_map) if isinstance(self.label_map, dict) else self.label_map
        if self.model is not None and not isinstance(self.model, str):
            data["model"] = getattr(self.model, "name", repr(self.model))
        return data

    @classmethod
    def from_namespace(cls, args: argparse.Namespace, **overrides) -> "AnalysisSettings":
        """From parsed ``hf-decomp analyze`` flags: every field is read from the dest of the same name
        (a dest of the old vocabulary, e.g. ``method``, is read for its new name); ``overrides`` win."""
        values = vars(args)
        known = {}
        for old, new in RENAMED_SETTINGS.items():
            if old in values and new not in values:
                known[new] = values[old]
        known.update({name: values[name] for name in cls.field_names() if name in values})
        return cls(**{**known, **overrides})
