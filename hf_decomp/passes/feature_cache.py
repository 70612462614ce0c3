"""Pooled features cached on disk as safetensors shards, keyed by model and data.

A cache folder holds ``meta.json`` (what produced the features) and ``shard-00000.safetensors``,
... each with ``features`` (n, d) float32, ``labels`` (n,) int64 and ``keys`` (n,) int64, the images'
content keys (:func:`~hf_decomp.data.loader.image_key`) that seed the noise ablation. Shards stream: readers never
need more than one shard in memory. A folder made for another model or dataset is refused.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..data import ImageSplit
from ..models import ClassifierAdapter
from ..utils.errors import DecompValueError
from ..utils.files import atomic_write_json, new_staging_dir, normalize_permissions, publish_dir
from ..utils.paths import cache_dir
from .features import FeaturePass, make_accelerator
from .fingerprint import data_fingerprint, explain_key_difference, weights_digest

__all__ = ["feature_cache_key", "FeatureCache", "cached_features"]

CACHE_FORMAT = "hf-decomp-features/3"  # /3: shards hold the content keys


def feature_cache_key(adapter: ClassifierAdapter, split: ImageSplit, extra: dict | None = None) -> dict:
    """What determines the features: model, a digest of all its weights, preprocessing and the data's
    fingerprint (see :mod:`hf_decomp.passes.fingerprint`)."""
    return {
        "format": CACHE_FORMAT,
        "model": adapter.name,
        "weights_sha256": weights_digest(adapter),
        "data_fingerprint": data_fingerprint(split),
        "num_features": adapter.num_features,
        "num_classes": adapter.num_classes,
        "transform": repr(adapter.transform),
        **split.describe(),
        **(extra or {}),
    }


class FeatureCache:
    """One cached (model, split) feature set in ``directory``."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    @property
    def meta_path(self) -> Path:
        return self.directory / "meta.json"

    def is_complete(self) -> bool:
        return self.meta_path.is_file() and self.meta().get("complete", False) is True

    def _unreadable(self, what: Path, error: BaseException) -> DecompValueError:
        return DecompValueError(
            f"Feature cache {self.directory} is damaged: {what.name} is unreadable ({type(error).__name__}: "
            f"{error}). Delete the folder {self.directory} and run again to recompute the features."
        )

    def meta(self) -> dict:
        try:
            meta = json.loads(self.meta_path.read_text())
            if not isinstance(meta, dict) or not isinstance(meta.get("key", {}), dict):
                raise ValueError("not a JSON object with a 'key' object")
            if meta.get("complete") and not (isinstance(meta.get("num_samples"), int)
                                             and isinstance(meta.get("num_shards"), int)):
                raise ValueError("num_samples / num_shards are not integers")
        except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise self._unreadable(self.meta_path, e) from e
        return meta

    def check_matches(self, key: dict) -> None:
        """Refuse a cache made for another model or dataset, naming the fields that differ."""
        stored = self.meta().get("key", {})
        different = {k: (stored.get(k), v) for k, v in key.items() if stored.get(k) != v}
        if different:
            details = "; ".join(f"{k}: cached {a!r}, asked {b!r}" for k, (a, b) in different.items())
            raise DecompValueError(
                f"Feature cache {self.directory} was made for other inputs ({explain_key_difference(different)}"
                f"{details}). Use another --cache-dir or delete that folder."
            )

    def _check_only_cache_files(self) -> None:
        """``write`` replaces the folder: refuse when it holds anything but shards and meta.json (an
        interrupted write leaves shards without meta.json, which is rewritten)."""
        foreign = sorted(p.name for p in self.directory.iterdir()
                         if p.name != "meta.json" and not (p.name.startswith("shard-") and p.suffix == ".safetensors"))
        if foreign:
            raise DecompValueError(f"{self.directory} holds files but is not an hf-decomp feature cache "
                                   f"({', '.join(foreign[:3])}); choose an empty or new --cache-dir.")

    def holds(self, key: dict) -> bool:
        """True when the folder is a complete cache made for ``key`` (False when damaged or missing)."""
        try:
            return self.is_complete() and self.meta().get("key") == key
        except DecompValueError:
            return False

    def write(self, batches, key: dict, shard_size: int = 65_536) -> None:
        """Write batches of (features, labels, keys) into shards, then mark the cache complete.

        Everything is written in a folder of this writer's own and renamed into place whole: processes
        filling the same cache at once never write into each other's files, and a complete cache for the
        same key that another process put there first is kept (readers may be reading it).
        """
        if self.directory.exists():
            self._check_only_cache_files()
        staging = new_staging_dir(self.directory)
        buffered, labels, keys, count, shards = [], [], [], 0, 0

        def flush():
            nonlocal buffered, labels, keys, shards
            if buffered:
                save_file({"features": torch.cat(buffered).contiguous(), "labels": torch.cat(labels).contiguous(),
                           "keys": torch.cat(keys).contiguous()},
                          staging / f"shard-{shards:05d}.safetensors")
                shards += 1
                buffered, labels, keys = [], [], []

        try:
            for features, batch_labels, batch_keys in batches:
                buffered.append(features.detach().float().cpu())
                labels.append(batch_labels.detach().long().cpu())
                keys.append(batch_keys.detach().long().cpu())
                count += features.shape[0]
                if sum(b.shape[0] for b in buffered) >= shard_size:
                    flush()
            flush()
            atomic_write_json(staging / "meta.json",
                              {"key": key, "num_samples": count, "num_shards": shards, "complete": True})
            normalize_permissions(staging)
            publish_dir(staging, self.directory, lambda folder: FeatureCache(folder).holds(key))
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def iter_shards(self, with_keys: bool = False) -> Iterator[tuple[torch.Tensor, ...]]:
        """(features, labels) per shard; with ``with_keys`` (features, labels, keys)."""
        meta = self.meta()
        paths = sorted(self.directory.glob("shard-*.safetensors"))
        if meta.get("complete") and len(paths) != meta["num_shards"]:
            raise self._unreadable(self.meta_path, ValueError(
                f"{len(paths)} shard files, meta.json lists {meta['num_shards']}"))
        for path in paths:
            try:
                tensors = load_file(path)
                features, labels, keys = tensors["features"], tensors["labels"], tensors["keys"]
                if features.ndim != 2 or labels.shape != features.shape[:1] or keys.shape != labels.shape:
                    raise ValueError(f"features {tuple(features.shape)}, labels {tuple(labels.shape)} and keys "
                                     f"{tuple(keys.shape)} disagree")
            except (SafetensorError, OSError, ValueError, KeyError) as e:
                raise self._unreadable(path, e) from e
            yield (features, labels, keys) if with_keys else (features, labels)

    def load(self, with_keys: bool = False) -> tuple[torch.Tensor, ...]:
        """All (features, labels), with ``with_keys`` also the content keys."""
        shards = list(self.iter_shards(with_keys=True))
        if not shards:
            num_features = self.meta()["key"]["num_features"]
            empty = (torch.empty(0, num_features), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long))
            return empty if with_keys else empty[:2]
        features, labels, keys = (torch.cat(parts) for parts in zip(*shards))
        expected = self.meta().get("num_samples")
        if expected is not None and features.shape[0] != expected:
            raise self._unreadable(self.meta_path, ValueError(
                f"the shards hold {features.shape[0]} samples, meta.json says {expected}"))
        return (features, labels, keys) if with_keys else (features, labels)


def cached_features(
    adapter: ClassifierAdapter,
    split: ImageSplit,
    directory: str | Path | None = None,
    accelerator=None,
    batch_size: int = 256,
    num_workers: int | None = None,
    with_keys: bool = False,
) -> tuple[torch.Tensor, ...]:
    """Features and labels of a split (with ``with_keys`` also the images' content keys), computed once and
    then read from the cache.

    ``directory`` defaults to ``<hf_decomp cache>/features/<hash of the key>``.
    """
    key = feature_cache_key(adapter, split)
    if directory is None:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
        directory = cache_dir() / "features" / digest
    cache = FeatureCache(directory)
    if cache.is_complete():
        cache.check_matches(key)
        return cache.load(with_keys)
    accelerator = accelerator or make_accelerator()
    feature_pass = FeaturePass(adapter, split, accelerator, batch_size, num_workers, f"features [{split.split}]",
                               with_keys=True)
    if accelerator.num_processes <= 1:
        cache.write(feature_pass, key)
        return cache.load(with_keys)
    batches = _gathered_batches(feature_pass, split, accelerator)
    if accelerator.is_main_process:  # one writer; the others read what it wrote
        cache.write(batches, key)
    accelerator.wait_for_everyone()
    return cache.load(with_keys)


def _gathered_batches(feature_pass: FeaturePass, split: ImageSplit, accelerator) -> list:
    """Every process's batches on every process, in the order of a one-process pass (map-style data: process
    ``p`` read global batches ``p, p + N, ...``); streamed shares are put one after the other."""
    from accelerate.utils import gather_object

    from .distributed import check_exact_once, raise_if_any_failed

    mine, error = [], None
    try:
        for features, labels, keys in feature_pass:
            order = (feature_pass.position - 1) * accelerator.num_processes + accelerator.process_index
            if split.streaming:
                order = (accelerator.process_index, feature_pass.position)
            mine.append((order, features.cpu(), labels.cpu(), keys.cpu()))
    except Exception as e:  # noqa: BLE001 - re-raised on every process
        error = e
    raise_if_any_failed(error, accelerator)
    rows = gather_object([feature_pass.seen_images + feature_pass.skipped_images])
    check_exact_once(split, sum(rows))
    gathered = sorted(gather_object(mine), key=lambda item: item[0])
    return [batch for _, *batch in gathered]
