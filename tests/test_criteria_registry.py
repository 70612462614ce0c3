"""The criteria registry: names and metadata, errors, a new criterion end to end, today's sets kept, no torch on import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers_models import ColourNet
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_decomp import analyze
from hf_decomp.method import criteria
from hf_decomp.method.criteria import CriterionInputs, get_criterion, list_criteria, register_criterion
from hf_decomp.method.selection import check_selection, select_from_statistics, top_k_per_class
from hf_decomp.method.statistics import ClassStatistics
from hf_decomp.models import adapt_timm_model
from hf_decomp.recovery.refit import decompose_head
from hf_decomp.utils.errors import DecompValueError

ROOT = Path(__file__).resolve().parents[1]


def test_names_and_what_callers_read_from_them():
    assert list_criteria() == ["histogram", "contribution", "label-free", "sparse-glm", "pruning", "coverage"]
    assert list_criteria(streamable=True) == ["histogram", "contribution", "label-free", "coverage"]
    # refit's methods before the registry were exactly these
    assert list_criteria(set_size="k") == ["histogram", "contribution", "label-free", "sparse-glm", "pruning"]
    assert list_criteria(set_size="coverage") == ["histogram", "coverage"]
    assert list_criteria(needs_labels=False) == ["label-free"]
    assert list_criteria(streamable=True, needs_weight=False) == ["histogram", "coverage"]
    assert list_criteria(refits=True) == ["pruning"]
    with pytest.raises(TypeError, match="unknown filter 'colour'"):
        list_criteria(colour="red")


def test_unknown_name_suggests_close_matches_and_lists_all():
    with pytest.raises(DecompValueError, match=r"Unknown selection criterion 'contributon'\. Did you mean "
                                               r"'contribution'\? Known criteria: histogram, contribution, "
                                               r"label-free, sparse-glm, pruning, coverage\."):
        get_criterion("contributon")
    with pytest.raises(DecompValueError, match=r"'gradcam'\. Known criteria: histogram"):
        get_criterion("gradcam")


def test_registration_refuses_duplicates_and_unknown_inputs(monkeypatch):
    monkeypatch.setattr(criteria, "_REGISTRY", dict(criteria._REGISTRY))
    with pytest.raises(ValueError, match="'histogram' is already registered"):
        register_criterion("histogram", needs=("histogram",))(lambda inputs: inputs.histogram)
    with pytest.raises(ValueError, match=r"needs \['gradients'\] are not CriterionInputs fields"):
        register_criterion("saliency", needs=("gradients",))
    with pytest.raises(ValueError, match="set_sizes"):
        register_criterion("saliency", needs=("weight",), set_sizes=("percent",))


def test_missing_input_is_named():
    with pytest.raises(DecompValueError, match=r"criterion 'label-free' needs the classifier weight \(weight=\.\.\.\)"):
        get_criterion("label-free").scores(CriterionInputs(overall_mean=torch.ones(3)))


def test_analyze_refuses_what_it_cannot_compute_before_any_work():
    # the model name does not exist: each refusal must come before the model (or any data) is loaded
    with pytest.raises(DecompValueError, match="criterion 'sparse-glm' needs the training features themselves"):
        analyze("no-such-model", k2=2, criterion="sparse-glm")
    with pytest.raises(DecompValueError, match="criterion 'contribution' keeps k2 features per class"):
        analyze("no-such-model", coverage=0.5, criterion="contribution")
    # label-free with coverage used to give silent 1-feature sets
    with pytest.raises(DecompValueError, match="criterion 'label-free' keeps k2 features per class"):
        analyze("no-such-model", coverage=0.5, criterion="label-free")
    with pytest.raises(DecompValueError, match="criterion 'coverage' sizes its sets by coverage"):
        check_selection("coverage", k2=3)
    with pytest.raises(DecompValueError, match="Did you mean 'histogram'"):
        analyze("no-such-model", criterion="histogramm")
    with pytest.raises(DecompValueError, match="the refit keeps k per class"):
        decompose_head(torch.ones(2, 3), None, torch.ones(4, 3), torch.tensor([0, 1, 0, 1]), criterion="coverage")


@pytest.fixture
def smallest_weight(monkeypatch):
    """A toy criterion, registered for one test only: the features with the smallest weight."""
    monkeypatch.setattr(criteria, "_REGISTRY", dict(criteria._REGISTRY))

    @register_criterion("smallest-weight", needs=("weight",), help="-W_cj")
    def smallest(inputs: CriterionInputs):
        return -inputs.weight.double()

    return "smallest-weight"


def test_a_new_criterion_is_one_decorated_function(smallest_weight, color_dataset):
    from hf_decomp.cli import build_parser

    assert smallest_weight in list_criteria(streamable=True, needs_labels=False)
    # ColourNet's W = [I, I]: the smallest weights of red are the zeros at 1, 2 (ties: lower index first)
    expected = [[1, 2], [0, 2], [0, 1]]
    stats = ClassStatistics(3, 6, (1,))
    stats.update(torch.rand(9, 6), torch.arange(3).repeat(3))
    weight = ColourNet().fc.weight.detach()
    assert select_from_statistics(stats, k1=1, k2=2, criterion=smallest_weight, weight=weight)[0] == expected
    result = analyze(adapt_timm_model(ColourNet(), name="colournet"), str(color_dataset), k1=2, k2=2,
                     criterion=smallest_weight, num_workers=0)
    assert result.indices.sets == expected and result.metrics["selection"]["method"] == smallest_weight
    # every logit is its bias (0) on these sets: argmax picks class 0 for every image, a third of them right
    assert result.metrics["decomposed_accuracy"] == pytest.approx(100 / 3)
    head = decompose_head(weight, None, torch.rand(6, 6), None, criterion=smallest_weight, k2=2, refit=False,
                          bias_correction=False)
    assert head.index_sets() == expected
    args = build_parser().parse_args(["analyze", "--criterion", smallest_weight])
    assert args.criterion == smallest_weight


def _reference_case():
    """The case whose sets were computed with the code before the registry (commit c6b1b30)."""
    generator = torch.Generator().manual_seed(7)
    labels = torch.arange(3).repeat(20)
    features = torch.rand(60, 8, generator=generator)
    features[torch.arange(60), labels] += 1.0
    features[torch.arange(60), labels + 3] += 0.5 * torch.rand(60, generator=generator)
    features[:, 7] = 0.0  # a dead feature
    return features, labels, torch.randn(3, 8, generator=generator)


# select_from_statistics(k1=2, k2=3 or coverage=0.5) and decompose_head(k2=3, k1=2), pre-registry code
STATISTICS_SETS = {
    "histogram": [[0, 3, 2], [1, 4, 2], [2, 5, 1]],
    "coverage": [[0], [1], [2]],
    "contribution": [[1, 6, 4], [1, 6, 5], [1, 3, 2]],
    "label-free": [[2, 7, 0], [6, 2, 1], [0, 6, 2]],
}
HEAD_SETS = {
    "histogram": [[0, 3, 2], [1, 4, 2], [2, 5, 1]],
    "contribution": [[1, 6, 4], [1, 6, 5], [1, 3, 2]],
    "label-free": [[2, 7, 0], [6, 2, 1], [0, 6, 2]],
    "sparse-glm": [[0, 3, 4], [1, 5, 2], [2, 5, 6]],
    "pruning": [[1, 5, 6], [1, 5, 3], [2, 1, 3]],
}
HEAD_BIASES = {  # bias-corrected (not refit); pruning always refits (max_iter=20)
    "histogram": [-0.8288, 0.1664, 0.7698], "contribution": [-0.5173, 0.1302, 0.5949],
    "label-free": [-1.9382, -0.4071, -2.82], "sparse-glm": [0.0479, 0.2938, -0.6624],
    "pruning": [24.7685, -6.9175, -14.6683],
}


def test_every_criterion_reproduces_the_sets_of_the_code_before_the_registry():
    features, labels, weight = _reference_case()
    stats = ClassStatistics(3, 8, (2,))
    stats.update(features, labels)
    assert sorted(STATISTICS_SETS) == sorted(list_criteria(streamable=True))
    assert sorted(HEAD_SETS) == sorted(list_criteria(set_size="k"))
    for name, expected in STATISTICS_SETS.items():
        size = {"coverage": 0.5} if name == "coverage" else {"k2": 3}
        assert select_from_statistics(stats, k1=2, criterion=name, weight=weight, **size) == (expected, []), name
    for name, expected in HEAD_SETS.items():
        head = decompose_head(weight, None, features, labels, criterion=name, k2=3, k1=2, max_iter=20,
                              refit=name == "pruning")
        assert head.index_sets() == expected, name
        assert head.bias.tolist() == pytest.approx(HEAD_BIASES[name], abs=1e-3), name


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), k1=st.integers(1, 5), k2=st.integers(1, 5))
def test_histogram_criterion_is_algorithm_1(seed, k1, k2):
    """Through the registry, histogram sets are Algorithm 1's: the k2 most voted of the top-k1 histogram."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randint(0, 4, (30, 5), generator=generator).float()  # integer features: many ties
    labels = torch.randint(0, 3, (30,), generator=generator)
    stats = ClassStatistics(3, 5, (k1,))
    stats.update(features, labels)
    weight = torch.randn(3, 5, generator=generator)
    sets, empty = select_from_statistics(stats, k1=k1, k2=k2, criterion="histogram", weight=weight)
    expected = top_k_per_class(stats.histogram(k1), k2)
    for c in range(3):
        if c not in empty:
            assert sets[c] == expected[c]


def test_importing_the_registry_does_not_load_torch():
    # hf_decomp/__init__ is bypassed (an empty package object) so that only the criteria module's own
    # imports count; `hf-decomp analyze --help` builds its choices from list_criteria()
    code = (
        "import sys, types\n"
        f"package = types.ModuleType('hf_decomp'); package.__path__ = [{str(ROOT / 'hf_decomp')!r}]\n"
        "sys.modules['hf_decomp'] = package\n"
        "import hf_decomp.method.criteria as criteria\n"
        "names = criteria.list_criteria(); criteria.get_criterion('histogram')\n"
        "print(names, sorted(m for m in ('torch', 'timm', 'transformers', 'datasets') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['histogram', 'contribution', 'label-free', 'sparse-glm', 'pruning', 'coverage'] []"


def test_shares_of_the_width_are_checked_in_one_place():
    from hf_decomp.studies.depth import resolve_k
    from hf_decomp.utils.checks import check_width_fraction

    assert check_width_fraction("k1_ratio", 1) == 1.0 and resolve_k(None, 0.05, 64, "k1") == 3
    with pytest.raises(DecompValueError, match=r"k2_ratio=1\.5 must be a fraction of the width in \(0, 1\]"):
        resolve_k(None, 1.5, 64, "k2")
    with pytest.raises(DecompValueError, match=r"k1_fraction=0\.0 must be a fraction of the width in \(0, 1\]"):
        check_width_fraction("k1_fraction", 0.0)
