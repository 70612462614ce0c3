"""Several processes filling an empty cache at once (torchrun on a fresh machine): every one of them gets
one complete file, none fails, and no temporary file is left behind."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest
import torch
from conftest import SHARED, requires_shared
from safetensors.torch import load_file

from hf_decomp.models.cifar_resnet import convert_checkpoint
from hf_decomp.passes.feature_cache import FeatureCache

PROCESSES, ROUNDS = 4, 3
FORK = multiprocessing.get_context("fork")  # starts in milliseconds: the processes reach the cache together


def _all_at_once(target, args_per_process) -> list[int]:
    """Start one process per args tuple, let them pass a barrier together, return their exit codes."""
    barrier = FORK.Barrier(len(args_per_process))
    processes = [FORK.Process(target=target, args=(barrier, *args)) for args in args_per_process]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    return [process.exitcode for process in processes]


def _slow_disk(write):
    """``write`` then a pause: the write of a large file on a busy disk, so the writers overlap for sure."""

    def slowly(*args, **kwargs):
        write(*args, **kwargs)
        time.sleep(0.3)

    return slowly


def _convert(barrier, source: str, cache: str) -> None:
    import hf_decomp.models.cifar_resnet as cifar_resnet

    os.environ["HF_DECOMP_CACHE"] = cache
    cifar_resnet.save_file = _slow_disk(cifar_resnet.save_file)
    barrier.wait()
    try:
        target = convert_checkpoint(source)
        expected = torch.load(source, map_location="cpu", weights_only=True)["state_dict"]
        loaded = load_file(target)
        ok = sorted(loaded) == sorted(k.removeprefix("module.") for k in expected) and all(
            torch.equal(loaded[k.removeprefix("module.")], v) for k, v in expected.items())
    except Exception as e:  # noqa: BLE001 - reported through the exit code
        print(f"{type(e).__name__}: {e}", flush=True)
        ok = False
    os._exit(0 if ok else 1)


def _fake_checkpoint(path: Path) -> Path:
    """A DataParallel-style .th checkpoint."""
    generator = torch.Generator().manual_seed(0)
    state = {"module.conv1.weight": torch.randn(16, 3, 3, 3, generator=generator),
             "module.linear.weight": torch.randn(10, 64, generator=generator)}
    torch.save({"best_prec1": 90.0, "state_dict": state}, path)
    return path


@pytest.mark.parametrize("source", [
    "fake",
    pytest.param("resnet56", marks=requires_shared("models", "cifar10-resnets")),
])
def test_many_processes_convert_one_checkpoint_on_an_empty_cache(tmp_path, source):
    checkpoint = (_fake_checkpoint(tmp_path / "fake.th") if source == "fake"
                  else next((SHARED / "models" / "cifar10-resnets").glob("resnet56-*.th")))
    for round_ in range(ROUNDS):
        cache = tmp_path / f"cache-{round_}"  # empty each round
        codes = _all_at_once(_convert, [(str(checkpoint), str(cache))] * PROCESSES)
        assert codes == [0] * PROCESSES, f"round {round_}: exit codes {codes}"
        (converted,) = cache.iterdir()  # the converted file only: no temporary file is left
        assert converted.name.startswith(f"{checkpoint.stem}-") and converted.suffix == ".safetensors"


def _batches(count: int = 3, rows: int = 40_000, width: int = 32):
    generator = torch.Generator().manual_seed(1)
    for _ in range(count):
        yield (torch.randn(rows, width, generator=generator), torch.randint(0, 10, (rows,), generator=generator),
               torch.randint(0, 2**40, (rows,), generator=generator))


def _fill(barrier, directory: str) -> None:
    barrier.wait()
    try:
        cache = FeatureCache(directory)
        cache.write(_batches(), {"model": "m"}, shard_size=40_000)
        features, labels, keys = cache.load(with_keys=True)
        expected = [torch.cat(parts) for parts in zip(*_batches())]
        ok = cache.holds({"model": "m"}) and all(torch.equal(a, b) for a, b in zip((features, labels, keys), expected))
    except Exception as e:  # noqa: BLE001 - reported through the exit code
        print(f"{type(e).__name__}: {e}", flush=True)
        ok = False
    os._exit(0 if ok else 1)


def test_many_processes_fill_one_feature_cache_at_once(tmp_path):
    for round_ in range(ROUNDS):
        directory = tmp_path / f"round-{round_}" / "features"
        codes = _all_at_once(_fill, [(str(directory),)] * PROCESSES)
        assert codes == [0] * PROCESSES, f"round {round_}: exit codes {codes}"
        assert sorted(p.name for p in directory.parent.iterdir()) == ["features"]  # no staging left
        assert sorted(p.name for p in directory.iterdir()) == ["meta.json", "shard-00000.safetensors",
                                                               "shard-00001.safetensors", "shard-00002.safetensors"]


def test_an_interrupted_cache_write_is_replaced_and_a_foreign_folder_refused(tmp_path):
    directory = tmp_path / "features"
    directory.mkdir()
    (directory / "shard-00000.safetensors").write_bytes(b"half written")  # a kill before meta.json
    FeatureCache(directory).write(_batches(1, rows=10), {"model": "m"})
    assert FeatureCache(directory).holds({"model": "m"}) and FeatureCache(directory).load()[0].shape == (10, 32)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="holds files but is not an hf-decomp feature cache"):
        FeatureCache(foreign).write(_batches(1, rows=10), {"model": "m"})
    assert (foreign / "notes.txt").read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == [
        "features", "mine"]
