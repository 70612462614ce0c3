"""The uint8 data path gives the model the same inputs as its own transform (adapter.transform)."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from conftest import png_bytes
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision import transforms as T

from hf_decomp.data import ImageBatchCollator, batch_to_device, split_preprocessing
from hf_decomp.data.preprocessing import normalize_pixels
from hf_decomp.models import adapt_timm_model, load_classifier
from hf_decomp.models.loading import adapt_transformers_model
from hf_decomp.recovery.finetune import training_transform


def random_rows(sizes, seed=0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"img": {"bytes": png_bytes(Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))),
                     "path": None}, "label": i % 3} for i, (h, w) in enumerate(sizes)]


def both_paths(adapter_or_transform, rows, input_size):
    """(float path batch, uint8 path batch finished on the CPU) for the same rows."""
    transform = getattr(adapter_or_transform, "transform", adapter_or_transform)
    old = ImageBatchCollator(transform, "img", "label", input_size, uint8=False)(rows)
    new_collator = ImageBatchCollator(transform, "img", "label", input_size)
    new = new_collator(rows)
    return old, new, new_collator


def test_cifar_model_without_resize_is_bit_exact_and_skips_the_geometry():
    adapter = load_classifier("cifar10_resnet20", pretrained=False)
    rows = random_rows([(32, 32)] * 6 + [(64, 48)])  # the last one goes through Resize(32) + CenterCrop
    old, new, collator = both_paths(adapter, rows, adapter.input_size)
    assert collator.skip_at_input_size
    assert new["pixel_values"].dtype == torch.uint8
    assert torch.equal(batch_to_device(new, "cpu")["pixel_values"], old["pixel_values"])


def test_images_of_another_size_without_a_resize_step_are_resized_the_same_way_and_counted():
    transform = T.Compose([T.ToTensor(), T.Normalize((0.4, 0.5, 0.6), (0.2, 0.3, 0.25))])
    old, new, collator = both_paths(transform, random_rows([(16, 16), (20, 24), (16, 16)]), (3, 16, 16))
    assert collator.skip_at_input_size and new["resized"] == old["resized"] == 1
    assert torch.equal(batch_to_device(new, "cpu")["pixel_values"], old["pixel_values"])


def test_timm_resize_and_center_crop_bicubic_is_bit_exact():
    model = timm.create_model("test_resnet", num_classes=3, pretrained=False)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32), "crop_pct": 0.875,
                            "interpolation": "bicubic"}
    adapter = adapt_timm_model(model)
    steps = [type(step).__name__ for step in adapter.transform.transforms]
    assert steps[:2] == ["Resize", "CenterCrop"] and adapter.transform.transforms[0].size == 36
    rows = random_rows([(32, 32), (50, 70), (81, 40), (36, 36)])
    old, new, collator = both_paths(adapter, rows, adapter.input_size)
    assert not collator.skip_at_input_size  # a 32 px image is still resized to 36 and cropped
    assert new["pixel_values"].dtype == torch.uint8
    assert torch.equal(batch_to_device(new, "cpu")["pixel_values"], old["pixel_values"])


@pytest.mark.parametrize("kind", ["vit_resize", "convnext_resize_crop"])
def test_transformers_image_processor_matches_within_float_rounding(tmp_path, kind):
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    if kind == "vit_resize":
        processor = ViTImageProcessor(size={"height": 24, "width": 24})
    else:  # shortest edge to 32 / 0.875, bicubic, then a 32 px center crop
        processor = ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875)
    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", num_labels=3)
    adapter = adapt_transformers_model(ResNetForImageClassification(config), processor=processor)
    rows = random_rows([(40, 30), (64, 64), (33, 90)])
    old, new, _ = both_paths(adapter, rows, adapter.input_size)
    assert new["pixel_values"].dtype == torch.uint8
    difference = (batch_to_device(new, "cpu")["pixel_values"] - old["pixel_values"]).abs().max().item()
    # measured: 5.9e-8 for both (float rounding: numpy rescales in float64, we divide in float32)
    assert difference < 1e-6


def test_finetune_augmentations_run_on_uint8_with_the_same_random_draws():
    adapter = load_classifier("cifar10_resnet20", pretrained=False)
    transform = training_transform(adapter)  # pad-crop + flip, then the eval transform
    assert split_preprocessing(transform) is not None
    rows = random_rows([(32, 32)] * 8)
    torch.manual_seed(3)
    old = ImageBatchCollator(transform, "img", "label", uint8=False)(rows)
    torch.manual_seed(3)
    new = ImageBatchCollator(transform, "img", "label")(rows)
    assert torch.equal(batch_to_device(new, "cpu")["pixel_values"], old["pixel_values"])


def test_transforms_that_cannot_be_split_keep_the_float_path():
    def custom(image):
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()

    after_normalize = T.Compose([T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3), T.RandomErasing(p=1.0)])
    assert split_preprocessing(custom) is None and split_preprocessing(after_normalize) is None
    batch = ImageBatchCollator(custom, "img", "label")(random_rows([(8, 8)]))
    assert batch["pixel_values"].dtype == torch.float32 and batch["pixel_scale"] is None
    assert torch.equal(batch_to_device(batch, "cpu")["pixel_values"], batch["pixel_values"])


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), size=st.integers(1, 9),
       mean=st.tuples(*[st.floats(0.0, 1.0)] * 3), std=st.tuples(*[st.floats(0.05, 2.0)] * 3))
def test_device_normalisation_is_exactly_totensor_then_normalize(seed, size, mean, std):
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size + 1, 3), dtype=np.uint8)
    reference = T.Compose([T.ToTensor(), T.Normalize(mean, std)])(Image.fromarray(pixels))
    plan = split_preprocessing(T.Compose([T.ToTensor(), T.Normalize(mean, std)]))
    batch = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    assert torch.equal(normalize_pixels(batch, plan.scale)[0], reference)


def test_gpu_decode_falls_back_to_the_cpu_path_without_cuda_and_its_device_step_decodes_jpeg(color_dataset):
    from hf_decomp.data import load_image_split, make_dataloader

    adapter = load_classifier("cifar10_resnet20", pretrained=False)
    split = load_image_split(str(color_dataset), "test")
    loader = make_dataloader(split, adapter.transform, 8, 0, input_size=adapter.input_size, device="cpu", decode="gpu")
    assert loader.collate_fn.decode == "cpu" and loader.collate_fn.device_decoder("cpu") is None
    # the device step itself (nvJPEG on CUDA) also runs on the CPU: JPEG bytes, PNG decoded by the worker
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(2)]
    rows = [{"img": {"bytes": png_bytes(images[0], "JPEG"), "path": None}, "label": 0},
            {"img": {"bytes": png_bytes(images[1]), "path": None}, "label": 1}]
    collator = ImageBatchCollator(adapter.transform, "img", "label", adapter.input_size, decode="gpu")
    batch = collator(rows)
    assert [item.ndim for item in batch["encoded"]] == [1, 3]
    pixels = batch_to_device(batch, "cpu", decoder=collator.device_decoder("cpu"))["pixel_values"]
    reference = ImageBatchCollator(adapter.transform, "img", "label", adapter.input_size, uint8=False)(rows)
    # PNG: the worker's decode; JPEG: torchvision's libjpeg-turbo on the CPU decodes as PIL does (nvJPEG may not)
    assert torch.equal(pixels, reference["pixel_values"])


def test_device_geometry_runs_once_per_image_shape_and_equals_the_per_image_path():
    """decode_on_device batches same-shape images through Resize/CenterCrop: same pixels as one by one."""
    from hf_decomp.data import gpu_decode

    transform = T.Compose([T.Resize(36), T.CenterCrop(32), T.ToTensor(), T.Normalize((0.5,) * 3, (0.25,) * 3)])
    plan = split_preprocessing(transform)
    assert plan.batched
    rng = np.random.default_rng(3)
    shapes = [(40, 48), (40, 48), (50, 37), (40, 48), (32, 32)]
    images = [torch.from_numpy(rng.integers(0, 256, (3, *shape), dtype=np.uint8)) for shape in shapes]
    items = [images[0], torch.frombuffer(bytearray(png_bytes(Image.fromarray(images[1].permute(1, 2, 0).numpy()),
                                                             "JPEG")), dtype=torch.uint8), *images[2:]]
    calls = []
    counted = UInt8PreprocessingSpy(plan, calls)
    out = gpu_decode.decode_on_device(items, counted, "cpu", (3, 32, 32), skip_at_input_size=False)
    assert len(calls) == 3  # the (40, 48) trio, the (50, 37) image, the (32, 32) image
    from torchvision.io import ImageReadMode, decode_jpeg

    images[1] = decode_jpeg(items[1], mode=ImageReadMode.RGB)
    assert torch.equal(out, torch.stack([gpu_decode._one_image(plan, image, 32, 32) for image in images]))
    # random steps draw once per call, so a plan with them goes image by image
    assert not split_preprocessing(T.Compose([T.RandomCrop(32, padding=4), T.ToTensor()])).batched


class UInt8PreprocessingSpy:
    """``plan`` with its geometric calls recorded."""

    def __init__(self, plan, calls):
        self.plan, self.calls, self.batched = plan, calls, plan.batched

    def geometric(self, images):
        self.calls.append(tuple(images.shape))
        return self.plan.geometric(images)


def test_a_processor_whose_resize_leaves_fractions_keeps_the_float_path():
    class FractionalProcessor:  # resizes in float (as some fast processors can): uint8 would round
        do_rescale, rescale_factor, do_normalize = True, 1 / 255, False

        def __call__(self, images, do_rescale=True, do_normalize=True, return_tensors="pt"):
            pixels = torch.from_numpy(np.asarray(images, dtype=np.float32)).permute(2, 0, 1)[None] * 0.5
            return {"pixel_values": pixels / 255 if do_rescale else pixels}

    class Wrapped:
        processor = FractionalProcessor()

    assert split_preprocessing(Wrapped()) is None
