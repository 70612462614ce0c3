"""Files at the edges: tampered indices, damaged safetensors, absurd exported configs, pickles, permissions."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from hf_decomp import InfluentialIndices
from hf_decomp.portable.configuration_decomp import DecompConfigError
from hf_decomp.utils.errors import DecompValueError


@pytest.fixture
def run(tmp_path) -> Path:
    InfluentialIndices([[0, 2], [1, 3], [3]], 4, ["cat", "dog", "eel"], metadata={"k1": 2}).save(tmp_path / "run")
    return tmp_path / "run"


def _edit_json(run: Path, edit) -> None:
    data = json.loads((run / "indices.json").read_text())
    edit(data)
    (run / "indices.json").write_text(json.dumps(data))


def test_saved_indices_load_back(run):
    loaded = InfluentialIndices.load(run)
    assert loaded.sets == [[0, 2], [1, 3], [3]] and loaded.num_features == 4 and loaded.metadata == {"k1": 2}


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["sets"].__setitem__("dog", [1, float("nan")]), r"class 1: nan is not a feature index"),
    (lambda d: d["sets"].__setitem__("dog", [1, 2.7]), r"class 1: 2.7 is not a feature index"),
    (lambda d: d["sets"].__setitem__("dog", ["1"]), r"class 1: '1' is not a feature index"),
    (lambda d: d["sets"].pop("eel"), r"no set for \['eel'\]"),
    (lambda d: d.__setitem__("sets", [[0, 2], [1, 3], [3]]), r"sets must map each class name .* got a list"),
    (lambda d: d.pop("label_names"), r"lacks label_names"),
    (lambda d: d.__setitem__("label_names", "cat"), r"label_names must be a non-empty list"),
    (lambda d: d.__setitem__("num_features", 4.5), r"num_features=4.5 is not an integer"),
    (lambda d: d.__setitem__("num_features", float("nan")), r"num_features=nan is not an integer"),
    (lambda d: d.__setitem__("num_features", "4"), r"num_features: '4' is not a feature index"),
    (lambda d: d["sets"].__setitem__("dog", 3), r"set of class 'dog' is not a list"),
])
def test_tampered_indices_json_is_a_clear_error(run, edit, message):
    _edit_json(run, edit)
    with pytest.raises(DecompValueError, match=message) as caught:
        InfluentialIndices.load(run)
    assert "\n" not in str(caught.value)


def test_indices_json_that_is_not_an_object(run):
    (run / "indices.json").write_text("[1, 2]")
    with pytest.raises(DecompValueError, match="holds a JSON list, not an object"):
        InfluentialIndices.load(run)


def _header(tensor_file: Path) -> tuple[int, bytes]:
    raw = tensor_file.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return n, raw


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[: len(raw) // 2], r"cannot be read|damaged"),
    (lambda raw: b"", r"is empty or truncated \(0 bytes\)"),
    (lambda raw: struct.pack("<Q", 1 << 40) + raw[8:], r"declares a 1099511627776-byte header"),
])
def test_damaged_indices_safetensors_is_a_clear_error(run, damage, message):
    tensor_file = run / "indices.safetensors"
    tensor_file.write_bytes(damage(tensor_file.read_bytes()))
    with pytest.raises(DecompValueError, match=message) as caught:
        InfluentialIndices.load(run)
    assert "indices.safetensors" in str(caught.value) and "re-run `hf-decomp analyze`" in str(caught.value)


def test_indices_safetensors_without_its_tensor(run):
    save_file({"indices": torch.zeros(3, 2, dtype=torch.long)}, run / "indices.safetensors")
    with pytest.raises(DecompValueError, match=r"lacks the tensor\(s\) \['valid'\]"):
        InfluentialIndices.load(run)


# ---- exported config.json: validated on load, not at the first forward ---------------------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    import timm

    from hf_decomp.hub import build_decomposed_model, save_decomposed_model
    from hf_decomp.models import adapt_timm_model

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=3, pretrained=False)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 32)}
    adapter = adapt_timm_model(model, name="test_resnet")
    indices = InfluentialIndices([[0, 1], [2], [3, 4]], 96, ["a", "b", "c"])
    return save_decomposed_model(build_decomposed_model(adapter, indices), tmp_path_factory.mktemp("x") / "model")


def _edited_copy(exported: Path, tmp_path: Path, **changes) -> Path:
    import shutil

    folder = Path(shutil.copytree(exported, tmp_path / "copy"))
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("changes, message", [
    (dict(num_features=10**12), r"num_features=1000000000000 must be the positive feature width d, an integer <= 1048576"),
    (dict(num_features=96.5), r"num_features=96.5 must be the positive feature width d"),
    (dict(num_features=50), r"num_features=50, but its backbone \(test_resnet\) yields 96 features"),
    (dict(index_sets=[[0, 1.5], [2], [3, 4]]), r"class 0: index_sets holds \[1.5\], not integer"),
    (dict(index_sets="abc"), r"index_sets must be one list of feature indices per class"),
    (dict(index_sets=[[0, 1, 7], [2], [3, 4]]), r"model.safetensors holds tensors whose sizes differ"),
    (dict(index_sets=[[0, 1], [2], [3, 4], [5]], id2label={"0": "a", "1": "b", "2": "c", "3": "d"},
          label2id={"a": 0, "b": 1, "c": 2, "d": 3}), r"model.safetensors holds tensors whose sizes differ"),
])
def test_an_edited_exported_config_fails_at_load_with_one_line(exported, tmp_path, changes, message):
    from transformers import AutoModelForImageClassification

    folder = _edited_copy(exported, tmp_path, **changes)
    with pytest.raises(DecompConfigError, match=message) as caught:
        AutoModelForImageClassification.from_pretrained(folder)
    assert "\n" not in str(caught.value) and "Re-export the model" in str(caught.value).replace("re-export", "Re-export")


# ---- permissions: exported models and results are readable like any saved file ---------------------------

def _modes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mode & 0o777 for p in folder.rglob("*") if p.is_file()}


def test_exported_and_results_files_get_the_umask_mode(exported, tmp_path):
    expected = 0o666 & ~_current_umask()
    modes = _modes(exported)
    assert {"model.safetensors", "indices.safetensors", "config.json", "README.md"} <= set(modes)
    assert modes == {name: expected for name in modes}
    InfluentialIndices([[0], [1]], 2, ["a", "b"]).save(tmp_path / "run")
    assert _modes(tmp_path / "run") == {"indices.json": expected, "indices.safetensors": expected}
    from hf_decomp.utils.files import staged_output_dir

    with staged_output_dir(tmp_path / "results") as staging:
        save_file({"x": torch.zeros(2)}, staging / "statistics.safetensors")
    assert _modes(tmp_path / "results") == {"statistics.safetensors": expected}
    from transformers import AutoModelForImageClassification

    AutoModelForImageClassification.from_pretrained(exported).save_pretrained(tmp_path / "plain")
    assert _modes(tmp_path / "plain")["model.safetensors"] == expected


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# ---- pickles: refused with a message, their code never runs ---------------------------------------------

class _Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def _malicious(path: Path) -> Path:
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {"conv1.weight": torch.zeros(1), "evil": _Payload()}}, handle)
    return path


def test_a_malicious_cifar_checkpoint_is_refused_in_conversion(tmp_path, capfd):
    from hf_decomp.models.cifar_resnet import convert_checkpoint

    with pytest.raises(DecompValueError, match=r"Could not read CIFAR ResNet checkpoint .* safely .*weights_only=True"):
        convert_checkpoint(_malicious(tmp_path / "resnet20-evil.th"))
    assert "code ran while loading" not in capfd.readouterr().out


@pytest.mark.parametrize("content, message", [
    (b"", r"empty or truncated|safely"),
    (None, r"holds no state dict of tensors \(found list\)"),
])
def test_a_damaged_cifar_checkpoint_is_refused_in_conversion(tmp_path, content, message):
    from hf_decomp.models.cifar_resnet import convert_checkpoint

    path = tmp_path / "resnet20-bad.th"
    if content is None:
        torch.save([torch.zeros(2)], path)
    else:
        path.write_bytes(content)
    with pytest.raises(DecompValueError, match=message):
        convert_checkpoint(path)


def test_a_malicious_checkpoint_through_the_cli_is_one_error_line(color_dataset, tmp_path, capfd):
    from hf_decomp.cli import main

    code = main(["analyze", "--model", "cifar10_resnet20", "--weights", str(_malicious(tmp_path / "w.pth")),
                 "--dataset", str(color_dataset), "--out", str(tmp_path / "out")])
    captured = capfd.readouterr()
    assert code == 2 and "Traceback" not in captured.err and "code ran while loading" not in captured.out
    assert "safely" in captured.err and "weights_only=True" in captured.err
    assert not (tmp_path / "out").exists()


# ---- CIFAR ResNets export a processor that needs no timm -------------------------------------------------

_NO_TIMM_CLIENT = """
import importlib.abc, json, sys
sys.modules["timm"] = None  # a clean client: timm not installed


class HideHfDecomp(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_decomp" or name.startswith("hf_decomp."):
            raise ImportError(name + " is hidden in this test")


sys.meta_path.insert(0, HideHfDecomp())
from PIL import Image
from transformers import AutoImageProcessor, pipeline

folder, images = sys.argv[1], sys.argv[2:]
processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
classifier = pipeline("image-classification", model=folder, trust_remote_code=True)
print(json.dumps({"processor": type(processor).__name__,
                  "pipeline": [classifier(Image.open(p), top_k=3) for p in images]}))
"""


@pytest.fixture(scope="module")
def cifar_export(tmp_path_factory):
    import timm

    from hf_decomp.hub import build_decomposed_model, save_decomposed_model
    from hf_decomp.models import adapt_timm_model

    torch.manual_seed(0)
    model = timm.create_model("cifar10_resnet20", pretrained=False)
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():  # non-default statistics, so a mis-normalised input cannot pass
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    adapter = adapt_timm_model(model.eval(), name="cifar10_resnet20")
    sets = [[(7 * c + 3 * j) % 64 for j in range(5)] for c in range(10)]
    decomposed = build_decomposed_model(adapter, InfluentialIndices(sets, 64, adapter.label_names))
    folder = save_decomposed_model(decomposed, tmp_path_factory.mktemp("cifar") / "model")
    return adapter, decomposed, folder


def _cifar_images(folder: Path, n: int = 3) -> list[str]:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        paths.append(str(folder / f"{i}.png"))
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def test_cifar_export_processor_is_plain_transformers_and_equals_timms_transform(cifar_export, tmp_path):
    from PIL import Image
    from transformers import AutoImageProcessor, ViTImageProcessor

    adapter, _, folder = cifar_export
    config = json.loads((folder / "config.json").read_text())
    assert "pretrained_cfg" not in config and config["timm_pretrained_cfg"]["mean"] == [0.485, 0.456, 0.406]
    processor = AutoImageProcessor.from_pretrained(folder)
    assert isinstance(processor, ViTImageProcessor) or type(processor).__name__.startswith("ViTImageProcessor")
    images = [Image.open(p).convert("RGB") for p in _cifar_images(tmp_path)]
    ours = processor(images, return_tensors="pt")["pixel_values"]
    timms = torch.stack([adapter.transform(image) for image in images])
    torch.testing.assert_close(ours, timms, rtol=0, atol=1e-6)


def test_cifar_export_pipeline_runs_without_timm_and_matches_timms_transform(cifar_export, tmp_path):
    import subprocess
    import sys

    from PIL import Image

    adapter, decomposed, folder = cifar_export
    paths = _cifar_images(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    result = subprocess.run([sys.executable, "-c", _NO_TIMM_CLIENT, str(folder), *paths], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["processor"].startswith("ViTImageProcessor")
    with torch.no_grad():
        pixels = torch.stack([adapter.transform(Image.open(p).convert("RGB")) for p in paths])
        probabilities = decomposed(pixels).logits.softmax(-1)
    for got, p in zip(report["pipeline"], probabilities):
        top = p.argsort(descending=True)[:3].tolist()
        assert [g["label"] for g in got] == [adapter.label_names[i] for i in top]
        assert [g["score"] for g in got] == pytest.approx(p[top].tolist(), abs=1e-5)


# ---- the card: this model's accuracy first, and what a client must install ---------------------------------

def _card_config(**overrides):
    from hf_decomp.hub import DecompConfig

    facts = dict(architecture="resnet50", pretrained_cfg={"input_size": [3, 224, 224]}, num_features=4,
                 index_sets=[[0, 1], [2, 3]], id2label={0: "cat", 1: "dog"}, base_model="timm:resnet50.a1_in1k",
                 dataset="uoft-cs/cifar10", metrics={"full_accuracy": 91.73, "decomposed_accuracy": 88.72,
                                                     "rho": 0.9672, "eval_split": "test"})
    facts.update(overrides)
    return DecompConfig(**facts)


def test_model_index_puts_this_models_accuracy_first_and_labels_the_base_models():
    from huggingface_hub import ModelCard

    from hf_decomp.hub import render_model_card

    card = ModelCard(str(render_model_card(_card_config())))
    metrics = card.data.to_dict()["model-index"][0]["results"][0]["metrics"]
    assert metrics[0] == {"type": "accuracy", "value": 88.72,
                          "name": "Accuracy of this model (decomposed final layer, %)"}
    assert metrics[-1] == {"type": "accuracy", "value": 91.73,
                           "name": "Accuracy of the base model (full final layer, %)"}
    assert "The full final layer's accuracy is the base model's" in card.text


def test_card_states_what_a_client_must_install():
    import timm
    import transformers

    from hf_decomp.hub import render_model_card

    timm_card = str(render_model_card(_card_config()))
    assert f"`transformers>={transformers.__version__}`" in timm_card
    assert f"`timm>={timm.__version__}`: both the backbone `resnet50` and the image processor" in timm_card
    cifar_card = str(render_model_card(_card_config(architecture="cifar10_resnet20",
                                                    pretrained_cfg={"input_size": [3, 32, 32]})))
    assert "no timm: the image processor is transformers' `ViTImageProcessor`" in cifar_card
    assert "`timm>=" not in cifar_card
    hf_card = str(render_model_card(_card_config(backbone_library="transformers", architecture=None,
                                                 pretrained_cfg=None, backbone_head_path="classifier",
                                                 backbone_transformers_config={"model_type": "resnet"})))
    assert "no timm: backbone and image processor are transformers' own" in hf_card
