import importlib
import json

import datasets
import pytest
from conftest import png_bytes
from helpers_models import ColourNet, save_tiny_timm_model, save_tiny_transformers_model
from PIL import Image

from hf_decomp import InfluentialIndices, analyze
from hf_decomp.cli import main
from hf_decomp.models import adapt_timm_model
from hf_decomp.utils.errors import DecompValueError, OutputExistsError


@pytest.fixture
def colour_adapter():
    return adapt_timm_model(ColourNet(), name="colournet")


def test_known_influential_features_are_found_and_written(color_dataset, colour_adapter, tmp_path):
    out = tmp_path / "run"
    result = analyze(colour_adapter, str(color_dataset), k1=2, k2=2, out=out, num_workers=0)
    # red reads (R, R/2) = features 0 and 3; green 1 and 4; blue 2 and 5; the larger one ranks first
    assert result.indices.sets == [[0, 3], [1, 4], [2, 5]]
    m = result.metrics
    assert m["full_accuracy"] == 100.0 and m["decomposed_accuracy"] == 100.0 and m["rho"] == 1.0
    assert m["multiply_adds"] == {"full": 18, "decomposed": 6, "ratio": 6 / 18}
    assert m["selection"]["k1_over_d"] == 2 / 6
    assert m["statistics"]["samples_per_class"] == {"red": 8, "green": 8, "blue": 8}
    assert m["noise_ablation"]["influential_to_noise_accuracy"] < m["noise_ablation"]["non_influential_to_noise_accuracy"]
    assert sorted(p.name for p in out.iterdir()) == [
        "indices.json", "indices.safetensors", "metrics.json", "report.md", "statistics.safetensors",
        "top_images.json", "top_images.safetensors", "top_images_thumbnails.safetensors"]
    loaded = InfluentialIndices.load(out)
    assert loaded.sets == result.indices.sets and loaded.metadata["k1"] == 2
    assert json.loads((out / "metrics.json").read_text())["decomposed_accuracy"] == 100.0
    assert "| red | 100.00 | 100.00 | 0 3 |" in (out / "report.md").read_text()


def test_coverage_variant_keeps_per_class_sets(color_dataset, colour_adapter):
    result = analyze(colour_adapter, str(color_dataset), k1=1, coverage=0.9, num_workers=0)
    assert result.indices.sets == [[0], [1], [2]]  # top-1 always the full-colour feature
    assert result.metrics["selection"]["method"] == "coverage"


def test_tiny_timm_and_transformers_folders_go_through_analyze(color_dataset, tmp_path):
    for folder in (save_tiny_timm_model(tmp_path / "timm"), save_tiny_transformers_model(tmp_path / "hf")):
        result = analyze(str(folder), str(color_dataset), k1=3, k2=4, num_workers=0)
        d = result.metrics["model"]["num_features"]
        assert all(len(s) == 4 and all(0 <= i < d for i in s) for s in result.indices.sets)
        assert result.metrics["evaluation"]["eval_samples"] == 24
        # with all features kept the decomposed head must equal the full one
        full = analyze(str(folder), str(color_dataset), k1=3, k2=d, num_workers=0)
        assert full.metrics["decomposed_accuracy"] == full.metrics["full_accuracy"]


def test_existing_results_are_refused_and_kept(color_dataset, colour_adapter, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        analyze(colour_adapter, str(color_dataset), out=out, num_workers=0)
    assert (out / "metrics.json").read_text() == "{}"
    analyze(colour_adapter, str(color_dataset), k1=1, k2=1, out=out, overwrite=True, num_workers=0)
    assert json.loads((out / "metrics.json").read_text())["selection"]["k2"] == 1


def test_failure_mid_run_leaves_no_half_written_folder(color_dataset, colour_adapter, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    analyze_module = importlib.import_module("hf_decomp.analysis.run")
    monkeypatch.setattr(analyze_module, "render_analysis_report", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        analyze(colour_adapter, str(color_dataset), out=tmp_path / "run", num_workers=0)
    assert not (tmp_path / "run").exists()
    assert [p.name for p in tmp_path.iterdir() if "run" in p.name] == []


@pytest.mark.parametrize("k1, k2, message", [(0, 2, "k1=0 must be between 1 and d=6"),
                                             (2, 7, "k2=7 must be between 1 and d=6")])
def test_k_outside_feature_width(color_dataset, colour_adapter, k1, k2, message):
    with pytest.raises(DecompValueError, match=message):
        analyze(colour_adapter, str(color_dataset), k1=k1, k2=k2, num_workers=0)


def _write_split(folder, labels, names):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=names)})
    image = {"bytes": png_bytes(Image.new("RGB", (16, 16), (200, 10, 10))), "path": None}
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        datasets.Dataset.from_dict({"image": [image] * len(labels), "label": labels}, features=features).to_parquet(
            str(folder / f"{split}-00000-of-00001.parquet"))
    return str(folder)


def test_class_count_mismatch_names_both_counts(tmp_path, colour_adapter):
    dataset = _write_split(tmp_path / "four", [0, 1, 2, 3], ["a", "b", "c", "d"])
    with pytest.raises(DecompValueError, match="has 4 classes but model 'colournet' has 3"):
        analyze(colour_adapter, dataset, num_workers=0)


def test_labels_outside_the_models_classes_are_named(tmp_path, colour_adapter):
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    image = {"bytes": png_bytes(Image.new("RGB", (16, 16))), "path": None}
    folder = tmp_path / "badlabels"
    folder.mkdir()
    for split in ("train", "test"):
        datasets.Dataset.from_dict({"image": [image] * 3, "label": [0, 7, 2]}, features=features).to_parquet(
            str(folder / f"{split}-00000-of-00001.parquet"))
    with pytest.raises(DecompValueError, match=r"labels \[7\] outside the model's 3 classes"):
        analyze(colour_adapter, str(folder), num_workers=0)


def test_class_without_samples_is_reported_not_fatal(tmp_path, colour_adapter):
    dataset = _write_split(tmp_path / "nogreen", [0, 0, 2], ["red", "green", "blue"])
    result = analyze(colour_adapter, dataset, k1=1, k2=1, num_workers=0)
    assert result.metrics["statistics"]["classes_without_samples"] == ["green"]
    assert any("green" in w for w in result.warnings)
    assert len(result.indices.sets[1]) == 1


def test_cli_runs_and_reports_errors_without_traceback(color_dataset, tmp_path, capsys, monkeypatch):
    folder = save_tiny_timm_model(tmp_path / "timm")
    out = tmp_path / "cli_run"
    argv = ["analyze", "--model", str(folder), "--dataset", str(color_dataset), "--k1", "2", "--k2", "3",
            "--out", str(out), "--num-workers", "0"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "decomposed accuracy" in printed and "rho" in printed
    assert json.loads((out / "metrics.json").read_text())["selection"]["k2"] == 3
    assert main(argv) == 2
    assert "already holds results" in capsys.readouterr().err
    assert main(["analyze", "--model", "nope_model", "--dataset", str(color_dataset), "--out", str(tmp_path / "x")]) == 2
    assert "Unknown model 'nope_model'" in capsys.readouterr().err


def test_analyze_seed_reaches_the_noise_ablation(tmp_path):
    """`--seed` seeds the ablation noise: another seed, other noise numbers; the same seed, the same ones.
    (No --limit: the statistics, sets and accuracies are the same for every seed.)"""
    from conftest import make_color_dataset

    dataset = make_color_dataset(tmp_path / "colors", per_class=16)
    model = save_tiny_timm_model(tmp_path / "tiny", input_size=16)
    runs = {}
    for name, seed in (("a", 1), ("b", 2), ("c", 1)):
        assert main(["analyze", "--model", str(model), "--dataset", str(dataset), "--k1", "4", "--k2", "4",
                     "--seed", str(seed), "--num-workers", "0", "--out", str(tmp_path / name)]) == 0
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    a, b, c = runs["a"], runs["b"], runs["c"]
    assert a["decomposed_accuracy"] == b["decomposed_accuracy"] and a["full_accuracy"] == b["full_accuracy"]
    assert a["noise_ablation"] == c["noise_ablation"]
    assert a["noise_ablation"] != b["noise_ablation"]
