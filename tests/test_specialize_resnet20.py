"""``hf-decomp specialize`` on the real cifar10_resnet20 weights and CIFAR-10 (small subsets)."""

from __future__ import annotations

import json

import pytest
import torch

from hf_decomp.cli import main
from hf_decomp.hub.modeling_specialist import SpecialistForImageClassification
from hf_decomp.specialize.pruning import count_macs

from .conftest import requires_shared

pytestmark = requires_shared("models", "cifar10-resnets")


def test_cli_unknown_class_lists_the_models_labels(capsys):
    assert main(["specialize", "--model", "cifar10_resnet20", "--classes", "cat,cow", "--macs", "0.3",
                 "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hf-decomp specialize: error: class 'cow' is not one of the model's 10 labels (airplane, ")


def test_cli_unreachable_budget_names_the_smallest(capsys, tmp_path):
    assert main(["specialize", "--model", "cifar10_resnet20", "--classes", "cat,dog", "--macs", "0.001",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    # 1 of 16 channels in every group (the same fraction of 32 and 64): 0.0053 of the MACs
    assert "the smallest reachable budget is 0.0053" in err
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
    accuracy = {row["name"]: row["test_accuracy"] for row in report["table"]}
    assert accuracy == pytest.approx(EXPECTED_ACCURACY, abs=0.1)
    model = SpecialistForImageClassification.from_pretrained(out).eval()
    assert model.config.class_ids == [3, 5] and model.config.id2label == {0: "cat", 1: "dog"}
    macs = count_macs(model.backbone, (3, 32, 32))
    assert macs == report["table"][1]["macs"] and macs <= 0.5 * report["full_macs"]
    card = (out / "README.md").read_text()
    assert "cat (id 3), dog (id 5)" in card and "`--macs 0.5`" in card
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(pixel_values=x).logits,
                           SpecialistForImageClassification.from_pretrained(out).eval()(pixel_values=x).logits)


EXPECTED_ACCURACY = {}  # filled from the first measured run below
