"""Checkpoints are atomic, refuse other runs, and a killed run resumed gives the uninterrupted result."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import requires_shared

from hf_decomp.analysis.run import analyze
from hf_decomp.passes.evaluation import EvaluationAccumulator
from hf_decomp.passes.resume import CheckpointConfig, default_checkpoint_dir
from hf_decomp.utils.errors import DecompValueError

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


RUN = dict(limit=192, eval_limit=96, batch_size=4, num_workers=0)


def _summary(result) -> dict:
    m = result.metrics
    k1 = result.statistics.k1_values[0]
    return {"sets": result.indices.sets, "histogram": result.statistics.histogram(k1).tolist(),
            "feature_sums": result.statistics.feature_sums.tolist(),
            "accuracies": (m["full_accuracy"], m["decomposed_accuracy"]), "noise": m["noise_ablation"],
            "eval_samples": m["evaluation"]["eval_samples"], "samples": m["statistics"]["samples"]}


def test_checkpoint_round_trip_and_atomic_files(tmp_path):
    config = CheckpointConfig(tmp_path / "ck", every_batches=3, resume=True)
    checkpoint = config.for_pass("statistics", {"model": "m"}, process_index=1, num_processes=2)
    assert checkpoint.load() is None  # nothing saved yet
    assert not checkpoint.due(2) and checkpoint.due(3)
    checkpoint.save({"counts": torch.tensor([1, 2, 3])}, position=3, seen_images=12)
    assert checkpoint.path.name == "statistics.rank001-of-002.safetensors"
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "statistics.rank001-of-002.json", "statistics.rank001-of-002.safetensors"]  # no temporary left
    tensors, state = config.for_pass("statistics", {"model": "m"}, 1, 2).load()
    assert tensors["counts"].tolist() == [1, 2, 3]
    assert (state["position"], state["complete"], state["seen_images"]) == (3, False, 12)
    assert json.loads(checkpoint.path.with_suffix(".json").read_text())["position"] == 3
    assert not checkpoint.due(5) and checkpoint.due(6)  # counted from the last save


def test_checkpoint_refuses_another_run(tmp_path):
    config = CheckpointConfig(tmp_path, every_batches=1, resume=True)
    config.for_pass("statistics", {"model": "a", "batch_size": 4}).save({"x": torch.zeros(2)}, 5)
    with pytest.raises(DecompValueError, match=r"batch_size: checkpoint 4, now 8.*drop --resume"):
        config.for_pass("statistics", {"model": "a", "batch_size": 8}).load()
    with pytest.raises(DecompValueError, match="written by another number of processes than this run's 2"):
        config.for_pass("statistics", {"model": "a", "batch_size": 4}, 0, 2).load()
    assert CheckpointConfig(tmp_path).for_pass("statistics", {"model": "a", "batch_size": 4}).load() is None


def test_corrupt_checkpoint_is_refused_with_the_fix(tmp_path):
    config = CheckpointConfig(tmp_path, every_batches=1, resume=True)
    checkpoint = config.for_pass("evaluation", {})
    checkpoint.path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(DecompValueError, match="is unreadable .* delete it to start this pass over"):
        checkpoint.load()


def test_bad_checkpoint_settings():
    with pytest.raises(DecompValueError, match="checkpoint_every=0 must be a positive number of batches"):
        CheckpointConfig("x", every_batches=0)
    with pytest.raises(DecompValueError, match=r"need a place: give out \(--out\) or resume_dir"):
        analyze(save_every=5, limit=10)


@pytest.mark.slow
@requires_shared("data", "cifar10")
@requires_shared("models", "cifar10-resnets")
def test_sigkill_mid_pass_then_resume_gives_the_uninterrupted_result(tmp_path, caplog):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "hf_decomp", "analyze", "--limit", "192", "--eval-limit", "96",
               "--batch-size", "4", "--num-workers", "0", "--save-every", "1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sidecar = default_checkpoint_dir(out) / "statistics.rank000-of-001.json"
    deadline = time.monotonic() + 180
    position = 0
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if sidecar.is_file():
                try:
                    position = json.loads(sidecar.read_text())["position"]
                except (ValueError, OSError):  # replaced between exists and read
                    continue
                if position >= 5:
                    break
            time.sleep(0.005)
        assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()[-2000:]}"
        process.send_signal(signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
    process.stderr.close()
    state = json.loads(sidecar.read_text())
    assert not state["complete"] and 5 <= state["position"] < 48, state  # killed mid statistics pass
    assert not out.exists() or not any(out.iterdir())  # no half-written results folder

    with caplog.at_level(logging.INFO, logger="hf_decomp.passes.resumable"):
        resumed = analyze(**RUN, out=out, resume=True, save_every=1)
    assert any("resuming statistics from batch" in r.getMessage() for r in caplog.records)
    uninterrupted = analyze(**RUN)
    assert _summary(resumed) == _summary(uninterrupted)
    written = json.loads((out / "indices.json").read_text())["sets"]
    assert written == dict(zip(uninterrupted.indices.label_names, uninterrupted.indices.sets))
    assert not default_checkpoint_dir(out).exists()  # cleaned once the results were written


@pytest.mark.slow
@requires_shared("data", "cifar10")
@requires_shared("models", "cifar10-resnets")
def test_crash_in_evaluation_resumes_there(tmp_path, monkeypatch):
    settings = dict(limit=160, eval_limit=120, batch_size=8, num_workers=0)
    uninterrupted = analyze(**settings)
    original = EvaluationAccumulator.update
    calls = {"n": 0}

    def crash_after_five(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt  # like Ctrl-C in the middle of the evaluation pass
        return original(self, *args, **kwargs)

    monkeypatch.setattr(EvaluationAccumulator, "update", crash_after_five)
    with pytest.raises(KeyboardInterrupt):
        analyze(**settings, out=tmp_path / "run", save_every=2)
    ck = default_checkpoint_dir(tmp_path / "run")
    assert json.loads((ck / "statistics.rank000-of-001.json").read_text())["complete"]
    assert json.loads((ck / "evaluation.rank000-of-001.json").read_text())["position"] == 4
    monkeypatch.setattr(EvaluationAccumulator, "update", original)
    resumed = analyze(**settings, out=tmp_path / "run", resume=True, save_every=2)
    assert _summary(resumed) == _summary(uninterrupted)


@pytest.mark.parametrize("streaming", [False, True])
def test_crash_in_statistics_resumes_streaming_and_map_style(color_dataset, tmp_path, monkeypatch, caplog, streaming):
    """A streamed split cannot seek: resuming reads and drops the batches the checkpoint already holds."""
    from helpers_models import ColourNet

    from hf_decomp.method.statistics import ClassStatistics
    from hf_decomp.models import adapt_timm_model

    adapter = adapt_timm_model(ColourNet(), name="colournet")
    settings = dict(k1=2, k2=2, batch_size=5, num_workers=0, streaming=streaming)
    uninterrupted = analyze(adapter, str(color_dataset), **settings)
    original = ClassStatistics.update
    calls = {"n": 0}

    def crash_after_three(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ClassStatistics, "update", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        analyze(adapter, str(color_dataset), **settings, out=tmp_path / "run", save_every=1)
    monkeypatch.setattr(ClassStatistics, "update", original)
    state = json.loads((default_checkpoint_dir(tmp_path / "run") / "statistics.rank000-of-001.json").read_text())
    assert (state["position"], state["seen_images"], state["complete"]) == (3, 15, False)
    with caplog.at_level(logging.INFO, logger="hf_decomp.passes.resumable"):
        resumed = analyze(adapter, str(color_dataset), **settings, out=tmp_path / "run", resume=True)
    assert "resuming statistics from batch 3" in caplog.text
    assert _summary(resumed) == _summary(uninterrupted)
    assert resumed.metrics["statistics"]["samples"] == 24  # 15 from the checkpoint + 9 after it, none twice
