"""Fine-tuning of the whole decomposed network: schedule, augmentation, a few real steps, checkpoints."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from PIL import Image

from hf_decomp.portable.decomposed_head import DecomposedLinear
from hf_decomp.portable.modeling_decomp import DecomposedForImageClassification
from hf_decomp.recovery.finetune import cosine_schedule, finetune, training_transform
from hf_decomp.utils.errors import DecompValueError


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


def test_from_classifier_takes_a_refit_heads_weights_and_bias(tiny_adapter):
    # a refit head's weights differ from the classifier's rows: the model must compute the refit head
    weight = torch.arange(tiny_adapter.weight.numel(), dtype=torch.float32).view_as(tiny_adapter.weight) / 10
    bias = torch.tensor([0.5, -1.0, 2.0])
    head = DecomposedLinear(weight, bias, [[0, 1, 2], [3], [4, 5]])
    model = DecomposedForImageClassification.from_classifier(tiny_adapter, head).eval()
    assert model.head.index_sets() == [[0, 1, 2], [3], [4, 5]]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = tiny_adapter.eval().forward_features(x)
        expected = torch.stack([features[:, [0, 1, 2]] @ weight[0, [0, 1, 2]], features[:, 3] * weight[1, 3],
                                features[:, [4, 5]] @ weight[2, [4, 5]]], dim=1) + bias
        torch.testing.assert_close(model(pixel_values=x).logits, expected)


def test_finetune_trains_saves_and_reloads(tmp_path, color_dataset, tiny_adapter):
    from hf_decomp.data import load_image_split
    from hf_decomp.portable.modeling_decomp import DecomposedForImageClassification

    train = load_image_split(str(color_dataset), "train")
    test = load_image_split(str(color_dataset), "test")
    head = DecomposedLinear(tiny_adapter.weight, tiny_adapter.bias, [[0, 1, 2], [3], [4, 5]])
    model = DecomposedForImageClassification.from_classifier(tiny_adapter, head)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = finetune(model, train, transform=training_transform(tiny_adapter), eval_split=test,
                      eval_transform=tiny_adapter.transform, epochs=1, lr=0.05, train_batch_size=8, num_workers=0,
                      out=tmp_path / "out", save_every=2, log_every=1)
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
        finetune(DecomposedForImageClassification.from_classifier(tiny_adapter, head), unlabelled, transform=tiny_adapter.transform)


def test_distillation_from_the_full_model(color_dataset, tiny_adapter):
    from hf_decomp.data import load_image_split

    train = load_image_split(str(color_dataset), "train")
    head = DecomposedLinear(tiny_adapter.weight, tiny_adapter.bias, [[0, 1, 2, 3, 4, 5]] * 3)
    with pytest.raises(DecompValueError, match="needs a teacher"):
        finetune(DecomposedForImageClassification.from_classifier(tiny_adapter, head), train, transform=tiny_adapter.transform, distill=0.5)
    # lr=0 and one full batch: the logged loss is exactly T^2 KL(teacher || student) with the student in
    # train mode (batch-norm batch statistics) and the teacher frozen in eval mode
    from hf_decomp.data import batch_to_device, make_dataloader

    distilled = finetune(DecomposedForImageClassification.from_classifier(tiny_adapter, head), train, transform=tiny_adapter.transform,
                         epochs=1, lr=0.0, train_batch_size=24, num_workers=0, log_every=1, teacher=tiny_adapter,
                         distill=1.0, temperature=2.0)
    batch = next(iter(make_dataloader(train, tiny_adapter.transform, batch_size=24, num_workers=0)))
    pixels = batch_to_device(batch, "cpu")["pixel_values"]
    student = DecomposedForImageClassification.from_classifier(tiny_adapter, head).train()
    with torch.no_grad():
        teacher_logits = tiny_adapter.classifier(tiny_adapter.eval().forward_features(pixels))
        student_logits = student(pixel_values=pixels).logits
    expected = 4.0 * torch.nn.functional.kl_div(torch.log_softmax(student_logits / 2, 1),
                                                torch.log_softmax(teacher_logits / 2, 1), log_target=True,
                                                reduction="batchmean")
    assert float(expected) > 0
    assert distilled.history[0]["loss"] == pytest.approx(float(expected), rel=1e-4)


def test_finetune_command_chooses_on_validation_and_exports_a_loadable_model(tmp_path, color_dataset, capsys):
    from helpers_models import save_tiny_timm_model
    from transformers import pipeline

    from hf_decomp.cli import main
    from hf_decomp.hub import DecomposedForImageClassification  # registers the Auto classes pipeline() needs

    tiny = save_tiny_timm_model(tmp_path / "timm")
    out = tmp_path / "ft"
    assert main(["finetune", "--model", str(tiny), "--dataset", str(color_dataset), "--criterion", "contribution",
                 "--k2", "2", "--val-split", "6", "--epochs", "1", "--train-batch-size", "6", "--eval-every", "0.5",
                 "--num-workers", "0", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_split"] == {"kind": "held-out", "from": "train", "rows": 6, "seed": 0, "stratified": True,
                                    "fit_rows": 18, "memorised": False}
    # the FinetuneSettings the run used, every flag under its dest
    assert (metrics["settings"]["val_split"], metrics["settings"]["epochs"], metrics["settings"]["train_batch_size"],
            metrics["settings"]["eval_every"], metrics["settings"]["k2"]) == (6, 1.0, 6, 0.5, 2)
    assert metrics["train_samples"] == 18 and metrics["validation"]["samples"] == 6 and metrics["eval_samples"] == 24
    validation = metrics["finetune"]["validation"]
    # 18 images / batch 6 = 3 steps; validation at step 0 (the refit head), every round(0.5 * 3) = 2 steps, and the end
    assert [v["step"] for v in validation["history"]] == [0, 2, 3]
    assert validation["history"][0]["accuracy"] == metrics["validation"]["refit_accuracy"]
    best = max(v["accuracy"] for v in validation["history"])
    assert validation["accuracy"] == best == metrics["validation"]["finetuned_accuracy"]
    assert validation["best_step"] == next(v["step"] for v in validation["history"] if v["accuracy"] == best)
    model = DecomposedForImageClassification.from_pretrained(out)
    classifier = pipeline("image-classification", model=str(out))
    image = Image.new("RGB", (32, 32), (250, 5, 5))
    assert classifier(image, top_k=1)[0]["label"] in model.config.id2label.values()
    assert model.config.metrics["decomposed_accuracy"] == metrics["finetuned_accuracy"]
    card = (out / "README.md").read_text()
    assert f"| test (read once, at the end) | {metrics['full_accuracy']:.2f} | {metrics['finetuned_accuracy']:.2f} |" in card
    assert (f"| validation (6 images held out from training; every choice made on it) | "
            f"{metrics['validation']['full_accuracy']:.2f} | {best:.2f} |") in card
    printed = capsys.readouterr().out
    assert "validation (6 images)" in printed and "test       (24 images)" in printed


FINETUNE_DRIVER = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from helpers_models import save_tiny_timm_model
from hf_decomp.data import load_image_split
from hf_decomp.passes.features import make_accelerator
from hf_decomp.portable.modeling_decomp import DecomposedForImageClassification
from hf_decomp.recovery.finetune import finetune, training_transform
from hf_decomp.portable.decomposed_head import DecomposedLinear
from hf_decomp.models import load_classifier

out, dataset = Path(sys.argv[1]), sys.argv[2]
accelerator = make_accelerator(cpu=True)
adapter = load_classifier(str(save_tiny_timm_model(out.parent / f"timm-{accelerator.process_index}")))
head = DecomposedLinear(adapter.weight, adapter.bias, [[0, 1, 2], [3], [4, 5]])
train = load_image_split(dataset, "train")
result = finetune(DecomposedForImageClassification.from_classifier(adapter, head), train, transform=training_transform(adapter),
                  eval_split=load_image_split(dataset, "test"), eval_transform=adapter.transform, epochs=1, lr=0.05,
                  train_batch_size=4, num_workers=0, out=out, save_every=2, accelerator=accelerator)
if accelerator.is_main_process:
    (out.parent / "metrics.json").write_text(json.dumps(result.metrics))
"""


def test_finetune_under_two_processes_saves_the_model(tmp_path, color_dataset):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from hf_decomp.portable.modeling_decomp import DecomposedForImageClassification

    driver = tmp_path / "driver.py"
    driver.write_text(FINETUNE_DRIVER)
    tests = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": f"{tests.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    completed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                str(driver), str(tmp_path / "out"), str(color_dataset), str(tests)],
                               cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # 24 images, 2 processes x batch 4: 3 steps, each process seeing its own 12 images
    assert metrics["num_processes"] == 2 and metrics["steps"] == 3 and metrics["train_samples_seen"] == 24
    assert metrics["eval"]["samples"] == 24  # every test image evaluated once across the two processes
    reloaded = DecomposedForImageClassification.from_pretrained(tmp_path / "out")
    assert reloaded.config.index_sets == [[0, 1, 2], [3], [4, 5]]
    assert (tmp_path / "out" / "checkpoint-2" / "model.safetensors").is_file()


def _one_run(adapter, train, seed):
    head = DecomposedLinear(adapter.weight, adapter.bias, [[0, 1, 2], [3], [4, 5]])
    result = finetune(DecomposedForImageClassification.from_classifier(adapter, head), train, transform=training_transform(adapter),
                      epochs=1, lr=0.05, train_batch_size=8, num_workers=0, seed=seed)
    return {n: p.detach().clone() for n, p in result.model.named_parameters()}


def test_finetune_is_reproducible_for_a_seed(color_dataset, tiny_adapter):
    from hf_decomp.data import load_image_split

    train = load_image_split(str(color_dataset), "train")
    torch.manual_seed(123)  # the global generator's state must not matter
    first = _one_run(tiny_adapter, train, seed=1)
    torch.manual_seed(456)
    second = _one_run(tiny_adapter, train, seed=1)
    other = _one_run(tiny_adapter, train, seed=2)
    assert all(torch.equal(first[n], second[n]) for n in first)
    assert any(not torch.equal(first[n], other[n]) for n in first)  # the seed does change data order / crops
