"""Several processes filling an empty cache at once (torchrun on a fresh machine): every one of them gets
one complete file, none fails, and no temporary file is left behind."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest
import torch
from conftest import SHARED, requires_shared
from helpers_cache_writers import ROUNDS, batches, convert_rounds, fill_rounds

from hf_decomp.passes.feature_cache import FeatureCache

PROCESSES = 4
# Not fork from this process: a child forked after OpenMP threads ran can deadlock in its first torch op. A fork
# server (started once, never runs torch ops) forks clean children in milliseconds. Each process is started
# once and meets the others at a barrier before every round (a fresh empty cache).
SPAWN = multiprocessing.get_context("forkserver")
SPAWN.set_forkserver_preload(["helpers_cache_writers", "hf_decomp.models.cifar_resnet", "hf_decomp.passes.feature_cache"])


def _all_at_once(target, *args) -> list[int]:
    """Run ``target(barrier, *args)`` in PROCESSES processes; return their exit codes."""
    barrier = SPAWN.Barrier(PROCESSES)
    processes = [SPAWN.Process(target=target, args=(barrier, *args)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
    return [process.exitcode for process in processes]


def _fake_checkpoint(path: Path) -> Path:
    """A DataParallel-style .th checkpoint."""
    generator = torch.Generator().manual_seed(0)
    state = {"module.conv1.weight": torch.randn(16, 3, 3, 3, generator=generator),
             "module.linear.weight": torch.randn(10, 64, generator=generator)}
    torch.save({"best_prec1": 90.0, "state_dict": state}, path)
    return path


@pytest.mark.parametrize("source", [
    "fake",
    pytest.param("resnet20", marks=requires_shared("models", "cifar10-resnets")),
])
def test_many_processes_convert_one_checkpoint_on_an_empty_cache(tmp_path, source):
    checkpoint = (_fake_checkpoint(tmp_path / "fake.th") if source == "fake"
                  else next((SHARED / "models" / "cifar10-resnets").glob("resnet20-*.th")))
    codes = _all_at_once(convert_rounds, str(checkpoint), str(tmp_path))
    assert codes == [0] * PROCESSES, f"exit codes {codes}"
    for round_ in range(ROUNDS):
        (converted,) = (tmp_path / f"cache-{round_}").iterdir()  # the converted file only: no temporary file left
        assert converted.name.startswith(f"{checkpoint.stem}-") and converted.suffix == ".safetensors"


def test_many_processes_fill_one_feature_cache_at_once(tmp_path):
    codes = _all_at_once(fill_rounds, str(tmp_path))
    assert codes == [0] * PROCESSES, f"exit codes {codes}"
    for round_ in range(ROUNDS):
        directory = tmp_path / f"round-{round_}" / "features"
        assert sorted(p.name for p in directory.parent.iterdir()) == ["features"]  # no staging folder left
        assert sorted(p.name for p in directory.iterdir()) == ["meta.json", "shard-00000.safetensors",
                                                               "shard-00001.safetensors", "shard-00002.safetensors"]


def test_an_interrupted_cache_write_is_replaced_and_a_foreign_folder_refused(tmp_path):
    directory = tmp_path / "features"
    directory.mkdir()
    (directory / "shard-00000.safetensors").write_bytes(b"half written")  # a kill before meta.json
    FeatureCache(directory).write(batches(1, rows=10), {"model": "m"})
    assert FeatureCache(directory).holds({"model": "m"}) and FeatureCache(directory).load()[0].shape == (10, 32)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="holds files but is not an hf-decomp feature cache"):
        FeatureCache(foreign).write(batches(1, rows=10), {"model": "m"})
    assert (foreign / "notes.txt").read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == [
        "features", "mine"]
