"""Results meant to be committed name data and models by public names, never by paths on this machine."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from conftest import requires_shared

from hf_decomp.studies.common import ModelFeatures, StudyResult
from hf_decomp.studies.depth import depth_study
from hf_decomp.studies.suite import write_report
from hf_decomp.utils.paths import default_cifar10_dataset, publishable

ROOT = Path(__file__).resolve().parents[1]
MACHINE_PATH = re.compile(r"(?<![\w.])(/work/|/root/|/home/|/tmp/|\.\./shared/)")


def test_publishable_replaces_local_paths_and_keeps_public_names(tmp_path):
    data = tmp_path / "my-cifar"
    data.mkdir()
    value = {"dataset": str(data), "models": ["timm/resnet18.a1_in1k", "cifar10_resnet20", str(data / "w.pt")],
             "nested": ({"label_map": "/nowhere/labels.json"},), "k1": 5, "note": "a/b c"}
    assert publishable(value) == {
        "dataset": "my-cifar", "models": ["timm/resnet18.a1_in1k", "cifar10_resnet20", "w.pt"],
        "nested": ({"label_map": "labels.json"},), "k1": 5, "note": "a/b c"}


@requires_shared("data", "cifar10")
def test_the_bundled_cifar10_is_published_by_its_hub_name():
    assert publishable({"dataset": default_cifar10_dataset()}) == {"dataset": "uoft-cs/cifar10"}


def test_report_writer_emits_no_machine_paths(tmp_path):
    data = tmp_path / "my-cifar"
    data.mkdir()
    weight = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x, y = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1])
    mf = ModelFeatures.from_tensors(weight, None, (x, y), (x, y), ["a", "b"], "cifar10_resnet20")
    mf.data = {"statistics": {"dataset": str(data)}}
    out = tmp_path / "report"
    out.mkdir()
    study = depth_study([mf], out, k1=1, k2=1)
    extra = StudyResult("extra", "Extra", "", {"paths": [str(data / "x.json")], "model": "timm/resnet18.a1_in1k"})
    write_report([study, extra], out, {"dataset": str(data), "label_map": str(tmp_path / "labels.json"), "k1": 1})
    for name in ("report.md", "report.json"):
        text = (out / name).read_text()
        assert str(tmp_path) not in text and not MACHINE_PATH.search(text), name
    report = json.loads((out / "report.json").read_text())
    assert report["settings"] == {"dataset": "my-cifar", "label_map": "labels.json", "k1": 1}
    assert report["studies"]["depth"]["data"]["rows"][0]["dataset"] == "my-cifar"
    assert report["studies"]["extra"]["data"] == {"paths": ["x.json"], "model": "timm/resnet18.a1_in1k"}
    assert "statistics on 2 samples of `my-cifar`" in (out / "report.md").read_text()


def test_committed_results_hold_no_machine_paths():
    files = [p for folder in ("benchmarks/results", "model_cards") if (ROOT / folder).is_dir()
             for p in sorted((ROOT / folder).rglob("*")) if p.suffix in (".json", ".md")]
    assert files
    offenders = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in files
                 for m in [MACHINE_PATH.search(p.read_text(errors="replace"))] if m]
    assert offenders == []
