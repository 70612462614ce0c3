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
    """Two criteria, chosen on test half A and read on half B; the saved model is the chosen one and its
    reported accuracies are what it scores on the same images."""
    out = tmp_path / "specialist"
    assert main(["specialize", "--model", "cifar10_resnet20", "--classes", "cat,dog", "--macs", "0.5",
                 "--criterion", "taylor", "magnitude", "--train-per-class", "64", "--epochs", "1",
                 "--out", str(out)]) == 0
    report = json.loads((out / "specialize.json").read_text())
    assert [row["criterion"] for row in report["table"]] == [None, "taylor", "magnitude"]
    assert report["protocol"] == "test-half-crossfit" and report["half_sizes"] == [1000, 1000]
    built = {row["criterion"]: row for row in report["table"][1:]}
    chosen = report["chosen_criterion"]
    assert built[chosen]["half_a"] == max(r["half_a"] for r in built.values())
    assert report["accuracy"] == built[chosen]["half_b"]
    model = SpecialistForImageClassification.from_pretrained(out).eval()
    assert model.config.class_ids == [3, 5] and model.config.id2label == {0: "cat", 1: "dog"}
    assert model.config.pruning_method == chosen
    macs = count_macs(model.backbone, (3, 32, 32))
    assert macs == built[chosen]["macs"] and macs <= 0.5 * report["full_macs"]
    card = (out / "README.md").read_text()
    assert "cat (id 3), dog (id 5)" in card and "`--macs 0.5`" in card and "cross-fitted" in card
    assert not (tmp_path / "specialist.resume").exists()  # checkpoints go once the model is saved
    adapter = load_classifier("cifar10_resnet20")
    split = load_image_split(None, "test")
    rows = sorted(r for rows in class_rows(split, [3, 5]).values() for r in rows)
    pixels, labels = load_class_images(split, rows, [3, 5], adapter.transform)
    with torch.no_grad():
        full = accuracy(adapter.model(pixels)[:, [3, 5]], None, labels)
        specialist = accuracy(model(pixel_values=pixels).logits, None, labels)
    assert report["table"][0]["test_accuracy"] == pytest.approx(full, abs=1e-6)
    assert built[chosen]["test_accuracy"] == pytest.approx(specialist, abs=1e-6)
