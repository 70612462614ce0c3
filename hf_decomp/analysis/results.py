"""Typed results of :func:`~hf_decomp.analysis.run.analyze`: what ``metrics.json`` holds, as dataclasses.

``AnalysisMetrics.to_dict()`` is exactly the JSON analyze writes (the same keys and values as before
the types existed, plus ``settings``), and ``AnalysisMetrics.from_dict()`` reads any results folder's
``metrics.json``, older ones included: keys added over time (``labels``, ``processes``,
``resized_images``, ``settings``) may be absent, and keys this version does not know are kept in
``extra`` and written back unchanged. For old callers the object also reads like the dict it replaced
(``metrics["rho"]``, ``metrics.get("noise_ablation")``).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from ..utils.errors import DecompValueError

__all__ = ["AnalysisMetrics", "ModelInfo", "Selection", "NoiseAblation", "MultiplyAdds", "StatisticsSummary",
           "ClassAccuracy", "EvaluationSummary", "Processes", "BiasCorrected", "LayerSummary"]


def _optional(**metadata):
    """A field absent from older metrics.json files: None there, and then left out of ``to_dict``."""
    return field(default=None, metadata={"omit_if_none": True, **metadata})


def _nested(kind, mapping: bool = False, optional: bool = False):
    metadata = {"kind": kind, "mapping": mapping}
    return _optional(**metadata) if optional else field(default=None, metadata=metadata)


def _plain(value):
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@dataclass
class _Record:
    """to_dict / from_dict by field name; ``extra`` keeps keys this version does not know."""

    extra: dict = field(default_factory=dict, kw_only=True, repr=False)

    def to_dict(self) -> dict:
        data = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or value is None and f.metadata.get("omit_if_none"):
                continue
            data[f.metadata.get("key", f.name)] = _plain(value)
        return {**data, **self.extra}

    @classmethod
    def from_dict(cls, data: dict, where: str = "metrics.json"):
        if not isinstance(data, dict):
            raise DecompValueError(f"{where} must be a JSON object, not {type(data).__name__}")
        values, known = {}, set()
        for f in fields(cls):
            key = f.metadata.get("key", f.name)
            if f.name == "extra" or key not in data:
                continue
            known.add(key)
            value, kind = data[key], f.metadata.get("kind")
            if kind is not None and value is not None:
                if f.metadata.get("mapping"):
                    value = {k: kind.from_dict(v, f"{where}[{key!r}][{k!r}]") for k, v in value.items()}
                else:
                    value = kind.from_dict(value, f"{where}[{key!r}]")
            values[f.name] = value
        try:
            return cls(**values, extra={k: v for k, v in data.items() if k not in known})
        except TypeError as e:
            missing = [f.metadata.get("key", f.name) for f in fields(cls) if f.name != "extra"
                       and f.default is MISSING and f.default_factory is MISSING
                       and f.metadata.get("key", f.name) not in data]
            raise DecompValueError(f"{where} lacks {missing}: it is not a metrics.json written by `hf-decomp analyze`, "
                                   f"or it was damaged; re-run analyze to write it again.") from e


@dataclass
class ModelInfo(_Record):
    name: str
    source: str | None
    num_features: int
    num_classes: int


@dataclass
class Selection(_Record):
    """How the sets were chosen. ``criterion`` is stored as ``method`` (the key metrics.json always had);
    it reads ``coverage`` for the histogram ranking cut by coverage."""

    criterion: str = field(metadata={"key": "method"})
    k1: int
    k2: int | None
    coverage: float | None
    k1_over_d: float
    k2_over_d: float | None
    mean_set_size: float


@dataclass
class NoiseAblation(_Record):
    """Accuracy (percent) of the full layer when each sample's true-class influential features (or all its
    other features) are replaced by N(0, 1) noise."""

    influential_to_noise_accuracy: float
    non_influential_to_noise_accuracy: float


@dataclass
class MultiplyAdds(_Record):
    full: int
    decomposed: int
    ratio: float | None = _optional()


@dataclass
class StatisticsSummary(_Record):
    samples: int
    samples_per_class: dict[str, int]
    classes_without_samples: list[str]
    skipped_images: int
    nonfinite_samples: int
    resized_images: int | None = _optional()

    def to_dict(self) -> dict:  # the key order metrics.json has always had
        data = super().to_dict()
        return {k: data[k] for k in ("samples", "samples_per_class", "classes_without_samples", "skipped_images",
                                     "resized_images", "nonfinite_samples") if k in data} | data


@dataclass
class ClassAccuracy(_Record):
    samples: int
    full_accuracy: float | None
    decomposed_accuracy: float | None


@dataclass
class EvaluationSummary(_Record):
    eval_samples: int
    skipped_images: int
    nonfinite_samples: int
    per_class: dict[str, ClassAccuracy] = _nested(ClassAccuracy, mapping=True)
    resized_images: int | None = _optional()

    def to_dict(self) -> dict:
        data = super().to_dict()
        return {k: data[k] for k in ("eval_samples", "skipped_images", "resized_images", "nonfinite_samples",
                                     "per_class") if k in data} | data


@dataclass
class Processes(_Record):
    num_processes: int
    rows_per_process: dict[str, list[int]]


@dataclass
class BiasCorrected(_Record):
    decomposed_accuracy: float
    rho: float | None
    bias: list[float]


@dataclass
class LayerSummary(_Record):
    width: int
    k1: int
    k2: int | None
    mean_set_size: float


@dataclass
class AnalysisMetrics(_Record):
    """Everything :func:`~hf_decomp.analysis.run.analyze` measured; ``to_dict()`` is ``metrics.json``."""

    model: ModelInfo = _nested(ModelInfo)
    data: dict[str, dict] = field(default=None)  # {"statistics": split description, "evaluation": ...}
    selection: Selection = _nested(Selection)
    full_accuracy: float = None
    decomposed_accuracy: float = None
    rho: float | None = None
    noise_ablation: NoiseAblation = _nested(NoiseAblation)
    multiply_adds: MultiplyAdds = _nested(MultiplyAdds)
    statistics: StatisticsSummary = _nested(StatisticsSummary)
    evaluation: EvaluationSummary = _nested(EvaluationSummary)
    seed: int = None
    warnings: list[str] = field(default_factory=list)
    versions: dict[str, str] | None = _optional()
    labels: dict[str, dict | None] | None = _optional()  # per split: how its labels were matched to the model's
    processes: Processes | None = _nested(Processes, optional=True)
    bias_corrected: BiasCorrected | None = _nested(BiasCorrected, optional=True)
    layers: dict[str, LayerSummary] | None = _nested(LayerSummary, mapping=True, optional=True)
    settings: dict[str, Any] | None = _optional()  # AnalysisSettings.to_dict() of the run

    _ORDER = ("model", "data", "labels", "selection", "full_accuracy", "decomposed_accuracy", "rho", "noise_ablation",
              "multiply_adds", "statistics", "evaluation", "processes", "seed", "warnings", "versions",
              "bias_corrected", "layers", "settings")
    _REQUIRED = ("model", "data", "selection", "full_accuracy", "decomposed_accuracy", "noise_ablation",
                 "multiply_adds", "statistics", "evaluation", "seed")

    def __post_init__(self):
        missing = [name for name in self._REQUIRED if getattr(self, name) is None]
        if missing:
            raise DecompValueError(f"metrics.json lacks {missing}: it is not a metrics.json written by "
                                   f"`hf-decomp analyze`, or it was damaged; re-run analyze to write it again.")

    def to_dict(self) -> dict:
        data = super().to_dict()
        return {k: data[k] for k in self._ORDER if k in data} | data

    # read like the dict metrics used to be, so existing callers keep working
    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def get(self, key: str, default=None):
        return self.to_dict().get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.to_dict()

    def keys(self):
        return self.to_dict().keys()
