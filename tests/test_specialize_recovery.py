"""Specialist recovery and protocol: test halves, cross-fitting, distillation that resumes exactly, settings."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap

import pytest
import timm
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_decomp.metrics.crossfit import crossfit_choice, half_standard_error, stratified_halves
from hf_decomp.portable.modeling_specialist import SpecialistForImageClassification
from hf_decomp.specialize import distill as distill_module
from hf_decomp.specialize.api import resume_folder
from hf_decomp.specialize.criteria import CriterionInputs, score_groups
from hf_decomp.specialize.distill import DistillRecipe, augment_batch, distill_specialist
from hf_decomp.specialize.export import save_specialist
from hf_decomp.specialize.pipeline import restricted_network
from hf_decomp.specialize.pruning import CUSTOMIZED_PRUNERS, count_macs, prune_to_budget
from hf_decomp.specialize.settings import SpecializeSettings
from hf_decomp.utils.errors import DecompValueError


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=2, max_size=60), st.integers(0, 3))
def test_test_halves_are_disjoint_cover_the_split_are_stratified_and_seeded(labels, seed):
    labels = torch.tensor(labels)
    a, b = stratified_halves(labels, seed)
    assert sorted(a.tolist() + b.tolist()) == list(range(labels.numel()))  # disjoint and covering
    for c in labels.unique().tolist():
        in_a, in_b = int((labels[a] == c).sum()), int((labels[b] == c).sum())
        assert abs(in_a - in_b) <= 1  # every class split in two
    again = stratified_halves(labels, seed)
    assert torch.equal(a, again[0]) and torch.equal(b, again[1])


def test_test_halves_differ_between_seeds_and_split_cifar_sized_classes_evenly():
    labels = torch.arange(2000) % 2
    a0, _ = stratified_halves(labels, 0)
    a1, _ = stratified_halves(labels, 1)
    assert len(a0) == 1000 and int((labels[a0] == 0).sum()) == 500 and not torch.equal(a0, a1)


def test_crossfit_chooses_on_each_half_and_reads_the_other():
    choice = crossfit_choice({"taylor": 90.0, "magnitude": 88.0, "votes-bn": 90.0},
                             {"taylor": 87.0, "magnitude": 89.0, "votes-bn": 86.0})
    # on A taylor ties votes-bn (the first listed wins) and reads 87 on B; on B magnitude wins and reads 88 on A
    assert choice == {"chosen_on_a": "taylor", "chosen_on_b": "magnitude", "a_to_b": 87.0, "b_to_a": 88.0,
                      "accuracy": 87.5}
    assert half_standard_error(90.0, 1000) == pytest.approx(100 * (0.09 / 1000) ** 0.5)
    with pytest.raises(ValueError, match="both halves must score the same options"):
        crossfit_choice({"a": 1.0}, {"b": 1.0})


def test_augmentation_is_a_shifted_window_of_the_padded_image_maybe_flipped():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).view(2, 1, 5, 5) + 1
    out = augment_batch(x, torch.Generator().manual_seed(3), padding=2)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, dy:dy + 5, dx:dx + 5] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)
    assert not torch.equal(out, x)  # seed 3 moves at least one image


class TinyNet(nn.Module):
    def __init__(self, classes: int = 2):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.Linear(4, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def _tiny_setup():
    torch.manual_seed(0)
    teacher, student = TinyNet().eval(), TinyNet()
    pixels, labels = torch.randn(40, 3, 8, 8), torch.arange(40) % 2
    return teacher, student, (pixels, labels), {"half_a": (pixels[:8], labels[:8]), "half_b": (pixels[8:16], labels[8:16])}


def test_a_killed_distillation_resumes_exactly_where_an_uninterrupted_run_would_be(tmp_path, monkeypatch):
    recipe = DistillRecipe(epochs=3, lr=0.1, batch_size=16)
    teacher, student, train, evaluations = _tiny_setup()
    straight, history = distill_specialist(student, teacher, train, evaluations, recipe, seed=1, progress=False)
    teacher, student, train, evaluations = _tiny_setup()
    calls = {"n": 0}
    real = distill_module.evaluate_accuracy

    def dies_in_epoch_two(*args, **kwargs):  # epoch 0 and 1 evaluate 2 halves each; the kill comes in epoch 2
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(distill_module, "evaluate_accuracy", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        distill_specialist(student, teacher, train, evaluations, recipe, seed=1, checkpoint_dir=tmp_path, progress=False)
    saved = json.loads((tmp_path / "distill_history.json").read_text())
    assert [h["epoch"] for h in saved["history"]] == [0, 1]
    monkeypatch.setattr(distill_module, "evaluate_accuracy", real)
    fresh_student = TinyNet()  # a new process: the weights come from the checkpoint, not from memory
    resumed, resumed_history = distill_specialist(fresh_student, teacher, train, evaluations, recipe, seed=1,
                                                  checkpoint_dir=tmp_path, progress=False)
    assert resumed_history == history
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_resuming_with_another_recipe_is_refused(tmp_path):
    teacher, student, train, evaluations = _tiny_setup()
    distill_specialist(student, teacher, train, evaluations, DistillRecipe(epochs=1, batch_size=16),
                       checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(DecompValueError, match="holds a run with another recipe"):
        distill_specialist(TinyNet(), teacher, train, evaluations, DistillRecipe(epochs=1, lr=0.01, batch_size=16),
                           checkpoint_dir=tmp_path, progress=False)


def test_distillation_moves_the_student_toward_the_teacher():
    teacher, student, train, evaluations = _tiny_setup()
    before = torch.nn.functional.mse_loss(student.eval()(train[0]), teacher(train[0])).item()
    distill_specialist(student, teacher, train, evaluations, DistillRecipe(epochs=5, lr=0.1, batch_size=8,
                                                                          augment=False, distill=1.0), progress=False)
    with torch.no_grad():
        after = torch.nn.functional.mse_loss(student.eval()(train[0]), teacher(train[0])).item()
    assert after < 0.5 * before


def test_the_evaluation_split_may_not_be_the_training_split():
    with pytest.raises(DecompValueError, match="--eval-split train is also the training split"):
        SpecializeSettings(classes="cat,dog", macs=0.3, eval_split="train")


def test_old_names_warn_once_and_map_to_the_new_ones():
    with pytest.warns(FutureWarning, match="--criterion class-aware is now votes-bn"):
        assert SpecializeSettings(classes="cat,dog", macs=0.3, criterion="class-aware").criterion == ["votes-bn"]
    with pytest.warns(FutureWarning, match=r"method= is now criterion=, out_dir= is now out="):
        settings_ = SpecializeSettings.with_overrides(None, {"classes": "cat,dog", "macs": 0.3, "method": "magnitude",
                                                              "out_dir": "x"})
    assert settings_.criterion == ["magnitude"] and settings_.out == "x"
    with pytest.raises(DecompValueError, match="--criterion nope: choose from"):
        SpecializeSettings(classes="cat,dog", macs=0.3, criterion=["nope"])
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['epochz'\]"):
        SpecializeSettings.with_overrides(None, {"classes": "cat,dog", "macs": 0.3, "epochz": 3})


def test_parser_dests_are_the_settings_fields():
    from hf_decomp.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["specialize"]
    dests = {a.dest for a in sub._actions if a.default is not argparse.SUPPRESS and a.dest != "help"}
    assert dests == set(SpecializeSettings.field_names())


def test_an_exported_specialist_runs_in_a_pipeline_where_hf_decomp_is_not_importable(tmp_path):
    """A pruned CIFAR ResNet specialist, saved by save_specialist, classifies through
    ``pipeline("image-classification", trust_remote_code=True)`` in a process that cannot import hf_decomp."""
    model = timm.create_model("cifar10_resnet20", pretrained=False).eval()
    torch.manual_seed(0)
    network = restricted_network(model, [3, 5])
    for m in network.modules():  # non-trivial batch-norm statistics, so a wrong load shows
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    scores = score_groups("magnitude", CriterionInputs(network, (3, 32, 32), None, None, CUSTOMIZED_PRUNERS))
    pruned, info = prune_to_budget(network, (3, 32, 32), 0.3, scores=scores, reference_macs=count_macs(model, (3, 32, 32)))
    labels = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    cfg = {"input_size": (3, 32, 32), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    exported = SpecialistForImageClassification.from_pruned(
        pruned, architecture="cifar10_resnet20", pretrained_cfg=cfg, class_ids=[3, 5], label_names=labels,
        base_model="cifar10_resnet20", macs_budget=0.3, pruning_method="magnitude")
    row = {"name": "magnitude", "criterion": "magnitude", "macs_fraction": info["macs_fraction"], "params": 1,
           "latency_ms": {"batch1": 1.0, "batch64": 2.0}, "test_accuracy": 50.0, "half_a": 50.0, "half_b": 50.0}
    report = {"recipe": DistillRecipe().__dict__, "settings": {"eval_split": "test", "allocation": "global",
              "half_seed": 0, "criterion": ["magnitude"]}, "protocol": "fixed-recipe", "test_images": 2000,
              "train_images": 10000, "accuracy": 50.0, "full_accuracy": 90.0}
    save_specialist(exported, tmp_path / "model", [dict(row, name="full", criterion=None), row], report)
    image = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (32, 32, 3), generator=image, dtype=torch.uint8)
    from PIL import Image

    Image.fromarray(pixels.numpy()).save(tmp_path / "image.png")
    normalised = (pixels.permute(2, 0, 1).float() / 255 - torch.tensor(cfg["mean"])[:, None, None]) \
        / torch.tensor(cfg["std"])[:, None, None]
    with torch.no_grad():
        expected = torch.softmax(pruned(normalised[None]), 1)[0]
    code = textwrap.dedent(f"""
        import importlib.abc, json, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "hf_decomp" or name.startswith("hf_decomp."):
                    raise ModuleNotFoundError(name)
        sys.meta_path.insert(0, Block())
        try:
            import hf_decomp
            sys.exit("hf_decomp was importable")
        except ModuleNotFoundError:
            pass
        from transformers import pipeline
        out = pipeline("image-classification", model={str(tmp_path / 'model')!r}, trust_remote_code=True)(
            {str(tmp_path / 'image.png')!r})
        print(json.dumps(out))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = {p["label"]: p["score"] for p in json.loads(result.stdout.strip().splitlines()[-1])}
    assert set(predictions) == {"cat", "dog"}
    assert predictions["cat"] == pytest.approx(float(expected[0]), abs=1e-5)
    card = (tmp_path / "model" / "README.md").read_text()
    assert "trust_remote_code=True" in card and "Protocol: fixed recipe" in card
    # with hf-decomp installed, importing hf_decomp.hub registers the Auto classes: no remote code needed
    from transformers import pipeline

    import hf_decomp.hub  # noqa: F401

    local = pipeline("image-classification", model=str(tmp_path / "model"))
    assert type(local.model).__module__ == "hf_decomp.portable.modeling_specialist"
    assert {p["label"]: p["score"] for p in local(str(tmp_path / "image.png"))}["cat"] == pytest.approx(
        float(expected[0]), abs=1e-5)


def test_the_resume_folder_changes_with_every_setting_that_shapes_the_network():
    base = dict(classes="cat,dog", macs=0.3, out="runs/x")
    folder = resume_folder(SpecializeSettings(**base))
    assert folder.parent.name == "x.resume"
    assert resume_folder(SpecializeSettings(**base, criterion=["magnitude"], overwrite=True)) == folder
    for change in ({"macs": 0.2}, {"classes": "cat,frog"}, {"epochs": 3}, {"seed": 1}, {"allocation": "uniform"},
                   {"train_per_class": 10}):
        assert resume_folder(SpecializeSettings(**{**base, **change})) != folder, change
