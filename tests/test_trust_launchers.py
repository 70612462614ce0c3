"""The CLI under torchrun and accelerate launch on CPU: every row is read once, split between the processes
that were started, and metrics.json records the split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers_trust import subprocess_env, tiny_colour_model

from hf_decomp.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("one_thread")

# 24 rows per split in batches of 5: batches 0, 2, 4 (5 + 5 + 4 rows) go to process 0, batches 1, 3 to process 1.
ARGS = ["--batch-size", "5", "--num-workers", "0", "--k1", "2", "--k2", "2"]


def _launch(launcher: list[str], model: Path, dataset: Path, out: Path) -> dict:
    command = [*launcher, "-m", "hf_decomp", "analyze", "--model", str(model), "--dataset", str(dataset),
               "--out", str(out), *ARGS]
    completed = subprocess.run(command, cwd=out.parent, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert completed.stdout.count("full accuracy") == 1  # one process reports
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture
def single_process_metrics(color_dataset, tmp_path) -> tuple[Path, dict]:
    model = tiny_colour_model(tmp_path / "model")
    out = tmp_path / "single"
    assert cli_main(["analyze", "--model", str(model), "--dataset", str(color_dataset), "--out", str(out), *ARGS]) == 0
    return model, json.loads((out / "metrics.json").read_text())


def _same_numbers(metrics: dict, reference: dict) -> None:
    for key in ("full_accuracy", "decomposed_accuracy", "noise_ablation"):
        assert metrics[key] == reference[key]
    assert metrics["statistics"]["samples_per_class"] == reference["statistics"]["samples_per_class"]
    assert metrics["evaluation"]["eval_samples"] == reference["evaluation"]["eval_samples"] == 24


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [
    ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"],
    ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--main_process_port", "0"],
], ids=["torchrun", "accelerate-launch"])
def test_two_cpu_processes_split_the_data_once(launcher, single_process_metrics, color_dataset, tmp_path):
    model, single = single_process_metrics
    assert single["processes"] == {"num_processes": 1, "rows_per_process": {"statistics": [24], "evaluation": [24]}}
    out = tmp_path / "double"
    metrics = _launch([sys.executable, *launcher], model, color_dataset, out)
    assert metrics["processes"] == {"num_processes": 2,
                                    "rows_per_process": {"statistics": [14, 10], "evaluation": [14, 10]}}
    _same_numbers(metrics, single)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".double")) == []  # no staging left


@pytest.mark.slow
def test_accelerate_launch_cpu_runs_one_process_and_says_so(single_process_metrics, color_dataset, tmp_path):
    model, single = single_process_metrics
    out = tmp_path / "cpu"
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2"]
    metrics = _launch(launcher, model, color_dataset, out)
    assert metrics["processes"] == {"num_processes": 1, "rows_per_process": {"statistics": [24], "evaluation": [24]}}
    assert any("accelerate launch --cpu started 1 process" in w and "torchrun --nproc_per_node N" in w
               for w in metrics["warnings"])
    _same_numbers(metrics, single)


def test_accelerator_joins_launched_cpu_processes(monkeypatch):
    from hf_decomp.passes.features import launched_without_accelerator

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched_without_accelerator()  # torchrun on a CPU-only machine: accelerate must be told cpu=True
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not launched_without_accelerator()
    monkeypatch.delenv("WORLD_SIZE")
    assert not launched_without_accelerator()


# Feature caches (refit, studies) under torchrun: one writer, every row once, the one-process order.
CACHE_DRIVER = """
import sys, torch
from hf_decomp.data import load_image_split
from hf_decomp.passes.feature_cache import cached_features
from hf_decomp.passes.features import make_accelerator
from hf_decomp.models import load_classifier

accelerator = make_accelerator()
adapter = load_classifier(sys.argv[1])
features, labels = cached_features(adapter, load_image_split(sys.argv[2], "train"), sys.argv[3], batch_size=5,
                                   num_workers=0)
torch.save({"features": features, "labels": labels, "num_processes": accelerator.num_processes},
           f"{sys.argv[3]}-rank{accelerator.process_index}.pt")
"""


@pytest.mark.slow
def test_feature_cache_under_torchrun_matches_one_process(color_dataset, tmp_path):
    import torch

    from hf_decomp.data import load_image_split
    from hf_decomp.models import load_classifier
    from hf_decomp.passes.feature_cache import cached_features

    model = tiny_colour_model(tmp_path / "model")
    driver = tmp_path / "cache_driver.py"
    driver.write_text(CACHE_DRIVER)
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(driver),
               str(model), str(color_dataset), str(cache)]
    completed = subprocess.run(command, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr[-4000:]
    single = cached_features(load_classifier(str(model)), load_image_split(str(color_dataset), "train"),
                             tmp_path / "single", batch_size=5, num_workers=0)
    for rank in (0, 1):
        got = torch.load(f"{cache}-rank{rank}.pt", weights_only=True)
        assert got["num_processes"] == 2
        assert torch.equal(got["labels"], single[1]) and torch.allclose(got["features"], single[0], atol=1e-6)
