"""Per-layer statistics and sets: names, one-pass gathering, artifacts, bad input (hand-set models)."""

import json

import pytest
import torch
from conftest import requires_shared
from helpers_layers import ColourBlocksNet

from hf_decomp import analyze, load_indices
from hf_decomp.cli import main
from hf_decomp.data import load_image_split
from hf_decomp.layers import (
    LayerOutputError,
    UnknownLayerError,
    block_names,
    gather_layer_statistics,
    layer_widths,
    pool_layer_output,
    resolve_k,
    resolve_layers,
)
from hf_decomp.models import adapt_timm_model
from hf_decomp.utils.errors import DecompFileError

BLOCK0_SETS = [[0, 3], [1, 3], [2, 3]]
BLOCK1_SETS = [[2, 3], [1, 4], [0, 5]]


@pytest.fixture
def blocks_adapter():
    return adapt_timm_model(ColourBlocksNet(), name="colourblocks")


def _hooks(module):
    return sum(len(m._forward_hooks) for m in module.modules())


def test_names_shortcuts_and_order(blocks_adapter):
    assert block_names(blocks_adapter) == ["blocks.0", "blocks.1"]
    assert resolve_layers(blocks_adapter, ["final", "blocks.1", "all-blocks"]) == ["blocks.0", "blocks.1", "final"]
    assert layer_widths(blocks_adapter, ["blocks.0", "blocks.1.conv", "final"]) == {
        "blocks.0": 4, "blocks.1.conv": 6, "final": 6}


def test_unknown_layer_lists_close_matches_and_how_to_list(blocks_adapter):
    with pytest.raises(UnknownLayerError, match=r"'blocks\.2'.*Close matches: blocks\.1, blocks\.0, blocks,.*--list-layers"):
        resolve_layers(blocks_adapter, ["blocks.2"])


def test_pooling_of_maps_tokens_vectors_and_bad_outputs():
    maps = torch.arange(16.0).reshape(1, 2, 2, 4)
    assert pool_layer_output("m", maps).tolist() == [[3.5, 11.5]]
    tokens = torch.tensor([[[1.0, 10.0], [3.0, 30.0]]])  # (B, tokens, D)
    assert pool_layer_output("t", tokens).tolist() == [[2.0, 20.0]]
    assert pool_layer_output("h", (tokens, None)).tolist() == [[2.0, 20.0]]
    with pytest.raises(LayerOutputError, match=r"layer 'e' outputs \(\), not a tensor of shape \(B, C, \.\.\.\)"):
        pool_layer_output("e", torch.tensor(1.0))
    with pytest.raises(LayerOutputError, match="layer 'd' outputs dict"):
        pool_layer_output("d", {"x": maps})


def test_one_pass_gives_known_sets_at_every_layer(color_dataset, blocks_adapter):
    split = load_image_split(str(color_dataset), "train")
    stats = gather_layer_statistics(blocks_adapter, split, ["all-blocks", "final"], k1_values=(2,), num_workers=0)
    assert list(stats) == ["blocks.0", "blocks.1", "final"]
    from hf_decomp.method.selection import top_k_per_class

    assert top_k_per_class(stats["blocks.0"].histogram(2), 2) == BLOCK0_SETS
    assert top_k_per_class(stats["blocks.1"].histogram(2), 2) == BLOCK1_SETS
    # the last block's pooled output is the final layer's input: same sums, same votes
    assert torch.equal(stats["blocks.1"].feature_sums, stats["final"].feature_sums)
    assert stats["final"].sample_counts.tolist() == [8, 8, 8]
    assert _hooks(blocks_adapter.model) == 0


def test_bad_layer_output_is_named_and_hooks_are_removed(color_dataset, blocks_adapter):
    split = load_image_split(str(color_dataset), "train")
    with pytest.raises(LayerOutputError, match="layer 'energy' outputs"):
        gather_layer_statistics(blocks_adapter, split, ["energy"], num_workers=0)
    assert _hooks(blocks_adapter.model) == 0


def test_hooks_are_removed_when_the_pass_fails(color_dataset, blocks_adapter, monkeypatch):
    split = load_image_split(str(color_dataset), "train")
    from hf_decomp.layers.statistics import LayerStatistics

    def broken(self, features, labels):
        raise RuntimeError("disk full")

    monkeypatch.setattr(LayerStatistics, "update", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        gather_layer_statistics(blocks_adapter, split, ["blocks.0"], k1_values=(2,), num_workers=0)
    assert _hooks(blocks_adapter.model) == 0


@pytest.mark.parametrize("value, width, expected", [(5, 64, 5), (0.1, 64, 6), (0.1, 16, 2), (0.01, 16, 1), (3.0, 8, 3)])
def test_k_absolute_or_fraction_of_width(value, width, expected):
    assert resolve_k("k1", value, width) == expected


@pytest.mark.parametrize("value, message", [(20, r"k1=20 must be between 1 and d=16 \(the width of layer 'l'\)"),
                                            (1.5, "neither a whole number nor a fraction")])
def test_k_outside_a_layer_is_refused(value, message):
    with pytest.raises(ValueError, match=message):
        resolve_k("k1", value, 16, "l")


def test_analyze_layers_writes_one_artifact_per_layer(color_dataset, blocks_adapter, tmp_path):
    out = tmp_path / "run"
    result = analyze(blocks_adapter, str(color_dataset), k1=2, k2=2, layers=["all-blocks"], out=out,
                     num_workers=0)
    assert result.indices.sets == BLOCK1_SETS  # the final layer, as without --layers
    assert load_indices(out).sets == BLOCK1_SETS
    assert load_indices(out, layer="blocks.0").sets == BLOCK0_SETS
    layer0 = load_indices(out, layer="blocks.0")
    assert (layer0.metadata["layer"], layer0.metadata["width"], layer0.num_features) == ("blocks.0", 4, 4)
    index = json.loads((out / "layers" / "index.json").read_text())
    assert index["layers"]["blocks.1"] == {"path": "blocks.1", "width": 6, "k1": 2, "k2": 2, "coverage": None,
                                           "mean_set_size": 2.0}
    assert result.metrics["layers"]["blocks.0"]["width"] == 4
    with pytest.raises(DecompFileError, match="has no sets for layer 'blocks.7'; it has final, blocks.0, blocks.1"):
        load_indices(out, layer="blocks.7")


def test_analyze_layers_with_fractions_and_coverage(color_dataset, blocks_adapter):
    result = analyze(blocks_adapter, str(color_dataset), k1=0.4, k2=0.4, layers=["blocks.0"], num_workers=0)
    # 0.4 of 4 channels = 2 at blocks.0, 0.4 of 6 = 2 at the final layer
    assert result.layer_indices["blocks.0"].sets == BLOCK0_SETS and result.indices.sets == BLOCK1_SETS
    covered = analyze(blocks_adapter, str(color_dataset), k1=1, coverage=0.9, layers=["blocks.0"], num_workers=0)
    assert covered.layer_indices["blocks.0"].sets == [[0], [1], [2]]


@requires_shared("models", "cifar10-resnets")  # the CLI's default model: cifar10_resnet20
def test_cli_layers_list_and_unknown_name(color_dataset, tmp_path, capsys):
    assert main(["analyze", "--list-layers"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[:2] == ["final", "all-blocks"] and "layer3.2  (block)" in listed and "layer3.2.conv1" in listed
    code = main(["analyze", "--layers", "layer3.9", "--dataset", str(color_dataset), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("hf-decomp analyze: error: layer 'layer3.9' is not a module")
    assert "Close matches: layer3.2, layer3.1" in err and len(err.strip().splitlines()) == 1


def test_interrupted_layer_pass_resumes_to_the_same_result(color_dataset, blocks_adapter, tmp_path, monkeypatch):
    from hf_decomp.layers.statistics import LayerStatistics

    settings = dict(k1=2, k2=2, layers=["all-blocks"], batch_size=5, num_workers=0)
    uninterrupted = analyze(blocks_adapter, str(color_dataset), **settings)
    original = LayerStatistics.update
    calls = {"n": 0}

    def crash_in_third_batch(self, *args, **kwargs):  # 3 layers (2 blocks + final) per batch
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(LayerStatistics, "update", crash_in_third_batch)
    with pytest.raises(KeyboardInterrupt):
        analyze(blocks_adapter, str(color_dataset), **settings, out=tmp_path / "run", save_every=1)
    assert _hooks(blocks_adapter.model) == 0
    monkeypatch.setattr(LayerStatistics, "update", original)
    resumed = analyze(blocks_adapter, str(color_dataset), **settings, out=tmp_path / "run", resume=True)
    for name, stats in uninterrupted.layer_statistics.items():
        assert torch.equal(stats.histogram(2), resumed.layer_statistics[name].histogram(2)), name
    assert resumed.statistics.num_samples == 24 and resumed.layer_statistics["blocks.0"].num_samples == 24
    assert load_indices(tmp_path / "run", layer="blocks.0").sets == BLOCK0_SETS
