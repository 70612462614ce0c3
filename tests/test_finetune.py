"""Fine-tuning of the whole decomposed network: schedule, augmentation, a few real steps, checkpoints."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from PIL import Image

from hf_decomp.errors import DecompValueError
from hf_decomp.finetune import build_decomposed_model, cosine_schedule, finetune, training_transform
from hf_decomp.head import DecomposedLinear


def test_cosine_schedule_literal():
    assert [cosine_schedule(s, 10, 2) for s in (0, 1)] == [0.5, 1.0]  # linear warm-up
    assert cosine_schedule(2, 10, 2) == 1.0
    assert cosine_schedule(6, 10, 2) == pytest.approx(0.5)  # half-way through the cosine
    assert cosine_schedule(10, 10, 2) == pytest.approx(0.0)


@pytest.fixture
def tiny_adapter(tmp_path):
    from helpers_models import save_tiny_timm_model

    from hf_decomp.models import load_classifier

    return load_classifier(str(save_tiny_timm_model(tmp_path / "timm")))


def test_training_transform_augments_cifar_sized_inputs(tiny_adapter):
    image = Image.frombytes("RGB", (32, 32), bytes(range(256)) * 12)
    train = training_transform(tiny_adapter)
    torch.manual_seed(0)
    outputs = [train(image) for _ in range(6)]
    assert outputs[0].shape == (3, 32, 32)
    assert any(not torch.equal(outputs[0], other) for other in outputs[1:])  # random crops / flips
    evaluation = training_transform(tiny_adapter, augment=False)
    assert torch.equal(evaluation(image), evaluation(image))


def test_finetune_trains_saves_and_reloads(tmp_path, color_dataset, tiny_adapter):
    from hf_decomp.data import load_image_split
    from hf_decomp.hub.modeling_decomp import DecomposedForImageClassification

    train = load_image_split(str(color_dataset), "train")
    test = load_image_split(str(color_dataset), "test")
    head = DecomposedLinear(tiny_adapter.weight, tiny_adapter.bias, [[0, 1, 2], [3], [4, 5]])
    model = build_decomposed_model(tiny_adapter, head)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = finetune(model, train, transform=training_transform(tiny_adapter), eval_split=test,
                      eval_transform=tiny_adapter.transform, epochs=1, lr=0.05, batch_size=8, num_workers=0,
                      out_dir=tmp_path / "out", checkpoint_every=2, log_every=1)
    trained = result.model
    assert isinstance(trained, DecomposedForImageClassification)
    assert result.metrics["steps"] == 3 and len(result.history) == 3  # 24 images / batch 8
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    assert 0.0 <= result.metrics["eval"]["accuracy"] <= 100.0 and result.metrics["eval"]["samples"] == 24
    changed = [n for n, p in trained.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert any(n.startswith("backbone.") for n in changed) and "head.kept_weight" in changed
    assert trained.head.kept_weight[~trained.head.valid].abs().sum() == 0  # padding stays unused
    assert trained.head.index_sets() == [[0, 1, 2], [3], [4, 5]]
    assert (tmp_path / "out" / "checkpoint-2" / "model.safetensors").is_file()
    logged = json.loads((tmp_path / "out" / "finetune.json").read_text())
    assert logged["metrics"]["steps"] == 3
    reloaded = DecomposedForImageClassification.from_pretrained(tmp_path / "out").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=x).logits, trained(pixel_values=x).logits)


def test_finetune_refuses_an_unlabelled_split(color_dataset, tiny_adapter):
    from hf_decomp.data import load_image_split

    unlabelled = dataclasses.replace(load_image_split(str(color_dataset), "train"), label_column=None)
    head = DecomposedLinear(tiny_adapter.weight, tiny_adapter.bias, [[0], [1], [2]])
    with pytest.raises(DecompValueError, match="labelled training split"):
        finetune(build_decomposed_model(tiny_adapter, head), unlabelled, transform=tiny_adapter.transform)


def test_distillation_from_the_full_model(color_dataset, tiny_adapter):
    from hf_decomp.data import load_image_split

    train = load_image_split(str(color_dataset), "train")
    head = DecomposedLinear(tiny_adapter.weight, tiny_adapter.bias, [[0, 1, 2, 3, 4, 5]] * 3)
    with pytest.raises(DecompValueError, match="needs a teacher"):
        finetune(build_decomposed_model(tiny_adapter, head), train, transform=tiny_adapter.transform, distill=0.5)
    # lr=0 and one full batch: the logged loss is exactly T^2 KL(teacher || student) with the student in
    # train mode (batch-norm batch statistics) and the teacher frozen in eval mode
    from hf_decomp.data import batch_to_device, make_dataloader

    distilled = finetune(build_decomposed_model(tiny_adapter, head), train, transform=tiny_adapter.transform,
                         epochs=1, lr=0.0, batch_size=24, num_workers=0, log_every=1, teacher=tiny_adapter,
                         distill=1.0, temperature=2.0)
    batch = next(iter(make_dataloader(train, tiny_adapter.transform, batch_size=24, num_workers=0)))
    pixels = batch_to_device(batch, "cpu")["pixel_values"]
    student = build_decomposed_model(tiny_adapter, head).train()
    with torch.no_grad():
        teacher_logits = tiny_adapter.classifier(tiny_adapter.eval().forward_features(pixels))
        student_logits = student(pixel_values=pixels).logits
    expected = 4.0 * torch.nn.functional.kl_div(torch.log_softmax(student_logits / 2, 1),
                                                torch.log_softmax(teacher_logits / 2, 1), log_target=True,
                                                reduction="batchmean")
    assert float(expected) > 0
    assert distilled.history[0]["loss"] == pytest.approx(float(expected), rel=1e-4)
