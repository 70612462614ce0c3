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


# ---- names safe to publish (model cards, configs, committed results) ----------------------------------
def hub_model_id(name: str | None) -> str | None:
    """A Hub repo id for ``base_model`` metadata, or None when the model is not on the Hub."""
    if not name:
        return None
    for prefix in ("hf-hub:", "hf_hub:", "transformers:", "hf:"):
        if name.startswith(prefix):
            name = name[len(prefix):]
            break
    else:
        if name.startswith("timm:"):
            return f"timm/{name[len('timm:'):]}" if "." in name else None  # timm's Hub models carry a tag
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~")) and not Path(name).exists():
        return name
    return None


def hub_dataset_id(name: str | None) -> str | None:
    """A Hub dataset id for ``datasets`` metadata; the bundled CIFAR-10 copy maps to its Hub name."""
    if not name:
        return None
    if Path(name).expanduser().exists():
        try:
            same = Path(name).resolve() == Path(default_cifar10_dataset()).resolve()
        except OSError:
            same = False
        return CIFAR10_HUB_NAME if same else None
    return name if hub_model_id(name) else None


def is_local_path(name: str) -> bool:
    """Whether ``name`` is a path on this machine rather than a Hub name."""
    return name.startswith(("/", ".", "~", "local-dir:")) or Path(name).expanduser().exists()


def public_name(name: str | None) -> str | None:
    """A name safe to publish: the Hub id of the bundled CIFAR-10, else a local path's last part."""
    if not name:
        return None
    if not is_local_path(name):
        return name
    return hub_dataset_id(name) or Path(name.removeprefix("local-dir:")).name


def publishable(value):
    """``value`` (JSON-like: dicts, lists, strings) with every local path replaced by its :func:`public_name`,
    for results meant to be committed or shared; Hub names and plain words are kept as they are."""
    if isinstance(value, dict):
        return {key: publishable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(publishable(item) for item in value)
    if isinstance(value, str) and ("/" in value or value.startswith("~")) and is_local_path(value):
        return public_name(value)
    return value
