"""Saved work is reused only for the same weights and the same data: checkpoints and cached features of
another backbone or of changed data are refused or recomputed, and damaged files give one clear error."""

from __future__ import annotations

import importlib
import json
import shutil

import pytest
import torch
from conftest import make_color_dataset
from helpers_models import ColourNet
from helpers_trust import tiny_colour_model
from safetensors.torch import load_file, save_file

from hf_decomp import analyze
from hf_decomp.cli import main
from hf_decomp.data import load_image_split
from hf_decomp.models import adapt_timm_model
from hf_decomp.passes.feature_cache import FeatureCache, cached_features
from hf_decomp.passes.fingerprint import data_fingerprint, weights_digest
from hf_decomp.studies.common import load_model_features
from hf_decomp.utils.errors import DecompError, DecompValueError

pytestmark = pytest.mark.usefixtures("one_thread")


def _colournet(backbone_scale: float = 1.0):
    """ColourNet; ``backbone_scale`` changes only the backbone (the 1x1 conv), never the final layer."""
    net = ColourNet()
    with torch.no_grad():
        net.conv.weight.mul_(backbone_scale)
    return adapt_timm_model(net, name="colournet")


def _interrupted_run(adapter, dataset, out, monkeypatch):
    """analyze with checkpoints, stopped after the statistics pass: its checkpoint is left complete."""
    module = importlib.import_module("hf_decomp.analysis.run")

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(module, "evaluate_decomposition", stop)
        with pytest.raises(KeyboardInterrupt):
            analyze(adapter, str(dataset), k1=2, k2=2, out=out, save_every=1, num_workers=0, batch_size=8)


def test_weights_digest_covers_the_backbone_and_follows_in_place_edits():
    a, b = _colournet(), _colournet(2.0)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)  # same final layer
    assert weights_digest(a) != weights_digest(b)
    first = weights_digest(a)
    assert weights_digest(_colournet()) == first  # same weights, same digest
    with torch.no_grad():
        a.model.conv.weight[0, 0, 0, 0] += 1e-3
    assert weights_digest(a) != first  # recomputed after an in-place change


def test_resume_refuses_another_backbone_with_the_same_final_layer(color_dataset, tmp_path, monkeypatch):
    out = tmp_path / "run"
    _interrupted_run(_colournet(), color_dataset, out, monkeypatch)
    with pytest.raises(DecompValueError, match=r"belongs to another run \(the model's weights differ .*weights_sha256"):
        analyze(_colournet(2.0), str(color_dataset), k1=2, k2=2, out=out, resume=True, save_every=1,
                num_workers=0, batch_size=8)
    resumed = analyze(_colournet(), str(color_dataset), k1=2, k2=2, out=out, resume=True, save_every=1,
                      num_workers=0, batch_size=8)  # the same model still resumes
    assert resumed.indices.sets == [[0, 3], [1, 4], [2, 5]]


def test_resume_refuses_changed_data_of_the_same_size(tmp_path, monkeypatch):
    dataset = make_color_dataset(tmp_path / "colors", seed=0)
    out = tmp_path / "run"
    _interrupted_run(_colournet(), dataset, out, monkeypatch)
    shutil.rmtree(dataset)
    make_color_dataset(dataset, seed=1)  # same path, same row count, other pixels
    with pytest.raises(DecompValueError, match=r"the data differ .*data_fingerprint"):
        analyze(_colournet(), str(dataset), k1=2, k2=2, out=out, resume=True, save_every=1,
                num_workers=0, batch_size=8)


def test_stream_fingerprint_follows_the_files_and_the_subset(tmp_path):
    dataset = make_color_dataset(tmp_path / "colors", seed=0)
    first = data_fingerprint(load_image_split(str(dataset), "train", streaming=True))
    assert data_fingerprint(load_image_split(str(dataset), "train", streaming=True)) == first
    assert data_fingerprint(load_image_split(str(dataset), "train", streaming=True, limit=5)) != first
    assert data_fingerprint(load_image_split(str(dataset), "train", streaming=True, limit=5, seed=1)) != \
        data_fingerprint(load_image_split(str(dataset), "train", streaming=True, limit=5))
    shutil.rmtree(dataset)
    make_color_dataset(dataset, seed=1)
    assert data_fingerprint(load_image_split(str(dataset), "train", streaming=True)) != first


def test_feature_caches_never_serve_another_backbone(color_dataset, tmp_path):
    split = load_image_split(str(color_dataset), "train")
    a, b = _colournet(), _colournet(2.0)
    features_a, _ = cached_features(a, split, num_workers=0)  # default cache folder
    features_b, _ = cached_features(b, split, num_workers=0)
    assert torch.allclose(features_b, 2 * features_a)  # b's own features, not a's from the cache
    folder = tmp_path / "refit-cache"
    cached_features(a, split, folder, num_workers=0)
    with pytest.raises(DecompValueError, match=r"made for other inputs \(the model's weights differ"):
        cached_features(b, split, folder, num_workers=0)
    studies = tmp_path / "studies-cache"
    mf_a = load_model_features(a, str(color_dataset), cache_dir=studies, num_workers=0)
    mf_b = load_model_features(b, str(color_dataset), cache_dir=studies, num_workers=0)
    assert torch.allclose(mf_b.train_features, 2 * mf_a.train_features)
    assert torch.allclose(mf_b.test_features, 2 * mf_a.test_features)


def test_a_feature_cache_folder_is_only_cleared_when_it_holds_nothing_but_a_cache(color_dataset, tmp_path):
    split = load_image_split(str(color_dataset), "train")
    adapter = _colournet()
    expected, _ = cached_features(adapter, split, tmp_path / "fresh", num_workers=0)
    interrupted = tmp_path / "interrupted"  # a write stopped before meta.json: its shards are rewritten
    interrupted.mkdir()
    save_file({"features": torch.zeros(1, 6)}, interrupted / "shard-00000.safetensors")
    assert torch.equal(cached_features(adapter, split, interrupted, num_workers=0)[0], expected)
    mine = tmp_path / "mine"  # any caller's folder (refit, the studies, the ImageNet samples)
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(DecompValueError, match=r"mine holds files but is not an hf-decomp feature cache \(notes.txt\)"):
        cached_features(adapter, split, mine, num_workers=0)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_edited_checkpoint_metadata_is_one_clear_error(color_dataset, tmp_path, monkeypatch, capsys):
    model = tiny_colour_model(tmp_path / "model")
    out = tmp_path / "run"
    adapter_run = ["analyze", "--model", str(model), "--dataset", str(color_dataset), "--out", str(out),
                   "--k1", "2", "--k2", "2", "--num-workers", "0", "--batch-size", "8", "--save-every", "1"]
    module = importlib.import_module("hf_decomp.analysis.run")

    with monkeypatch.context() as patch:
        patch.setattr(module, "evaluate_decomposition", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        assert main(adapter_run) == 130
    path = out.parent / ".run.checkpoints" / "statistics.rank000-of-001.safetensors"
    tensors = load_file(path)
    from safetensors import safe_open

    with safe_open(path, framework="pt") as handle:
        state = json.loads(handle.metadata()["state"])
    for edit in ({"position": "three"}, {"position": -1}, {"complete": "yes"}):
        save_file(tensors, path, metadata={"format": "x", "state": json.dumps({**state, **edit})})
        capsys.readouterr()
        assert main(adapter_run + ["--resume"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "has edited or damaged metadata" in err[0] and "drop --resume" in err[0]
    save_file({**tensors, "sample_counts": tensors["sample_counts"][:1]}, path,
              metadata={"format": "x", "state": json.dumps(state)})
    assert main(adapter_run + ["--resume"]) == 2
    assert "holds tensors of another shape" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["meta-not-json", "meta-fields", "shard-truncated", "shard-missing"])
def test_damaged_feature_cache_is_one_clear_error(damage, color_dataset, tmp_path, capsys):
    split = load_image_split(str(color_dataset), "train")
    folder = tmp_path / "cache"
    cached_features(_colournet(), split, folder, num_workers=0)
    shard = folder / "shard-00000.safetensors"
    if damage == "meta-not-json":
        (folder / "meta.json").write_text('{"key": {"model": ')
    elif damage == "meta-fields":
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps({**meta, "num_samples": "24"}))
    elif damage == "shard-truncated":
        shard.write_bytes(shard.read_bytes()[:100])
    else:
        shard.unlink()
    with pytest.raises(DecompError, match=r"Feature cache .* is damaged: .* Delete the folder"):
        FeatureCache(folder).load() if damage.startswith("shard") else cached_features(
            _colournet(), split, folder, num_workers=0)
    capsys.readouterr()
    assert main(["refit", "--model", str(tiny_colour_model(tmp_path / "model")), "--dataset", str(color_dataset),
                 "--cache-dir", str(tmp_path / "refit-cache"), "--out", str(tmp_path / "refit"), "--num-workers", "0",
                 "--k2", "2", "--criterion", "histogram", "--val-split", "6"]) == 0
    train_cache = tmp_path / "refit-cache" / "train"
    (train_cache / "meta.json").write_text("\x00garbage")
    capsys.readouterr()
    assert main(["refit", "--model", str(tmp_path / "model"), "--dataset", str(color_dataset),
                 "--cache-dir", str(tmp_path / "refit-cache"), "--out", str(tmp_path / "refit2"),
                 "--num-workers", "0", "--k2", "2", "--criterion", "histogram", "--val-split", "6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hf-decomp refit: error: Feature cache") and "is damaged" in err[0]
