"""The exported model classes keep transformers' contract: forward arguments, return_dict, complete
weights, and the same behaviour whether or not hf_decomp.hub was imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hf_decomp.portable.cifar_resnet import CifarResNet
from hf_decomp.portable.configuration_decomp import DecompConfig, DecompConfigError
from hf_decomp.portable.modeling_decomp import DecomposedClassifierOutput, DecomposedForImageClassification
from hf_decomp.portable.modeling_specialist import SpecialistForImageClassification

LABELS = {0: "a", 1: "b", 2: "c"}
PRETRAINED_CFG = {"input_size": [3, 32, 32], "crop_pct": 1.0, "interpolation": "bilinear",
                  "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "num_classes": 3}


def _decomposed(**config_changes) -> DecomposedForImageClassification:
    torch.manual_seed(0)
    config = DecompConfig(architecture="test_resnet", num_features=96, index_sets=[[0, 1], [2], [3, 4]],
                          id2label=LABELS, pretrained_cfg=PRETRAINED_CFG, **config_changes)
    model = DecomposedForImageClassification(config)
    with torch.no_grad():
        model.head.kept_weight.normal_()
        model.head.bias.normal_()
    return model.eval()


def _specialist(**config_changes) -> SpecialistForImageClassification:
    torch.manual_seed(0)
    net = CifarResNet(20, num_classes=10).eval()
    model = SpecialistForImageClassification.from_pruned(
        net, architecture="cifar10_resnet20", pretrained_cfg={}, class_ids=list(range(10)),
        label_names=[f"c{i}" for i in range(10)])
    model.config.update(config_changes)
    return model


# ---- item 14: forward is a contract ---------------------------------------------------------------------

@pytest.mark.parametrize("build, misspelled", [(_decomposed, "output_contribution"), (_specialist, "lables")])
def test_forward_refuses_unknown_arguments(build, misspelled):
    model = build()
    with pytest.raises(TypeError, match=misspelled):
        model(torch.randn(1, 3, 32, 32), **{misspelled: True})


@pytest.mark.parametrize("build", [_decomposed, _specialist])
def test_forward_follows_config_return_dict(build):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = build()(x).logits
        as_tuple = build(return_dict=False)(x)
        overridden = build(return_dict=False)(x, return_dict=True)
        explicit = build()(x, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 1 and torch.equal(as_tuple[0], expected)
    assert torch.equal(overridden.logits, expected)
    assert isinstance(explicit, tuple) and torch.equal(explicit[0], expected)


def test_tuple_output_keeps_the_fields_that_were_asked_for():
    model = _decomposed(return_dict=False)
    x, labels = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    with torch.no_grad():
        loss, logits, features, contributions = model(x, labels=labels, output_contributions=True)
        full = model(x, labels=labels, output_contributions=True, return_dict=True)
    assert isinstance(full, DecomposedClassifierOutput)
    assert torch.equal(loss, full.loss) and torch.equal(logits, full.logits)
    assert torch.equal(features, full.features) and torch.equal(contributions, full.contributions)


def test_image_classification_pipeline_still_runs_with_a_tuple_config(tmp_path):
    """The pipeline calls the model with the processor's outputs only (pixel_values)."""
    from PIL import Image
    from transformers import pipeline

    model = _decomposed()
    model.save_pretrained(tmp_path / "m")
    image = Image.fromarray((torch.rand(32, 32, 3) * 255).to(torch.uint8).numpy())
    classifier = pipeline("image-classification", model=str(tmp_path / "m"), trust_remote_code=True)
    got = classifier(image, top_k=3)
    pixels = classifier.image_processor(image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        p = model(pixels).logits.softmax(-1)[0]
    order = p.argsort(descending=True).tolist()
    assert [g["label"] for g in got] == [LABELS[i] for i in order]
    assert [g["score"] for g in got] == pytest.approx(p[order].tolist(), abs=1e-6)


# ---- item 13: missing backbone weights are refused ------------------------------------------------------

def test_from_pretrained_refuses_a_checkpoint_without_backbone_weights(tmp_path):
    _decomposed().save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    dropped = sorted(k for k in tensors if k.startswith("backbone.conv1."))
    assert dropped
    save_file({k: v for k, v in tensors.items() if k not in dropped}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(DecompConfigError, match=r"The checkpoint lacks weights \[.*'backbone.conv1.") as caught:
        DecomposedForImageClassification.from_pretrained(tmp_path)
    assert "Re-export the model" in str(caught.value) and "\n" not in str(caught.value)


# ---- item 15: importing hf_decomp.hub changes no class ----------------------------------------------------

_BEHAVIOUR = textwrap.dedent("""
    import json, os, shutil, sys
    import torch
    if sys.argv[1] == "hub":
        import hf_decomp.hub  # noqa: F401
    from hf_decomp.portable.configuration_decomp import DecompConfig
    from hf_decomp.portable.modeling_decomp import DecomposedForImageClassification

    folder = sys.argv[2]
    torch.manual_seed(0)
    config = DecompConfig(architecture="test_resnet", num_features=96, index_sets=[[0, 1], [2], [3, 4]],
                          id2label={0: "a", 1: "b", 2: "c"}, pretrained_cfg={"input_size": [3, 32, 32]})
    DecomposedForImageClassification(config).save_pretrained(folder)
    saved = json.load(open(os.path.join(folder, "config.json")))
    saved["num_features"] = 50
    json.dump(saved, open(os.path.join(folder, "config.json"), "w"))
    try:
        DecomposedForImageClassification.from_pretrained(folder)
        error = None
    except Exception as e:
        error = [type(e).__module__, type(e).__qualname__, [c.__qualname__ for c in type(e).__mro__], str(e)]
    try:
        DecompConfig(num_features=4, index_sets=[[9]], id2label={0: "a"})
        bad_config = None
    except Exception as e:
        bad_config = [type(e).__qualname__, str(e)]
    print(json.dumps({"files": sorted(os.listdir(folder)), "auto_map": saved.get("auto_map"), "error": error,
                      "bad_config": bad_config}))
""")


def _behaviour(mode: str, folder: Path) -> dict:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", _BEHAVIOUR, mode, str(folder)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_behaviour_is_the_same_whether_or_not_the_hub_package_was_imported(tmp_path):
    plain, with_hub = _behaviour("plain", tmp_path / "plain"), _behaviour("hub", tmp_path / "hub")
    assert plain == with_hub
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "configuration_decomp.py",
            "modeling_decomp.py"} <= set(plain["files"])
    assert "indices.json" not in plain["files"]  # hf_decomp.hub.save_decomposed_model adds it, explicitly
    assert plain["auto_map"] == {"AutoConfig": "configuration_decomp.DecompConfig",
                                 "AutoModelForImageClassification": "modeling_decomp.DecomposedForImageClassification"}
    module, name, mro, message = plain["error"]
    assert (module, name) == ("hf_decomp.portable.configuration_decomp", "DecompConfigError") and "ValueError" in mro
    assert "num_features=50, but its backbone (test_resnet) yields 96 features" in message
    assert plain["bad_config"][0] == "DecompConfigError" and "indices [9] are outside [0, 4)" in plain["bad_config"][1]
