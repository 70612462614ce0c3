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

from hf_decomp.data import ImageSplit, load_image_split
from hf_decomp.passes.distributed import check_exact_once, raise_if_any_failed, reduce_count, reduce_sum_, shard_split
from hf_decomp.utils.errors import DecompValueError

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def _small_cifar(root: Path) -> Path:
    """240 train rows in two parquet shards (streaming splits them by shard) and 160 test rows in one
    (streaming splits them by example), drawn at random from the bundled CIFAR-10 (stored sorted by label)."""
    import datasets

    from hf_decomp.utils.paths import default_cifar10_dataset

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
    from hf_decomp.analysis.run import analyze
    from hf_decomp.passes.features import make_accelerator

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
            "top_images": {k: v.tolist() for k, v in result.examples.state_dict().items()},
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
        assert two["top_images"] == one["top_images"]  # each process's top-N merged on every process
    assert single["map"]["sets"] == single["streaming"]["sets"]  # same rows, same order
    assert single["map"]["full"] == single["streaming"]["full"]
    assert single["map"]["full"] > 80.0  # a trained resnet20 is far above chance on the subset


# Rank 0 dies abruptly (os._exit, like a SIGKILL or a lost node) after CRASH_AFTER batches of the
# statistics pass; torchrun then stops the other rank. Without CRASH_AFTER it resumes and reports.
RESUME_DRIVER = textwrap.dedent("""
    import json, logging, os, sys
    from hf_decomp.analysis.run import analyze
    from hf_decomp.passes.features import make_accelerator
    from hf_decomp.method.statistics import ClassStatistics

    logging.basicConfig(level=logging.INFO, format="rank%(process)d %(message)s")
    accelerator = make_accelerator(cpu=True)
    crash_after = int(os.environ.get("CRASH_AFTER", "0"))
    if crash_after and accelerator.process_index == 0:
        update, calls = ClassStatistics.update, []

        def dying_update(self, *args):
            calls.append(1)
            if len(calls) > crash_after:
                os._exit(3)
            return update(self, *args)

        ClassStatistics.update = dying_update
    result = analyze(dataset=sys.argv[2], batch_size=8, num_workers=0, out=sys.argv[3], resume=not crash_after,
                     save_every=1, accelerator=accelerator)
    if accelerator.is_main_process:
        m = result.metrics
        with open(sys.argv[1], "w") as handle:
            json.dump({"sets": result.indices.sets, "full": m["full_accuracy"], "decomposed": m["decomposed_accuracy"],
                       "noise": m["noise_ablation"], "samples": m["statistics"]["samples"],
                       "eval_samples": m["evaluation"]["eval_samples"]}, handle)
""")


@pytest.mark.slow
@requires_shared("data", "cifar10")
@requires_shared("models", "cifar10-resnets")
def test_two_processes_killed_and_resumed_match_one_process(tmp_path):
    from hf_decomp.analysis.run import analyze
    from hf_decomp.passes.resume import default_checkpoint_dir

    dataset = _small_cifar(tmp_path / "cifar-small")
    driver = tmp_path / "resume_driver.py"
    driver.write_text(RESUME_DRIVER)
    out, result = tmp_path / "run", tmp_path / "resumed.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(driver),
               str(result), str(dataset), str(out)]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    crashed = subprocess.run(command, cwd=tmp_path, env={**env, "CRASH_AFTER": "5"}, capture_output=True, text=True,
                             timeout=240)
    assert crashed.returncode != 0
    state = json.loads((default_checkpoint_dir(out) / "statistics.rank000-of-002.json").read_text())
    assert (state["position"], state["complete"]) == (5, False)  # rank 0 died mid-pass
    assert not out.exists()
    resumed = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resuming statistics from batch 5 " in resumed.stderr  # rank 0 continued, did not start over
    two = json.loads(result.read_text())
    one = analyze(dataset=str(dataset), batch_size=8, num_workers=0)
    assert two["sets"] == one.indices.sets
    assert (two["full"], two["decomposed"], two["noise"]) == (
        one.metrics["full_accuracy"], one.metrics["decomposed_accuracy"], one.metrics["noise_ablation"])
    assert (two["samples"], two["eval_samples"]) == (240, 160)
    assert (out / "indices.json").is_file() and not default_checkpoint_dir(out).exists()


def test_shard_split_streaming_reads_each_row_once(color_dataset):
    split = load_image_split(str(color_dataset), "train", streaming=True)
    labels_per_rank = [[row["label"] for row in shard_split(split, rank, 3).dataset] for rank in range(3)]
    assert sorted(sum(labels_per_rank, [])) == sorted(row["label"] for row in split.dataset)
    assert [len(labels) for labels in labels_per_rank] == [8, 8, 8]  # 24 rows, every 3rd to each rank


def _numbers_in_shards(root: Path, shards: int, rows: int = 24):
    import datasets

    folder = root / "data"
    folder.mkdir(parents=True)
    table = datasets.Dataset.from_dict({"x": list(range(rows)), "label": [0] * rows})
    for index in range(shards):
        path = folder / f"train-{index:05d}-of-{shards:05d}.parquet"
        table.shard(shards, index, contiguous=True).to_parquet(str(path))
    return datasets.load_dataset(str(root), split="train", streaming=True)


@pytest.mark.parametrize("shards", [2, 3, 4])  # 3 shards over 2 processes: uneven, still each row once
def test_streaming_shards_split_unevenly_but_exactly_once(tmp_path, shards):
    split = ImageSplit(_numbers_in_shards(tmp_path, shards), "numbers", "train", "x", "label", None, True)
    parts = [[row["x"] for row in shard_split(split, rank, 2).dataset] for rank in range(2)]
    assert sorted(parts[0] + parts[1]) == list(range(24))
    assert parts[0] and parts[1]


def test_streaming_subset_is_split_by_example_so_it_stays_the_same_subset(tmp_path):
    stream = _numbers_in_shards(tmp_path, 4).take(10)  # split by shards, the two halves would take 0-4 and 6-10
    single = sorted(row["x"] for row in stream)
    assert single == list(range(10))
    split = ImageSplit(stream, "numbers", "train", "x", "label", None, True, subset=True)
    parts = [[row["x"] for row in shard_split(split, rank, 2).dataset] for rank in range(2)]
    assert sorted(parts[0] + parts[1]) == single


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
    with pytest.raises(RuntimeError, match="22 rows were read across processes but the split has 24"):
        check_exact_once(split, 22)  # dropped rows, not only duplicated ones
    check_exact_once(load_image_split(str(color_dataset), "test", streaming=True), 5)  # unsized: not checkable
    accelerator = SimpleNamespace(num_processes=1, device="cpu")
    tensors = {"a": torch.tensor([1, 2])}
    assert reduce_sum_(tensors, accelerator)["a"].tolist() == [1, 2]
    assert reduce_count(7, accelerator) == 7
    raise_if_any_failed(None, accelerator)
    with pytest.raises(DecompValueError, match="boom"):
        raise_if_any_failed(DecompValueError("boom"), accelerator)


def test_a_pass_whose_loader_drops_rows_is_refused(color_dataset, tmp_path, monkeypatch):
    """The feature pass checks its row count: a data loader that loses the last 2 of 24 rows fails the run."""
    import dataclasses

    from helpers_models import save_tiny_timm_model

    import hf_decomp.passes.features as features
    from hf_decomp import analyze

    def dropping_shard_split(split, process_index, num_processes):
        return dataclasses.replace(split, dataset=split.dataset.select(range(split.num_rows - 2)))

    monkeypatch.setattr(features, "shard_split", dropping_shard_split)
    model = save_tiny_timm_model(tmp_path / "tiny", input_size=16)
    rows = load_image_split(str(color_dataset), "train").num_rows
    with pytest.raises(RuntimeError, match=f"{rows - 2} rows were read across processes but the split has {rows}"):
        analyze(str(model), str(color_dataset), k1=4, k2=4, num_workers=0)


@pytest.mark.parametrize("name, machines, processes", [("single_node_8gpu", 1, 8), ("two_nodes", 2, 16)])
def test_accelerate_configs_parse(name, machines, processes):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(REPO / "scripts" / "accelerate_configs" / f"{name}.yaml"))
    assert (config.num_machines, config.num_processes, config.mixed_precision) == (machines, processes, "bf16")
    assert config.distributed_type.value == "MULTI_GPU"


def test_imagenet_launch_script_builds_resumable_commands(tmp_path):
    done = tmp_path / "runs" / "resnet101"
    done.mkdir(parents=True)
    (done / "metrics.json").write_text("{}")
    env = {**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path / "runs"), "PYTHON": sys.executable,
           "CONFIG": "scripts/accelerate_configs/two_nodes.yaml", "MACHINE_RANK": "1"}
    completed = subprocess.run(["bash", "scripts/imagenet_analyze.sh", "resnet50", "resnet101"], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert lines[0].startswith("accelerate launch --config_file scripts/accelerate_configs/two_nodes.yaml "
                               "--machine_rank 1 -m hf_decomp analyze --model timm:resnet50 "
                               "--dataset ILSVRC/imagenet-1k --streaming")
    assert "--k1 102 --k2 50" in lines[0]  # k1 = 0.05 * d, d = 2048 for resnet50
    assert "--resume" in lines[0] and f"--out {tmp_path}/runs/resnet50" in lines[0]
    assert lines[1] == f"skip resnet101: {tmp_path}/runs/resnet101/metrics.json exists"


def test_ablation_noise_depends_only_on_the_sample():
    from hf_decomp.passes.evaluation import per_sample_noise

    keys = torch.tensor([11, 2**62 + 5, 0, 11])
    noise = per_sample_noise(keys, 6, seed=3)
    assert torch.equal(noise[0], noise[3])  # same sample, same noise, wherever it sits
    assert torch.equal(per_sample_noise(keys[1:2], 6, seed=3)[0], noise[1])  # independent of the batch
    assert not torch.equal(per_sample_noise(keys, 6, seed=4), noise)  # the seed matters
    large = per_sample_noise(torch.arange(2000), 500)
    assert abs(float(large.mean())) < 0.01 and abs(float(large.std()) - 1.0) < 0.01  # N(0, 1)
    assert abs(float((large**4).mean()) - 3.0) < 0.05  # Gaussian tails, not uniform
