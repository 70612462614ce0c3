"""Labels at the edges: class order, label maps, label columns that hold no class indices, streamed subsets.

The model is the hand-set ColourNet (red, green, blue), whose answers on solid colours are exact.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import datasets
import numpy as np
import pytest
import timm
from conftest import COLORS, SHARED, png_bytes, requires_shared
from helpers_models import ColourNet
from PIL import Image

from hf_decomp import analyze
from hf_decomp.cli import main
from hf_decomp.data import load_image_split
from hf_decomp.data.labels import align_labels, imagenet_wnids
from hf_decomp.models import adapt_timm_model
from hf_decomp.studies.common import load_model_features
from hf_decomp.utils.errors import DecompValueError

KNOWN_SETS = [[0, 3], [1, 4], [2, 5]]


@pytest.fixture
def colour_adapter():
    return adapt_timm_model(ColourNet(), name="colournet")


def _write(root, colours: list[str], label_feature, labels=None, per_class: int = 3, extra: dict | None = None) -> str:
    """Parquet dataset: ``per_class`` solid images of each colour, labelled with the colour's position in
    ``colours`` (or ``labels``, one per image)."""
    images, default_labels = [], []
    for label, name in enumerate(colours):
        images += [{"bytes": png_bytes(Image.new("RGB", (16, 16), COLORS[name])), "path": None}] * per_class
        default_labels += [label] * per_class
    columns = {"img": images, "label": default_labels if labels is None else labels, **(extra or {})}
    features = {"img": datasets.Image(), "label": label_feature}
    features.update({k: datasets.Value("string") for k in (extra or {})})
    folder = root / "plain_text"
    folder.mkdir(parents=True)
    for split in ("train", "test"):
        datasets.Dataset.from_dict(columns, features=datasets.Features(features)).to_parquet(
            str(folder / f"{split}-00000-of-00001.parquet"))
    return str(root)


def _error_lines(capsys) -> list[str]:
    """stderr's lines that are not progress bars (datasets prints those); a traceback fails the test."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return [line for line in err.splitlines() if line.startswith("hf-decomp")]


# --- 1. label order -------------------------------------------------------------------------------------------

def test_dataset_with_the_models_classes_in_another_order_is_renumbered(tmp_path, colour_adapter, caplog):
    # the dataset's class 0 is blue, 1 red, 2 green: read as indices, every image would be scored as another class
    dataset = _write(tmp_path / "d", ["blue", "red", "green"], datasets.ClassLabel(names=["Blue", "RED", "green"]))
    with caplog.at_level(logging.WARNING):
        result = analyze(colour_adapter, dataset, k1=2, k2=2, num_workers=0)
    assert result.metrics["full_accuracy"] == 100.0 and result.metrics["decomposed_accuracy"] == 100.0
    assert result.indices.sets == KNOWN_SETS
    assert result.metrics["statistics"]["samples_per_class"] == {"red": 3, "green": 3, "blue": 3}
    labels = result.metrics["labels"]["train"]
    assert labels["matched_by"] == "names" and labels["remapped"] is True and labels["order"] == [2, 0, 1]
    assert "labels of [train] renumbered to the model's class order (matched by names)" in result.warnings
    assert "lists the model's classes in another order" in caplog.text
    assert result.metrics["data"]["statistics"]["label_order"] == {"0": 2, "1": 0, "2": 1}


def test_same_names_in_the_same_order_change_nothing(tmp_path, colour_adapter):
    dataset = _write(tmp_path / "d", ["red", "green", "blue"], datasets.ClassLabel(names=["red", "green", "blue"]))
    result = analyze(colour_adapter, dataset, k1=2, k2=2, num_workers=0)
    assert result.metrics["labels"]["train"] == {"matched_by": "names", "remapped": False}
    assert "label_order" not in result.metrics["data"]["statistics"]
    assert result.metrics["full_accuracy"] == 100.0


def test_other_class_names_are_refused_and_a_label_map_states_the_mapping(tmp_path, colour_adapter):
    dataset = _write(tmp_path / "d", ["blue", "red", "green"], datasets.ClassLabel(names=["blau", "rot", "gruen"]))
    with pytest.raises(DecompValueError, match=r"label names of Dataset .* are not those of model 'colournet': only in "
                                               r"the dataset \['blau', 'rot', 'gruen'\]; only in the model \['red', "
                                               r"'green', 'blue'\]\. State .* --label-map FILE.json"):
        analyze(colour_adapter, dataset, num_workers=0)
    by_names = analyze(colour_adapter, dataset, k1=2, k2=2, num_workers=0,
                       label_map={"rot": "red", "gruen": "green", "blau": "blue"})
    assert by_names.metrics["full_accuracy"] == 100.0 and by_names.indices.sets == KNOWN_SETS
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps({"0": 2, "1": 0, "2": 1}))
    by_indices = analyze(colour_adapter, dataset, k1=2, k2=2, num_workers=0, label_map=str(map_file))
    assert by_indices.metrics["full_accuracy"] == 100.0
    assert by_indices.metrics["labels"]["test"]["matched_by"] == "label map"


def test_dataset_without_class_names_keeps_indices_with_a_recorded_warning(tmp_path, colour_adapter):
    dataset = _write(tmp_path / "d", ["red", "green", "blue"], datasets.Value("int64"))
    result = analyze(colour_adapter, dataset, k1=2, k2=2, num_workers=0)
    assert result.metrics["full_accuracy"] == 100.0
    assert result.metrics["labels"]["train"]["matched_by"] == "index (unchecked)"
    assert any("has no class names, so its label indices are taken to be the model's classes" in w
               for w in result.metrics["warnings"])


def test_an_index_label_map_renumbers_a_dataset_without_names(tmp_path, colour_adapter):
    dataset = _write(tmp_path / "d", ["green", "blue", "red"], datasets.Value("int64"))
    result = analyze(colour_adapter, dataset, k1=2, k2=2, num_workers=0, label_map={"0": 1, "1": 2, "2": 0})
    assert result.metrics["full_accuracy"] == 100.0 and result.indices.sets == KNOWN_SETS
    partial = {"0": 1, "1": 2}
    with pytest.raises(DecompValueError, match=r"labels \[2\] that the label mapping does not send to any model class"):
        analyze(colour_adapter, dataset, num_workers=0, label_map=partial)


def test_study_features_are_read_in_the_models_order(tmp_path, colour_adapter):
    dataset = _write(tmp_path / "d", ["blue", "red", "green"], datasets.ClassLabel(names=["blue", "red", "green"]))
    features = load_model_features(colour_adapter, dataset, cache_dir=tmp_path / "cache", num_workers=0)
    assert features.train_labels.tolist() == [2, 2, 2, 0, 0, 0, 1, 1, 1]
    # the features themselves say which class: red images have the largest feature 0
    assert features.train_features.argmax(1).tolist() == [2, 2, 2, 0, 0, 0, 1, 1, 1]


def test_cli_label_map_and_one_line_error(tmp_path, capsys):
    model = timm.create_model("test_resnet", num_classes=3, pretrained=False)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 16, 16), "crop_pct": 1.0}
    timm.models.save_for_hf(model, str(tmp_path / "m"), model_config={"label_names": ["red", "green", "blue"]})
    dataset = _write(tmp_path / "d", ["blue", "red", "green"], datasets.ClassLabel(names=["blau", "rot", "gruen"]))
    argv = ["analyze", "--model", str(tmp_path / "m"), "--dataset", dataset, "--k1", "2", "--k2", "2",
            "--num-workers", "0", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and err[0].startswith("hf-decomp analyze: error: The label names of Dataset")
    (tmp_path / "map.json").write_text(json.dumps({"rot": "red", "gruen": "green", "blau": "blue"}))
    assert main(argv + ["--label-map", str(tmp_path / "map.json")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["labels"]["train"]["order"] == {"0": 2, "1": 0, "2": 1}


@requires_shared("data", "imagenet-samples")
def test_imagenet_sample_wnids_match_an_imagenet_models_classes():
    split = load_image_split(str(SHARED / "data" / "imagenet-samples"), "validation")
    assert split.label_names is None and split.label_wnids[:2] == ["n01440764", "n01443537"]
    info = timm.data.ImageNetInfo("imagenet-1k")
    model_names = [info.index_to_description(i).split(",")[0] for i in range(1000)]  # how timm models name them
    assert imagenet_wnids(model_names)[:2] == ["n01440764", "n01443537"]
    aligned, matched = align_labels(split, model_names)
    assert matched == {"matched_by": "wnids", "remapped": False}
    reversed_names = model_names[::-1]  # a model listing ImageNet backwards: its names are no ImageNet order
    with pytest.raises(DecompValueError, match="label names of Dataset"):
        align_labels(split, reversed_names)


# --- 5. label values and label columns -----------------------------------------------------------------------

def test_fractional_labels_are_refused_naming_the_column_and_dtype(tmp_path, colour_adapter):
    labels = [0.0, 0.0, 0.0, 1.0, 1.0, 2.7, 2.0, 2.0, 2.0]
    dataset = _write(tmp_path / "d", ["red", "green", "blue"], datasets.Value("float32"), labels=labels)
    with pytest.raises(DecompValueError, match=r"Label column 'label' of .* has dtype float32 and 1 values that are "
                                               r"not whole class indices \(e.g. 2.700000047683716\)"):
        analyze(colour_adapter, dataset, num_workers=0)


def test_whole_float_labels_are_accepted(tmp_path, colour_adapter):
    labels = [float(v) for v in [0, 0, 0, 1, 1, 1, 2, 2, 2]]
    dataset = _write(tmp_path / "d", ["red", "green", "blue"], datasets.Value("float64"), labels=labels)
    result = analyze(colour_adapter, dataset, k1=2, k2=2, num_workers=0)
    assert result.metrics["full_accuracy"] == 100.0 and result.indices.sets == KNOWN_SETS


def test_nan_labels_are_refused(tmp_path, colour_adapter):
    labels = [0.0, 0.0, float("nan"), 1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    dataset = _write(tmp_path / "d", ["red", "green", "blue"], datasets.Value("float64"), labels=labels)
    with pytest.raises(DecompValueError, match=r"dtype float64 and 1 values .* \(e.g. nan\)"):
        analyze(colour_adapter, dataset, num_workers=0)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_streamed_nan_labels_are_refused_in_one_clear_error(tmp_path, colour_adapter, num_workers):
    labels = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, float("nan"), 2.5]
    dataset = _write(tmp_path / "d", ["red", "green", "blue"], datasets.Value("float64"), labels=labels)
    with pytest.raises(DecompValueError, match=r"^Label column 'label' of .* \(dtype float64\) holds 2 values in this "
                                               r"batch that are not whole class indices") as raised:
        analyze(colour_adapter, dataset, streaming=True, num_workers=num_workers)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("column, kind", [("label", "string"), ("name", "string"), ("img", "Image")])
def test_a_label_column_without_class_indices_is_named_with_its_type_and_the_fix(tmp_path, column, kind):
    dataset = _write(tmp_path / "d", ["red", "green", "blue"], datasets.Value("string"),
                     labels=["red"] * 3 + ["green"] * 3 + ["blue"] * 3, extra={"name": ["x"] * 9})
    with pytest.raises(DecompValueError, match=rf"Label column '{column}' of .* holds {kind} values, not class "
                                               rf"indices; name the column of integer class indices .* with "
                                               rf"--label-column"):
        load_image_split(dataset, "train", label_column=None if column == "label" else column)


@requires_shared("models", "cifar10-resnets")  # the CLI's default model: cifar10_resnet20
def test_cli_names_the_bad_label_column_in_one_line(tmp_path, capsys):
    dataset = _write(tmp_path / "d", ["red", "green", "blue"], datasets.ClassLabel(names=["red", "green", "blue"]),
                     extra={"name": ["x"] * 9})
    assert main(["analyze", "--dataset", dataset, "--label-column", "name", "--num-workers", "0",
                 "--out", str(tmp_path / "out")]) == 2
    err = _error_lines(capsys)
    assert len(err) == 1 and "Label column 'name'" in err[0] and "holds string values" in err[0]
    assert "integer columns of this dataset: ['label']" in err[0]


def test_label_cells_read_in_the_workers():
    from hf_decomp.data.labels import INVALID_LABEL, label_index

    assert [label_index(v) for v in (3, np.int64(4), 2.0, np.float32(1.0), None)] == [3, 4, 2, 1, -1]
    assert [label_index(v) for v in (2.7, float("nan"), "3", True, [1])] == [INVALID_LABEL] * 5


# --- 6. streamed --limit is a random subset -------------------------------------------------------------------

def test_streamed_limit_covers_every_class_of_label_sorted_data(tmp_path):
    classes, per_class = 10, 1500  # 15,000 rows sorted by label: more than a 10,000-row shuffle buffer
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=classes)})
    images = [{"bytes": png_bytes(Image.new("RGB", (1, 1), (i % 256, (i // 256) % 256, i // 65536))), "path": None}
              for i in range(classes * per_class)]
    labels = [i // per_class for i in range(classes * per_class)]
    path = tmp_path / "sorted.parquet"
    datasets.Dataset.from_dict({"img": images, "label": labels}, features=features).to_parquet(str(path))
    split = load_image_split(str(path), "train", streaming=True, limit=500, seed=3)
    counts = Counter(row["label"] for row in split.dataset)
    assert sum(counts.values()) == 500
    assert sorted(counts) == list(range(classes))
    assert all(25 <= counts[c] <= 75 for c in range(classes)), counts  # 50 expected each, binomial sd 6.7
    again = Counter(row["label"] for row in load_image_split(str(path), "train", streaming=True, limit=500,
                                                             seed=3).dataset)
    assert again == counts


def test_unlabeled_reads_ignore_a_detected_column_without_class_indices(tmp_path):
    dataset = _write(tmp_path / "d", ["red", "green", "blue"], datasets.Value("string"),
                     labels=["red"] * 3 + ["green"] * 3 + ["blue"] * 3)
    split = load_image_split(dataset, "train", require_labels=False)
    assert split.label_column is None and split.num_rows == 9


@pytest.mark.slow
@requires_shared("data", "cifar10")
@requires_shared("models", "cifar10-resnets")
def test_cifar10_with_its_classes_listed_backwards_gives_the_same_results(tmp_path, one_thread):
    """Real data: 600 CIFAR-10 rows whose ClassLabel lists the classes backwards (labels renumbered to match)
    give exactly the numbers of the same rows in the original order; read as indices they would not."""
    source = SHARED / "data" / "cifar10" / "plain_text"
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    for variant, order in (("original", names), ("backwards", names[::-1])):
        folder = tmp_path / variant / "plain_text"
        folder.mkdir(parents=True)
        for split in ("train", "test"):
            rows = datasets.load_dataset("parquet", data_files=str(source / f"{split}-00000-of-00001.parquet"),
                                         split="train").select(range(300))
            rows = rows.cast_column("img", datasets.Image(decode=False))
            labels = [order.index(names[v]) for v in rows["label"]]
            rows = rows.remove_columns("label").add_column("label", labels).cast_column(
                "label", datasets.ClassLabel(names=order))
            rows.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    original = analyze("cifar10_resnet20", str(tmp_path / "original"), k1=5, k2=5, num_workers=0, batch_size=100)
    backwards = analyze("cifar10_resnet20", str(tmp_path / "backwards"), k1=5, k2=5, num_workers=0, batch_size=100)
    assert original.metrics["full_accuracy"] > 80.0
    for key in ("full_accuracy", "decomposed_accuracy", "rho"):
        assert backwards.metrics[key] == original.metrics[key]
    assert backwards.indices.sets == original.indices.sets
    assert backwards.metrics["labels"]["train"]["order"] == list(range(9, -1, -1))
