"""Sweep, histograms, depth and noise studies on a hand-built 2-class head with known influential features.

Features (d = 4): class 0 lives on features 0/1, class 1 on features 2/3; W reads exactly those.
Training samples of class 0: two [5, 4, 0, 0] and one [0, 5, 4, 0], so its top-1 histogram is
{0: 2, 1: 1} (influential set {0}) and its top-2 histogram is {0: 2, 1: 3, 2: 1} (set {1}). Class 1:
three [0, 0, 5, 4] (set {2} either way). Eval: a = [0, 3, 2, 0] (class 0) and b = [0, 0, 4, 0] (class 1).
The full layer gets both right. With one feature per class, class 0 only survives when its set is {1}.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import requires_shared

from hf_decomp.studies.common import ModelFeatures
from hf_decomp.studies.depth import depth_row, depth_study, model_depth, model_family, resolve_k
from hf_decomp.studies.histograms import gather_class_statistics, histogram_study
from hf_decomp.studies.noise import noise_ablation
from hf_decomp.studies.sweep import sweep_grid, sweep_study
from hf_decomp.utils.errors import DecompValueError

WEIGHT = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])


def toy_features(name: str = "toy") -> ModelFeatures:
    train_x = torch.tensor([[5.0, 4, 0, 0], [5, 4, 0, 0], [0, 5, 4, 0], [0, 0, 5, 4], [0, 0, 5, 4], [0, 0, 5, 4]])
    train_y = torch.tensor([0, 0, 0, 1, 1, 1])
    test_x = torch.tensor([[0.0, 3, 2, 0], [0, 0, 4, 0]])
    test_y = torch.tensor([0, 1])
    return ModelFeatures.from_tensors(WEIGHT, None, (train_x, train_y), (test_x, test_y), ["zero", "one"], name)


def test_statistics_hold_every_k1_from_one_pass():
    stats = gather_class_statistics(toy_features(), [1, 2])
    assert stats.histogram(1)[0].tolist() == [2, 1, 0, 0]
    assert stats.histogram(2)[0].tolist() == [2, 3, 1, 0]
    assert stats.histogram(1)[1].tolist() == [0, 0, 3, 0]


def test_sweep_grid_known_rho():
    result = sweep_grid(toy_features(), [1, 2], [1, 2])
    assert result["full_accuracy"] == 100.0
    # rows k1 = 1, 2; columns k2 = 1, 2
    assert result["decomposed_accuracy"] == [[50.0, 100.0], [100.0, 100.0]]
    assert result["rho"] == [[0.5, 1.0], [1.0, 1.0]]
    assert result["statistics_passes"] == 1 and result["evaluation_passes"] == 1


def test_sweep_study_writes_heatmap_and_table(tmp_path):
    study = sweep_study(toy_features(), tmp_path, k1_values=[2, 1], k2_values=[1, 2])
    assert (tmp_path / "sweep.png").stat().st_size > 1000
    assert "| 1 | 0.500 | 1.000 |" in study.markdown
    assert json.loads(json.dumps(study.data))["k1_values"] == [1, 2]


@pytest.mark.parametrize("k1_values, k2_values, message", [
    ([], [1], "k1 grid is empty"),
    ([1], [], "k2 grid is empty"),
    ([1, 5], [1], "d=4"),
    ([0], [1], "not integers in [1, d=4]"),
])
def test_sweep_rejects_bad_grids(k1_values, k2_values, message):
    with pytest.raises(DecompValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        sweep_grid(toy_features(), k1_values, k2_values)


def test_histogram_study_highlights_known_sets(tmp_path):
    study = histogram_study(toy_features(), tmp_path, k1=1, k2=1)
    assert study.data["index_sets"] == {"zero": [0], "one": [2]}
    assert study.data["vote_share_percent"]["zero"] == pytest.approx(200 / 3)
    assert study.data["vote_share_percent"]["one"] == 100.0
    assert (tmp_path / "histograms.png").is_file()
    with pytest.raises(DecompValueError, match="'two' is not one of the model's labels"):
        histogram_study(toy_features(), tmp_path, k1=1, k2=1, classes=["two"])


def test_depth_rows_and_plot(tmp_path):
    shallow, deep = toy_features("cifar10_resnet20"), toy_features("cifar10_resnet32")
    row = depth_row(shallow, k1=1, k2=1)
    assert (row["depth"], row["family"], row["d"]) == (20, "cifar10_resnet", 4)
    assert (row["full_accuracy"], row["decomposed_accuracy"], row["rho"]) == (100.0, 50.0, 0.5)
    assert row["multiply_adds"] == {"full": 8, "decomposed": 2}
    # k1/d = 0.5 -> k1 = 2, whose sets rescue class 0
    row = depth_row(deep, k1_ratio=0.5, k2=1)
    assert (row["k1"], row["rho"], row["k1_over_d"]) == (2, 1.0, 0.5)
    study = depth_study([shallow, deep], tmp_path, k1_ratio=0.5, k2=1)
    assert [r["depth"] for r in study.data["rows"]] == [20, 32]
    assert (tmp_path / "rho_vs_depth.png").is_file()
    assert "| cifar10_resnet32 | 32 | 4 | 2 | 1 |" in study.markdown


def test_depth_names_and_k_resolution():
    assert model_depth("timm:resnet152.a1_in1k") == 152
    assert model_depth("densenet201") == 201
    assert model_family("wide_resnet101_2") == "wide_resnet_2"
    assert model_family("efficientnet_b3") == "efficientnet"
    assert resolve_k(None, 0.05, 2048, "k1") == 102
    with pytest.raises(DecompValueError, match="exactly one of k1 and k1_ratio"):
        resolve_k(5, 0.05, 64, "k1")
    with pytest.raises(DecompValueError, match="k2=80 must be between 1 and d=64"):
        resolve_k(80, None, 64, "k2")
    with pytest.raises(DecompValueError, match="at least one model"):
        depth_study([], "unused")


def test_noise_ablation_known_columns():
    # Class c is carried by feature c alone (value 100); N(0, 1) noise elsewhere cannot flip it.
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (400,), generator=generator)
    features = torch.zeros(400, 4)
    features[torch.arange(400), labels] = 100.0
    # the unread features tell the samples apart: each sample's noise is keyed by its content
    features[:, 2:] = torch.rand(400, 2, generator=generator)
    weight = torch.eye(2, 4)
    mf = ModelFeatures.from_tensors(weight, None, (features, labels), (features, labels))
    result = noise_ablation(mf, [[0], [1]])
    assert result["full_accuracy"] == 100.0
    assert result["non_influential_to_noise_accuracy"] == 100.0
    # only noise is left: about chance (binomial sd 2.5 % at n = 400)
    assert 35.0 < result["influential_to_noise_accuracy"] < 65.0


@pytest.mark.slow
@requires_shared("models", "cifar10-resnets")
def test_real_resnet20_sweep_and_label_free_selection_on_a_subset():
    from hf_decomp.method.selection import label_free_scores, top_k_per_class
    from hf_decomp.studies.common import evaluate_sets, load_model_features

    mf = load_model_features("cifar10_resnet20", limit=1000, eval_limit=500, num_workers=0)
    result = sweep_grid(mf, [1, 5], [1, 5, 32])
    # deterministic on the seeded subsets: 500 test images, so one image is 0.2 points
    assert result["full_accuracy"] == pytest.approx(90.6, abs=0.1)
    assert result["decomposed_accuracy"] == [[pytest.approx(v, abs=0.1) for v in row]
                                             for row in ([60.0, 88.2, 88.2], [61.6, 88.0, 89.6])]
    rho = dict(zip(result["k2_values"], zip(*result["rho"])))
    # keeping half the features per class loses almost nothing; one feature per class loses a lot
    assert min(rho[32]) > 0.97 and max(rho[1]) < 0.7, rho
    stats = gather_class_statistics(mf, [5])
    algorithm1 = evaluate_sets(mf, top_k_per_class(stats.histogram(5), 5))
    label_free = evaluate_sets(mf, top_k_per_class(label_free_scores(mf.weight, mf.train_features.mean(0)), 5))
    assert (algorithm1["decomposed_accuracy"], label_free["decomposed_accuracy"]) == (pytest.approx(88.0, abs=0.1),
                                                                                    pytest.approx(88.6, abs=0.1))


def test_studies_score_heads_exactly_as_analyze_does(color_dataset):
    # One evaluation path: the feature cache keeps each eval image's content key, so a study's noise
    # ablation draws the same per-image noise as analyze's evaluation pass.
    from helpers_models import ColourNet

    from hf_decomp import analyze
    from hf_decomp.models import adapt_timm_model
    from hf_decomp.studies.common import evaluate_sets, load_model_features

    adapter = adapt_timm_model(ColourNet(), name="colournet")
    analyzed = analyze(adapter, str(color_dataset), k1=1, k2=1, num_workers=0, top_images=0, seed=3)
    mf = load_model_features(adapter, str(color_dataset), num_workers=0)
    studied = evaluate_sets(mf, analyzed.indices.sets, seed=3)
    metrics = analyzed.metrics
    assert studied["noise_ablation"] == metrics["noise_ablation"]
    # with one feature per class the noise bites: the test above compares numbers, not two 100s
    assert metrics["noise_ablation"]["influential_to_noise_accuracy"] < 100.0
    assert (studied["full_accuracy"], studied["decomposed_accuracy"]) == (metrics["full_accuracy"],
                                                                          metrics["decomposed_accuracy"])
