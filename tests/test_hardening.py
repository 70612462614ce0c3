"""Bad input, case by case: each is handled and counted in the report, or stopped with a message that says
what is wrong and how to fix it. The model is the hand-set ColourNet, whose answers are known exactly."""

from __future__ import annotations

import io
import json

import datasets
import numpy as np
import pytest
import torch
from conftest import COLORS, make_color_dataset, png_bytes
from helpers_models import ColourNet
from PIL import Image
from torchvision.transforms import ToTensor

from hf_decomp import InfluentialIndices, analyze
from hf_decomp.data import decode_image, load_image_split
from hf_decomp.hub.push import load_indices
from hf_decomp.models import adapt_timm_model, load_classifier
from hf_decomp.utils.errors import DecompFileError, DecompValueError

NAMES = ["red", "green", "blue"]
KNOWN_SETS = [[0, 3], [1, 4], [2, 5]]  # red reads features (R, R/2), green (G, G/2), blue (B, B/2)


@pytest.fixture
def colour_adapter():
    return adapt_timm_model(ColourNet(), name="colournet")


def _image(colour, size=16, mode="RGB", fmt="PNG") -> dict:
    image = Image.new("RGB", (size, size), colour)
    if mode != "RGB":
        image = image.convert(mode)
    return {"bytes": png_bytes(image, fmt), "path": None}


def _coloured_rows(size=16, per_class=4) -> tuple[list, list]:
    images, labels = [], []
    for label, name in enumerate(NAMES):
        images += [_image(COLORS[name], size)] * per_class
        labels += [label] * per_class
    return images, labels


def _write(root, splits: dict, label_type=None):
    """Hub-layout parquet dataset from {split: (images, labels)}."""
    features = datasets.Features({"img": datasets.Image(), "label": label_type or datasets.ClassLabel(names=NAMES)})
    folder = root / "plain_text"
    folder.mkdir(parents=True)
    for split, (images, labels) in splits.items():
        datasets.Dataset.from_dict({"img": images, "label": labels}, features=features).to_parquet(
            str(folder / f"{split}-00000-of-00001.parquet"))
    return str(root)


def test_corrupt_and_truncated_images_are_skipped_and_counted(tmp_path, colour_adapter):
    images, labels = _coloured_rows()
    whole = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)))
    images += [{"bytes": b"not an image at all", "path": None}, {"bytes": whole[: len(whole) // 2], "path": None}]
    labels += [0, 1]
    dataset = _write(tmp_path / "d", {"train": (images, labels), "test": _coloured_rows()})
    result = analyze(colour_adapter, dataset, k1=2, k2=2, num_workers=0)
    assert result.metrics["statistics"]["skipped_images"] == 2
    assert result.metrics["statistics"]["samples"] == 12
    assert "2 unreadable images skipped in [train]" in result.warnings
    assert result.indices.sets == KNOWN_SETS  # the readable images still give the right answer


def test_grayscale_rgba_cmyk_and_palette_images_are_converted(tmp_path, colour_adapter):
    red, green, blue = (COLORS[n] for n in NAMES)
    images = [_image(red, mode="RGBA"), _image(red, mode="P"), _image(green, mode="CMYK", fmt="JPEG"),
              _image(green, mode="RGBA"), _image(blue, mode="P"), _image(blue, mode="CMYK", fmt="JPEG")]
    labels = [0, 0, 1, 1, 2, 2]
    dataset = _write(tmp_path / "d", {"train": (images, labels), "test": (images, labels)})
    result = analyze(colour_adapter, dataset, k1=2, k2=2, num_workers=0)
    assert result.metrics["statistics"]["skipped_images"] == 0 and result.metrics["evaluation"]["skipped_images"] == 0
    assert result.metrics["full_accuracy"] == 100.0
    assert result.indices.sets == KNOWN_SETS
    gray = decode_image(_image((90, 90, 90), mode="L"))
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (90, 90, 90)


def test_images_of_another_size_are_resized_and_counted(tmp_path, colour_adapter):
    colour_adapter.transform = ToTensor()  # like the CIFAR models: no resize in the transform
    colour_adapter.input_size = (3, 16, 16)
    images, labels = _coloured_rows(size=16)
    images[0], images[5] = _image(COLORS["red"], size=40), _image(COLORS["green"], size=9)
    dataset = _write(tmp_path / "d", {"train": (images, labels), "test": _coloured_rows(size=16)})
    result = analyze(colour_adapter, dataset, k1=2, k2=2, batch_size=12, num_workers=0)
    assert result.metrics["statistics"]["resized_images"] == 2
    assert "2 images of another size resized to the model's 16x16 in [train]" in result.warnings
    assert result.metrics["statistics"]["samples"] == 12 and result.indices.sets == KNOWN_SETS


def test_unlabeled_rows_get_a_hint(tmp_path, colour_adapter):
    images, labels = _coloured_rows()
    labels[3] = -1  # how the Hub marks rows without a label (imagenet-1k's test split)
    dataset = _write(tmp_path / "d", {"train": (images, labels), "test": _coloured_rows()})
    with pytest.raises(DecompValueError, match=r"labels \[-1\] outside the model's 3 classes .* use a labelled "
                                               r"split such as validation"):
        analyze(colour_adapter, dataset, num_workers=0)


def test_labels_out_of_range_are_named(tmp_path, colour_adapter):
    images, labels = _coloured_rows()
    labels[-1] = 5
    dataset = _write(tmp_path / "d", {"train": (images, labels), "test": _coloured_rows()},
                     label_type=datasets.Value("int64"))
    with pytest.raises(DecompValueError, match=r"labels \[5\] outside the model's 3 classes \[0, 3\); use a "
                                               r"dataset labelled for this model"):
        analyze(colour_adapter, dataset, num_workers=0)


def _blue_is_nan(adapter, everything=False):
    features_fn = adapter._features_fn

    def broken(pixel_values):
        features = features_fn(pixel_values)
        bad = torch.ones(len(features), dtype=torch.bool) if everything else features[:, 2] > 0.5
        features[bad.to(features.device), 1] = float("nan")
        features[bad.to(features.device), 4] = float("inf")
        return features

    adapter._features_fn = broken
    return adapter


def test_nan_and_inf_features_are_dropped_and_counted(color_dataset, colour_adapter):
    result = analyze(_blue_is_nan(colour_adapter), str(color_dataset), k1=2, k2=2, num_workers=0)
    m = result.metrics
    assert m["statistics"]["nonfinite_samples"] == 8 and m["evaluation"]["nonfinite_samples"] == 8
    assert m["statistics"]["samples_per_class"] == {"red": 8, "green": 8, "blue": 0}
    assert "8 samples with NaN/inf features ignored in [train]" in result.warnings
    assert "8 samples with NaN/inf features ignored in [test]" in result.warnings
    assert m["evaluation"]["eval_samples"] == 16 and m["full_accuracy"] == 100.0
    assert result.indices.sets[:2] == KNOWN_SETS[:2]


def test_all_features_non_finite_points_at_the_checkpoint(color_dataset, colour_adapter):
    with pytest.raises(DecompValueError, match=r"All 24 features of .* are NaN/inf: the model produces non-finite "
                                               r"features \(a broken checkpoint"):
        analyze(_blue_is_nan(colour_adapter, everything=True), str(color_dataset), num_workers=0)


def test_empty_dataset_is_refused_before_any_work(tmp_path, colour_adapter):
    dataset = _write(tmp_path / "d", {"train": ([], []), "test": _coloured_rows()})
    with pytest.raises(DecompValueError, match=r"split 'train' is empty \(0 rows\); available splits: "
                                               r"\['train', 'test'\]"):
        analyze(colour_adapter, dataset, num_workers=0)


def test_missing_split_lists_the_splits(color_dataset, colour_adapter):
    with pytest.raises(DecompValueError, match=r"has no split 'validation'; available splits: \['train', 'test'\]"):
        analyze(colour_adapter, str(color_dataset), stats_split="validation", num_workers=0)
    only_train = make_color_dataset(color_dataset.parent / "only-train", per_class=2, splits=("train",))
    with pytest.raises(DecompValueError, match=r"has no test or validation split \(it has \['train'\]\); "
                                               r"choose one with --eval-split"):
        analyze(colour_adapter, str(only_train), num_workers=0)


def test_streaming_without_length_gives_the_same_result(color_dataset, colour_adapter):
    streamed = load_image_split(str(color_dataset), "train", streaming=True)
    assert streamed.num_rows is None
    stream = analyze(colour_adapter, str(color_dataset), k1=2, k2=2, streaming=True, batch_size=5, num_workers=0)
    stored = analyze(colour_adapter, str(color_dataset), k1=2, k2=2, batch_size=5, num_workers=0)
    assert stream.metrics["data"]["statistics"]["num_rows"] is None
    assert stream.metrics["evaluation"]["eval_samples"] == 24 and stream.metrics["statistics"]["samples"] == 24
    assert stream.indices.sets == stored.indices.sets == KNOWN_SETS
    assert stream.metrics["noise_ablation"] == stored.metrics["noise_ablation"]  # noise keyed by sample


def _saved_indices(folder, sets=KNOWN_SETS):
    InfluentialIndices(sets=sets, num_features=6, label_names=NAMES).save(folder)
    return folder


def test_index_files_from_a_repo_are_validated(tmp_path):
    """A downloaded Hub snapshot goes through the same validation as a local folder."""
    assert load_indices(_saved_indices(tmp_path / "good")).sets == KNOWN_SETS
    folder = _saved_indices(tmp_path / "edited")
    data = json.loads((folder / "indices.json").read_text())
    data["sets"]["blue"] = [2, 9]
    (folder / "indices.json").write_text(json.dumps(data))
    with pytest.raises(DecompValueError, match=r"class 2 \('blue'\): indices \[9\] are outside \[0, 6\)"):
        load_indices(folder)
    data["sets"]["blue"] = [2, 5]
    data["sets"]["green"] = [4, 1]
    (folder / "indices.json").write_text(json.dumps(data))
    with pytest.raises(DecompValueError, match="indices.safetensors and .*indices.json disagree"):
        load_indices(folder)
    data["format"] = "something-else/9"
    (folder / "indices.json").write_text(json.dumps(data))
    with pytest.raises(DecompValueError, match="has format 'something-else/9'; this version of hf-decomp reads"):
        load_indices(folder)
    with pytest.raises(DecompFileError, match="neither an existing folder nor a Hub repo id"):
        load_indices("not/a/repo/id")


class _Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_checkpoints_load_with_weights_only(tmp_path, capfd):
    path = tmp_path / "weights.pth"
    with open(path, "wb") as handle:
        torch.save({"fc.weight": torch.zeros(3, 6), "evil": _Payload()}, handle)
    with pytest.raises(DecompValueError, match=r"Could not read checkpoint .* safely .*weights_only=True") as info:
        load_classifier("timm:resnet18", checkpoint=path)
    assert "builtins.print" in str(info.value.__cause__)
    assert "code ran while loading" not in capfd.readouterr().out  # the pickle's code never ran


def test_raw_image_bytes_in_a_non_image_column_are_decoded(tmp_path):
    """Datasets that store images as plain binary (not the Image feature) still decode."""
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(buffer, format="PNG")
    assert decode_image(buffer.getvalue()).getpixel((0, 0)) == (1, 2, 3)
