"""Two CPU processes (gloo) give the same indices and accuracies as one, map-style and streaming."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import requires_shared
from hf_decomp.data import load_image_split
from hf_decomp.distributed import check_exact_once, raise_if_any_failed, reduce_count, reduce_sum_, shard_split
from hf_decomp.errors import DecompValueError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared 2-core CI machine spinning OpenMP threads cost more than they give."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

def _small_cifar(root: Path) -> Path:
    """240 train rows in two parquet shards (streaming splits them by shard) and 160 test rows in one
    (streaming splits them by example), drawn at random from the bundled CIFAR-10 (stored sorted by label)."""
    import datasets

    from hf_decomp.paths import default_cifar10_dataset

    folder = root / "plain_text"
    folder.mkdir(parents=True)
    for split, rows, shards in (("train", 240, 2), ("test", 160, 1)):
        data = datasets.load_dataset(default_cifar10_dataset(), split=split).shuffle(seed=0).select(range(rows))
        for index in range(shards):
            data.shard(shards, index, contiguous=True).to_parquet(
                str(folder / f"{split}-{index:05d}-of-{shards:05d}.parquet"))
    return root


# Runs analyze twice (map-style, then streaming) and lets the main process write what it got.
DRIVER = textwrap.dedent("""
    import json, sys
    from hf_decomp.analyze import analyze
    from hf_decomp.features import make_accelerator

    accelerator = make_accelerator(cpu=True)
    results = {}
    for streaming in (False, True):
        result = analyze(dataset=sys.argv[2], batch_size=24, num_workers=0, streaming=streaming,
                         accelerator=accelerator)
        m = result.metrics
        results["streaming" if streaming else "map"] = {
            "sets": result.indices.sets,
            "histogram": result.statistics.histogram(5).tolist(),
            "sample_counts": result.statistics.sample_counts.tolist(),
            "full": m["full_accuracy"], "decomposed": m["decomposed_accuracy"], "noise": m["noise_ablation"],
            "eval_samples": m["evaluation"]["eval_samples"],
            "per_class": m["evaluation"]["per_class"],
        }
    results["num_processes"] = accelerator.num_processes
    if accelerator.is_main_process:
        with open(sys.argv[1], "w") as handle:
            json.dump(results, handle)
""")


def _run_driver(tmp_path: Path, processes: int, monkeypatch) -> dict:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / f"result-{processes}.json"
    dataset = tmp_path / "cifar-small"
    if not dataset.exists():
        _small_cifar(dataset)
    if processes == 1:  # in this process: saves an interpreter start on a busy CI machine
        monkeypatch.setattr(sys, "argv", [str(driver), str(out), str(dataset)])
        runpy.run_path(str(driver), run_name="__main__")
        return json.loads(out.read_text())
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
               str(driver), str(out), str(dataset)]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    completed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@requires_shared("data", "cifar10")
@requires_shared("models", "cifar10-resnets")
def test_two_processes_match_one_process(tmp_path, monkeypatch):
    double = _run_driver(tmp_path, 2, monkeypatch)
    single = _run_driver(tmp_path, 1, monkeypatch)
    assert (single["num_processes"], double["num_processes"]) == (1, 2)
    for mode in ("map", "streaming"):
        one, two = single[mode], double[mode]
        assert one["eval_samples"] == two["eval_samples"] == 160  # every sample once, none padded
        assert sum(one["sample_counts"]) == sum(two["sample_counts"]) == 240
        assert two["histogram"] == one["histogram"]
        assert two["sets"] == one["sets"]
        assert (two["full"], two["decomposed"]) == (one["full"], one["decomposed"])
        assert two["noise"] == one["noise"]  # per-sample noise: independent of the process count
        assert two["per_class"] == one["per_class"]
    assert single["map"]["sets"] == single["streaming"]["sets"]  # same rows, same order
    assert single["map"]["full"] == single["streaming"]["full"]
    assert single["map"]["full"] > 80.0  # a trained resnet20 is far above chance on the subset


def test_shard_split_streaming_reads_each_row_once(color_dataset):
    split = load_image_split(str(color_dataset), "train", streaming=True)
    labels_per_rank = [[row["label"] for row in shard_split(split, rank, 3).dataset] for rank in range(3)]
    assert sorted(sum(labels_per_rank, [])) == sorted(row["label"] for row in split.dataset)
    assert [len(labels) for labels in labels_per_rank] == [8, 8, 8]  # 24 rows, every 3rd to each rank


def test_shard_split_keeps_map_style_and_single_process(color_dataset):
    split = load_image_split(str(color_dataset), "train")
    assert shard_split(split, 1, 2) is split  # the prepared sampler shards map-style data
    streamed = load_image_split(str(color_dataset), "train", streaming=True)
    assert shard_split(streamed, 0, 1) is streamed
    with pytest.raises(ValueError, match=r"process_index=2 is not in \[0, 2\)"):
        shard_split(streamed, 2, 2)


def test_exact_once_check_and_single_process_reductions(color_dataset):
    split = load_image_split(str(color_dataset), "test")
    check_exact_once(split, 24)
    with pytest.raises(RuntimeError, match="26 rows were read across processes but the split has 24"):
        check_exact_once(split, 26)
    check_exact_once(load_image_split(str(color_dataset), "test", streaming=True), 5)  # unsized: not checkable
    accelerator = SimpleNamespace(num_processes=1, device="cpu")
    tensors = {"a": torch.tensor([1, 2])}
    assert reduce_sum_(tensors, accelerator)["a"].tolist() == [1, 2]
    assert reduce_count(7, accelerator) == 7
    raise_if_any_failed(None, accelerator)
    with pytest.raises(DecompValueError, match="boom"):
        raise_if_any_failed(DecompValueError("boom"), accelerator)
