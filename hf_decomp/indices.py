"""Influential index sets as a small, versioned artifact: ``indices.json`` + ``indices.safetensors``.

The JSON is human-readable (per-class lists by name, with the metadata); the safetensors file holds
the same sets as a padded tensor for fast loading. Both are validated on load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .errors import DecompFileError, DecompValueError
from .head import pad_index_sets
from .io_utils import atomic_write_json

__all__ = ["InfluentialIndices", "INDICES_FORMAT", "INDICES_JSON", "INDICES_SAFETENSORS"]

INDICES_FORMAT = "hf-decomp-indices/1"
INDICES_JSON = "indices.json"
INDICES_SAFETENSORS = "indices.safetensors"


@dataclass
class InfluentialIndices:
    """Per-class influential feature indices and how they were obtained.

    Attributes:
        sets: one list of feature indices per class, most influential first.
        num_features: d, the width of the features the indices point into.
        label_names: one name per class.
        metadata: model, dataset, split, k1, k2, method, sample counts, metrics, ...
    """

    sets: list[list[int]]
    num_features: int
    label_names: list[str]
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.sets = [[int(i) for i in s] for s in self.sets]
        self.validate()

    def validate(self) -> None:
        """Raise naming the class and index when a set is empty, out of range or has duplicates."""
        if len(self.label_names) != len(self.sets):
            raise DecompValueError(
                f"{len(self.sets)} index sets but {len(self.label_names)} label names; expected one set per class"
            )
        for c, subset in enumerate(self.sets):
            name = self.label_names[c]
            if not subset:
                raise DecompValueError(f"class {c} ({name!r}) has an empty index set")
            bad = [i for i in subset if not 0 <= i < self.num_features]
            if bad:
                raise DecompValueError(
                    f"class {c} ({name!r}): indices {bad} are outside [0, {self.num_features}) (d={self.num_features})"
                )
            if len(set(subset)) != len(subset):
                raise DecompValueError(f"class {c} ({name!r}): duplicate indices in {subset}")

    @property
    def num_classes(self) -> int:
        return len(self.sets)

    @property
    def multiply_adds(self) -> int:
        return sum(len(s) for s in self.sets)

    def mask(self) -> torch.Tensor:
        """(C, d) bool mask of the sets."""
        mask = torch.zeros(self.num_classes, self.num_features, dtype=torch.bool)
        for c, subset in enumerate(self.sets):
            mask[c, subset] = True
        return mask

    def to_json_dict(self) -> dict:
        return {
            "format": INDICES_FORMAT,
            "num_features": self.num_features,
            "num_classes": self.num_classes,
            "label_names": self.label_names,
            "sets": {name: subset for name, subset in zip(self.label_names, self.sets)},
            "metadata": self.metadata,
        }

    def save(self, directory: str | Path) -> None:
        """Write ``indices.json`` and ``indices.safetensors`` into ``directory`` (atomically each)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(directory / INDICES_JSON, self.to_json_dict())
        indices, valid = pad_index_sets(self.sets, self.num_features)
        tmp = directory / f".{INDICES_SAFETENSORS}.tmp"
        save_file({"indices": indices, "valid": valid}, tmp,
                  metadata={"format": INDICES_FORMAT, "num_features": str(self.num_features)})
        tmp.replace(directory / INDICES_SAFETENSORS)

    @classmethod
    def load(cls, path: str | Path) -> "InfluentialIndices":
        """Load from a folder holding ``indices.json`` (or the JSON file itself); validates it."""
        path = Path(path)
        json_path = path / INDICES_JSON if path.is_dir() else path
        if not json_path.is_file():
            raise DecompFileError(f"No {INDICES_JSON} at {str(path)!r}; run `hf-decomp analyze` to create one.")
        try:
            data = json.loads(json_path.read_text())
        except json.JSONDecodeError as e:
            raise DecompValueError(f"{json_path} is not valid JSON: {e}") from e
        if data.get("format") != INDICES_FORMAT:
            raise DecompValueError(
                f"{json_path} has format {data.get('format')!r}; this version of hf-decomp reads {INDICES_FORMAT!r}"
            )
        names = data["label_names"]
        sets = [data["sets"][name] for name in names]
        indices = cls(sets=sets, num_features=int(data["num_features"]), label_names=names,
                      metadata=data.get("metadata", {}))
        tensor_path = json_path.with_name(INDICES_SAFETENSORS)
        if tensor_path.is_file():
            tensors = load_file(tensor_path)
            from_tensor = [row[ok].tolist() for row, ok in zip(tensors["indices"], tensors["valid"])]
            if from_tensor != indices.sets:
                raise DecompValueError(f"{tensor_path} and {json_path} disagree; re-run analyze to rewrite them")
        return indices
