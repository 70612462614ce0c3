"""Shared fixtures. The whole suite is offline: caches point at a temporary folder and the Hub
libraries are told not to reach the network."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

_CACHE_ROOT = Path(tempfile.mkdtemp(prefix="hf_decomp_tests_"))
# Set before datasets / huggingface_hub are imported: they read these at import time.
os.environ["HF_HOME"] = str(_CACHE_ROOT / "hf_home")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_DECOMP_CACHE"] = str(_CACHE_ROOT / "hf_decomp")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from hf_decomp.utils.paths import shared_dir  # noqa: E402

SHARED = shared_dir()
COLOR_CLASSES = ("red", "green", "blue")
COLORS = {"red": (220, 20, 20), "green": (20, 220, 20), "blue": (20, 20, 220)}


def requires_shared(*parts: str):
    """Skip when the bundled data/weights are absent (they are present in CI)."""
    present = SHARED is not None and (SHARED.joinpath(*parts)).exists()
    return pytest.mark.skipif(not present, reason=f"needs shared/{'/'.join(parts)}")


def png_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def make_color_dataset(
    root: Path, per_class: int = 8, size: int = 32, seed: int = 0, corrupt: int = 0, splits=("train", "test")
) -> Path:
    """Parquet dataset (Hub layout) of noisy solid-colour images: red=0, green=1, blue=2."""
    rng = np.random.default_rng(seed)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=list(COLOR_CLASSES))})
    folder = root / "plain_text"
    folder.mkdir(parents=True, exist_ok=True)
    for split in splits:
        rows = {"img": [], "label": []}
        for label, name in enumerate(COLOR_CLASSES):
            for _ in range(per_class):
                pixels = np.clip(np.array(COLORS[name]) + rng.normal(0, 15, (size, size, 3)), 0, 255)
                rows["img"].append({"bytes": png_bytes(Image.fromarray(pixels.astype(np.uint8))), "path": None})
                rows["label"].append(label)
        for i in range(corrupt if split == "train" else 0):
            rows["img"].append({"bytes": b"\x89PNG\r\n\x1a\n this is not a png " + bytes([i]), "path": None})
            rows["label"].append(0)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    return root


@pytest.fixture
def color_dataset(tmp_path) -> Path:
    return make_color_dataset(tmp_path / "colors")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared 2-core CI machine spinning OpenMP threads cost more than they give."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
