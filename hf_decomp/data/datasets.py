"""Image classification datasets through 🤗 datasets: Hub names, local parquet / imagefolder folders.

Images are read undecoded (``Image(decode=False)``) and decoded in the data-loader workers, so one
corrupt file is skipped and counted instead of stopping the run.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from dataclasses import dataclass
from pathlib import Path

import datasets
from PIL import Image

from ..utils.errors import DecompFileError, DecompValueError
from ..utils.paths import default_cifar10_dataset
from .labels import check_label_column, dataset_wnids

logger = logging.getLogger(__name__)

__all__ = ["ImageSplit", "load_image_split", "split_names", "default_eval_split", "unreadable_split_message"]

_IMAGE_COLUMN_NAMES = ("image", "img", "pixel_values", "jpg", "png", "picture")
_LABEL_COLUMN_NAMES = ("label", "labels", "fine_label", "class", "cls", "target")
_EVAL_SPLIT_PREFERENCE = ("test", "validation", "valid", "val")


@dataclass
class ImageSplit:
    """One split of an image classification dataset, with its detected columns.

    Attributes:
        dataset: a ``datasets.Dataset`` or ``IterableDataset`` with the image column undecoded.
        name: how the dataset was asked for; split: the split's name.
        image_column / label_column: the columns used (label_column is None for unlabeled data).
        label_names: class names when the label column is a ``ClassLabel``, else None.
        streaming: whether ``dataset`` is an ``IterableDataset``.
        subset: whether ``dataset`` is a ``limit`` subset (a streamed one must be split between
            processes example by example: whole shards would each take their own subset).
        label_wnids: per label index, the ImageNet WordNet id read from a ``wnid`` column, else None.
        label_order: {dataset label: model label} when the labels must be renumbered into the model's
            class order (set by :func:`~hf_decomp.data.labels.align_labels`), else None.
    """

    dataset: datasets.Dataset | datasets.IterableDataset
    name: str
    split: str
    image_column: str
    label_column: str | None
    label_names: list[str] | None
    streaming: bool
    subset: bool = False
    label_wnids: list[str] | None = None
    label_order: dict[int, int] | None = None

    @property
    def num_rows(self) -> int | None:
        return None if self.streaming else len(self.dataset)

    def image_column_kind(self) -> str:
        """What the image column holds, for errors: 'images (datasets Image)', 'int64 values', ..."""
        feature = (getattr(self.dataset, "features", None) or {}).get(self.image_column)
        if isinstance(feature, datasets.Image):
            return "images (datasets Image)"
        if isinstance(feature, datasets.Value):
            return f"{feature.dtype} values"
        return type(feature).__name__ if feature is not None else "values of an undeclared type"

    def describe(self) -> dict:
        described = {"dataset": self.name, "split": self.split, "image_column": self.image_column,
                     "label_column": self.label_column, "streaming": self.streaming, "num_rows": self.num_rows}
        if self.label_order is not None:  # part of feature-cache and checkpoint keys: cached labels are renumbered
            described["label_order"] = {str(k): v for k, v in sorted(self.label_order.items())}
        return described


def _load_args(name: str) -> tuple[str, dict]:
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix != ".parquet":
            raise DecompValueError(f"Dataset file {name!r}: only .parquet files can be given directly; "
                                   f"give a folder (parquet or imagefolder layout) or a Hub name.")
        return "parquet", {"data_files": {"train": str(path)}}
    if path.is_dir():
        return str(path), {}
    if name.startswith((".", "/", "~")):
        raise DecompFileError(f"Dataset folder {name!r} does not exist.")
    return name, {}


def split_names(name: str | None) -> list[str]:
    """The splits a dataset offers (reads local folders without network)."""
    name = name or default_cifar10_dataset()
    path, kwargs = _load_args(name)
    if "data_files" in kwargs:
        return list(kwargs["data_files"])
    try:
        return list(datasets.get_dataset_split_names(path, **kwargs))
    except Exception as e:  # noqa: BLE001 - datasets raises many types for unreachable data
        raise DecompFileError(
            f"Could not read dataset {name!r} ({type(e).__name__}: {e}). Give a local folder "
            f"(parquet or imagefolder) or make sure the Hub is reachable."
        ) from e


def default_eval_split(name: str | None) -> str:
    """``test``, else ``validation`` (or the first of val-like names) of the dataset."""
    available = split_names(name)
    for candidate in _EVAL_SPLIT_PREFERENCE:
        if candidate in available:
            return candidate
    raise DecompValueError(
        f"Dataset {name!r} has no test or validation split (it has {available}); choose one with --eval-split."
    )


def _detect_column(features: datasets.Features, wanted: str | None, kind: str, feature_type, names, flag) -> str | None:
    columns = list(features)
    if wanted is not None:
        if wanted not in features:
            raise DecompValueError(f"{kind} column {wanted!r} not found; the dataset has columns {columns}.")
        return wanted
    typed = [c for c, f in features.items() if isinstance(f, feature_type)]
    if typed:
        return typed[0]
    for candidate in names:
        if candidate in features:
            return candidate
    return None


def load_image_split(
    name: str | None,
    split: str,
    *,
    streaming: bool = False,
    image_column: str | None = None,
    label_column: str | None = None,
    require_labels: bool = True,
    limit: int | None = None,
    seed: int = 0,
) -> ImageSplit:
    """Load one split of an image classification dataset.

    Args:
        name: Hub dataset name (``uoft-cs/cifar10``), a local folder (parquet or imagefolder) or a
            ``.parquet`` file; None for the bundled CIFAR-10 (Hub's ``uoft-cs/cifar10`` if absent).
        split: e.g. ``train``, ``test``, ``validation``.
        streaming: return an ``IterableDataset`` that reads as it goes.
        image_column / label_column: override the detected columns.
        require_labels: raise when no label column is found.
        limit: keep a seeded random subset of ``limit`` rows (quick runs). Random, not the first
            rows, because datasets such as CIFAR-10 on the Hub are stored sorted by label. A streamed
            split is read once to the end to draw it (see :func:`stream_subset`).
        seed: seed of that subset.
    """
    name = name or default_cifar10_dataset()
    if limit is not None and limit < 1:
        raise DecompValueError(f"limit={limit} must be a positive number of rows")
    path, kwargs = _load_args(name)
    try:
        dataset = datasets.load_dataset(path, split=split, streaming=streaming, **kwargs)
    except ValueError as e:
        if "split" in str(e).lower():
            raise DecompValueError(
                f"Dataset {name!r} has no split {split!r}; available splits: {split_names(name)}."
            ) from e
        if "corresponds to no data" in str(e):  # datasets' way of saying the split has no rows
            raise DecompValueError(
                f"Dataset {name!r} split {split!r} is empty (0 rows); available splits: {split_names(name)}. "
                f"Choose a split with data."
            ) from e
        raise
    except (FileNotFoundError, ConnectionError, OSError) as e:
        raise DecompFileError(
            f"Could not load dataset {name!r} split {split!r} ({type(e).__name__}: {e}). Offline, give a "
            f"local folder (parquet or imagefolder layout) with --dataset PATH."
        ) from e

    features = dataset.features
    typed = features is not None
    if features is None:  # some streaming sources only know their columns after one row
        features = datasets.Features.from_dict(
            {k: {"_type": "Value", "dtype": "string"} for k in next(iter(dataset))}
        )
    image_col = _detect_column(features, image_column, "image", datasets.Image, _IMAGE_COLUMN_NAMES, "--image-column")
    label_col = _detect_column(features, label_column, "label", datasets.ClassLabel, _LABEL_COLUMN_NAMES, "--label-column")
    if image_col is None:
        raise DecompValueError(
            f"Dataset {name!r} has no recognisable image column; its columns are {list(features)}. "
            f"Name it with --image-column (image_column=...)."
        )
    if label_col is None and require_labels:
        raise DecompValueError(
            f"Dataset {name!r} has no recognisable label column; its columns are {list(features)}. "
            f"Name it with --label-column (label_column=...)."
        )
    if label_col is not None and typed:
        try:
            check_label_column(dataset, features, label_col, name)
        except DecompValueError:
            if require_labels or label_column is not None:
                raise
            logger.warning("%s: column %r holds no class indices; reading the images without labels", name, label_col)
            label_col = None
    wnids = dataset_wnids(dataset, label_col) if label_col is not None else None
    if isinstance(features[image_col], datasets.Image):
        dataset = dataset.cast_column(image_col, datasets.Image(decode=False))
    label_feature = features[label_col] if label_col else None
    label_names = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None
    keep = [c for c in (image_col, label_col) if c]
    dataset = dataset.select_columns(keep)
    if limit is not None:
        if streaming:
            dataset = stream_subset(dataset, limit, seed, image_col)
        else:
            dataset = dataset.shuffle(seed=seed).select(range(min(limit, len(dataset))))
    return ImageSplit(dataset=dataset, name=name, split=split, image_column=image_col, label_column=label_col,
                      label_names=label_names, streaming=streaming, subset=limit is not None, label_wnids=wnids)


def image_cell_bytes(value) -> bytes:
    """What identifies an image cell's content: its encoded bytes, else its path (or its pixels, decoded)."""
    if isinstance(value, dict):
        return value.get("bytes") or str(value.get("path")).encode()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, Image.Image):
        return value.tobytes()
    return str(value).encode()


def _content_key(value, seed: int) -> int:
    """A seeded 64-bit hash of an image cell's content: the same row gets the same key in any read order."""
    digest = hashlib.blake2b(image_cell_bytes(value), digest_size=8, key=seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest(), "little")


def _bottom_k_rows(dataset, limit: int, seed: int, image_column: str):
    """The ``limit`` rows with the smallest seeded content keys, in stream order (holds ``limit`` rows)."""
    kept: list[tuple[int, int, dict]] = []  # (-key, -position, row): a max-heap of the smallest keys
    for position, row in enumerate(dataset):
        item = (-_content_key(row[image_column], seed), -position, row)
        if len(kept) < limit:
            heapq.heappush(kept, item)
        elif item[:2] > kept[0][:2]:
            heapq.heapreplace(kept, item)
    yield from (row for _, _, row in sorted(kept, key=lambda item: -item[1]))


def stream_subset(dataset: datasets.IterableDataset, limit: int, seed: int, image_column: str) -> datasets.IterableDataset:
    """A seeded uniform random subset of ``limit`` rows of a stream (bottom-k of a seeded hash of each image).

    A shuffle buffer is not enough: on a label-sorted stream (CIFAR-10 on the Hub) a 10,000-row buffer
    only ever sees the first classes. Here every row has the same chance whatever its position, and the
    subset does not depend on shard order or worker count; the price is one read of the whole stream
    (images are not decoded) and ``limit`` rows held in memory.
    """
    logger.info("drawing %d random rows from the stream: reading it once to the end", limit)
    return datasets.IterableDataset.from_generator(
        _bottom_k_rows, features=dataset.features,
        gen_kwargs={"dataset": dataset, "limit": limit, "seed": seed, "image_column": image_column})


def unreadable_split_message(split: ImageSplit, rows: int) -> str:
    """The one line for a split in which no image could be read: the column, what it holds, the fix."""
    return (f"None of the {rows} rows of {split.name} [{split.split}] holds a readable image: the image column "
            f"{split.image_column!r} holds {split.image_column_kind()}. Name the column of encoded images (bytes, "
            f"paths or datasets Image) with --image-column, or check that the files are images.")
