"""Fingerprints that decide whether saved work (checkpoints, cached features) belongs to a model and data.

* :func:`weights_digest`: SHA-256 of every tensor of the model's ``state_dict`` (names, dtypes, shapes and
  bytes), streamed tensor by tensor into ``hashlib``; computed once per model and recomputed only when a
  tensor was changed in place.
* :func:`data_fingerprint`: ``datasets``' own ``_fingerprint`` for map-style data (it follows the data
  files and every ``shuffle`` / ``select``); for streams, each file's size, mtime and a hash of its first and
  last 64 KiB (Hub files by their URL, which pins the revision), plus the stream's shuffle / take settings.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path

import torch

from ..data import ImageSplit

__all__ = ["weights_digest", "data_fingerprint", "explain_key_difference"]

_EDGE_BYTES = 64 * 1024
_digests: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, str]]" = weakref.WeakKeyDictionary()


def _versions(module: torch.nn.Module) -> tuple:
    """Changes whenever a tensor of the module is replaced or modified in place."""
    return tuple((name, t.data_ptr(), t._version) for name, t in module.state_dict(keep_vars=True).items())


def weights_digest(module: torch.nn.Module) -> str:
    """SHA-256 (hex) of all weights and buffers of ``module``, streamed one tensor at a time."""
    versions = _versions(module)
    cached = _digests.get(module)
    if cached is not None and cached[0] == versions:
        return cached[1]
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        tensor = tensor.detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            data = tensor.to("cpu").contiguous().reshape(-1).view(torch.uint8)
            digest.update(memoryview(data.numpy()))
    value = digest.hexdigest()
    _digests[module] = (versions, value)
    return value


def _file_fingerprint(path: str) -> str:
    if "://" in path and not path.startswith("file://"):
        return path  # a remote file: its URL names the revision
    path = path.removeprefix("file://")
    stat = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        digest.update(handle.read(_EDGE_BYTES))
        if stat.st_size > _EDGE_BYTES:
            handle.seek(max(stat.st_size - _EDGE_BYTES, _EDGE_BYTES))
            digest.update(handle.read())
    return f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{digest.hexdigest()[:16]}"


def _stream_parts(dataset) -> list[str]:
    """The files and the shuffle / take settings of a streamed dataset, read from its iterable chain."""
    parts, pending = [], [getattr(dataset, "_ex_iterable", None)]
    while pending:
        node = pending.pop()
        if node is None:
            continue
        parts.append(type(node).__name__)
        for attribute in ("n", "buffer_size"):
            if isinstance(getattr(node, attribute, None), int):
                parts.append(f"{attribute}={getattr(node, attribute)}")
        generator = getattr(node, "generator", None)
        if generator is not None and hasattr(generator, "bit_generator"):
            parts.append(str(generator.bit_generator.state.get("state")))
        kwargs = getattr(node, "kwargs", None) or {}
        for key, value in sorted(kwargs.items()):  # a generator's settings (e.g. the seeded --limit subset)
            if key != "files" and isinstance(value, (int, float, str)):
                parts.append(f"{key}={value}")
            elif hasattr(value, "_ex_iterable"):  # a stream read by the generator
                pending.append(value._ex_iterable)
        files = kwargs.get("files")
        stack = [files] if files is not None else []
        while stack:
            item = stack.pop()
            if isinstance(item, (list, tuple)):
                stack.extend(reversed(item))
            elif isinstance(item, str):
                parts.append(_file_fingerprint(item))
        pending.append(getattr(node, "ex_iterable", None))
        pending.extend(getattr(node, "ex_iterables", None) or [])
    return parts


def data_fingerprint(split: ImageSplit) -> str:
    """A short hash that changes when the rows of ``split`` (files, content, subset) change."""
    fingerprint = getattr(split.dataset, "_fingerprint", None)
    if not split.streaming and fingerprint:
        return str(fingerprint)
    digest = hashlib.sha256("\n".join(_stream_parts(split.dataset)).encode())
    return digest.hexdigest()[:16]


_KEY_MEANINGS = {
    "weights_sha256": "the model's weights differ (another backbone, checkpoint or fine-tuned copy)",
    "data_fingerprint": "the data differ (other or edited files, another subset)",
    "model": "another model",
}


def explain_key_difference(different) -> str:
    """A plain-words prefix for the fields of a key that differ ("the model's weights differ; ...")."""
    reasons = [_KEY_MEANINGS[k] for k in _KEY_MEANINGS if k in different]
    return "; ".join(reasons) + (": " if reasons else "")
