"""Influential index sets as a small, versioned artifact: ``indices.json`` + ``indices.safetensors``.

The JSON is human-readable (per-class lists by name, with the metadata); the safetensors file holds
the same sets as a padded tensor for fast loading. Both are validated on load.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..portable.decomposed_head import pad_index_sets
from ..portable.index_sets import as_index, check_index_sets
from ..utils.errors import DecompFileError, DecompValueError
from ..utils.files import atomic_write_file, atomic_write_json, finish_replace_before_reading

__all__ = ["InfluentialIndices", "INDICES_FORMAT", "INDICES_JSON", "INDICES_SAFETENSORS"]

INDICES_FORMAT = "hf-decomp-indices/1"
INDICES_JSON = "indices.json"
INDICES_SAFETENSORS = "indices.safetensors"
# A safetensors header is JSON describing the tensors; ours is a few hundred bytes. Anything far larger
# is damage (or an attack on the reader's memory), refused before reading it.
_MAX_HEADER_BYTES = 1 << 20


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
        self.num_features = as_index(self.num_features, "num_features", DecompValueError)
        if self.num_features < 1:
            raise DecompValueError(f"num_features={self.num_features} must be the positive feature width d")
        self.validate()

    def validate(self) -> None:
        """Raise naming the class and index when a set is empty, out of range or has duplicates."""
        self.sets = check_index_sets(self.sets, self.num_features, label_names=self.label_names,
                                     error=DecompValueError)

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
        metadata = {"format": INDICES_FORMAT, "num_features": str(self.num_features)}
        atomic_write_file(directory / INDICES_SAFETENSORS,  # a temporary name of this writer's own, then rename
                          lambda tmp: save_file({"indices": indices, "valid": valid}, tmp, metadata=metadata))

    @classmethod
    def load(cls, path: str | Path) -> "InfluentialIndices":
        """Load from a folder holding ``indices.json`` (or the JSON file itself); validates it.

        Every defect of the files (edited JSON, damaged safetensors) is a :class:`DecompValueError`
        naming the file, the problem and the fix.
        """
        path = Path(path)
        if path.suffix != ".json":
            finish_replace_before_reading(path)  # a folder a killed run left mid-replace: finish it first
        json_path = path / INDICES_JSON if path.is_dir() else path
        if not json_path.is_file():
            raise DecompFileError(f"No {INDICES_JSON} at {str(path)!r}; run `hf-decomp analyze` to create one.")
        indices = cls.from_json_dict(_read_json(json_path), json_path)
        tensor_path = json_path.with_name(INDICES_SAFETENSORS)
        if tensor_path.is_file():
            if _read_safetensors_sets(tensor_path) != indices.sets:
                raise DecompValueError(f"{tensor_path} and {json_path} disagree; re-run analyze to rewrite them")
        return indices

    @classmethod
    def from_json_dict(cls, data, source: str | Path = INDICES_JSON) -> "InfluentialIndices":
        """Build from the dict ``to_json_dict`` writes, refusing anything edited out of shape."""
        fix = "Re-run `hf-decomp analyze` (or `hf-decomp export`) to rewrite it."
        if not isinstance(data, dict):
            raise DecompValueError(f"{source} holds a JSON {type(data).__name__}, not an object. {fix}")
        if data.get("format") != INDICES_FORMAT:
            raise DecompValueError(
                f"{source} has format {data.get('format')!r}; this version of hf-decomp reads {INDICES_FORMAT!r}"
            )
        missing = [key for key in ("label_names", "sets", "num_features") if key not in data]
        if missing:
            raise DecompValueError(f"{source} lacks {', '.join(missing)}. {fix}")
        names, sets = data["label_names"], data["sets"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not names:
            raise DecompValueError(f"{source}: label_names must be a non-empty list of class names. {fix}")
        if len(set(names)) != len(names):
            raise DecompValueError(f"{source}: label_names repeat a name, so the sets cannot be matched to classes. {fix}")
        if not isinstance(sets, dict):
            raise DecompValueError(
                f"{source}: sets must map each class name to its indices (an object), got a {type(sets).__name__}. {fix}"
            )
        absent = [n for n in names if n not in sets]
        extra = [n for n in sets if n not in names]
        if absent or extra:
            raise DecompValueError(
                f"{source}: sets and label_names disagree (no set for {absent[:5]}; sets for unknown classes "
                f"{extra[:5]}). {fix}"
            )
        for name in names:
            if not isinstance(sets[name], list):
                raise DecompValueError(f"{source}: the set of class {name!r} is not a list of indices. {fix}")
        num_features = data["num_features"]
        if isinstance(num_features, float) and (math.isnan(num_features) or not num_features.is_integer()):
            raise DecompValueError(f"{source}: num_features={num_features!r} is not an integer. {fix}")
        metadata = data.get("metadata", {})
        if not isinstance(metadata, dict):
            raise DecompValueError(f"{source}: metadata must be an object. {fix}")
        return cls(sets=[sets[name] for name in names], num_features=num_features, label_names=names,
                   metadata=metadata)


def _read_json(json_path: Path):
    try:
        return json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DecompValueError(
            f"{json_path} is not valid JSON ({e}); re-run `hf-decomp analyze` to rewrite it."
        ) from e


def _read_safetensors_sets(tensor_path: Path) -> list[list[int]]:
    """The index sets stored in ``indices.safetensors``, refusing damaged files before loading them."""
    fix = "delete it and re-run `hf-decomp analyze` (indices.json alone is enough to rebuild it)."
    size = tensor_path.stat().st_size
    with open(tensor_path, "rb") as handle:
        prefix = handle.read(8)
    if len(prefix) < 8:
        raise DecompValueError(f"{tensor_path} is empty or truncated ({size} bytes); {fix}")
    (header_bytes,) = struct.unpack("<Q", prefix)
    if header_bytes > min(_MAX_HEADER_BYTES, size - 8):
        raise DecompValueError(
            f"{tensor_path} declares a {header_bytes}-byte header in a {size}-byte file: it is damaged; {fix}"
        )
    try:
        tensors = load_file(tensor_path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise DecompValueError(f"{tensor_path} cannot be read ({e}); {fix}") from e
    missing = [key for key in ("indices", "valid") if key not in tensors]
    if missing:
        raise DecompValueError(f"{tensor_path} lacks the tensor(s) {missing}; {fix}")
    indices, valid = tensors["indices"], tensors["valid"]
    if indices.shape != valid.shape or indices.ndim != 2 or valid.dtype != torch.bool:
        raise DecompValueError(f"{tensor_path} holds indices {tuple(indices.shape)} / valid {tuple(valid.shape)} "
                               f"of the wrong shapes or types; {fix}")
    return [row[ok].tolist() for row, ok in zip(indices, valid)]
