"""Bias correction, head refit, pruning and the `hf-decomp refit` command."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import requires_shared

from hf_decomp.method.bias_correction import bias_corrected_head, corrected_bias
from hf_decomp.portable.decomposed_head import DecomposedLinear
from hf_decomp.recovery.refit import (
    check_labelled,
    decompose_head,
    prune_and_refit,
    pruning_schedule,
    refit_head,
    refit_head_streaming,
)
from hf_decomp.utils.errors import DecompValueError


def _toy_data(n_per_class: int = 60, seed: int = 0, signal: float = 1.0):
    """3 classes; class c raises features c and c + 3; features 6, 7 are noise with a large mean."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(3).repeat(n_per_class)
    features = torch.rand(3 * n_per_class, 8, generator=generator)
    features[:, 6:] += 5.0
    rows = torch.arange(labels.numel())
    features[rows, labels] += signal
    features[rows, labels + 3] += 0.8 * signal
    return features, labels


def test_corrected_bias_literal():
    weight = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[True, False, False], [False, True, True]])
    mean = torch.tensor([1.0, 2.0, 3.0])
    # class 0: 0.5 + 2*2 + 3*3 ; class 1: -1 + 4*1
    assert corrected_bias(weight, torch.tensor([0.5, -1.0]), mask, mean).tolist() == [13.5, 3.0]


def test_bias_correction_matches_the_full_layer_on_average():
    features, _ = _toy_data()
    generator = torch.Generator().manual_seed(1)
    weight, bias = torch.randn(3, 8, generator=generator), torch.randn(3, generator=generator)
    head = DecomposedLinear(weight, bias, [[0], [1, 4], [2, 5, 7]])
    corrected = bias_corrected_head(head, weight, features.double().mean(0).float())
    full = features @ weight.T + bias
    with torch.no_grad():
        torch.testing.assert_close(corrected(features).mean(0), full.mean(0), atol=1e-4, rtol=0)
        assert (head(features).mean(0) - full.mean(0)).abs().max() > 1.0  # uncorrected is shifted
    assert corrected.index_sets() == head.index_sets()
    torch.testing.assert_close(corrected.kept_weight, head.kept_weight)


def test_refit_reaches_the_optimum_and_leaves_padding_and_input_alone():
    features, labels = _toy_data(signal=0.3)  # overlapping classes: the optimum is finite
    head = DecomposedLinear(torch.zeros(3, 8), None, [[0, 3], [1], [2, 5, 6]])
    refit = refit_head(head, features, labels)
    assert head.kept_weight.abs().sum() == 0  # input unchanged
    assert refit.kept_weight[~refit.valid].abs().sum() == 0  # padding slot of class 1 stays zero
    # at the optimum of this convex problem the gradient vanishes
    refit.zero_grad()
    F.cross_entropy(refit(features), labels).backward()
    assert refit.kept_weight.grad.abs().max() < 1e-3 and refit.bias.grad.abs().max() < 1e-3
    with torch.no_grad():
        loss_lbfgs = float(F.cross_entropy(refit(features), labels))
        assert loss_lbfgs < 0.9 * float(F.cross_entropy(head(features), labels))
        assert float((refit(features).argmax(1) == labels).float().mean()) > 0.6
    adam = refit_head(head, features, labels, optimizer="adam", epochs=300, lr=0.1, batch_size=180)
    with torch.no_grad():
        assert float(F.cross_entropy(adam(features), labels)) == pytest.approx(loss_lbfgs, abs=0.01)


def test_streaming_refit_lowers_the_loss():
    features, labels = _toy_data()
    head = DecomposedLinear(torch.zeros(3, 8), None, [[0, 3], [1, 4], [2, 5]])
    refit = refit_head_streaming(head, lambda: zip(features.split(32), labels.split(32)), epochs=20, lr=0.05)
    with torch.no_grad():
        assert float(F.cross_entropy(refit(features), labels)) < 0.5 * float(F.cross_entropy(head(features), labels))


def test_unlabelled_or_wrong_labels_are_refused():
    with pytest.raises(DecompValueError, match="labelled training split"):
        check_labelled(torch.tensor([0, -1, 2]), 3)
    with pytest.raises(DecompValueError, match="labelled training split"):
        check_labelled(None, 3)
    with pytest.raises(DecompValueError, match=r"labels go up to 5"):
        check_labelled(torch.tensor([0, 5]), 3)
    features, labels = _toy_data(4)
    head = DecomposedLinear(torch.zeros(3, 8), None, [[0], [1], [2]])
    with pytest.raises(DecompValueError, match="no label"):
        refit_head(head, features, torch.full_like(labels, -1))


def test_pruning_schedule_and_pruning_finds_the_informative_sets():
    assert pruning_schedule(64, 5) == [32, 16, 8, 5]
    assert pruning_schedule(64, 5, keep=0.75) == [48, 36, 27, 20, 15, 11, 8, 6, 5]
    assert pruning_schedule(3, 3) == [3]
    features, labels = _toy_data()
    weight = torch.ones(3, 8) * 0.1  # uninformative start: pruning must find the sets from the data
    head = prune_and_refit(weight, torch.zeros(3), features, labels, 2)
    assert [sorted(s) for s in head.index_sets()] == [[0, 3], [1, 4], [2, 5]]
    with pytest.raises(DecompValueError, match="strictly decreasing"):
        prune_and_refit(weight, None, features, labels, 2, schedule=[4, 5, 2])


def test_decompose_head_methods_and_bad_input():
    features, labels = _toy_data()
    generator = torch.Generator().manual_seed(2)
    # class c reads features c and c + 3; every class also has small weights on the noise features 6, 7
    weight = torch.cat([torch.eye(3), torch.eye(3), torch.tensor([[0.3, 0.2]] * 3)], 1)
    weight = weight + 0.01 * torch.randn(3, 8, generator=generator)
    for method in ("contribution", "histogram", "label-free"):
        head = decompose_head(weight, None, features, labels, criterion=method, k2=2, k1=2)
        assert head.multiply_adds == 6
    # contribution ignores the constant noise features 6, 7 that label-free is drawn to
    contribution = decompose_head(weight, None, features, labels, criterion="contribution", k2=2, refit=False)
    assert [sorted(s) for s in contribution.index_sets()] == [[0, 3], [1, 4], [2, 5]]
    label_free = decompose_head(weight, None, features, None, criterion="label-free", k2=1, refit=False,
                                bias_correction=False)
    assert label_free.index_sets() == [[6], [6], [6]]
    with pytest.raises(DecompValueError, match="Known criteria: histogram, contribution, label-free"):
        decompose_head(weight, None, features, labels, criterion="lasso", k2=2)
    dead = features.clone()
    dead[:, 4:] = 0.0
    with pytest.raises(DecompValueError, match="k=5 is larger than the 4 features with a non-zero mean"):
        decompose_head(weight, None, dead, labels, criterion="contribution", k2=5)
    with pytest.raises(DecompValueError, match="labelled"):
        decompose_head(weight, None, features, None, criterion="contribution", k2=2)


@pytest.fixture
def tiny_timm(tmp_path):
    from helpers_models import save_tiny_timm_model

    return save_tiny_timm_model(tmp_path / "timm")


def test_refit_command_writes_results_and_refuses_foreign_cache(tmp_path, color_dataset, tiny_timm, capsys):
    from hf_decomp.cli import main

    cache = tmp_path / "cache"
    common = ["--dataset", str(color_dataset), "--cache-dir", str(cache), "--num-workers", "0", "--k2", "2",
              "--val-split", "6"]
    assert main(["refit", "--model", str(tiny_timm), "--criterion", "contribution", "--out", str(tmp_path / "r"),
                 *common]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["k"] == 2 and metrics["multiply_adds"]["decomposed"] == 6
    assert (tmp_path / "r" / "head.safetensors").is_file() and (cache / "train" / "meta.json").is_file()
    assert 0.0 <= metrics["decomposed_accuracy"] <= 100.0
    halves = metrics["test_halves"]  # the honest estimate beside the validation choice, and its line
    assert halves["protocol"] == "test-half-crossfit" and sum(halves["sizes"]) == metrics["eval_samples"]
    assert "test halves (keep chosen on one half, read on the other, averaged)" in capsys.readouterr().out
    # same cache folder, another model: refused by its metadata, exit code 2
    from helpers_models import save_tiny_timm_model

    other = save_tiny_timm_model(tmp_path / "other", num_classes=3, input_size=16)
    assert main(["refit", "--model", str(other), "--criterion", "contribution", "--out", str(tmp_path / "r2"),
                 *common]) == 2
    assert "was made for other inputs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # argparse's choices, before anything is loaded
        main(["refit", "--model", str(tiny_timm), "--criterion", "magic", "--out", str(tmp_path / "r3"), *common])
    assert info.value.code == 2
    assert "argument --criterion: invalid choice: 'magic' (choose from 'histogram', 'contribution'" \
        in capsys.readouterr().err
    # a folder that is not a feature cache is never cleared
    (tmp_path / "mine" / "train").mkdir(parents=True)
    (tmp_path / "mine" / "train" / "notes.txt").write_text("keep me")
    assert main(["refit", "--model", str(tiny_timm), "--out", str(tmp_path / "r4"), *common[:2],
                 "--cache-dir", str(tmp_path / "mine"), "--num-workers", "0", "--val-split", "6"]) == 2
    assert "not an hf-decomp feature cache" in capsys.readouterr().err
    assert (tmp_path / "mine" / "train" / "notes.txt").read_text() == "keep me"


def test_analyze_reports_bias_corrected_numbers_beside_the_paper_ones(color_dataset):
    from helpers_models import ColourNet

    from hf_decomp.analysis.run import analyze
    from hf_decomp.models import adapt_timm_model

    adapter = adapt_timm_model(ColourNet(), name="colournet")
    result = analyze(adapter, str(color_dataset), k1=1, k2=1, criterion="contribution", bias_correction=True,
                     num_workers=0)
    # contribution keeps each colour's full-strength feature c (not its half copy c + 3)
    assert result.indices.sets == [[0], [1], [2]]
    corrected = result.metrics["bias_corrected"]
    mean = result.statistics.overall_mean()
    # ColourNet's bias is 0 and W = [I I]: the corrected bias of class c is mean(x_{c+3})
    assert corrected["bias"] == pytest.approx(mean[3:].tolist(), abs=1e-5)
    assert corrected["decomposed_accuracy"] == 100.0 and result.metrics["decomposed_accuracy"] == 100.0


@pytest.mark.slow
@requires_shared("models", "cifar10-resnets", "resnet20-12fca82f.th")
def test_resnet20_refit_recovers_accuracy_on_a_subset():
    from hf_decomp.data import load_image_split
    from hf_decomp.models import load_classifier
    from hf_decomp.passes.feature_cache import cached_features

    adapter = load_classifier("cifar10_resnet20")
    train_x, train_y = cached_features(adapter, load_image_split(None, "train", limit=1500), num_workers=0)
    test_x, test_y = cached_features(adapter, load_image_split(None, "test", limit=500), num_workers=0)
    weight, bias = adapter.weight.detach(), adapter.bias.detach()

    def accuracy(logits):
        return 100.0 * float((logits.argmax(1) == test_y).float().mean())

    full = accuracy(test_x @ weight.T + bias)
    with torch.no_grad():
        plain = accuracy(decompose_head(weight, bias, train_x, train_y, criterion="histogram", k2=5,
                                        bias_correction=False, refit=False)(test_x))
        refit = accuracy(decompose_head(weight, bias, train_x, train_y, criterion="contribution", k2=5)(test_x))
    # measured on this seeded subset (deterministic): full layer 90.60 %, the paper's head 87.40 %, the
    # contribution head with bias correction only 89.20 %, with the refit 89.00 % (500 test images: 0.2 point each)
    assert full == pytest.approx(90.60, abs=0.1)
    assert plain == pytest.approx(87.40, abs=0.1)
    assert refit == pytest.approx(89.00, abs=0.1)


def test_test_half_estimate_chooses_keep_on_one_half_and_reads_the_other():
    """Two candidate heads on 8 test rows (4 per class): 'good' is right everywhere but rows 0 and 4, 'left'
    always says class 0. The halves come from stratified_halves; every number is recomputed by hand."""
    from hf_decomp.metrics.crossfit import stratified_halves
    from hf_decomp.recovery.heads import _test_half_estimate

    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    x = torch.nn.functional.one_hot(y, 2).float()  # features = the true class
    x[0], x[4] = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0])  # rows 0 and 4 look like the other class

    def good(f):
        return f

    def left(f):
        return torch.tensor([1.0, 0.0]).expand(f.shape[0], 2)

    result = _test_half_estimate([good, left], [0.5, 0.75], x, y, torch.eye(2), torch.zeros(2), seed=0)
    a, b = stratified_halves(y, 0)

    def acc(head, rows):
        return 100.0 * float((head(x[rows]).argmax(1) == y[rows]).float().mean())

    assert result["half_a"] == {"0.5": acc(good, a), "0.75": acc(left, a)}
    assert result["half_b"] == {"0.5": acc(good, b), "0.75": acc(left, b)}
    assert result["chosen_on_a"] == "0.5" and result["chosen_on_b"] == "0.5"  # 'good' wins on both halves
    assert result["accuracy"] == (acc(good, a) + acc(good, b)) / 2 == 75.0
    assert result["full_accuracy"] == 75.0 and result["sizes"] == [4, 4]  # the full layer is 'good' here
