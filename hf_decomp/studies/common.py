"""What every study shares: a model's cached features and the result type each study returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..models import ClassifierAdapter
from ..passes.evaluation import evaluate_features
from ..portable.decomposed_head import DecomposedLinear

__all__ = ["ModelFeatures", "StudyResult", "load_model_features", "evaluate_sets", "batched"]


@dataclass
class ModelFeatures:
    """Pooled features of one model on a statistics split and an eval split, plus its linear head.

    Everything a study needs except images: Algorithm 1 only looks at pooled features, so every
    study reads these tensors instead of running the network again.
    """

    name: str
    weight: torch.Tensor  # (C, d)
    bias: torch.Tensor  # (C,)
    label_names: list[str]
    train_features: torch.Tensor  # (N, d)
    train_labels: torch.Tensor  # (N,)
    test_features: torch.Tensor  # (M, d)
    test_labels: torch.Tensor  # (M,)
    adapter: ClassifierAdapter | None = None
    data: dict = field(default_factory=dict)
    test_keys: torch.Tensor | None = None  # (M,) the eval images' content keys: they seed the noise ablation

    @property
    def num_features(self) -> int:
        return self.weight.shape[1]

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    @classmethod
    def from_tensors(cls, weight, bias, train, test, label_names=None, name="model") -> "ModelFeatures":
        """Build from in-memory tensors (tests, or features computed elsewhere)."""
        weight = weight.detach().float().cpu()
        bias = torch.zeros(weight.shape[0]) if bias is None else bias.detach().float().cpu()
        names = list(label_names) if label_names is not None else [f"class_{c}" for c in range(weight.shape[0])]
        return cls(name, weight, bias, names, train[0].float(), train[1].long(), test[0].float(), test[1].long())


@dataclass
class StudyResult:
    """One study's output: a markdown section, JSON-safe data and the figures it wrote."""

    name: str
    title: str
    markdown: str
    data: dict
    figures: list[Path] = field(default_factory=list)


def load_model_features(
    model: str | ClassifierAdapter,
    dataset: str | None = None,
    *,
    stats_split: str = "train",
    eval_split: str | None = None,
    limit: int | None = None,
    eval_limit: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    batch_size: int = 256,
    num_workers: int | None = None,
    label_map: dict | str | Path | None = None,
) -> ModelFeatures:
    """Load a model and its features on both splits, computed once and then read from the feature cache.

    Args:
        model: a name for :func:`~hf_decomp.models.load_classifier` or an adapter.
        dataset: dataset name/folder (default: bundled CIFAR-10).
        limit / eval_limit: seeded random subsets (quick runs).
        cache_dir: root of the feature cache (default ``$HF_DECOMP_CACHE/features``).
        label_map: which dataset class is which model class (see :func:`~hf_decomp.analysis.run.analyze`).
    """
    from ..data import default_eval_split, load_image_split
    from ..data.labels import align_labels
    from ..models import load_classifier
    from ..passes.feature_cache import cached_features

    adapter = model if isinstance(model, ClassifierAdapter) else load_classifier(model)
    eval_split = eval_split or default_eval_split(dataset)
    train = load_image_split(dataset, stats_split, limit=limit, seed=seed)
    test = load_image_split(dataset, eval_split, limit=eval_limit, seed=seed)
    # renumbered into the model's class order (or refused); the order is part of the feature-cache key
    train, test = (align_labels(split, adapter.label_names, label_map, model=f"model {adapter.name!r}")[0]
                   for split in (train, test))
    features = {}
    for split in (train, test):  # the keys seed the noise ablation exactly as analyze does
        directory = None
        if cache_dir is not None:
            import hashlib
            import json

            from ..passes.feature_cache import feature_cache_key

            key = json.dumps(feature_cache_key(adapter, split), sort_keys=True).encode()
            directory = Path(cache_dir) / hashlib.sha256(key).hexdigest()[:20]
        features[split.split] = cached_features(adapter, split, directory, batch_size=batch_size,
                                                num_workers=num_workers, with_keys=True)
    train_x, train_y, _ = features[train.split]
    test_x, test_y, test_keys = features[test.split]
    return ModelFeatures(
        name=adapter.name, weight=adapter.weight.detach().float().cpu(), bias=adapter.bias.detach().float().cpu(),
        label_names=adapter.label_names, train_features=train_x, train_labels=train_y, test_features=test_x,
        test_labels=test_y, adapter=adapter, data={"statistics": train.describe(), "evaluation": test.describe()},
        test_keys=test_keys,
    )


def batched(features: torch.Tensor, labels: torch.Tensor, batch_size: int = 8192, keys: torch.Tensor | None = None):
    """(features, labels) chunks (with ``keys``: (features, labels, keys)): the same code path as a streamed
    pass, bounded memory."""
    for start in range(0, features.shape[0], batch_size):
        chunk = slice(start, start + batch_size)
        yield (features[chunk], labels[chunk]) if keys is None else (features[chunk], labels[chunk], keys[chunk])


def evaluate_sets(mf: ModelFeatures, index_sets, seed: int = 0) -> dict:
    """Full vs decomposed accuracy, rho, per-class rho and noise ablation of ``index_sets`` on the eval features.

    Scored by :func:`~hf_decomp.passes.evaluation.evaluate_features`, the evaluation ``analyze`` runs: with the
    eval images' content keys (``mf.test_keys``, from the feature cache) the noise figures equal analyze's.
    """
    head = DecomposedLinear(mf.weight, mf.bias, index_sets)
    scored = evaluate_features(batched(mf.test_features, mf.test_labels, keys=mf.test_keys),
                               mf.weight, mf.bias, head, seed=seed)
    result = scored.result(mf.label_names)
    result["per_class_rho"] = scored.per_class_rho(mf.label_names)
    result["multiply_adds"] = {"full": mf.num_classes * mf.num_features, "decomposed": head.multiply_adds}
    return result
