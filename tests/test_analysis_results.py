"""Typed analysis results and settings: metrics.json stays the JSON analyze wrote before the types
existed (captured from that code in tests/data/metrics_before_issue10), old results folders load, and
AnalysisSettings is validated once, serialisable and named like the CLI."""

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from helpers_models import ColourNet, save_tiny_timm_model

from hf_decomp import analyze
from hf_decomp.analysis.folder import ResultsFolder
from hf_decomp.analysis.results import AnalysisMetrics, NoiseAblation
from hf_decomp.analysis.settings import AnalysisSettings
from hf_decomp.analysis.summary import render_analysis_report
from hf_decomp.hub.export import summarize_metrics
from hf_decomp.models import adapt_timm_model
from hf_decomp.utils.errors import DecompValueError

BEFORE = Path(__file__).parent / "data" / "metrics_before_issue10"
# how tests/data/metrics_before_issue10 was written (the dataset and model folder paths replaced by placeholders)
RUNS = {
    "colournet": dict(k1=2, k2=2, bias_correction=True),
    "tiny_timm_layers": dict(k1=3, coverage=0.9, layers=["all-blocks"], top_images=0),
}


def _captured(name: str) -> dict:
    return json.loads((BEFORE / f"{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(RUNS))
def test_metrics_json_of_the_code_before_round_trips_exactly(name):
    data = _captured(name)
    metrics = AnalysisMetrics.from_dict(data)
    assert metrics.to_dict() == data
    assert json.dumps(metrics.to_dict(), indent=2) == json.dumps(data, indent=2)  # key order too
    assert metrics.extra == {}  # every key is typed


def test_typed_fields_hold_the_numbers():
    metrics = AnalysisMetrics.from_dict(_captured("colournet"))
    assert metrics.noise_ablation == NoiseAblation(37.5, 70.83333333333333)
    assert (metrics.selection.criterion, metrics.selection.k1, metrics.selection.k2) == ("histogram", 2, 2)
    assert (metrics.multiply_adds.full, metrics.multiply_adds.decomposed) == (18, 6)
    assert metrics.evaluation.per_class["red"].full_accuracy == 100.0
    assert metrics.bias_corrected.bias == [0.0, 0.0, 0.0]
    assert metrics.processes.rows_per_process == {"statistics": [24], "evaluation": [24]}
    # and it still reads like the dict it replaced
    assert metrics["noise_ablation"] == {"influential_to_noise_accuracy": 37.5,
                                         "non_influential_to_noise_accuracy": 70.83333333333333}
    assert metrics.get("layers") is None and "bias_corrected" in metrics


def test_keys_unknown_to_this_version_are_kept():
    data = {**_captured("colournet"), "from_a_newer_version": {"x": 1}}
    metrics = AnalysisMetrics.from_dict(data)
    assert metrics.extra == {"from_a_newer_version": {"x": 1}} and metrics.to_dict() == data


def test_a_file_that_is_not_metrics_json_is_refused_by_name():
    with pytest.raises(DecompValueError, match=r"metrics.json\['model'\] lacks \['num_features', 'num_classes'\]"):
        AnalysisMetrics.from_dict({**_captured("colournet"), "model": {"name": "m", "source": "timm"}})
    with pytest.raises(DecompValueError, match=r"lacks \['noise_ablation'\]"):
        AnalysisMetrics.from_dict({k: v for k, v in _captured("colournet").items() if k != "noise_ablation"})


def _older(data: dict) -> dict:
    """metrics.json as written before labels, processes and resized_images were recorded."""
    old = {k: v for k, v in data.items() if k not in ("labels", "processes")}
    old["statistics"] = {k: v for k, v in data["statistics"].items() if k != "resized_images"}
    old["evaluation"] = {k: v for k, v in data["evaluation"].items() if k != "resized_images"}
    return old


def _run(name: str, root: Path, dataset: Path, out: Path):
    torch.manual_seed(0)
    if name == "colournet":
        model, placeholder = adapt_timm_model(ColourNet(), name="colournet"), None
    else:
        model = placeholder = str(save_tiny_timm_model(root / "timm"))
    return analyze(model, str(dataset), out=out, num_workers=0, **RUNS[name]), placeholder


@pytest.mark.parametrize("name", sorted(RUNS))
def test_analyze_writes_the_metrics_json_it_wrote_before(name, tmp_path):
    from conftest import make_color_dataset

    dataset = make_color_dataset(tmp_path / "colors")
    result, model_folder = _run(name, tmp_path, dataset, tmp_path / "run")
    text = (tmp_path / "run" / "metrics.json").read_text().replace(str(dataset), "<dataset>")
    written = json.loads(text.replace(model_folder, "<model>") if model_folder else text)
    settings = written.pop("settings")
    before = _captured(name)
    written.pop("versions"), before.pop("versions")  # the library versions of the machine that ran it
    assert written == before
    assert list(written) == [k for k in before]
    assert AnalysisSettings.from_dict(settings).to_dict() == settings
    assert settings["k1"] == RUNS[name]["k1"] and settings["out"] == str(tmp_path / "run")
    assert result.metrics.to_dict() == json.loads((tmp_path / "run" / "metrics.json").read_text())


def test_old_results_folders_load(tmp_path):
    from conftest import make_color_dataset

    dataset = make_color_dataset(tmp_path / "colors")
    _run("colournet", tmp_path, dataset, tmp_path / "run")
    for variant, data in (("before", _captured("colournet")), ("older", _older(_captured("colournet")))):
        folder = tmp_path / variant
        shutil.copytree(tmp_path / "run", folder)
        (folder / "metrics.json").write_text(json.dumps(data))
        loaded = ResultsFolder.load(folder)
        assert loaded.metrics.settings is None and loaded.metrics.to_dict() == data
        assert loaded.metrics.noise_ablation.influential_to_noise_accuracy == 37.5
        assert "| 37.50 | 70.83 |" in render_analysis_report(loaded.metrics, loaded.indices)
        summary = summarize_metrics(loaded.indices.metadata, loaded.metrics)
        assert summary["noise_ablation"] == data["noise_ablation"] and summary["eval_samples"] == 24
    assert ResultsFolder.load(tmp_path / "older").metrics.statistics.resized_images is None


# ---- settings --------------------------------------------------------------------------------------------------


def test_settings_round_trip_through_json():
    settings = AnalysisSettings(model="cifar10_resnet20", k1=3, k2=None, coverage=0.5, criterion="contribution",
                                layers=("layer1",), label_map={"cat": 3}, out=Path("runs") / "a", save_every=7,
                                mixed_precision="bf16", limit=100)
    data = json.loads(json.dumps(settings.to_dict()))
    assert data["out"] == str(Path("runs") / "a") and data["layers"] == ["layer1"]
    assert AnalysisSettings.from_dict(data) == settings


def test_an_adapter_is_recorded_by_its_name():
    settings = AnalysisSettings(model=adapt_timm_model(ColourNet(), name="colournet"))
    assert settings.to_dict()["model"] == "colournet"


@pytest.mark.parametrize("bad, message", [
    (dict(batch_size=0), r"batch_size=0 must be a positive integer; give --batch-size N"),
    (dict(limit=0), r"limit=0 must be a positive integer; give --limit N"),
    (dict(save_every=-1), r"save_every=-1 must be a positive integer; give --save-every N"),
    (dict(save_every_minutes=0), r"save_every_minutes=0 must be > 0"),
    (dict(num_workers=-1), r"num_workers=-1 must be an integer >= 0"),
    (dict(top_images=-2), r"top_images=-2 must be an integer >= 0"),
    (dict(decode="tpu"), r"decode='tpu' is not one of cpu, cpu-fast, gpu, dali"),
    (dict(mixed_precision="fp64"), r"mixed_precision='fp64' is not one of no, fp16, bf16, fp8"),
    (dict(coverage=50), r"coverage=50 must be a fraction in \(0, 1\]"),
    (dict(k1="5"), r"k1='5' must be a positive integer"),
    (dict(k2=None), r"give k2 .* or coverage"),
])
def test_bad_settings_are_refused_once_by_name(bad, message):
    with pytest.raises(DecompValueError, match=message):
        AnalysisSettings(**bad)


def test_unknown_settings_are_refused():
    with pytest.raises(DecompValueError, match=r"unknown analysis settings \['k3'\]"):
        AnalysisSettings.from_dict({"k3": 1})
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['k3'\]"):
        analyze(k3=1)


def test_old_keyword_names_still_work_with_one_future_warning(color_dataset, tmp_path):
    adapter = adapt_timm_model(ColourNet(), name="colournet")
    with pytest.warns(FutureWarning, match=r"method= is now criterion=, out_dir= is now out=") as caught:
        result = analyze(adapter, str(color_dataset), k1=1, k2=1, method="contribution", out_dir=tmp_path / "run",
                         num_workers=0, top_images=0)
    assert len([w for w in caught if w.category is FutureWarning]) == 1
    assert result.metrics.selection.criterion == "contribution" and result.out_dir == tmp_path / "run"
    assert result.metrics.settings["criterion"] == "contribution"
    with pytest.raises(DecompValueError, match="both method= and its new name criterion="):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            analyze(adapter, str(color_dataset), method="histogram", criterion="histogram")


def test_settings_object_and_keyword_overrides(color_dataset):
    adapter = adapt_timm_model(ColourNet(), name="colournet")
    base = AnalysisSettings(dataset=str(color_dataset), k1=1, k2=1, num_workers=0, top_images=0)
    result = analyze(adapter, settings=base, k2=2)
    assert (result.metrics.selection.k1, result.metrics.selection.k2) == (1, 2)
    assert base.k2 == 1  # the given settings are not changed


# the analyze subparser's dests that are not analysis settings
CLI_ONLY_DESTS = {"command", "func", "list_layers"}


def test_the_analyze_flags_are_the_settings():
    # Written against VOCAB.md's names: fails until the CLI speaks them (--weights, --criterion, --save-every, ...).
    from hf_decomp.cli import build_parser

    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    analyze_parser = subparsers.choices["analyze"]
    dests = {a.dest for a in analyze_parser._actions if a.dest != "help" and a.help != "==SUPPRESS=="}
    dests |= set(analyze_parser._defaults)
    assert dests - CLI_ONLY_DESTS == set(AnalysisSettings.field_names())
