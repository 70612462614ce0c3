"""``hf-decomp specialize`` on the real cifar10_resnet20 weights and CIFAR-10 (small subsets)."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import requires_shared

from hf_decomp.cli import main
from hf_decomp.data import load_image_split
from hf_decomp.models import load_classifier
from hf_decomp.portable.modeling_specialist import SpecialistForImageClassification
from hf_decomp.specialize.pruning import count_macs
from hf_decomp.specialize.recovery import accuracy, class_rows, load_class_images

pytestmark = [requires_shared("data", "cifar10"), requires_shared("models", "cifar10-resnets")]


def test_cli_unknown_class_lists_the_models_labels(capsys):
    assert main(["specialize", "--model", "cifar10_resnet20", "--classes", "cat,cow", "--macs", "0.3",
                 "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-decomp specialize: error: class 'cow' is not one of the model's 10 labels (airplane, ")


def test_cli_unreachable_budget_names_the_smallest(capsys, tmp_path):
    assert main(["specialize", "--model", "cifar10_resnet20", "--classes", "cat,dog", "--macs", "0.001",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    # 1 of 16, 2 of 32, 4 of 64 channels: 27648 + 55296 + 4608 + 46080 + 4608 + 46080 + 8 = 184328 MACs
    # of 40551040
    assert "the smallest reachable budget is 0.0045." in err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_specialize_cat_dog_end_to_end(tmp_path, one_thread):
    out = tmp_path / "specialist"
    assert main(["specialize", "--model", "cifar10_resnet20", "--classes", "cat,dog", "--macs", "0.5",
                 "--train-per-class", "100", "--val-per-class", "20", "--test-per-class", "100",
                 "--out", str(out)]) == 0
    report = json.loads((out / "specialize.json").read_text())
    names = [row["name"] for row in report["table"]]
    assert names == ["full model, restricted to the classes", "class-aware, head refit", "magnitude, head refit"]
    model = SpecialistForImageClassification.from_pretrained(out).eval()
    assert model.config.class_ids == [3, 5] and model.config.id2label == {0: "cat", 1: "dog"}
    macs = count_macs(model.backbone, (3, 32, 32))
    assert macs == report["table"][1]["macs"] and macs <= 0.5 * report["full_macs"]
    card = (out / "README.md").read_text()
    assert "cat (id 3), dog (id 5)" in card and "`--macs 0.5`" in card
    # the table's accuracies are those of the saved specialist and of the full model on the same images
    adapter = load_classifier("cifar10_resnet20")
    split = load_image_split(None, "test")
    rows = [r for rows in class_rows(split, [3, 5]).values() for r in rows[:100]]
    pixels, labels = load_class_images(split, rows, [3, 5], adapter.transform)
    with torch.no_grad():
        full = accuracy(adapter.model(pixels)[:, [3, 5]], None, labels)
        specialist = accuracy(model(pixel_values=pixels).logits, None, labels)
    assert report["table"][0]["test_accuracy"] == pytest.approx(full, abs=1e-6)
    assert report["table"][1]["test_accuracy"] == pytest.approx(specialist, abs=1e-6)


@pytest.mark.slow
def test_specialist_fine_tuning_moves_toward_the_restricted_teacher_and_repeats_per_seed(one_thread):
    """finetune_specialist distils from the full model's cat/dog logits: the student's KL to them drops,
    the pruned shapes stay, and the same seed gives the same weights. 96 images of two classes are
    separable: without the refit's weight decay the head's norm reaches ~950 and this diverges."""
    from hf_decomp.specialize.pipeline import finetune_specialist, prune_specialist, recover_specialist, subset_split
    from hf_decomp.specialize.recovery import split_rows

    adapter = load_classifier("cifar10_resnet20")
    split = load_image_split(None, "train")
    rows, _ = split_rows(class_rows(split, [3, 5]), 0, 48)
    pixels, labels = load_class_images(split, rows, [3, 5], adapter.transform)
    raw, _ = prune_specialist(adapter.model.eval(), [3, 5], 0.5, method="magnitude", input_size=(3, 32, 32))
    start = recover_specialist(raw, (pixels, labels))
    with torch.no_grad():
        teacher = torch.log_softmax(adapter.model(pixels)[:, [3, 5]] / 4, dim=1)

    def divergence(net):
        with torch.no_grad():
            student = torch.log_softmax(net.eval()(pixels) / 4, dim=1)
        return torch.nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean").item()

    train = subset_split(split, rows, [3, 5])
    tuned, metrics = finetune_specialist(start, adapter, [3, 5], train, epochs=4, lr=0.01, batch_size=32)
    again, _ = finetune_specialist(start, adapter, [3, 5], train, epochs=4, lr=0.01, batch_size=32)
    assert metrics["steps"] == 12 and metrics["distill"] == 0.9
    assert divergence(tuned) < 0.8 * divergence(start)
    assert [p.shape for p in tuned.parameters()] == [p.shape for p in start.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), again.state_dict().values()))
