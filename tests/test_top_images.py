"""Streaming top-N images per feature: exact, mergeable, resumable, and kept by analyze in its one pass."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_models import ColourNet
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_decomp import analyze
from hf_decomp.analysis.folder import ResultsFolder
from hf_decomp.analysis.top_images import TopImages
from hf_decomp.data import load_image_split
from hf_decomp.data.loader import decode_image, image_key
from hf_decomp.method.statistics import ClassStatistics
from hf_decomp.models import adapt_timm_model
from hf_decomp.utils.errors import DecompValueError


def _brute_force(features: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor, feature: int, n: int,
                 class_: int | None = None) -> list[tuple[int, float]]:
    rows = [(float(features[i, feature]), int(keys[i])) for i in range(len(keys))
            if class_ is None or int(labels[i]) == class_]
    rows.sort(key=lambda r: (-r[0], r[1]))  # activation descending, key ascending on ties
    return [(k, v) for v, k in rows[:n]]


def _as_pairs(answer: list[dict]) -> list[tuple[int, float]]:
    return [(r["key"], r["activation"]) for r in answer]


def _assert_same_ranking(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    """Same keys in the same order, activations equal within float rounding."""
    assert [k for k, _ in got] == [k for k, _ in expected]
    assert [a for _, a in got] == pytest.approx([a for _, a in expected])


def _random_data(samples: int = 200, d: int = 7, classes: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(samples, d, generator=g)
    labels = torch.randint(0, classes, (samples,), generator=g)
    keys = torch.randperm(10 * samples, generator=g)[:samples]
    return features, labels, keys


def _fed(features, labels, keys, n, batch, d, classes) -> TopImages:
    top = TopImages(d, classes, n)
    for start in range(0, len(keys), batch):
        top.update(features[start:start + batch], labels[start:start + batch], keys[start:start + batch])
    return top


def test_exact_against_a_brute_force_sort():
    features, labels, keys = _random_data()
    top = _fed(features, labels, keys, n=5, batch=13, d=7, classes=4)
    for j in range(7):
        _assert_same_ranking(_as_pairs(top.query(j)), _brute_force(features, labels, keys, j, 5))
        for c in range(4):
            _assert_same_ranking(_as_pairs(top.query(j, c)), _brute_force(features, labels, keys, j, 5, c))


def test_fewer_samples_than_n_and_nonfinite_rows():
    features = torch.tensor([[1.0, 2.0], [float("nan"), 9.0], [3.0, -1.0]])
    top = TopImages(2, 2, n=4)
    top.update(features, torch.tensor([0, 0, 1]), torch.tensor([5, 6, 7]))
    assert _as_pairs(top.query(1)) == [(5, 2.0), (7, -1.0)]  # the NaN row (key 6) is ignored entirely
    assert _as_pairs(top.query(0, 1)) == [(7, 3.0)]
    assert top.query(0, 0)[0] == {"key": 5, "activation": 1.0}
    with pytest.raises(DecompValueError, match="feature=2 is outside"):
        top.query(2)
    with pytest.raises(DecompValueError, match="positive int"):
        TopImages(2, 2, n=0)


def test_merge_of_shards_equals_one_pass():
    features, labels, keys = _random_data(seed=1)
    whole = _fed(features, labels, keys, n=6, batch=17, d=7, classes=4)
    shards = [_fed(features[i::3], labels[i::3], keys[i::3], n=6, batch=5, d=7, classes=4) for i in range(3)]
    merged = shards[0].merge_(shards[1]).merge_(shards[2])
    for name, tensor in whole.state_dict().items():
        assert torch.equal(merged.state_dict()[name], tensor), name


def test_resume_from_state_dict_equals_uninterrupted(tmp_path):
    features, labels, keys = _random_data(seed=2)
    uninterrupted = _fed(features, labels, keys, n=4, batch=10, d=7, classes=4)
    first = _fed(features[:90], labels[:90], keys[:90], n=4, batch=10, d=7, classes=4)
    first.source = {"dataset": "d", "split": "train", "image_column": "img"}
    first.save(tmp_path)
    resumed = TopImages.load(tmp_path)
    assert resumed.source == first.source
    assert json.loads((tmp_path / "top_images.json").read_text())["n"] == 4
    for start in range(90, 200, 10):
        resumed.update(features[start:start + 10], labels[start:start + 10], keys[start:start + 10])
    for name, tensor in uninterrupted.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3), st.integers(0, 2)), min_size=1, max_size=40),
       st.integers(1, 6), st.integers(1, 9))
def test_any_batching_gives_the_sorted_prefix_even_with_ties(rows, n, batch):
    """Small integer activations make many ties: the answer is still the (value desc, key asc) prefix."""
    features = torch.tensor([[a, b] for a, b, _ in rows], dtype=torch.float32)
    labels = torch.tensor([c for _, _, c in rows])
    keys = torch.arange(len(rows)).flip(0) * 7 % 101  # distinct keys, not in row order
    top = _fed(features, labels, keys, n=n, batch=batch, d=2, classes=3)
    for j in range(2):
        assert _as_pairs(top.query(j)) == _brute_force(features, labels, keys, j, n)
        for c in range(3):
            assert _as_pairs(top.query(j, c)) == _brute_force(features, labels, keys, j, n, c)


def test_analyze_keeps_top_images_in_its_one_pass_and_writes_them(color_dataset, tmp_path):
    adapter = adapt_timm_model(ColourNet(), name="colournet")
    out = tmp_path / "run"
    result = analyze(adapter, str(color_dataset), k1=2, k2=2, out=out, num_workers=0, batch_size=5, top_images=3)
    split = load_image_split(str(color_dataset), "train")
    rows = split.dataset
    pixels = torch.stack([adapter.transform(decode_image(r)) for r in rows[split.image_column]])
    features = adapter.forward_features(pixels).detach()
    keys = torch.tensor([image_key(r) for r in rows[split.image_column]])
    labels = torch.tensor(rows[split.label_column])
    expected = _brute_force(features, labels, keys, 0, 3, class_=0)
    _assert_same_ranking(_as_pairs(result.top_images(feature=0, class_=0)), expected)
    assert [k for k, _ in _as_pairs(result.top_images(feature=2))] == [k for k, _ in
                                                                      _brute_force(features, labels, keys, 2, 3)]
    loaded = ResultsFolder.load(out)
    assert loaded.top_images(feature=0, class_=0) == result.top_images(feature=0, class_=0)
    assert loaded.top_images(0)[0]["split"] == "train" and loaded.top_images(0)[0]["image_column"] == "img"


def test_analyze_resumed_after_a_crash_keeps_the_same_top_images(color_dataset, tmp_path, monkeypatch):
    adapter = adapt_timm_model(ColourNet(), name="colournet")
    settings_ = dict(k1=2, k2=2, batch_size=5, num_workers=0, top_images=4)
    uninterrupted = analyze(adapter, str(color_dataset), **settings_)
    original = ClassStatistics.update
    calls = {"n": 0}

    def crash_after_two(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ClassStatistics, "update", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        analyze(adapter, str(color_dataset), **settings_, out=tmp_path / "run", save_every=1)
    monkeypatch.setattr(ClassStatistics, "update", original)
    resumed = analyze(adapter, str(color_dataset), **settings_, out=tmp_path / "run", resume=True)
    for name, tensor in uninterrupted.examples.state_dict().items():
        assert torch.equal(resumed.examples.state_dict()[name], tensor), name
    assert len(resumed.top_images(0)) == 4
