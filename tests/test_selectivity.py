"""Selectivity measures: literal values, invariants (hypothesis), hand-set models, the command and the report."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import requires_shared
from helpers_layers import ColourBlocksNet
from helpers_models import save_tiny_timm_model
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_decomp.cli import main
from hf_decomp.data import load_image_split
from hf_decomp.layers import LayerStatistics, gather_layer_statistics
from hf_decomp.layers.selectivity import (
    above_mean_vote_mi,
    authors_pairwise_mi,
    class_selectivity_index,
    histogram_mutual_information,
    mass_counts,
    mass_k1_per_class,
    per_class_k1_histogram,
    psi_per_class,
)
from hf_decomp.models import adapt_timm_model
from hf_decomp.studies.selectivity import rank_correlation, select_by_activation_mass, selectivity_profile


def test_mass_counts_literal():
    x = torch.tensor([[4.0, 2.0, 1.0, 1.0], [1.0, 1.0, 2.0, 4.0], [0.0, 0.0, 0.0, 0.0], [-1.0, 3.0, 1.0, 0.0]])
    # shares sorted: 0.5, 0.25, 0.125, 0.125 -> cumulative 0.5, 0.75, 0.875, 1
    assert mass_counts(x, 0.5).tolist() == [0, 0, 4, 0]  # 0.5 is not below 0.5; an all-zero sample counts d
    assert mass_counts(x, 0.6).tolist() == [1, 1, 4, 0]
    assert mass_counts(x, 0.9).tolist() == [3, 3, 4, 1]  # -1 carries no mass: (3, 1) -> 0.75, 1
    with pytest.raises(ValueError, match="fraction=0 must be in"):
        mass_counts(x, 0)


def test_psi_literal_median_and_mean():
    histogram = torch.zeros(3, 5, dtype=torch.long)
    histogram[0, [0, 1, 3]] = 1  # counts {0, 1, 3}: median 1, mean 4/3
    histogram[1, [1, 2]] = 1  # counts {1, 2}: median 1.5
    psi = psi_per_class(histogram)  # class 2 has no samples
    assert psi["psi"][:2].tolist() == [0.75, 0.625] and math.isnan(psi["psi"][2])
    assert psi["psi_mean"][0].item() == pytest.approx((4 - 4 / 3) / 4)
    assert mass_k1_per_class(histogram).tolist() == [1, 2, 1]  # round(4/3), round(1.5) (half to even), empty -> 1


def test_class_selectivity_index_literal():
    means = torch.tensor([[1.0, 0.0, 3.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [9.0, 9.0, 9.0]])
    counts = torch.tensor([5, 5, 5, 0])  # the last class has no samples: left out
    index = class_selectivity_index(means, counts)
    assert index.tolist() == pytest.approx([1.0, 0.0, 0.5], abs=1e-6)  # one-class, dead, (3-1)/(3+1)


def test_above_mean_vote_mi_literal():
    same = torch.tensor([[4, 4, 0, 0], [5, 3, 1, 0]])  # both above-mean sets are {0, 1}
    disjoint = torch.tensor([[4, 4, 0, 0], [0, 0, 4, 4]])
    assert above_mean_vote_mi(same)["mean"] == pytest.approx(math.log(2), abs=1e-4)
    assert above_mean_vote_mi(disjoint)["mean"] == pytest.approx(0.0, abs=1e-4)
    assert math.isnan(above_mean_vote_mi(same)["matrix"][0, 0])


def test_authors_pairwise_mi_literal():
    # no zero entries (the authors' eps is not added): p = (.75, .25) and (.25, .75), p_i + p_j = (1, 1)
    # prob: 2 * H(.75, .25) - H(.5, .5) = 2 * 0.562335 - 0.693147; select: both indicators (1, 1): ln 2
    crossed = torch.tensor([[3, 1], [1, 3]])
    assert authors_pairwise_mi(crossed, "prob")["mean"] == pytest.approx(0.431523, abs=1e-6)
    assert authors_pairwise_mi(crossed, "select")["mean"] == pytest.approx(0.693147, abs=1e-6)
    # each class's votes are normalised before the sum: 8 votes (2, 6) weigh as 4 votes (1, 3) would
    # (summing raw counts (5, 7) would give 2 * 0.562335 - H(5/12, 7/12) = 0.4455)
    assert authors_pairwise_mi(torch.tensor([[3, 1], [2, 6]]), "prob")["mean"] == pytest.approx(0.431523, abs=1e-6)
    # with zeros: p = (.5, .5, 0), (0, .5, .5): prob 2 ln 2 - H(.25, .5, .25) = 1.386294 - 1.039721;
    # select (1, 1, 0), (0, 1, 1), union (1, 1, 1): 2 ln 2 - ln 3 (eps 1e-6 moves both by < 1e-4)
    shifted = torch.tensor([[2, 2, 0], [0, 2, 2]])
    assert authors_pairwise_mi(shifted, "prob")["mean"] == pytest.approx(0.346574, abs=1e-4)
    assert authors_pairwise_mi(shifted, "select")["mean"] == pytest.approx(0.287682, abs=1e-4)
    # "select" counts any vote, the above-mean measure only votes above the class's mean: (1, 1, 0) vs (0, 1, 0)
    skewed = torch.tensor([[2, 2, 0], [0, 9, 1]])
    assert authors_pairwise_mi(skewed, "select")["mean"] == pytest.approx(0.287682, abs=1e-4)
    assert above_mean_vote_mi(skewed)["mean"] == pytest.approx(0.0, abs=1e-4)
    three = authors_pairwise_mi(torch.tensor([[3, 1], [1, 3], [0, 0]]), "prob", torch.tensor([5, 5, 0]))
    assert three["mean"] == pytest.approx(0.431523, abs=1e-6)  # the class without samples is left out
    with pytest.raises(ValueError, match="variant='both' is not one of prob, select"):
        authors_pairwise_mi(crossed, "both")


def test_histogram_mutual_information_is_a_deprecated_alias():
    histogram = torch.tensor([[4, 4, 0, 0], [0, 0, 4, 4]])
    with pytest.warns(FutureWarning, match="now above_mean_vote_mi") as caught:
        old = histogram_mutual_information(histogram)
    assert len(caught) == 1 and old["mean"] == above_mean_vote_mi(histogram)["mean"]


def test_per_class_k1_histogram_from_rank_counts():
    stats = LayerStatistics(2, 3, (1, 2), rank_histograms=True)
    x = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0]])
    stats.update(x, torch.tensor([0, 0, 1]))
    histogram = per_class_k1_histogram(stats.rank_counts, torch.tensor([1, 2]))
    assert torch.equal(histogram[0], stats.histogram(1)[0]) and torch.equal(histogram[1], stats.histogram(2)[1])
    assert histogram.tolist() == [[1, 1, 0], [0, 1, 1]]


_features = st.integers(1, 6).flatmap(lambda d: st.lists(
    st.lists(st.floats(0, 10, allow_nan=False, width=32), min_size=d, max_size=d), min_size=2, max_size=20))


@settings(max_examples=40, deadline=None)
@given(_features, st.data())
def test_shards_merge_to_the_single_pass(rows, data):
    x = torch.tensor(rows)
    labels = torch.tensor(data.draw(st.lists(st.integers(0, 2), min_size=len(rows), max_size=len(rows))))
    cut = data.draw(st.integers(0, len(rows)))
    d = x.shape[1]
    whole, a, b = (LayerStatistics(3, d, (1,), mass_fractions=(0.5, 0.8), rank_histograms=True) for _ in range(3))
    whole.update(x, labels)
    a.update(x[:cut], labels[:cut])
    b.update(x[cut:], labels[cut:])
    merged = a.merge_(b)
    for name, tensor in whole.state_dict().items():
        assert torch.allclose(tensor.double(), merged.state_dict()[name].double()), name
    restored = LayerStatistics.from_state_dict(merged.state_dict())
    assert torch.equal(restored.mass_count_histogram(0.8), whole.mass_count_histogram(0.8))


@settings(max_examples=40, deadline=None)
@given(_features, st.randoms(use_true_random=False))
def test_channel_permutation_equivariance(rows, rng):
    x = torch.tensor(rows).double()
    d = x.shape[1]
    perm = torch.tensor(rng.sample(range(d), d))
    assert torch.equal(mass_counts(x, 0.7), mass_counts(x[:, perm], 0.7))  # counts ignore channel order
    means = x[:3] + 0.5 if x.shape[0] >= 3 else torch.cat([x, x, x])[:3] + 0.5
    assert torch.allclose(class_selectivity_index(means)[perm], class_selectivity_index(means[:, perm]))
    histogram = (x[:3] * 10).long() if x.shape[0] >= 3 else (torch.cat([x, x])[:3] * 10).long()
    assert above_mean_vote_mi(histogram)["mean"] == pytest.approx(
        above_mean_vote_mi(histogram[:, perm])["mean"], nan_ok=True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=40))
def test_median_from_histogram_matches_numpy(counts):
    histogram = torch.bincount(torch.tensor(counts), minlength=7)[None, :]
    psi = psi_per_class(histogram)
    assert psi["median_count"].item() == pytest.approx(float(np.median(counts)))
    assert psi["mean_count"].item() == pytest.approx(float(np.mean(counts)))


def test_hand_set_model_psi_and_mu(color_dataset):
    adapter = adapt_timm_model(ColourBlocksNet(), name="colourblocks")
    split = load_image_split(str(color_dataset), "train")
    stats = gather_layer_statistics(adapter, split, ["all-blocks"], k1_values=(1,), mass_fractions=(0.5, 0.8),
                                    num_workers=0)
    # blocks.0 of a red image: (0.86, 0.08, 0.08, 0.25) / 1.27 -> shares 0.68, 0.2, ...: the top channel alone
    # holds half the mass (count 0); 80 % needs one channel before it (count 1)
    assert psi_per_class(stats["blocks.0"].mass_count_histogram(0.5))["psi"].tolist() == [1.0, 1.0, 1.0]
    assert psi_per_class(stats["blocks.0"].mass_count_histogram(0.8))["psi"].tolist() == [0.75, 0.75, 0.75]
    assert psi_per_class(stats["blocks.1"].mass_count_histogram(0.8))["psi"].tolist() == pytest.approx([5 / 6] * 3)
    # mu: channels 0-2 are (220 - 20) / (220 + 20) selective, channel 3 ((R+G+B)/4) is the same for every class
    index = class_selectivity_index(stats["blocks.0"].class_means(), stats["blocks.0"].sample_counts)
    assert index.tolist() == pytest.approx([200 / 240] * 3 + [0.0], abs=0.01)


def test_fractional_k_sets_on_the_hand_set_model(color_dataset):
    adapter = adapt_timm_model(ColourBlocksNet(), name="colourblocks")
    split = load_image_split(str(color_dataset), "train")
    stats = gather_layer_statistics(adapter, split, ["blocks.1"], k1_values=(1,), mass_fractions=(0.8,),
                                    rank_histograms=True, num_workers=0)
    k1, sets = select_by_activation_mass(stats["blocks.1"], 0.8, coverage=1.0)
    assert k1 == [1, 1, 1] and sets == [[2], [1], [0]]  # one channel below 80 %: each colour's 2x channel


def test_rank_correlation():
    assert rank_correlation([1, 2, 3, 4], [0.1, 0.5, 0.4, 0.9]) == pytest.approx(0.8)
    assert math.isnan(rank_correlation([1, 2], [3, 4]))


def test_selectivity_cli_and_report_study(tmp_path, color_dataset, capsys):
    model = str(save_tiny_timm_model(tmp_path / "tiny"))
    out = tmp_path / "sel"
    assert main(["selectivity", "--model", model, "--model", model, "--dataset", str(color_dataset), "--k1", "2",
                 "--num-workers", "0", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    profiles = report["studies"]["selectivity"]["data"]["profiles"]
    assert len(profiles) == 2 and [r["layer"] for r in profiles[0]["layers"]] == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert all(r["samples"] == 24 for r in profiles[0]["layers"])
    text = (out / "report.md").read_text()
    assert "![selectivity](selectivity.png)" in text and (out / "selectivity.png").is_file()
    assert "The paper's claim" in text
    assert main(["selectivity", "--model", model, "--layers", "layer9.0", "--dataset", str(color_dataset),
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "hf-decomp selectivity: error: layer 'layer9.0' is not a module of ResNet. Close matches: layer" in err
    report_out = tmp_path / "report"
    assert main(["report", "--model", model, "--dataset", str(color_dataset), "--k1", "2", "--studies", "selectivity",
                 "--num-workers", "0", "--out", str(report_out)]) == 0
    assert "## Selectivity against depth" in (report_out / "report.md").read_text()


@pytest.mark.slow
@requires_shared("data", "cifar10")
def test_resnet20_selectivity_real_weights():
    from hf_decomp.models import load_classifier

    adapter = load_classifier("cifar10_resnet20")
    split = load_image_split(None, "train", limit=500, seed=0)
    profile = selectivity_profile(adapter, split, ["layer1.0", "layer3.2", "final"], fraction=0.5, k1=5,
                                  num_workers=0)
    rows = {r["layer"]: r for r in profile["layers"]}
    assert rows["layer3.2"]["psi"] == pytest.approx(rows["final"]["psi"])  # the same activations
    assert (rows["layer1.0"]["psi"], rows["layer1.0"]["mu"]) == pytest.approx((0.812, 0.123), abs=1e-3)
    assert (rows["layer3.2"]["psi"], rows["layer3.2"]["mu"], rows["layer3.2"]["mi"]) == pytest.approx(
        (0.812, 0.468, 1.942), abs=1e-3)
