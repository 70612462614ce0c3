"""DecomposedForImageClassification: math, round trip, Auto classes, pipeline, trust_remote_code, export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from conftest import requires_shared
from helpers_models import save_tiny_timm_model, save_tiny_transformers_model
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageClassification, pipeline

import hf_decomp.portable
from hf_decomp import DecomposedLinear, InfluentialIndices, analyze
from hf_decomp.cli import main
from hf_decomp.data import load_image_split
from hf_decomp.data.loader import decode_image
from hf_decomp.hub import DecomposedForImageClassification, build_decomposed_model, save_decomposed_model
from hf_decomp.models import adapt_timm_model, adapt_transformers_model, load_classifier
from hf_decomp.portable.cifar_resnet import CifarResNet


def _randomize_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """Non-default running stats, so a backbone that lost its buffers could not pass."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def timm_adapter():
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=3, pretrained=False)
    # A real resize + crop (bicubic, crop 0.875) so the saved processor has work to reproduce.
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 40, 40), "crop_pct": 0.875,
                            "interpolation": "bicubic", "mean": (0.4, 0.5, 0.6), "std": (0.2, 0.25, 0.3)}
    adapter = adapt_timm_model(_randomize_batchnorm(model), name="test_resnet")
    adapter.label_names = ["red", "green", "blue"]
    return adapter


@pytest.fixture(scope="module")
def cifar_adapter():
    torch.manual_seed(0)
    return adapt_timm_model(_randomize_batchnorm(timm.create_model("cifar10_resnet20", pretrained=False)),
                            name="cifar10_resnet20")


def _sets(num_classes: int, d: int, k: int = 4) -> list[list[int]]:
    return [[(7 * c + 3 * j) % d for j in range(k)] for c in range(num_classes)]


def _images(n: int, seed: int = 0, size=(52, 44)) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def saved_timm(timm_adapter, tmp_path_factory):
    indices = InfluentialIndices(_sets(3, timm_adapter.num_features), timm_adapter.num_features,
                                 timm_adapter.label_names, metadata={"k1": 4, "k2": 4, "base_model": "test_resnet"})
    model = build_decomposed_model(timm_adapter, indices)
    folder = save_decomposed_model(model, tmp_path_factory.mktemp("timm") / "model")
    return model, folder


@pytest.mark.parametrize("kernel", ["dense", "embedding-bag"])
def test_head_math_literal(kernel):
    head = DecomposedLinear(torch.zeros(2, 4), None, [[0, 2], [3]], kernel=kernel)
    with torch.no_grad():
        head.kept_weight.copy_(torch.tensor([[1.0, 2.0], [5.0, 9.0]]))  # 9.0 sits in a padding slot
        head.bias.copy_(torch.tensor([0.5, -1.0]))
    features = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert head(features).tolist() == [[7.5, 19.0]]  # 1*1 + 2*3 + 0.5 ; 5*4 - 1
    assert head.contributions(features).tolist() == [[[1.0, 6.0], [20.0, 0.0]]]
    assert head.multiply_adds == 3
    assert head.index_sets() == [[0, 2], [3]]


def test_from_classifier_equals_core_head_and_full_layer(timm_adapter):
    x = torch.randn(5, 3, 40, 40)
    sets = _sets(3, timm_adapter.num_features)
    model = DecomposedForImageClassification.from_classifier(timm_adapter, sets)
    with torch.no_grad():
        core = DecomposedLinear(timm_adapter.weight, timm_adapter.bias, sets)(timm_adapter.forward_features(x))
        assert torch.equal(model(x).logits, core)
        every = [list(range(timm_adapter.num_features))] * 3
        full = DecomposedForImageClassification.from_classifier(timm_adapter, every)
        torch.testing.assert_close(full(x).logits, timm_adapter(x), rtol=1e-5, atol=1e-5)
    assert model.config.id2label == {0: "red", 1: "green", 2: "blue"}
    assert model.config.pretrained_cfg["num_classes"] == 3 and "url" not in model.config.pretrained_cfg


def test_large_sparse_head_uses_the_kernel_analyze_uses(tmp_path):
    """200 classes x 96 features, 3 kept each: hf-decomp evaluates with the embedding-bag kernel."""
    torch.manual_seed(0)
    backbone = timm.create_model("test_resnet", num_classes=200, pretrained=False).eval()
    backbone.pretrained_cfg = {**backbone.pretrained_cfg, "input_size": (3, 32, 32)}  # small probes
    adapter = adapt_timm_model(backbone)
    sets = _sets(200, adapter.num_features, k=3)
    indices = InfluentialIndices(sets, adapter.num_features, adapter.label_names)
    model = build_decomposed_model(adapter, indices)
    core = DecomposedLinear(adapter.weight.detach(), adapter.bias.detach(), sets)
    assert model.config.head_kernel == core.kernel == "embedding-bag"
    model.save_pretrained(tmp_path / "m")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "m")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = core(adapter.forward_features(x))
        assert torch.equal(model(x).logits, expected)
        assert torch.equal(reloaded(x).logits, expected)


def test_save_and_from_pretrained_give_identical_logits(saved_timm):
    model, folder = saved_timm
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "indices.json", "indices.safetensors",
            "README.md", "configuration_decomp.py", "modeling_decomp.py"} <= {p.name for p in folder.iterdir()}
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {"AutoConfig": "configuration_decomp.DecompConfig",
                                  "AutoModelForImageClassification": "modeling_decomp.DecomposedForImageClassification"}
    assert InfluentialIndices.load(folder).sets == model.config.index_sets
    reloaded = AutoModelForImageClassification.from_pretrained(folder)
    assert type(reloaded) is DecomposedForImageClassification
    x = torch.randn(4, 3, 40, 40)
    labels = torch.tensor([0, 2, 1, 1])
    with torch.no_grad():
        expected = model(x).logits
        out = reloaded(x, labels=labels, output_contributions=True)
    assert torch.equal(out.logits, expected)
    torch.testing.assert_close(out.loss, F.cross_entropy(expected, labels))
    torch.testing.assert_close(out.contributions.sum(-1) + reloaded.head.bias, out.logits, rtol=1e-5, atol=1e-5)
    assert out.features.shape == (4, model.config.num_features)
    assert torch.equal(reloaded(x, return_dict=False)[0], expected)


def test_pipeline_returns_label_names_and_the_models_scores(saved_timm, timm_adapter):
    model, folder = saved_timm
    classifier = pipeline("image-classification", model=str(folder))
    images = _images(4)
    pixels = torch.stack([timm_adapter.transform(im) for im in images])
    processed = classifier.image_processor(images, return_tensors="pt")["pixel_values"]
    assert torch.equal(processed, pixels)  # the saved processor is timm's eval transform
    with torch.no_grad():
        probabilities = model(pixels).logits.softmax(-1)
    for image, p in zip(images, probabilities):
        got = classifier(image, top_k=3)
        order = p.argsort(descending=True).tolist()
        assert [g["label"] for g in got] == [["red", "green", "blue"][i] for i in order]
        assert [g["score"] for g in got] == pytest.approx(p[order].tolist(), abs=1e-6)


def test_transformers_backbone_round_trip_and_pipeline(tmp_path):
    folder = save_tiny_transformers_model(tmp_path / "hf")
    adapter = adapt_transformers_model(str(folder))
    sets = _sets(3, adapter.num_features, k=3)
    model = DecomposedForImageClassification.from_classifier(adapter, sets)
    assert model.config.backbone_head_path == "classifier.1"
    model.save_pretrained(tmp_path / "decomp")
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "decomp")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        core = DecomposedLinear(adapter.weight, adapter.bias, sets)(adapter.forward_features(x))
        torch.testing.assert_close(model(x).logits, core, rtol=0, atol=1e-6)
        assert torch.equal(reloaded(x).logits, model(x).logits)
    classifier = pipeline("image-classification", model=str(tmp_path / "decomp"))
    image = _images(1, size=(40, 40))[0]
    with torch.no_grad():
        p = model(adapter.transform(image)[None]).logits.softmax(-1)[0]
    top = classifier(image, top_k=1)[0]
    assert top["label"] == f"c{int(p.argmax())}"
    assert top["score"] == pytest.approx(float(p.max()), abs=1e-6)


def test_remote_cifar_definition_matches_the_timm_registered_one(cifar_adapter):
    backbone = CifarResNet(20, num_classes=0).eval()
    state = {k: v for k, v in cifar_adapter.model.state_dict().items() if not k.startswith("linear.")}
    backbone.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(backbone.forward_head(backbone.forward_features(x)), cifar_adapter.forward_features(x))


_REMOTE_SCRIPT = textwrap.dedent("""
    import importlib.abc, json, sys

    class HideHfDecomp(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "hf_decomp" or name.startswith("hf_decomp."):
                raise ImportError(f"{name} is hidden in this test")

    sys.meta_path.insert(0, HideHfDecomp())
    try:
        import hf_decomp  # noqa: F401
        print(json.dumps({"hf_decomp_importable": True}))
        sys.exit(0)
    except ImportError:
        pass
    import timm, torch
    from PIL import Image
    from transformers import AutoModelForImageClassification, pipeline

    folder, images = sys.argv[1], sys.argv[2:]
    model = AutoModelForImageClassification.from_pretrained(folder, trust_remote_code=True)
    classifier = pipeline("image-classification", model=folder, trust_remote_code=True)
    x = torch.load(folder + "/../x.pt", weights_only=True)
    with torch.no_grad():
        logits = model(x).logits
    print(json.dumps({
        "hf_decomp_importable": False,
        "timm_knows_cifar": timm.is_model("cifar10_resnet20"),
        "module": type(model).__module__,
        "backbone": type(model.backbone).__name__,
        "logits": logits.tolist(),
        "pipeline": [classifier(Image.open(p), top_k=2) for p in images],
    }))
""")


def test_trust_remote_code_loads_where_hf_decomp_is_not_importable(cifar_adapter, tmp_path):
    sets = _sets(10, 64, k=5)
    model = DecomposedForImageClassification.from_classifier(cifar_adapter, sets)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    # The remote code is the library's own portable files, copied with the relative imports they need.
    portable = Path(hf_decomp.portable.__file__).parent
    for name in ("modeling_decomp.py", "configuration_decomp.py", "decomposed_head.py", "index_sets.py",
                 "cifar_resnet.py"):
        assert (folder / name).read_bytes() == (portable / name).read_bytes(), name
    x = torch.randn(3, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    image_paths = []
    for i, image in enumerate(_images(2, size=(32, 32))):
        image_paths.append(str(tmp_path / f"{i}.png"))
        image.save(image_paths[-1])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    result = subprocess.run([sys.executable, "-c", _REMOTE_SCRIPT, str(folder), *image_paths], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["hf_decomp_importable"] is False
    assert report["timm_knows_cifar"] is False  # so the file's own CIFAR ResNet was used
    assert report["module"].startswith("transformers_modules.") and report["backbone"] == "CifarResNet"
    with torch.no_grad():
        expected = model(x).logits
        pixels = torch.stack([cifar_adapter.transform(Image.open(p).convert("RGB")) for p in image_paths])
        probabilities = model(pixels).logits.softmax(-1)
    torch.testing.assert_close(torch.tensor(report["logits"]), expected, rtol=0, atol=1e-5)
    for got, p in zip(report["pipeline"], probabilities):
        top = p.argsort(descending=True)[:2].tolist()
        assert [g["label"] for g in got] == [cifar_adapter.label_names[i] for i in top]
        assert [g["score"] for g in got] == pytest.approx(p[top].tolist(), abs=1e-5)


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


@pytest.fixture
def saved_copy(saved_timm, tmp_path):
    import shutil

    return Path(shutil.copytree(saved_timm[1], tmp_path / "copy"))


def test_loading_a_config_with_an_index_out_of_range_names_class_and_index(saved_copy):
    config = json.loads((saved_copy / "config.json").read_text())
    sets = config["index_sets"]
    sets[1][2] = 500
    _edit_config(saved_copy, index_sets=sets)
    with pytest.raises(ValueError, match=r"class 1 \('green'\): indices \[500\] are outside \[0, 96\)"):
        AutoModelForImageClassification.from_pretrained(saved_copy)


def test_loading_a_config_with_a_wrong_class_count(saved_copy):
    config = json.loads((saved_copy / "config.json").read_text())
    _edit_config(saved_copy, index_sets=config["index_sets"][:2])
    with pytest.raises(ValueError, match="2 index sets but 3 classes"):
        AutoModelForImageClassification.from_pretrained(saved_copy)


def test_loading_weights_whose_index_sets_differ_from_the_config(saved_copy):
    tensors = load_file(saved_copy / "model.safetensors")
    tensors["head.indices"] = tensors["head.indices"].flip(1).contiguous()
    save_file(tensors, saved_copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="differ from config.json"):
        AutoModelForImageClassification.from_pretrained(saved_copy)


def test_unresolvable_backbone_says_what_was_looked_for(saved_copy):
    _edit_config(saved_copy, architecture="no_such_net_v9")
    with pytest.raises(ValueError, match=r"architecture='no_such_net_v9'.*timm .* has no such model.*pip install"):
        AutoModelForImageClassification.from_pretrained(saved_copy)


def test_export_cli_reproduces_analyze_accuracy_and_keeps_hand_written_card(color_dataset, tmp_path, capsys):
    model_dir = save_tiny_timm_model(tmp_path / "tiny", input_size=32)
    run = tmp_path / "run"
    result = analyze(str(model_dir), str(color_dataset), k1=8, k2=8, out=run, num_workers=0)
    out = tmp_path / "exported"
    assert main(["export", "--indices", str(run), "--out", str(out)]) == 0
    assert "saved DecomposedForImageClassification" in capsys.readouterr().out
    model = AutoModelForImageClassification.from_pretrained(out)
    assert model.config.index_sets == result.indices.sets
    assert model.config.metrics["decomposed_accuracy"] == result.metrics["decomposed_accuracy"]
    # Same eval split, same preprocessing, through the reloaded model: the same accuracy, exactly.
    split = load_image_split(str(color_dataset), "test")
    classifier = pipeline("image-classification", model=str(out))
    images = [decode_image(row[split.image_column]) for row in split.dataset]
    labels = torch.tensor(split.dataset[split.label_column])
    pixels = classifier.image_processor(images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        predicted = model(pixels).logits.argmax(-1)
    accuracy = 100.0 * (predicted == labels).sum().item() / len(labels)
    assert accuracy == result.metrics["decomposed_accuracy"]
    names = [model.config.id2label[int(i)] for i in predicted]
    assert [top[0]["label"] for top in classifier(images, top_k=1, batch_size=len(images))] == names

    assert main(["export", "--indices", str(run), "--out", str(out)]) == 2  # exists, no --overwrite
    (out / "README.md").write_text("# My own notes\n")
    assert main(["export", "--indices", str(run), "--out", str(out), "--overwrite"]) == 0
    assert (out / "README.md").read_text() == "# My own notes\n"
    save_decomposed_model(model, out, overwrite=True, overwrite_card=True)
    assert "generated by hf-decomp" in (out / "README.md").read_text()


def test_export_cli_errors(tmp_path, capsys):
    assert main(["export", "--indices", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "no indices.json" in capsys.readouterr().err
    InfluentialIndices([[0], [1]], 4, ["a", "b"], metadata={"base_model": "cifar10_resnet20"}).save(tmp_path / "r")
    assert main(["export", "--indices", str(tmp_path / "r"), "--out", str(tmp_path / "o"), "--model",
                 "cifar10_resnet20", "--weights", str(tmp_path / "missing.th")]) == 2
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@requires_shared("models", "cifar10-resnets")
@requires_shared("data", "cifar10")
def test_resnet20_round_trip_reproduces_analyze_accuracy_exactly(tmp_path):
    result = analyze("cifar10_resnet20", None, k1=5, k2=5, limit=500, eval_limit=200, out=tmp_path / "run",
                     num_workers=0)
    assert main(["export", "--indices", str(tmp_path / "run"), "--out", str(tmp_path / "model")]) == 0
    model = AutoModelForImageClassification.from_pretrained(tmp_path / "model")
    split = load_image_split(None, "test", limit=200, seed=0)
    images = [decode_image(row[split.image_column]) for row in split.dataset]
    labels = torch.tensor(split.dataset[split.label_column])
    classifier = pipeline("image-classification", model=str(tmp_path / "model"))
    pixels = classifier.image_processor(images, return_tensors="pt")["pixel_values"]
    adapter = load_classifier("cifar10_resnet20")
    # The exported processor is transformers' ViTImageProcessor (no timm): timm's transform within float rounding.
    torch.testing.assert_close(pixels, torch.stack([adapter.transform(im) for im in images]), rtol=0, atol=1e-6)
    with torch.no_grad():
        predicted = torch.cat([model(batch).logits.argmax(-1) for batch in pixels.split(100)])
    accuracy = 100.0 * (predicted == labels).sum().item() / len(labels)
    assert accuracy == result.metrics["decomposed_accuracy"]
    piped = [top[0]["label"] for top in classifier(images, top_k=1, batch_size=50)]
    assert piped == [model.config.id2label[int(i)] for i in predicted]
    assert model.config.metrics["decomposed_accuracy"] == result.metrics["decomposed_accuracy"]
