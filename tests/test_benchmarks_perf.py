"""The performance benchmarks' own logic: the analyze limit reads the very rows the pass reads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from helpers_models import save_tiny_timm_model

from hf_decomp.data import load_image_split
from hf_decomp.models import load_classifier

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_analyze_limit_decodes_the_split_rows_straight_from_parquet(color_dataset, tmp_path):
    bench = load_benchmark("bench_analyze")
    split = load_image_split(str(color_dataset), "train", limit=10, seed=3)  # a shuffled subset
    encoded = bench.encoded_images(split, bench.parquet_files(str(color_dataset), "train"))
    assert encoded == [split.dataset[i]["img"]["bytes"] for i in range(10)]
    with pytest.raises(SystemExit, match="do not match the split's rows"):
        bench.encoded_images(split, bench.parquet_files(str(color_dataset), "test"))
    adapter = load_classifier(str(save_tiny_timm_model(tmp_path / "tiny")))
    limit = bench.machine_limit(adapter, encoded, batch_size=4)
    assert limit["images"] == 10
    assert limit["decode_s"] + limit["normalise_s"] + limit["forward_s"] == pytest.approx(limit["seconds"])


def test_study_memory_comparison_names_what_differs(tmp_path, capsys):
    bench = load_benchmark("bench_study_memory")
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps({"data": {"k": 5, "images": [1, 2]}}))
    after.write_text(json.dumps({"data": {"k": 5, "images": [1, 3]}}))
    assert bench.compare(before, before) == 0 and "identical" in capsys.readouterr().out
    assert bench.compare(before, after) == 1
    assert "images: [1, 2] != [1, 3]" in capsys.readouterr().out
