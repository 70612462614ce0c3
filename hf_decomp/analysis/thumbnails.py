"""Small thumbnails of the top images the explorer's Class view shows, written beside the results.

The top images are stored as content keys (:mod:`hf_decomp.analysis.top_images`); finding their pixels
means hashing every image of the statistics split once. ``analyze`` does that once, when it writes its
results, and saves for each shown key its row, its label and a thumbnail, so that no explorer view
(nor a Space without the dataset) ever reads the split again.

``top_images_thumbnails.safetensors``: ``keys`` int64 (M,), ``rows`` int64 (M,), ``labels`` int64 (M,)
(-1: no label), ``pixels`` uint8 (M, S, S, 3); metadata ``format`` and ``meta`` (JSON: source, size,
shown per feature).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..data.loader import decode_image, image_key
from ..utils.errors import DecompValueError
from .top_images import TopImages

__all__ = ["THUMBNAILS_FILE", "THUMBNAILS_FORMAT", "SHOWN", "Thumbnails", "shown_keys", "rows_by_key",
           "write_thumbnails"]

logger = logging.getLogger(__name__)

THUMBNAILS_FILE = "top_images_thumbnails.safetensors"
THUMBNAILS_FORMAT = "hf-decomp-thumbnails/1"
SHOWN = 8  # top images shown per feature in the Class view (of the N kept)
MAX_SIDE = 48  # thumbnails are at most this many pixels wide (CIFAR's 32 px images are kept as they are)


def shown_keys(examples: TopImages, index_sets: Sequence[Sequence[int]], shown: int = SHOWN) -> list[int]:
    """The keys a Class view can show: for each class c and j in I_c, the top ``shown`` of class c and of all."""
    keys = set()
    for c, features in enumerate(index_sets):
        for j in features:
            keys.update(entry["key"] for entry in examples.query(j)[:shown])
            if examples.per_class:
                keys.update(entry["key"] for entry in examples.query(j, c)[:shown])
    return sorted(keys)


def rows_by_key(dataset, image_column: str, wanted: set[int] | None = None,
                progress: Callable[[float, str], None] | None = None) -> dict[int, int]:
    """content key -> first row with that content (only the ``wanted`` keys when given): one read of the column."""
    column = dataset.select_columns([image_column]).with_format("arrow")
    total, table, batch = len(column), {}, 5000
    for start in range(0, total, batch):
        cells = column[start:start + batch].column(image_column)
        if hasattr(cells.type, "get_field_index"):  # {bytes, path} cells: read the bytes, as the loader does
            cells = cells.combine_chunks()
            cells = [{"bytes": b, "path": p} for b, p in zip(cells.field("bytes").to_pylist(),
                                                            cells.field("path").to_pylist())]
        else:
            cells = cells.to_pylist()
        for offset, cell in enumerate(cells):
            key = image_key(cell)
            if wanted is None or key in wanted:
                table.setdefault(key, start + offset)
        if progress is not None:
            progress(min(1.0, (start + batch) / max(total, 1)), "indexing dataset images")
    return table


def _thumbnail(image: Image.Image, side: int) -> np.ndarray:
    image = image.convert("RGB")
    if image.size != (side, side):
        image = ImageOps.fit(image, (side, side), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def write_thumbnails(directory: str | Path, examples: TopImages, index_sets: Sequence[Sequence[int]],
                     split=None, shown: int = SHOWN) -> Path | None:
    """Write ``top_images_thumbnails.safetensors`` into ``directory`` (atomically); None when there is nothing to show.

    Args:
        examples: the run's top images (their ``source`` names the split).
        split: the :class:`~hf_decomp.data.ImageSplit` the keys come from (default: opened from the source).
    """
    keys = shown_keys(examples, index_sets, shown)
    if not keys:
        return None
    if split is None:
        from ..data import load_image_split

        source = examples.source
        split = load_image_split(source.get("dataset"), source["split"], image_column=source.get("image_column"),
                                 require_labels=False)
    dataset = split.dataset
    found = rows_by_key(dataset, split.image_column, set(keys))
    keys = [k for k in keys if k in found]
    rows = [found[k] for k in keys]
    records = dataset.select(rows) if rows else []
    images = [decode_image(record[split.image_column]) for record in records]
    side = min(MAX_SIDE, max((max(i.size) for i in images), default=MAX_SIDE))
    labels = [record.get(split.label_column) if split.label_column else None for record in records]
    tensors = {
        "keys": torch.tensor(keys, dtype=torch.int64),
        "rows": torch.tensor(rows, dtype=torch.int64),
        "labels": torch.tensor([-1 if label is None else int(label) for label in labels], dtype=torch.int64),
        "pixels": torch.from_numpy(np.stack([_thumbnail(i, side) for i in images]) if images else
                                   np.zeros((0, side, side, 3), np.uint8)),
    }
    meta = {"source": examples.source, "side": side, "shown": shown, "missing": len(found) - len(keys)}
    path = Path(directory) / THUMBNAILS_FILE
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": THUMBNAILS_FORMAT, "meta": json.dumps(meta)})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as a plain open() would (mkstemp's is 0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@dataclass
class Thumbnails:
    """The saved thumbnails, by content key: ``image(key)``, ``label(key)``, ``row(key)``."""

    keys: list[int]
    rows: list[int]
    labels: list[int | None]
    pixels: np.ndarray  # (M, S, S, 3) uint8
    source: dict

    def __post_init__(self):
        self._index = {key: i for i, key in enumerate(self.keys)}

    def __contains__(self, key: int) -> bool:
        return int(key) in self._index

    def image(self, key: int) -> Image.Image:
        return Image.fromarray(self.pixels[self._index[int(key)]])

    def label(self, key: int) -> int | None:
        return self.labels[self._index[int(key)]]

    def row(self, key: int) -> int:
        return self.rows[self._index[int(key)]]

    @classmethod
    def load(cls, directory: str | Path) -> "Thumbnails":
        path = Path(directory) / THUMBNAILS_FILE
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("format") != THUMBNAILS_FORMAT:
            raise DecompValueError(f"{path} has format {metadata.get('format')!r}, expected {THUMBNAILS_FORMAT!r}; "
                                   f"delete it (the explorer then reads the images from the dataset).")
        tensors = load_file(path)
        pixels = tensors["pixels"].numpy()
        count = len(tensors["keys"])
        if pixels.ndim != 4 or pixels.shape[0] != count or pixels.shape[-1] != 3 or \
                len(tensors["rows"]) != count or len(tensors["labels"]) != count:
            raise DecompValueError(f"{path}: keys, rows, labels and pixels disagree in length or shape; delete it "
                                   f"(the explorer then reads the images from the dataset).")
        return cls(tensors["keys"].tolist(), tensors["rows"].tolist(),
                   [None if label < 0 else label for label in tensors["labels"].tolist()], pixels,
                   json.loads(metadata.get("meta") or "{}").get("source", {}))
