"""The generated model card: YAML metadata and model-index, body, fallbacks, hand-written cards kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from hf_decomp.hub import DecompConfig, render_model_card
from hf_decomp.hub.model_card import (
    CITATION,
    client_install_command,
    hub_dataset_id,
    hub_model_id,
    template_path,
    write_model_card,
)
from hf_decomp.utils.paths import default_cifar10_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]


def _config(**overrides) -> DecompConfig:
    facts = dict(
        architecture="cifar10_resnet20", pretrained_cfg={"license": "bsd-2-clause", "input_size": [3, 32, 32]},
        num_features=8, index_sets=[[0, 3], [1, 4, 6], [2]], id2label={0: "red", 1: "green", 2: "blue"},
        k1=3, k2=3, selection_method="histogram", base_model="timm:resnet50.a1_in1k", dataset="uoft-cs/cifar10",
        metrics={"full_accuracy": 91.73, "decomposed_accuracy": 88.72, "rho": 0.9672, "eval_split": "test",
                 "eval_samples": 10000, "statistics_split": "train", "statistics_samples": 50000,
                 "noise_ablation": {"influential_to_noise_accuracy": 50.05,
                                    "non_influential_to_noise_accuracy": 84.61}},
    )
    facts.update(overrides)
    return DecompConfig(**facts)


def test_card_metadata_and_model_index_hold_the_measured_values(tmp_path):
    card = render_model_card(_config(), repo_id="alice/resnet-decomposed")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data.to_dict()
    assert data["base_model"] == "timm/resnet50.a1_in1k"
    assert data["datasets"] == ["uoft-cs/cifar10"]
    assert data["pipeline_tag"] == "image-classification"
    assert data["license"] == "bsd-2-clause"
    assert "hf-decomp" in data["tags"]
    (entry,) = data["model-index"]
    assert entry["name"] == "resnet50.a1_in1k-decomposed"
    (result,) = entry["results"]
    assert result["task"]["type"] == "image-classification"
    assert result["dataset"] == {"name": "uoft-cs/cifar10", "type": "uoft-cs/cifar10", "split": "test"}
    assert [(m["type"], m["value"]) for m in result["metrics"]] == [
        ("accuracy", 88.72), ("rho", 0.9672), ("accuracy", 91.73)]  # this model's own accuracy first
    assert str(loaded) == str(card)  # stable across save / load
    loaded.save(tmp_path / "again.md")
    assert (tmp_path / "again.md").read_text() == (tmp_path / "README.md").read_text()


def test_card_body_has_results_cost_class_table_snippet_and_citation():
    text = str(render_model_card(_config(), repo_id="alice/resnet-decomposed"))
    assert "| 91.73 | 88.72 | 0.9672 | 50.05 | 84.61 |" in text
    assert "Noise columns" in text
    assert "24 multiply-adds for the full layer, 6 for the decomposed one (25.0% of the full layer)" in text
    assert "| green | 3 | 1 4 6 |" in text
    assert 'pipeline("image-classification", model="alice/resnet-decomposed", trust_remote_code=True)' in text
    # the install line names PyPI packages only (hf-decomp is on no index; the model's code ships with it)
    install = [line for line in text.splitlines() if line.startswith("pip install")]
    assert install == [client_install_command(_config())] and "hf-decomp" not in text.split("## How to use")[1].split(
        "The index sets alone")[0]
    import transformers

    assert install[0].split()[2:4] == [f'"transformers>={transformers.__version__}"', "torch"]
    assert "k1 = 3, k2 = 3, d = 8 features, 3 classes" in text
    assert "(10000 images)" in text and "[train], 50000 samples" in text
    assert CITATION in text and "2112.07719" in text


def test_missing_facts_fall_back_without_model_index():
    config = _config(base_model=None, dataset=None, metrics={}, k1=None, k2=None)
    card = render_model_card(config)
    data = card.data.to_dict()
    assert "model-index" not in data and "base_model" not in data and "datasets" not in data
    text = str(card)
    assert text.count("[More Information Needed]") >= 3
    assert "k1 = –, k2 = –" in text
    assert "Noise columns" not in text and "| full accuracy (%)" not in text
    assert "path/to/this/folder" in text


def test_many_classes_are_summarized():
    n = 60
    config = _config(num_features=16, index_sets=[[c % 16, (c + 1) % 16] for c in range(n)],
                     id2label={c: f"class{c}" for c in range(n)})
    text = str(render_model_card(config))
    assert "60 classes; set sizes from 2 to 2 (mean 2.0)" in text
    assert "| class0 |" not in text


def test_local_paths_never_reach_the_card(tmp_path):
    assert hub_dataset_id(default_cifar10_dataset()) == "uoft-cs/cifar10"
    local = tmp_path / "my_data"
    local.mkdir()
    config = _config(dataset=str(local), base_model=str(tmp_path / "my_model"), metrics={"full_accuracy": 50.0})
    card = render_model_card(config)
    assert str(tmp_path) not in str(card)
    assert "my_data" in str(card)
    assert "datasets" not in card.data.to_dict()


@pytest.mark.parametrize(("name", "expected"), [
    ("timm:resnet50.a1_in1k", "timm/resnet50.a1_in1k"),
    ("hf-hub:timm/vit_small_patch16_224.augreg_in21k", "timm/vit_small_patch16_224.augreg_in21k"),
    ("microsoft/resnet-50", "microsoft/resnet-50"),
    ("transformers:google/vit-base-patch16-224", "google/vit-base-patch16-224"),
    ("cifar10_resnet20", None),
    ("/abs/path/model", None),
    (None, None),
])
def test_hub_model_id(name, expected):
    assert hub_model_id(name) == expected


def test_write_model_card_keeps_hand_written_readme_and_lists_figures(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# Notes I wrote\n")
    assert write_model_card(tmp_path, _config()) is False
    assert readme.read_text() == "# Notes I wrote\n"
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "histogram.png").write_bytes(b"\x89PNG")
    assert write_model_card(tmp_path, _config(), overwrite_card=True) is True
    text = readme.read_text()
    assert "![figures/histogram.png](figures/histogram.png)" in text
    assert write_model_card(tmp_path, _config(k1=4)) is True  # a generated card is regenerated
    assert "k1 = 4" in readme.read_text()


def test_template_is_packaged_and_model_cards_points_at_it():
    packaged = template_path()
    assert packaged.is_file() and packaged.parent.name == "templates"
    repo_copy = REPO_ROOT / "model_cards" / "decomposed_model_card.jinja"
    assert repo_copy.read_text() == packaged.read_text()
