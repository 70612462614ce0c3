"""High-bit-depth and empty images: scaled to 8 bit with the right factor, or skipped and counted, never a
silently white / black picture or a crash."""

from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
from conftest import COLORS, png_bytes
from helpers_models import ColourNet
from PIL import Image

from hf_decomp import analyze
from hf_decomp.data import ImageBatchCollator, decode_image
from hf_decomp.data.image_modes import UnscalableImageError, to_rgb
from hf_decomp.models import adapt_timm_model


def _encoded(array: np.ndarray, fmt: str) -> dict:
    return {"bytes": png_bytes(Image.fromarray(array), fmt), "path": None}


def test_sixteen_bit_grey_png_is_scaled_by_its_bit_depth():
    ramp = np.array([[0, 255, 256, 4660], [32768, 40000, 65280, 65535]], dtype=np.uint16)
    cell = _encoded(ramp, "PNG")
    assert Image.open(io.BytesIO(cell["bytes"])).mode == "I;16"  # what PIL makes of a 16-bit grey PNG
    image = decode_image(cell)
    assert image.mode == "RGB"
    grey = np.asarray(image)[..., 0]
    assert grey.tolist() == [[0, 0, 1, 18], [128, 156, 255, 255]]  # value >> 8, not clipped at 255
    assert (np.asarray(image)[..., 1] == grey).all() and (np.asarray(image)[..., 2] == grey).all()


def test_a_typical_sixteen_bit_photo_keeps_its_brightness():
    # mid-grey 16-bit image: PIL's own convert("RGB") turns 99 % of it white
    values = np.random.default_rng(0).integers(20_000, 45_000, (32, 32)).astype(np.uint16)
    grey = np.asarray(decode_image(_encoded(values, "PNG")))[..., 0]
    assert (grey == 255).mean() == 0.0
    assert abs(grey.mean() - values.mean() / 256) < 0.6


def test_float_tiff_is_scaled_from_its_range():
    unit = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    cell = _encoded(unit, "TIFF")
    assert Image.open(io.BytesIO(cell["bytes"])).mode == "F"
    assert np.asarray(decode_image(cell))[..., 0].tolist() == [[0, 64, 128, 255]]
    eight_bit_range = np.array([[0.0, 12.0, 200.0, 255.0]], dtype=np.float32)
    assert np.asarray(decode_image(_encoded(eight_bit_range, "TIFF")))[..., 0].tolist() == [[0, 12, 200, 255]]
    sixteen_bit_range = np.array([[0.0, 257.0, 32896.0, 65535.0]], dtype=np.float32)
    assert np.asarray(decode_image(_encoded(sixteen_bit_range, "TIFF")))[..., 0].tolist() == [[0, 1, 128, 255]]


def test_thirty_two_bit_integer_images_use_the_range_they_fit():
    assert np.asarray(to_rgb(Image.fromarray(np.array([[0, 7, 255]], dtype=np.int32))))[..., 0].tolist() == [[0, 7, 255]]
    assert np.asarray(to_rgb(Image.fromarray(np.array([[0, 300, 65535]], dtype=np.int32))))[..., 0].tolist() == [[0, 1, 255]]


@pytest.mark.parametrize("values", [np.array([[-0.5, 1.0]], dtype=np.float32),
                                    np.array([[0.0, np.nan]], dtype=np.float32),
                                    np.array([[0.0, 1e6]], dtype=np.float32)])
def test_float_images_without_an_unambiguous_scale_are_refused(values):
    with pytest.raises(UnscalableImageError, match="float image with values"):
        to_rgb(Image.fromarray(values))
    with pytest.raises(UnscalableImageError, match=r"outside the 16-bit range"):
        to_rgb(Image.fromarray(np.array([[0, 70_000]], dtype=np.int32)))


def test_empty_image_cells_and_zero_byte_files_are_skipped_and_counted(tmp_path):
    zero_byte_file = tmp_path / "empty.png"
    zero_byte_file.write_bytes(b"")
    good = {"bytes": png_bytes(Image.new("RGB", (4, 4), (9, 9, 9))), "path": None}
    rows = [{"img": {"bytes": b"", "path": None}, "label": 0}, {"img": {"bytes": None, "path": None}, "label": 1},
            {"img": {"bytes": None, "path": str(zero_byte_file)}, "label": 2}, {"img": b"", "label": 0},
            {"img": good, "label": 2}]
    collate = ImageBatchCollator(lambda im: __import__("torch").tensor(np.asarray(im)), "img", "label",
                                 with_keys=True)
    batch = collate(rows)
    assert batch["skipped"] == 4
    assert batch["labels"].tolist() == [2]
    assert batch["pixel_values"].unique().tolist() == [9]


def test_zero_byte_images_through_analyze_are_counted_not_fatal(tmp_path):
    names = ["red", "green", "blue"]
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    folder = tmp_path / "d" / "plain_text"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        images, labels = [], []
        for label, name in enumerate(names):
            images += [{"bytes": png_bytes(Image.new("RGB", (16, 16), COLORS[name])), "path": None}] * 3
            labels += [label] * 3
        images += [{"bytes": b"", "path": None}]
        labels += [0]
        datasets.Dataset.from_dict({"img": images, "label": labels}, features=features).to_parquet(
            str(folder / f"{split}-00000-of-00001.parquet"))
    result = analyze(adapt_timm_model(ColourNet(), name="colournet"), str(tmp_path / "d"), k1=2, k2=2,
                     num_workers=0)
    assert result.metrics["statistics"]["skipped_images"] == 1
    assert result.metrics["evaluation"]["skipped_images"] == 1
    assert result.metrics["full_accuracy"] == 100.0
