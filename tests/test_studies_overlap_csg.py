"""Class overlap / mutual information and the Class-Specific Gates baseline on hand-built data."""

from __future__ import annotations

import pytest
import torch

from hf_decomp.studies.common import ModelFeatures
from hf_decomp.studies.csg import CSGConfig, csg_index_sets, csg_study, normalize_gates_, sparsity_loss, train_csg
from hf_decomp.studies.overlap import (
    classes_per_feature,
    feature_class_mutual_information,
    jaccard_matrix,
    mutual_information_score,
    overlap_study,
    selected_pair_information,
)
from hf_decomp.utils.errors import DecompValueError


def test_jaccard_and_classes_per_feature():
    sets = [[0, 1], [1, 2], [3]]
    jaccard = jaccard_matrix(sets, 5)
    assert jaccard.tolist() == [[1.0, pytest.approx(1 / 3), 0.0], [pytest.approx(1 / 3), 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert classes_per_feature(sets, 5).tolist() == [1, 2, 1, 1, 0]


def _label_copy_features(n_per_class: int = 500):
    """Feature 0 equals the label (balanced classes): 1 bit with each class indicator. Feature 1: a
    constant, 0 bits."""
    labels = torch.arange(2).repeat_interleave(n_per_class)
    features = torch.stack([labels.double(), torch.full((2 * n_per_class,), 3.0, dtype=torch.float64)], 1)
    return features, labels


def test_mutual_information_known_values():
    features, labels = _label_copy_features()
    mi = feature_class_mutual_information(features, labels, num_classes=2, bins=4)
    assert mi[:, 0].tolist() == [pytest.approx(1.0), pytest.approx(1.0)]
    assert mi[:, 1].tolist() == [0.0, 0.0]
    assert mutual_information_score(mi) == pytest.approx(0.5)
    assert selected_pair_information(mi, [[0], [1]]) == {"selected_pairs": pytest.approx(0.5),
                                                         "other_pairs": pytest.approx(0.5)}
    assert selected_pair_information(mi, [[0], [0]])["selected_pairs"] == pytest.approx(1.0)


def test_overlap_study_report(tmp_path):
    features, labels = _label_copy_features(50)
    weight = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    mf = ModelFeatures.from_tensors(weight, None, (features.float(), labels), (features.float(), labels), ["a", "b"])
    study = overlap_study(mf, [[0], [1]], tmp_path, bins=2, extra_selections={"other": [[0], [0]]})
    assert study.data["features_class_specific"] == 2 and study.data["features_shared"] == 0
    assert study.data["mean_jaccard_off_diagonal"] == 0.0
    assert study.data["selected_pair_mi_bits"]["other"]["selected_pairs"] == pytest.approx(1.0)
    assert (tmp_path / "overlap.png").is_file()


def test_gate_normalisation_and_sparsity():
    gates = torch.tensor([[0.5, 0.25], [2.0, -1.0], [0.0, 0.0]])
    assert normalize_gates_(gates).tolist() == [[1.0, 0.5], [1.0, 0.0], [0.0, 0.0]]
    assert float(sparsity_loss(torch.full((4, 2), 0.5))) == pytest.approx(4.0 - 0.2 * 8)
    assert float(sparsity_loss(torch.full((4, 2), 0.1))) == 0.0


def test_csg_index_sets_break_ties():
    gates = torch.tensor([[1.0, 0.0], [1.0, 0.2], [0.3, 1.0]])  # (d = 3, C = 2)
    sets, ties = csg_index_sets(gates, 1)
    assert sets == [[0], [2]] and ties == 1  # class 0: features 0 and 1 tie at 1.0
    sets, ties = csg_index_sets(gates, 1, tie_break=torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, 0.0]]))
    assert sets == [[1], [2]]


def _separable(n: int = 2000):
    """Feature c carries class c (d = 4, C = 2); features 2, 3 are noise the layer ignores."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (n,), generator=generator)
    features = 0.3 * torch.randn(n, 4, generator=generator)
    features[torch.arange(n), labels] += 2.0
    return features, labels


def test_csg_gates_open_for_the_informative_feature_of_each_class():
    features, labels = _separable()
    weight = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    trained = train_csg(features, labels, weight, torch.zeros(2), CSGConfig(epochs=3, batch_size=64), progress=False)
    gates = trained.gates
    assert gates[0, 0] == 1.0 and gates[1, 1] == 1.0
    assert gates[0, 1] < 0.1 and gates[1, 0] < 0.1  # feature 0 is closed for class 1, and vice versa
    assert ((gates >= 0) & (gates <= 1)).all()
    assert torch.allclose(gates.max(dim=1).values, torch.ones(4))  # every row normalised by its max


def test_csg_study_table(tmp_path):
    features, labels = _separable(600)
    weight = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    mf = ModelFeatures.from_tensors(weight, None, (features, labels), (features, labels), ["a", "b"], "toy")
    study = csg_study(mf, k_values=[1], k1=1, config=CSGConfig(epochs=2, batch_size=64), progress=False)
    comparison = study.data["comparisons"][0]
    assert comparison["csg_sets"] == [[0], [1]]
    assert comparison["csg_rho"] == comparison["algorithm1_rho"] == 1.0
    assert study.data["std_accuracy"] == 100.0
    assert "| toy | 100.00 |" in study.markdown
    with pytest.raises(DecompValueError, match="k grid is empty"):
        csg_study(mf, k_values=[], progress=False)


def test_overlap_study_reports_the_classes_histogram_mi_next_to_mis(tmp_path):
    features, labels = _label_copy_features(50)
    weight = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
    mf = ModelFeatures.from_tensors(weight, None, (features.float(), labels), (features.float(), labels), ["a", "b"])
    disjoint = overlap_study(mf, [[0], [1]], tmp_path, bins=2, histogram=torch.tensor([[5, 5, 0, 0], [0, 0, 5, 5]]))
    same = overlap_study(mf, [[0], [1]], tmp_path, bins=2, histogram=torch.tensor([[5, 5, 0, 0], [4, 6, 0, 0]]))
    # disjoint halves share nothing under every measure (0 nats)
    for key in ("authors_pairwise_mi_prob_nats", "authors_pairwise_mi_select_nats", "above_mean_vote_mi_nats"):
        assert disjoint.data[key] == pytest.approx(0.0, abs=1e-4), key
    # same halves: "select" and above-mean indicators share the whole entropy of a two-of-four indicator, ln 2;
    # "prob": H(.5,.5) + H(.4,.6) - H(.45,.55) = 0.69315 + 0.67301 - 0.68814
    assert same.data["authors_pairwise_mi_select_nats"] == pytest.approx(0.6931, abs=1e-3)
    assert same.data["above_mean_vote_mi_nats"] == pytest.approx(0.6931, abs=1e-3)
    assert same.data["authors_pairwise_mi_prob_nats"] == pytest.approx(0.6780, abs=1e-3)
    assert "the authors' calc_pairwise_mi \"prob\" (vote distributions) 0.678" in same.markdown
    assert "above-mean vote indicators (the MI of the authors' indices_experiment.py) 0.693" in same.markdown
    assert "the authors' measure" not in same.markdown
    assert "authors_pairwise_mi_prob_nats" not in overlap_study(mf, [[0], [1]], tmp_path, bins=2).data
