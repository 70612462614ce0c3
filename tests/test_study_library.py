"""Issue 20, item 18: a single study runs from the library (studies/suite.run_study); the CLI only parses and prints."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

import hf_decomp
from hf_decomp.studies.common import ModelFeatures
from hf_decomp.studies.suite import StudySettings, run_study
from hf_decomp.utils.errors import DecompValueError


class _Adapter:
    num_features = 4


def _features(adapter, dataset, **kwargs) -> ModelFeatures:
    """Class c votes for features 2c and 2c + 1 (each sample's top-2 are its class's pair)."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(2).repeat(20)
    x = torch.rand(40, 4, generator=generator) * 0.1
    x[torch.arange(40), 2 * labels] += 1.0
    x[torch.arange(40), 2 * labels + 1] += 0.5
    weight = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    return ModelFeatures.from_tensors(weight, None, (x, labels), (x, labels), ["a", "b"], name="toy")


@pytest.fixture
def toy_model(monkeypatch):
    import hf_decomp.studies.common as studies_common
    import hf_decomp.studies.efficientnet_lite0 as lite0

    monkeypatch.setattr(lite0, "load_study_model", lambda name: _Adapter())
    monkeypatch.setattr(studies_common, "load_model_features", _features)


def test_run_study_writes_the_overlap_report_from_python(tmp_path, toy_model):
    result = run_study(StudySettings(study="overlap", k1=2, k2=2), tmp_path / "o")
    assert result.data["mean_jaccard_off_diagonal"] == 0.0 and result.data["features_class_specific"] == 4
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["settings"]["study"] == "overlap" and report["settings"]["k2"] == 2
    assert report["studies"]["overlap"]["data"]["authors_pairwise_mi_select_nats"] == pytest.approx(0.0, abs=1e-4)


def test_the_cli_prints_what_the_library_computed(tmp_path, toy_model, capsys):
    from hf_decomp.cli import main

    assert main(["overlap", "--k1", "2", "--k2", "2", "--out", str(tmp_path / "cli")]) == 0
    library = run_study(StudySettings(study="overlap", k1=2, k2=2), tmp_path / "lib")
    cli = json.loads((tmp_path / "cli" / "report.json").read_text())["studies"]["overlap"]["data"]
    assert cli["jaccard"] == library.data["jaccard"]
    assert f"mean Jaccard {library.data['mean_jaccard_off_diagonal']:.3f}" in capsys.readouterr().out


def test_run_study_checks_k_before_any_feature(tmp_path, monkeypatch, toy_model):
    import hf_decomp.studies.common as studies_common

    monkeypatch.setattr(studies_common, "load_model_features", lambda *a, **k: pytest.fail("features computed"))
    with pytest.raises(DecompValueError, match="k2"):
        run_study(StudySettings(study="histograms", k1=2, k2=9), tmp_path / "h")
    with pytest.raises(DecompValueError, match="unknown study 'depth'"):
        StudySettings(study="depth")
    with pytest.raises(DecompValueError, match="give --classes or --num-images, not both"):
        StudySettings(study="activation-maps", num_images=2, classes=["a"])


def test_the_report_command_holds_no_study_logic():
    """commands/report.py reaches the studies only through studies.suite (no selection, statistics or study code)."""
    path = Path(hf_decomp.__file__).parent / "commands" / "report.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    study_logic = {"top_k_per_class", "gather_class_statistics", "overlap_study", "sweep_study", "histogram_study",
                   "csg_study", "CSGConfig", "label_free_features", "select_images", "feature_maps_function",
                   "dataset_activation_study", "load_image_split", "load_model_features", "get_criterion"}
    forbidden = {name for name in imported if name.split(".")[-1] in study_logic}
    assert not forbidden, forbidden
