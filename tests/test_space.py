"""`hf-decomp export --space` writes a valid Gradio Space; `push --repo-type space` uploads it (local fake Hub)."""

from __future__ import annotations

import ast
import importlib.metadata
import runpy
import sys
import time
import types
from pathlib import Path

import pytest
from huggingface_hub import SpaceCard
from test_explore import CHROMEDRIVER, CHROMIUM, click_tab, headless_chromium
from test_hub_push import TOKEN, hub  # noqa: F401  (the local fake Hub fixture)

from hf_decomp.cli import main


def test_export_space_then_push_it_as_a_space(hub, tmp_path, capsys, monkeypatch):  # noqa: F811
    space = tmp_path / "space"
    assert main(["export", "--space", str(space), "--repo-id", "alice/colours-decomposed"]) == 0
    assert sorted(p.name for p in space.iterdir()) == ["README.md", "app.py", "decomp_explorer.py", "requirements.txt"]
    card = SpaceCard.load(space / "README.md")
    assert (card.data.sdk, card.data.app_file, card.data.models) == ("gradio", "app.py", ["alice/colours-decomposed"])
    import gradio

    assert card.data.sdk_version == gradio.__version__
    launched = {}
    monkeypatch.setitem(sys.modules, "decomp_explorer",
                        types.SimpleNamespace(launch=lambda source, **kw: launched.update(source=source, **kw)))
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    monkeypatch.setattr(sys, "argv", ["app.py"])
    runpy.run_path(str(space / "app.py"))  # the Space's entry point opens the model by its Hub id
    assert launched == {"source": "alice/colours-decomposed", "host": "0.0.0.0", "port": 7860}

    capsys.readouterr()
    code = main(["push", str(space), "--repo-id", "alice/explorer", "--repo-type", "space", "--token", TOKEN,
                 "--endpoint", hub.url])
    assert code == 0 and "pushed" in capsys.readouterr().out
    assert hub.created_types == [("space", "gradio")]
    assert hub.commits[-1]["files"] == ["README.md", "app.py", "decomp_explorer.py", "requirements.txt"]
    assert hub.repos["alice/explorer"]["main"]["README.md"] == (space / "README.md").read_bytes()


# Every requirement of a Space must be on PyPI (checked by hand with `pip index versions NAME`); hf-decomp is not.
ON_PYPI = {"gradio", "torch", "transformers", "timm", "huggingface-hub", "safetensors", "numpy", "pillow"}


def test_space_requirements_name_only_pypi_packages_and_its_explorer_imports_no_hf_decomp(tmp_path):
    from packaging.requirements import Requirement

    space = tmp_path / "space"
    assert main(["export", "--space", str(space), "--repo-id", "alice/colours-decomposed"]) == 0
    lines = [line.strip() for line in (space / "requirements.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    names = {Requirement(line).name.lower().replace("_", "-") for line in lines}
    assert names <= ON_PYPI and "hf-decomp" not in names, names - ON_PYPI
    for name in names:  # each names a real distribution (installed here), so pip can resolve it
        assert importlib.metadata.distribution(name).version
    tree = ast.parse((space / "decomp_explorer.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not any(node.level for node in ast.walk(tree) if isinstance(node, ast.ImportFrom))
    assert not {name for name in imported if name.split(".")[0] == "hf_decomp"}
    assert "from decomp_explorer import launch" in (space / "app.py").read_text()


def test_space_needs_a_hub_id_and_push_needs_a_space_folder(hub, tmp_path, capsys):  # noqa: F811
    assert main(["export", "--space", str(tmp_path / "s")]) == 2
    assert "--space needs --repo-id" in capsys.readouterr().err
    assert main(["export", "--space", str(tmp_path / "s"), "--repo-id", "not-a-repo-id"]) == 2
    assert "user/name" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["push", str(tmp_path / "empty"), "--repo-id", "a/b", "--repo-type", "space", "--token", TOKEN,
                 "--endpoint", hub.url]) == 2
    assert "not a Space folder (no app.py)" in capsys.readouterr().err
    assert hub.commits == []


@pytest.mark.parametrize("argv", [["export"], ["export", "--out", "x"]])
def test_export_without_indices_or_space_says_what_it_needs(argv, capsys):
    assert main(argv) == 2
    assert "export needs --indices RUN_DIR and --out MODEL_DIR" in capsys.readouterr().err


def test_space_never_replaces_a_results_folder_even_with_overwrite(tmp_path, capsys):
    """issue 20: `export --indices R --space R --overwrite` replaced the results folder R with the Space."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("indices.json", "metrics.json", "statistics.safetensors"):
        (run / name).write_text("{}")
    before = sorted(p.name for p in run.iterdir())
    assert main(["export", "--indices", str(run), "--space", str(run), "--repo-id", "a/b", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "--space" in err and "--out" not in err and sorted(p.name for p in run.iterdir()) == before
    # a results folder given only as --space (no --indices) is refused as well, with --overwrite
    assert main(["export", "--space", str(run), "--repo-id", "a/b", "--overwrite"]) == 2
    assert "holds indices.json, metrics.json, statistics.safetensors" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == before
    # a Space folder itself is an output: --overwrite replaces it
    space = tmp_path / "space"
    assert main(["export", "--space", str(space), "--repo-id", "a/b"]) == 0
    assert main(["export", "--space", str(space), "--repo-id", "a/c", "--overwrite"]) == 0
    assert "'a/c'" in (space / "app.py").read_text()


def test_space_gets_every_check_out_gets_and_names_space(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    # inside an input
    assert main(["export", "--indices", str(run), "--space", str(run / "space"), "--repo-id", "a/b"]) == 2
    err = capsys.readouterr().err
    assert "--space" in err and "lies inside the input --indices" in err and "--out" not in err
    # holding an input
    assert main(["export", "--indices", str(run), "--space", str(tmp_path), "--repo-id", "a/b",
                 "--overwrite"]) == 2
    assert "contains the input --indices" in capsys.readouterr().err
    # a folder with files, no --overwrite
    assert main(["export", "--space", str(run), "--repo-id", "a/b"]) == 2
    err = capsys.readouterr().err
    assert "--space" in err and "already holds" in err and "--out" not in err
    assert (run / "notes.txt").read_text() == "mine"
    # the current folder
    monkeypatch.chdir(run)
    assert main(["export", "--space", ".", "--repo-id", "a/b", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "--space '.' is the current folder" in err and "--out" not in err
    assert main(["export", "--space", str(tmp_path / "s"), "--out", str(tmp_path / "m"), "--repo-id", "a/b"]) == 2
    assert "not both" in capsys.readouterr().err


# ---- the Space runs from its own folder: a venv without hf-decomp, headless Chromium reads a prediction --------
BLOCKER = '''"""Run the Space's app.py with `import hf_decomp` failing, from the Space folder (the current one)."""
import runpy, sys


class NoHfDecomp:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hf_decomp":
            raise ModuleNotFoundError(f"No module named {name!r} (blocked: a Space must not need hf-decomp)")


sys.meta_path.insert(0, NoHfDecomp())
sys.path[:] = [p for p in sys.path if "hf_decomp" not in p and p not in ("", ".")]
try:
    import hf_decomp  # noqa: F401
except ModuleNotFoundError:
    print("import hf_decomp: ModuleNotFoundError", flush=True)
else:
    raise SystemExit("hf_decomp is importable")
sys.path.insert(0, ".")
sys.argv = ["app.py", *sys.argv[1:]]
runpy.run_path("app.py", run_name="__main__")
'''


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory):
    import torch
    from conftest import make_color_dataset
    from helpers_models import save_tiny_timm_model

    from hf_decomp import analyze

    root = tmp_path_factory.mktemp("space")
    torch.manual_seed(0)
    model = save_tiny_timm_model(root / "tiny_timm")
    data = make_color_dataset(root / "colors", per_class=6)
    analyze(str(model), str(data), k1=2, k2=2, out=root / "run", num_workers=0, batch_size=8, top_images=3)
    assert main(["export", "--indices", str(root / "run"), "--out", str(root / "model")]) == 0
    return root / "model", data


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                    reason="needs headless Chromium: `sudo apt-get install -y chromium chromium-driver`")
def test_space_installs_from_its_folder_and_runs_without_hf_decomp(exported_model, tmp_path):
    import os
    import subprocess
    import urllib.request

    import torch
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    from transformers import AutoImageProcessor

    from hf_decomp.data.loader import decode_image
    from hf_decomp.hub import DecomposedForImageClassification

    model_dir, data = exported_model
    space = tmp_path / "space"
    assert main(["export", "--space", str(space), "--repo-id", "alice/colours-decomposed"]) == 0
    # a venv that sees this machine's packages (torch would be GBs to download) installs the folder's
    # requirements offline: each one is satisfied by a PyPI distribution, none is hf-decomp
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "--no-index", "--no-deps",
                                "--disable-pip-version-check", "-r", "requirements.txt"],
                               cwd=space, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    (tmp_path / "run_space.py").write_text(BLOCKER)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), HF_HUB_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf_home"), GRADIO_ANALYTICS_ENABLED="False")
    log = tmp_path / "space.log"
    with open(log, "w") as out:
        process = subprocess.Popen([str(python), str(tmp_path / "run_space.py"), str(model_dir)], cwd=space, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, log.read_text()[-3000:]
            try:
                urllib.request.urlopen(url, timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
        assert "import hf_decomp: ModuleNotFoundError" in log.read_text()

        # what the model (through hf-decomp, here) predicts for the image the browser uploads
        image_path = tmp_path / "upload.png"
        import datasets

        row = datasets.load_dataset("parquet", data_dir=str(data), split="test")[4]
        decode_image(row["img"]).save(image_path)
        model = DecomposedForImageClassification.from_pretrained(str(model_dir)).eval()
        pixels = AutoImageProcessor.from_pretrained(str(model_dir))(images=decode_image(str(image_path)),
                                                                     return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            expected = model.config.id2label[int(model(pixels).logits[0].argmax())]
        sets, names = model.config.index_sets, [model.config.id2label[c] for c in range(model.config.num_labels)]

        driver = headless_chromium(tmp_path / "chromium-profile")
        try:
            driver.get(url)
            wait = WebDriverWait(driver, 90)
            wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "#space-upload input[type=file]"))
                       ).send_keys(str(image_path))
            wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#space-message"),
                                                        f"Decomposed prediction: {expected}"))
            assert expected in driver.find_element(By.CSS_SELECTOR, "#space-top5").text
            for j in sets[names.index(expected)]:
                assert f"#{j}" in driver.find_element(By.CSS_SELECTOR, "#space-contributions").text
            click_tab(driver, wait, "Class")
            wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#space-show-class"))).click()
            wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#space-class-message"),
                                                        f"features): {' '.join(map(str, sets[0]))}"))
            assert names[0] in driver.find_element(By.CSS_SELECTOR, "#space-class-message").text
            wait.until(lambda d: d.execute_script(  # the top images the model folder carries
                "const i = document.querySelector('#space-strips img'); return i && i.complete && i.naturalWidth > 0;"))
            click_tab(driver, wait, "Model")
            rho = model.config.metrics["rho"]
            wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "#space-model"),
                                                        f"rho = decomposed / full: {rho:.4g}"))
        finally:
            driver.quit()
    finally:
        process.terminate()
        process.wait(timeout=30)
