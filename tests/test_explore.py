"""The explorer: its functions directly, through gradio_client against a launched app, and in a real browser."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_color_dataset
from helpers_models import save_tiny_timm_model

from hf_decomp import analyze
from hf_decomp.cli import main
from hf_decomp.data.loader import decode_image, image_key
from hf_decomp.explore.source import open_explored
from hf_decomp.utils.errors import DecompFileError

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("explore")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = save_tiny_timm_model(root / "tiny_timm")
        data = make_color_dataset(root / "colors", per_class=6)
        analyze(str(model), str(data), k1=2, k2=2, out=root / "run", num_workers=0, batch_size=8, top_images=3)
    finally:
        torch.set_num_threads(threads)
    return root / "run"


@pytest.fixture(scope="module")
def explorer(run_dir):
    from hf_decomp.explore.app import Explorer

    return Explorer(open_explored(str(run_dir)))


def _decomposed_logits(explored, image):
    pixels = explored.adapter.transform(image)[None]
    with torch.no_grad():
        features = explored.adapter.forward_features(pixels)
        return features, explored.head(features)[0], explored.adapter.classifier(features)[0]


def test_image_view_shows_full_and_decomposed_predictions_and_contributions(explorer):
    from hf_decomp.explore.views import predict

    message, full, decomposed, contributions, maps, shown = explorer.explore_row(4)
    image, label = explorer.eval_images.row(4)
    features, logits, full_logits = _decomposed_logits(explorer.explored, image)
    names = explorer.explored.label_names
    predicted = names[int(logits.argmax())]
    assert f"Decomposed prediction: **{predicted}**" in message and f"True label: **{names[label]}**" in message
    assert decomposed[predicted] == pytest.approx(float(logits.softmax(-1).max()), abs=1e-6)
    assert full[names[int(full_logits.argmax())]] == pytest.approx(float(full_logits.softmax(-1).max()), abs=1e-6)
    assert Path(contributions).is_file() and Path(maps).is_file() and shown.size == image.size
    prediction = predict(explorer.explored, image)
    c = prediction["predicted"]
    # the bars are W_cj x_j over I_c: with the bias they add up to the decomposed logit
    assert sum(v for _, v in prediction["contributions"]) + prediction["bias"] == pytest.approx(float(logits[c]), abs=1e-4)
    assert sorted(j for j, _ in prediction["contributions"]) == sorted(explorer.explored.index_sets[c])


def test_upload_of_a_non_image_is_a_message_and_of_an_image_a_prediction(explorer, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a picture")
    message, *outputs, shown = explorer.explore_upload(str(text))
    assert "notes.txt is not an image" in message and outputs == [None] * 4 and shown is None
    image, _ = explorer.eval_images.row(0)
    image.save(tmp_path / "pic.png")
    message, *_ = explorer.explore_upload(str(tmp_path / "pic.png"))
    _, logits, _ = _decomposed_logits(explorer.explored, image)
    assert f"**{explorer.explored.label_names[int(logits.argmax())]}**" in message
    assert "not a number" in explorer.explore_row("x")[0] and "does not exist" in explorer.explore_row(10_000)[0]


def test_class_view_lists_the_set_shared_features_and_top_image_strips(explorer, run_dir):
    explored = explorer.explored
    name = explored.label_names[1]
    markdown, histogram, strips = explorer.class_view(name, only_this_class=True)
    sets = explored.index_sets
    assert f"**{' '.join(map(str, sets[1]))}**" in markdown and Path(histogram).is_file()
    for j in sets[1]:
        others = [explored.label_names[o] for o in range(3) if o != 1 and j in sets[o]]
        assert f"| #{j} | {', '.join(others) or '– (only this class)'} |" in markdown
    assert Path(strips).is_file() and Path(strips).name == "strips-1-class.png"
    # every shown image is one of the class's top images: its content key resolves to a row of that class
    for j in sets[1]:
        for entry in explored.examples.query(j, 1):
            row = explorer.stats_images.rows_by_key()[entry["key"]]
            cell = explorer.stats_images.split.dataset[row][explorer.stats_images.split.image_column]
            assert image_key(cell) == entry["key"]
            assert explorer.stats_images.row(row)[1] == 1


def test_analyze_saves_a_thumbnail_row_and_label_of_every_top_image_a_class_view_shows(run_dir):
    """The thumbnails are the statistics split's own pixels, found by content key, for every shown key."""
    import numpy as np

    from hf_decomp.analysis.thumbnails import SHOWN, Thumbnails
    from hf_decomp.explore.images import DatasetImages

    explored = open_explored(str(run_dir))
    thumbnails = Thumbnails.load(run_dir)
    split = DatasetImages(explored.examples.source["dataset"], "train").split
    shown = {entry["key"] for c, features in enumerate(explored.index_sets) for j in features
             for only in (c, None) for entry in explored.examples.query(j, only)[:SHOWN]}
    assert shown and set(thumbnails.keys) == shown
    for key in shown:
        record = split.dataset[thumbnails.row(key)]
        assert image_key(record["img"]) == key and thumbnails.label(key) == record["label"]
        assert np.array_equal(np.asarray(thumbnails.image(key)), np.asarray(decode_image(record["img"])))


def test_class_view_reads_no_dataset_when_the_thumbnails_are_saved(run_dir):
    """No view rehashes a split: with the saved thumbnails the statistics split is never opened."""
    from hf_decomp.explore.app import Explorer

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"the Class view read the dataset ({name})")

    explorer = Explorer(open_explored(str(run_dir)))
    explorer.stats_images = Untouchable()
    name = explorer.explored.label_names[2]
    markdown, histogram, strips = explorer.class_view(name, only_this_class=False)
    assert f"### {name}" in markdown and Path(strips).is_file()
    from PIL import Image

    with Image.open(histogram) as figure:  # drawn large enough to read (issue 21: the histogram was tiny)
        assert figure.width >= 900 and figure.height >= 300


def test_a_damaged_thumbnails_file_is_one_line_naming_it(run_dir, tmp_path, capsys):
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    _truncate(broken / "top_images_thumbnails.safetensors")
    assert main(["explore", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "top_images_thumbnails.safetensors is damaged" in err and "delete it" in err
    assert len(err.strip().splitlines()) == 1


def test_model_view_reports_rho_and_per_class_accuracy(explorer, run_dir):
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    summary, figures = explorer.model_view()
    assert f"rho = decomposed / full: **{metrics['rho']:.4g}**" in summary
    first = explorer.explored.label_names[0]
    per_class = metrics["evaluation"]["per_class"][first]
    assert f"| {first} | {per_class['decomposed_accuracy']:.2f} |" in summary
    assert figures == []


def test_a_folder_that_is_neither_results_nor_model_is_refused(tmp_path, capsys):
    (tmp_path / "junk.txt").write_text("x")
    with pytest.raises(DecompFileError, match="neither an `hf-decomp analyze` results folder"):
        open_explored(str(tmp_path))
    assert main(["explore", str(tmp_path / "missing")]) == 2
    assert "hf-decomp explore: error:" in capsys.readouterr().err


def test_an_exported_model_folder_opens_without_full_weights(run_dir, tmp_path):
    assert main(["export", "--indices", str(run_dir), "--out", str(tmp_path / "model")]) == 0
    explored = open_explored(str(tmp_path / "model"))
    from hf_decomp.explore.images import DatasetImages
    from hf_decomp.explore.views import predict
    from hf_decomp.hub import DecomposedForImageClassification

    assert not explored.has_full_weight and explored.index_sets == open_explored(str(run_dir)).index_sets
    image, _ = DatasetImages(explored.dataset, "test").row(2)
    model = DecomposedForImageClassification.from_pretrained(str(tmp_path / "model"))
    with torch.no_grad():
        logits = model(explored.adapter.transform(image)[None]).logits[0]
    prediction = predict(explored, image)
    assert prediction["full_top"] is None
    # no full-model column at all (issue 21: a "(not stored…)" class with a 0 % bar was shown)
    from hf_decomp.explore.app import Explorer, build_app

    exported = Explorer(explored)
    assert exported.explore_row(2)[1] is None
    full_label = [b for b in build_app(exported).blocks.values() if getattr(b, "elem_id", None) == "full-top5"]
    assert len(full_label) == 1 and full_label[0].visible is False
    assert (tmp_path / "model" / "top_images_thumbnails.safetensors").is_file()  # the Space's Class view images
    _, _, strips = exported.class_view(explored.label_names[0])  # the top images come with the model
    assert strips is not None and Path(strips).is_file()
    assert prediction["decomposed_top"][prediction["predicted_label"]] == pytest.approx(
        float(logits.softmax(-1).max()), abs=1e-5)


# ---- the launched app: gradio_client and a real browser ------------------------------------------------
@pytest.fixture(scope="module")
def launched(explorer):
    from hf_decomp.explore.app import build_app, theme

    app = build_app(explorer)
    app.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, theme=theme(),
                       allowed_paths=[str(explorer.cache_dir)])
    yield app.local_url
    app.close()


def test_gradio_client_against_the_launched_app(launched, explorer):
    from gradio_client import Client

    client = Client(launched, verbose=False, download_files=False)
    message, full, decomposed, *_ = client.predict(4, api_name="/explore_row")
    assert message == explorer.explore_row(4)[0]
    assert decomposed["label"] == message.split("Decomposed prediction: **")[1].split("**")[0]
    markdown, histogram, strips = client.predict(explorer.explored.label_names[0], True, api_name="/class_view")
    assert markdown == explorer.class_view(explorer.explored.label_names[0])[0]
    assert strips  # the figure came back as a file


CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or \
    "/usr/bin/chromedriver"
_NO_BROWSER = not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists())


def headless_chromium(profile: Path):
    """A Selenium driver of headless Chromium (no network, its own profile folder)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", f"--user-data-dir={profile}", "--window-size=1400,1100"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def click_tab(driver, wait, name: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    wait.until(ec.element_to_be_clickable((By.XPATH, f"//button[@role='tab' and normalize-space()='{name}']"))).click()


NEEDS_BROWSER = pytest.mark.skipif(_NO_BROWSER, reason="needs headless Chromium: `sudo apt-get install -y chromium "
                                                       "chromium-driver` (Debian/Ubuntu); .ci/run installs them")


@NEEDS_BROWSER
def test_real_browser_picks_an_image_and_sees_the_prediction_and_figures(launched, explorer, tmp_path):
    pytest.importorskip("selenium", reason="pip install selenium (in the dev extra)")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = headless_chromium(tmp_path / "chromium-profile")
    try:
        driver.get(launched)
        wait = WebDriverWait(driver, 60)
        number = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#image-number input")))
        number.clear()
        number.send_keys("4")
        driver.find_element(By.CSS_SELECTOR, "#explore-image").click()
        expected = explorer.explore_row(4)[0].split("Decomposed prediction: **")[1].split("**")[0]
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#image-message"),
                                                    f"Decomposed prediction: {expected}"))
        for figure in ("#contributions", "#activation-maps"):
            wait.until(lambda d, f=figure: d.execute_script(
                f"const i = document.querySelector('{f} img'); return i && i.complete && i.naturalWidth > 0;"))
        assert expected in driver.find_element(By.CSS_SELECTOR, "#decomposed-top5").text
        # the gallery shows every tile without scrolling, each caption whole (a class name)
        assert driver.execute_script("const g = document.querySelector('#image-gallery .grid-wrap'); "
                                     "return g.scrollHeight <= g.clientHeight + 1;")
        captions = [c.text for c in driver.find_elements(By.CSS_SELECTOR, "#image-gallery .caption-label")]
        assert captions == [caption for _, caption in explorer.gallery()]
        assert driver.execute_script("return [...document.querySelectorAll('#image-gallery .caption-label')]"
                                     ".every(c => c.scrollWidth <= c.clientWidth);")  # none cut with an ellipsis
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "explorer_browser.png"))
        assert (ARTIFACTS / "explorer_browser.png").stat().st_size > 10_000

        # Class tab: the first class's set, the features it shares, its histogram and top images
        explored = explorer.explored
        name, members = explored.label_names[0], explored.index_sets[0]
        click_tab(driver, wait, "Class")
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#show-class"))).click()
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#class-message"),
                                                    f"features): {' '.join(map(str, members))}"))
        text = driver.find_element(By.CSS_SELECTOR, "#class-message").text
        assert name in text
        for j in members:
            others = [explored.label_names[o] for o in range(len(explored.index_sets))
                      if o != 0 and j in explored.index_sets[o]]
            assert f"#{j} {', '.join(others) or '– (only this class)'}" in text
        for figure in ("#class-histogram", "#class-strips"):
            wait.until(lambda d, f=figure: d.execute_script(
                f"const i = document.querySelector('{f} img'); return i && i.complete && i.naturalWidth > 0;"))
        driver.save_screenshot(str(ARTIFACTS / "explorer_browser_class.png"))

        # Model tab: rho as the run measured it
        click_tab(driver, wait, "Model")
        rho = explored.metrics["rho"]
        wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#model-summary"),
                                                    f"rho = decomposed / full: {rho:.4g}"))
    finally:
        driver.quit()


def test_a_hub_id_opens_from_the_hub_cache_offline(run_dir, tmp_path):
    """The Hub path (snapshot_download) with no network: the model sits in the Hub cache, as after a download."""
    from huggingface_hub import constants

    assert main(["export", "--indices", str(run_dir), "--out", str(tmp_path / "model")]) == 0
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = Path(constants.HF_HUB_CACHE) / "models--you--explore-decomposed"
    shutil.copytree(tmp_path / "model", repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    try:
        explored = open_explored("you/explore-decomposed")
        assert explored.index_sets == open_explored(str(tmp_path / "model")).index_sets
        assert not explored.has_full_weight
        with pytest.raises(DecompFileError, match="Could not download 'you/not-there' from the Hub"):
            open_explored("you/not-there")
    finally:
        shutil.rmtree(repo)


# ---- damaged results folders: one line naming the file and the fix ----------------------------------------
def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _drop_per_class(path: Path) -> None:
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    meta = json.loads(metadata["meta"])
    del meta["per_class"]
    save_file(load_file(path), path, metadata={**metadata, "meta": json.dumps(meta)})


@pytest.mark.parametrize("file, damage, expected", [
    ("top_images.safetensors", _truncate, "top_images.safetensors is damaged or not written by hf-decomp "
                                          "(SafetensorError"),
    ("statistics.safetensors", _truncate, "statistics.safetensors is damaged or not written by hf-decomp "
                                          "(SafetensorError"),
    ("top_images.safetensors", _drop_per_class, "top_images.safetensors: its metadata has no per_class"),
])
def test_a_damaged_results_file_is_one_line_naming_it_and_the_fix(run_dir, tmp_path, capsys, file, damage, expected):
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    damage(broken / file)
    assert main(["explore", str(broken)]) == 2
    err = capsys.readouterr().err
    assert expected in err and "re-run `hf-decomp analyze`" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_results_folder_whose_base_model_is_an_exported_model_says_to_explore_that(run_dir, tmp_path, capsys):
    import json

    assert main(["export", "--indices", str(run_dir), "--out", str(tmp_path / "model")]) == 0
    broken = tmp_path / "run"
    shutil.copytree(run_dir, broken)
    document = json.loads((broken / "indices.json").read_text())
    document["metadata"]["base_model"] = str(tmp_path / "model")
    (broken / "indices.json").write_text(json.dumps(document))
    capsys.readouterr()
    assert main(["explore", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "indices.json names base_model" in err and "an exported decomposed model" in err
    assert f"`hf-decomp explore {tmp_path / 'model'}`" in err and len(err.strip().splitlines()) == 1
