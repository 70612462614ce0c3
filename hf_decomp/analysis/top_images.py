"""Dataset examples per feature: a streaming top-N of activations, per feature and per (class, feature).

During the statistics pass every sample's pooled features x (d,) are offered; for each feature j the
N samples with the largest x_j are kept (and, per class c, the N largest among samples of class c).
Samples are identified by the content key of their image (:func:`hf_decomp.data.loader.image_key`),
never by pixels, so the state is O(d * N) + O(C * d * N) numbers whatever the size of the split.

Order is (activation descending, key ascending): ties are broken by the key, so the kept set does not
depend on batch size, batch order, the number of processes or a resume (``merge`` is exact).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..utils.errors import DecompFileError, DecompValueError
from ..utils.files import atomic_write_json

__all__ = ["TopImages", "merge_top", "EMPTY_KEY", "TOP_IMAGES_FORMAT", "TOP_IMAGES_FILE"]

TOP_IMAGES_FILE = "top_images.safetensors"

EMPTY_KEY = torch.iinfo(torch.int64).max  # an empty slot: value -inf, sorts after every real key
TOP_IMAGES_FORMAT = "hf-decomp-top-images/1"


def merge_top(values: torch.Tensor, keys: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep, along the last axis, the ``n`` entries largest by value (ties: smallest key first).

    values float (..., m), keys int64 (..., m) -> (..., n) each, padded with (-inf, EMPTY_KEY) when m < n.
    """
    if values.shape[-1] < n:
        pad = n - values.shape[-1]
        values = torch.cat([values, values.new_full((*values.shape[:-1], pad), float("-inf"))], dim=-1)
        keys = torch.cat([keys, keys.new_full((*keys.shape[:-1], pad), EMPTY_KEY)], dim=-1)
    by_key = keys.argsort(dim=-1, stable=True)  # secondary order first, then a stable sort by value
    values, keys = values.gather(-1, by_key), keys.gather(-1, by_key)
    by_value = values.argsort(dim=-1, descending=True, stable=True)[..., :n]
    return values.gather(-1, by_value), keys.gather(-1, by_value)


class TopImages:
    """Per feature (and per class and feature) the N most activating samples, as content keys.

    Args:
        num_features: d. num_classes: C. n: how many samples to keep per feature (and per class).
        per_class: also keep the top-N of each class (O(C * d * N) memory).
        device: where the buffers live (the features' device avoids copies).
        source: where the keys come from, {"dataset", "split", "image_column"}: copied into every
            :meth:`query` answer and saved with the buffers.

    Example:
        >>> top = TopImages(num_features=2, num_classes=1, n=1)
        >>> top.update(torch.tensor([[1.0, 5.0], [3.0, 0.0]]), torch.tensor([0, 0]), torch.tensor([10, 11]))
        >>> [row[0]["key"] for row in (top.query(0), top.query(1))]
        [11, 10]
    """

    def __init__(self, num_features: int, num_classes: int, n: int = 16, per_class: bool = True,
                 device: str | torch.device | None = None, source: dict | None = None):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DecompValueError(f"top_images n={n!r} must be a positive int (images kept per feature)")
        self.num_features, self.num_classes, self.n, self.per_class = num_features, num_classes, n, per_class
        self.source = dict(source or {})
        self.values = torch.full((num_features, n), float("-inf"), device=device)
        self.keys = torch.full((num_features, n), EMPTY_KEY, dtype=torch.int64, device=device)
        class_shape = (num_classes if per_class else 0, num_features, n)
        self.class_values = torch.full(class_shape, float("-inf"), device=device)
        self.class_keys = torch.full(class_shape, EMPTY_KEY, dtype=torch.int64, device=device)

    @torch.no_grad()
    def update(self, features: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor) -> None:
        """Offer a batch: features (B, d), labels (B,), content keys (B,). Rows with NaN/inf are ignored."""
        finite = torch.isfinite(features).all(dim=1)
        features = features[finite].float()
        labels, keys = labels.to(features.device)[finite], keys.to(features.device)[finite]
        if features.shape[0] == 0:
            return
        self._offer(slice(None), features.t(), keys)
        if self.per_class:
            for c in labels.unique().tolist():
                chosen = labels == c
                self._offer(c, features[chosen].t(), keys[chosen], per_class=True)

    def _offer(self, where, values: torch.Tensor, keys: torch.Tensor, per_class: bool = False) -> None:
        kept_values, kept_keys = (self.class_values, self.class_keys) if per_class else (self.values, self.keys)
        current_values, current_keys = kept_values[where], kept_keys[where]
        merged = merge_top(torch.cat([current_values, values], dim=-1),
                           torch.cat([current_keys, keys.expand(values.shape[0], -1)], dim=-1), self.n)
        kept_values[where], kept_keys[where] = merged  # in place: state_dict() tensors stay live

    def merge_(self, other: "TopImages") -> "TopImages":
        """Fold another shard's top-N into this one (exactly the top-N of both shards' samples)."""
        if (other.num_features, other.num_classes, other.n, other.per_class) != (
                self.num_features, self.num_classes, self.n, self.per_class):
            raise DecompValueError("cannot merge top images kept for different d, C, N or per_class settings")
        for mine_v, mine_k, theirs_v, theirs_k in ((self.values, self.keys, other.values, other.keys),
                                                   (self.class_values, self.class_keys,
                                                    other.class_values, other.class_keys)):
            merged_v, merged_k = merge_top(torch.cat([mine_v, theirs_v.to(mine_v.device)], dim=-1),
                                           torch.cat([mine_k, theirs_k.to(mine_k.device)], dim=-1), self.n)
            mine_v.copy_(merged_v)
            mine_k.copy_(merged_k)
        return self

    def merge_across_processes_(self, accelerator) -> "TopImages":
        """Collective: every process ends with the top-N over all processes' samples."""
        if accelerator.num_processes <= 1:
            return self
        gathered = {name: accelerator.gather(t.unsqueeze(0).contiguous()) for name, t in self.state_dict().items()}
        for name, tensor in self.state_dict().items():
            tensor.copy_(gathered[name][0])
        for p in range(1, accelerator.num_processes):
            self.merge_(TopImages.from_state_dict({k: v[p] for k, v in gathered.items()}, per_class=self.per_class))
        return self

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The live buffers (checkpoints copy into them in place)."""
        return {"values": self.values, "keys": self.keys, "class_values": self.class_values,
                "class_keys": self.class_keys}

    @classmethod
    def from_state_dict(cls, tensors: dict[str, torch.Tensor], per_class: bool | None = None) -> "TopImages":
        d, n = tensors["values"].shape
        num_classes = tensors["class_values"].shape[0]
        per_class = num_classes > 0 if per_class is None else per_class
        top = cls(d, num_classes if per_class else 0, n, per_class=per_class, device=tensors["values"].device)
        top.num_classes = num_classes
        for name, tensor in top.state_dict().items():
            tensor.copy_(tensors[name])
        return top

    def to(self, device) -> "TopImages":
        for name, tensor in self.state_dict().items():
            setattr(self, name, tensor.to(device))
        return self

    def query(self, feature: int, class_: int | None = None) -> list[dict]:
        """The kept samples of ``feature`` (of class ``class_``), most activating first: [{key, activation}]."""
        if not 0 <= int(feature) < self.num_features:
            raise DecompValueError(f"feature={feature} is outside [0, {self.num_features}) (d = {self.num_features})")
        if class_ is None:
            values, keys = self.values[feature], self.keys[feature]
        else:
            if not self.per_class:
                raise DecompValueError("these top images were kept without per-class lists (per_class=False)")
            if not 0 <= int(class_) < self.class_values.shape[0]:
                raise DecompValueError(f"class_={class_} is outside [0, {self.class_values.shape[0]})")
            values, keys = self.class_values[class_, feature], self.class_keys[class_, feature]
        return [{**self.source, "key": int(k), "activation": float(v)}
                for v, k in zip(values.tolist(), keys.tolist()) if k != EMPTY_KEY]

    def save(self, directory: str | Path) -> Path:
        """Write ``top_images.safetensors`` (buffers + source and key scheme as metadata) into ``directory``."""
        path = Path(directory) / TOP_IMAGES_FILE
        meta = {"format": TOP_IMAGES_FORMAT, "n": self.n, "per_class": self.per_class, "source": self.source,
                "key": "hf_decomp.data.loader.image_key: blake2b-64 of the image cell's bytes, >> 1"}
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, path,
                  metadata={"format": TOP_IMAGES_FORMAT, "meta": json.dumps(meta)})
        atomic_write_json(path.with_suffix(".json"), meta)  # the same facts, for people
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "TopImages":
        path = Path(directory) / TOP_IMAGES_FILE
        if not path.is_file():
            raise DecompFileError(f"{str(directory)!r} holds no {TOP_IMAGES_FILE}: it was written by an analyze "
                                  f"without top images (an older hf-decomp); re-run `hf-decomp analyze`.")
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != TOP_IMAGES_FORMAT:
            raise DecompValueError(f"{path} has format {metadata.get('format')!r}, expected {TOP_IMAGES_FORMAT!r}")
        meta = json.loads(metadata.get("meta") or "null")
        if not isinstance(meta, dict) or not isinstance(meta.get("per_class"), bool):
            raise DecompValueError(f"{path}: its metadata has no per_class (true/false), so its buffers cannot be "
                                   f"read; re-run `hf-decomp analyze`, or delete it to go on without top images.")
        top = cls.from_state_dict(load_file(path), per_class=meta["per_class"])
        top.source = meta.get("source", {})
        return top
