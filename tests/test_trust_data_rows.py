"""Rows the model cannot use: batches with no readable image, columns that hold no images, null labels."""

from __future__ import annotations

import json
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from conftest import png_bytes
from helpers_models import save_tiny_timm_model
from PIL import Image

from hf_decomp.cli import main
from hf_decomp.data.preprocessing import normalize_pixels

CLASSES = datasets.ClassLabel(names=["a", "b", "c"])


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_tiny_timm_model(tmp_path_factory.mktemp("model") / "tiny", input_size=16)


def _png(rng) -> dict:
    return {"bytes": png_bytes(Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))), "path": None}


def _junk(i: int) -> dict:
    return {"bytes": b"not an image " + bytes([i]), "path": None}


def _write(root: Path, splits: dict[str, dict], image_feature=None, label_feature=CLASSES) -> Path:
    features = datasets.Features({"img": image_feature or datasets.Image(), "label": label_feature})
    folder = root / "plain_text"
    folder.mkdir(parents=True)
    for split, rows in splits.items():
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    return root


def _analyze(model: Path, dataset: Path, out: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["analyze", "--model", str(model), "--dataset", str(dataset), "--batch-size", "16",
                 "--num-workers", "0", "--k1", "4", "--k2", "4", "--out", str(out)])
    return code, capsys.readouterr().err.strip().splitlines()[-1]


# ---- item 3: batches and splits without a readable image ----------------------------------------------

def test_an_empty_batch_normalises_to_an_empty_float_batch():
    empty = normalize_pixels(torch.empty(0, dtype=torch.uint8), (255.0, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    assert empty.dtype == torch.float32 and empty.numel() == 0


def test_batches_with_no_readable_image_are_skipped_and_counted(tiny_model, tmp_path, capsys):
    """40 good rows then 32 junk rows at batch size 16: batches 4 and 5 hold no readable image."""
    rng = np.random.default_rng(0)
    rows = {"img": [_png(rng) for _ in range(40)] + [_junk(i) for i in range(32)], "label": [i % 3 for i in range(72)]}
    dataset = _write(tmp_path / "mixed", {"train": rows, "test": rows})
    code, _ = _analyze(tiny_model, dataset, tmp_path / "out", capsys)
    assert code == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["statistics"]["samples"] == 40 and metrics["statistics"]["skipped_images"] == 32
    assert metrics["evaluation"]["eval_samples"] == 40 and metrics["evaluation"]["skipped_images"] == 32


@pytest.mark.parametrize("image_feature, cells, kind", [
    (datasets.Value("int64"), list(range(20)), "int64 values"),
    (datasets.Value("string"), [f"photo {i}" for i in range(20)], "string values"),
    (None, [_junk(i) for i in range(20)], r"images \(datasets Image\)"),
])
def test_a_split_with_no_readable_image_is_one_line_naming_the_column(tiny_model, tmp_path, capsys, image_feature,
                                                                       cells, kind):
    rows = {"img": cells, "label": [i % 3 for i in range(20)]}
    dataset = _write(tmp_path / "data", {"train": rows, "test": rows}, image_feature=image_feature)
    code, line = _analyze(tiny_model, dataset, tmp_path / "out", capsys)
    assert code == 2
    assert line.startswith("hf-decomp analyze: error: None of the 20 rows of ")
    assert "[train] holds a readable image: the image column 'img' holds" in line
    assert re.search(f"holds {kind}\\. Name the column of encoded images .* with --image-column", line)
    assert not (tmp_path / "out").exists()


def test_an_eval_split_with_no_readable_image_is_one_line(tiny_model, tmp_path, capsys):
    rng = np.random.default_rng(0)
    dataset = _write(tmp_path / "data", {
        "train": {"img": [_png(rng) for _ in range(12)], "label": [i % 3 for i in range(12)]},
        "test": {"img": [_junk(i) for i in range(20)], "label": [i % 3 for i in range(20)]}})
    code, line = _analyze(tiny_model, dataset, tmp_path / "out", capsys)
    assert code == 2
    assert "None of the 20 rows of" in line and "[test] holds a readable image: the image column 'img'" in line


# ---- item 4: null labels -------------------------------------------------------------------------------

@pytest.mark.parametrize("label_feature", [CLASSES, datasets.Value("int64")], ids=["ClassLabel", "int64"])
def test_null_labels_are_named_with_their_count_and_rows(tiny_model, tmp_path, capsys, label_feature):
    rng = np.random.default_rng(0)
    labels = [i % 3 for i in range(30)]
    labels[7] = labels[21] = None
    rows = {"img": [_png(rng) for _ in range(30)], "label": labels}
    dataset = _write(tmp_path / "data", {"train": rows, "test": rows}, label_feature=label_feature)
    code, line = _analyze(tiny_model, dataset, tmp_path / "out", capsys)
    assert code == 2
    assert line.endswith("[train]: label column 'label' has 2 null row(s) (rows 7, 21); drop or fill them "
                         "(e.g. dataset.filter(lambda r: r['label'] is not None)), or pick the label column with "
                         "--label-column.")
    assert "[-1]" not in line and "Label -1" not in line
