"""The packaged `decomposition` evaluate metric: literal values, offline loading, its use, its upload."""

from __future__ import annotations

import evaluate
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hub_push import TOKEN, hub  # noqa: F401  (the local fake Hub fixture)

import hf_decomp.metrics
from hf_decomp.studies.common import ModelFeatures, evaluate_sets


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(hf_decomp.metrics.path("decomposition"), keep_in_memory=True)


def test_literal_scores(metric):
    scores = metric.compute(predictions=[0, 1, 1, 0], full_predictions=[0, 1, 1, 1], references=[0, 1, 0, 1],
                            label_names=["cat", "dog"])
    assert scores == {
        "full_accuracy": 75.0, "decomposed_accuracy": 50.0, "rho": 50.0 / 75.0, "samples": 4,
        "per_class": {"cat": {"samples": 2, "full_accuracy": 50.0, "decomposed_accuracy": 50.0, "rho": 1.0},
                      "dog": {"samples": 2, "full_accuracy": 100.0, "decomposed_accuracy": 50.0, "rho": 0.5}},
    }


def test_batches_add_up_and_rho_is_none_without_full_hits(metric):
    metric.add_batch(predictions=[2, 2], full_predictions=[0, 0], references=[2, 2])
    metric.add_batch(predictions=[1], full_predictions=[1], references=[1])
    scores = metric.compute()
    assert scores["full_accuracy"] == pytest.approx(100.0 / 3) and scores["decomposed_accuracy"] == 100.0
    assert scores["rho"] == pytest.approx(3.0)
    assert scores["per_class"][2] == {"samples": 2, "full_accuracy": 0.0, "decomposed_accuracy": 100.0, "rho": None}


def test_no_samples_is_an_error(metric):
    with pytest.raises(ValueError, match="no samples to score"):
        metric.compute(predictions=[], full_predictions=[], references=[])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=40))
def test_rho_is_the_ratio_and_classes_partition_the_samples(rows):
    metric = hf_decomp.metrics.shared("decomposition")
    decomposed, full, labels = map(list, zip(*rows))
    scores = metric.compute(predictions=decomposed, full_predictions=full, references=labels)
    n = len(rows)
    assert scores["full_accuracy"] == 100.0 * sum(f == y for f, y in zip(full, labels)) / n
    assert scores["decomposed_accuracy"] == 100.0 * sum(d == y for d, y in zip(decomposed, labels)) / n
    if scores["full_accuracy"]:
        assert scores["rho"] == scores["decomposed_accuracy"] / scores["full_accuracy"]
    assert sum(c["samples"] for c in scores["per_class"].values()) == n
    assert set(scores["per_class"]) == set(labels)


def test_studies_score_index_sets_through_the_metric():
    # W reads feature 1 for class 0 too; the decomposed head drops it. Worked by hand:
    # full predictions 0, 1, 0, 0; decomposed 0, 1, 1, 1; labels 0, 1, 1, 0.
    features = torch.tensor([[1.0, 0.0], [0.4, 1.0], [0.8, 1.0], [0.6, 1.0]])
    mf = ModelFeatures(name="literal", weight=torch.tensor([[1.0, 0.5], [0.0, 1.0]]), bias=torch.zeros(2),
                       label_names=["a", "b"], train_features=features, train_labels=torch.tensor([0, 1, 1, 0]),
                       test_features=features, test_labels=torch.tensor([0, 1, 1, 0]))
    result = evaluate_sets(mf, [[0], [1]])
    assert result["full_accuracy"] == 75.0 and result["decomposed_accuracy"] == 75.0 and result["rho"] == 1.0
    assert result["per_class_rho"] == {"a": 0.5, "b": 2.0}


def test_the_metric_is_packaged_with_its_card():
    folder = hf_decomp.metrics.path("decomposition")
    assert folder.endswith("decomposition")
    with pytest.raises(ValueError, match="Unknown hf-decomp metric 'accuracy'"):
        hf_decomp.metrics.path("accuracy")
    from pathlib import Path

    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert any(dep.startswith("evaluate") for dep in pyproject["project"]["dependencies"])
    # the module folder has no __init__.py: package data; tests/test_wheel.py checks the built wheel holds it
    assert "**/*.py" in pyproject["tool"]["setuptools"]["package-data"]["hf_decomp"]


@pytest.mark.parametrize("repo_type, store", [("space", "spaces"), ("model", "models")])
def test_push_metric_uploads_the_module_and_it_loads_back(hub, tmp_path, repo_type, store):  # noqa: F811
    from hf_decomp.hub.push import push_metric

    url = push_metric("alice/decomposition", repo_type=repo_type, token=TOKEN, endpoint=hub.url)
    assert "alice/decomposition" in url
    uploaded = hub.repos["alice/decomposition"]["main"]
    assert set(uploaded) == {"decomposition.py", "README.md", "app.py"}
    assert hub.commits[-1]["message"] == "Upload the decomposition metric with hf-decomp"
    # What arrived is the module itself: evaluate loads it from a folder holding the uploaded bytes.
    for name, data in uploaded.items():
        (tmp_path / name).write_bytes(data)
    pushed = evaluate.load(str(tmp_path / "decomposition.py"), keep_in_memory=True)
    assert pushed.compute(predictions=[1], full_predictions=[1], references=[1])["rho"] == 1.0
