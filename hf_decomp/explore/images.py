"""Images of a dataset split for the explorer: by row, and by content key (the ids top images store).

The split is opened on first use, and the key -> row table is built on first use by hashing each image
cell once (the same :func:`~hf_decomp.data.loader.image_key` the statistics pass used); both are kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from PIL import Image

from ..analysis.thumbnails import rows_by_key
from ..data import ImageSplit, load_image_split
from ..data.loader import decode_image

__all__ = ["DatasetImages"]


class DatasetImages:
    """Lazy access to one split's images.

    Args:
        dataset: a name :func:`~hf_decomp.data.load_image_split` understands. split: its split.
        image_column: the column the keys were computed from (default: detected).
    """

    def __init__(self, dataset: str, split: str, image_column: str | None = None):
        self.dataset, self.split_name, self.image_column = dataset, split, image_column
        self._split: ImageSplit | None = None
        self._rows_by_key: dict[int, int] | None = None
        self._lock = threading.Lock()

    @property
    def split(self) -> ImageSplit:
        with self._lock:
            if self._split is None:
                self._split = load_image_split(self.dataset, self.split_name, image_column=self.image_column,
                                               require_labels=False)
            return self._split

    @property
    def num_rows(self) -> int:
        return self.split.num_rows or 0

    def row(self, index: int) -> tuple[Image.Image, int | None]:
        """(RGB image, label or None) of row ``index``."""
        split = self.split
        record = split.dataset[int(index)]
        label = record.get(split.label_column) if split.label_column else None
        return decode_image(record[split.image_column]), None if label is None else int(label)

    def rows_by_key(self, progress: Callable[[float, str], None] | None = None) -> dict[int, int]:
        """content key -> first row with that content; built once (one read of the image column)."""
        if self._rows_by_key is None:
            self._rows_by_key = rows_by_key(self.split.dataset, self.split.image_column, progress=progress)
        return self._rows_by_key

    def by_key(self, key: int, progress=None) -> tuple[Image.Image, int | None] | None:
        row = self.rows_by_key(progress).get(int(key))
        return None if row is None else self.row(row)
