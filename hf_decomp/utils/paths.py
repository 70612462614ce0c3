"""Where bundled data, weights and caches live.

The project ships next to a read-only ``shared/`` folder holding real data and checkpoints. It is
found through ``HF_DECOMP_SHARED_DIR``, then ``../shared`` beside the source checkout, then
``../shared`` beside the working directory. When none exists, callers fall back to Hub names.
"""

from __future__ import annotations

import os
from pathlib import Path

CIFAR10_HUB_NAME = "uoft-cs/cifar10"


def shared_dir() -> Path | None:
    """The bundled ``shared/`` folder, or None when it is absent."""
    candidates = []
    if os.environ.get("HF_DECOMP_SHARED_DIR"):
        candidates.append(Path(os.environ["HF_DECOMP_SHARED_DIR"]))
    candidates.append(Path(__file__).resolve().parents[3] / "shared")
    candidates.append(Path.cwd().resolve().parent / "shared")
    for candidate in candidates:
        if (candidate / "README.md").is_file() or (candidate / "data").is_dir():
            return candidate
    return None


def default_cifar10_dataset() -> str:
    """Local CIFAR-10 parquet folder when bundled, else the Hub dataset name."""
    root = shared_dir()
    if root is not None and (root / "data" / "cifar10").is_dir():
        return str(root / "data" / "cifar10")
    return CIFAR10_HUB_NAME


def cache_dir() -> Path:
    """Writable cache for converted weights (``HF_DECOMP_CACHE`` or ``~/.cache/hf_decomp``)."""
    path = Path(os.environ.get("HF_DECOMP_CACHE", Path.home() / ".cache" / "hf_decomp"))
    path.mkdir(parents=True, exist_ok=True)
    return path
