import datasets
import numpy as np
import pytest
from conftest import make_color_dataset, png_bytes
from PIL import Image

from hf_decomp.data import ImageBatchCollator, decode_image, default_eval_split, load_image_split, split_names
from hf_decomp.utils.errors import DecompFileError, DecompValueError


def test_local_parquet_folder_detects_columns_and_class_names(color_dataset):
    split = load_image_split(str(color_dataset), "train")
    assert (split.image_column, split.label_column) == ("img", "label")
    assert split.label_names == ["red", "green", "blue"]
    assert split.num_rows == 24
    assert split_names(str(color_dataset)) == ["train", "test"]
    assert default_eval_split(str(color_dataset)) == "test"


def test_limit_is_a_seeded_random_subset_not_the_first_rows(color_dataset):
    # the rows are stored sorted by label (like CIFAR-10 on the Hub): the first 6 are all red
    labels = [row["label"] for row in load_image_split(str(color_dataset), "train", limit=6).dataset]
    assert len(labels) == 6 and len(set(labels)) > 1
    again = [row["label"] for row in load_image_split(str(color_dataset), "train", limit=6).dataset]
    assert labels == again


def test_streaming_reads_the_same_rows(color_dataset):
    split = load_image_split(str(color_dataset), "test", streaming=True)
    assert split.streaming and split.num_rows is None
    assert [row["label"] for row in split.dataset] == [0] * 8 + [1] * 8 + [2] * 8


def test_missing_split_lists_the_available_ones(color_dataset):
    with pytest.raises(DecompValueError, match=r"no split 'validation'; available splits: \['train', 'test'\]"):
        load_image_split(str(color_dataset), "validation")


def test_unrecognised_columns_are_listed_with_the_flag_to_fix_it(tmp_path):
    features = datasets.Features({"picture_bytes": datasets.Value("binary"), "y": datasets.Value("int64")})
    datasets.Dataset.from_dict({"picture_bytes": [b"x"], "y": [0]}, features=features).to_parquet(
        str(tmp_path / "train.parquet"))
    with pytest.raises(DecompValueError, match=r"no recognisable image column; its columns are \['picture_bytes', 'y'\]. Name it with --image-column"):
        load_image_split(str(tmp_path / "train.parquet"), "train")
    split = load_image_split(str(tmp_path / "train.parquet"), "train", image_column="picture_bytes", label_column="y")
    assert (split.image_column, split.label_column) == ("picture_bytes", "y")


def test_missing_label_column_is_explained(tmp_path):
    features = datasets.Features({"image": datasets.Image()})
    image = {"bytes": png_bytes(Image.new("RGB", (4, 4))), "path": None}
    datasets.Dataset.from_dict({"image": [image]}, features=features).to_parquet(str(tmp_path / "x.parquet"))
    with pytest.raises(DecompValueError, match="no recognisable label column; its columns are \\['image'\\]"):
        load_image_split(str(tmp_path / "x.parquet"), "train")


def test_missing_folder_is_a_file_error(tmp_path):
    with pytest.raises(DecompFileError, match="does not exist"):
        load_image_split(str(tmp_path / "nowhere") + "/", "train")


def test_collator_converts_modes_and_skips_unreadable_images():
    rgba = Image.fromarray(np.full((4, 4, 4), 200, dtype=np.uint8), mode="RGBA")
    gray = Image.fromarray(np.full((4, 4), 50, dtype=np.uint8), mode="L")
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 0, 0))
    rows = [{"img": {"bytes": png_bytes(rgba), "path": None}, "label": 0},
            {"img": {"bytes": b"truncated", "path": None}, "label": 1},
            {"img": {"bytes": png_bytes(gray), "path": None}, "label": 2},
            {"img": {"bytes": png_bytes(cmyk, "JPEG"), "path": None}, "label": 1}]
    collate = ImageBatchCollator(lambda im: __import__("torch").tensor(np.asarray(im), dtype=__import__("torch").float32),
                                 "img", "label")
    batch = collate(rows)
    assert batch["skipped"] == 1
    assert batch["labels"].tolist() == [0, 2, 1]
    assert batch["pixel_values"].shape == (3, 4, 4, 3)
    assert batch["pixel_values"][1].unique().tolist() == [50.0]
    assert decode_image({"bytes": png_bytes(rgba), "path": None}).mode == "RGB"


def test_corrupt_rows_in_a_dataset_are_skipped_and_counted(tmp_path):
    from helpers_models import ColourNet

    from hf_decomp.analysis.run import gather_statistics
    from hf_decomp.models import adapt_timm_model

    root = make_color_dataset(tmp_path / "corrupt", per_class=4, corrupt=3)
    adapter = adapt_timm_model(ColourNet(), name="colournet")
    stats, info = gather_statistics(adapter, load_image_split(str(root), "train"), [1], num_workers=0)
    assert info["skipped_images"] == 3
    assert stats.sample_counts.tolist() == [4, 4, 4]


def test_imagefolder_layout_is_read_with_class_names_from_folders(tmp_path):
    for split in ("train", "test"):
        for name, colour in (("blue", (0, 0, 255)), ("red", (255, 0, 0))):
            folder = tmp_path / "imgs" / split / name
            folder.mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (8, 8), colour).save(folder / f"{i}.png")
    split = load_image_split(str(tmp_path / "imgs"), "test")
    assert (split.image_column, split.label_column) == ("image", "label")
    assert split.label_names == ["blue", "red"]
    assert sorted(row["label"] for row in split.dataset) == [0, 0, 1, 1]
