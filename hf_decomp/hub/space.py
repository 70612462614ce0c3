"""A Hugging Face Space folder that runs the hf-decomp explorer over a decomposed model on the Hub."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import SpaceCard, SpaceCardData

from ..utils.errors import DecompValueError, OutputExistsError, OutputLocationError
from ..utils.files import check_output_dir, staged_output_dir

__all__ = ["write_space", "check_space_dir"]

# What marks a folder a Space must never replace: analyze results (indices.json, metrics.json,
# statistics) and model folders (config.json, weights).
_PRECIOUS = ("indices.json", "metrics.json", "statistics.safetensors", "config.json", "model.safetensors")

APP_TEMPLATE = '''"""Hugging Face Space: the explorer of {repo_id} (written by `hf-decomp export --space`).

Runs from this folder alone: `pip install -r requirements.txt && python app.py` (hf-decomp is not needed;
the explorer is decomp_explorer.py beside this file, the model's code comes with the model).
`python app.py MODEL_DIR` explores a local copy of the model instead of the Hub's.
"""

import os
import sys

from decomp_explorer import launch

# Spaces route traffic to port 7860 of every interface (GRADIO_SERVER_NAME / _PORT override both).
launch(sys.argv[1] if len(sys.argv) > 1 else {repo_id!r}, host=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"),
       port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
'''

EXPLORER_FILE = "decomp_explorer.py"
# The explorer's standalone half (it imports nothing of hf-decomp), copied as a file, not imported: the
# Space runs it where hf-decomp is not installed.
EXPLORER_SOURCE = Path(__file__).resolve().parents[1] / "explore" / "space_explorer.py"

# Everything from PyPI: the Space never needs hf-decomp itself.
REQUIREMENTS = """# the explorer (decomp_explorer.py) and the model's own code (trust_remote_code) need only these
gradio=={gradio}
torch>=2.1
transformers>=4.45
timm>=1.0.15
huggingface-hub>=0.25
safetensors>=0.4
numpy
pillow
"""

BODY = """
# hf-decomp explorer: {repo_id}

Interactive view of the decomposed classifier [{repo_id}](https://huggingface.co/{repo_id}) (Badola et al.,
*Decomposing the Deep: Finding Class Specific Filters in Deep CNNs*): each class c reads only its influential
features I_c of the backbone's pooled features.

- **Image**: pick or upload an image; decomposed prediction (top-5) and the contributions W_cj · x_j of the
  predicted class's influential features.
- **Class**: a class's influential set, which other classes share each feature, and each feature's top
  training images (when the model was exported with them).
- **Model**: accuracies and rho (decomposed / full accuracy).

Run it locally with `pip install -r requirements.txt && python app.py` (hf-decomp is not needed: the
explorer is `decomp_explorer.py` beside `app.py`), or with `hf-decomp explore {repo_id}` for the full
explorer (activation maps, vote histograms).
"""


@contextmanager
def _named_space():
    """The output checks of utils.files name ``--out``; here the output is ``--space``."""
    try:
        yield
    except (OutputExistsError, OutputLocationError) as e:
        message = str(e).replace("an --out", "a --space").replace("--out", "--space")
        raise type(e)(message) from e


def check_space_dir(out_dir: str | Path, overwrite: bool, inputs: dict | None = None) -> Path:
    """Every check ``--out`` gets (not an input nor inside one, not the current folder, writable, not a
    non-empty folder unless ``overwrite``), and: never a folder holding results or a model, even with
    ``overwrite`` (a Space is four small files; replacing an analysis or a model with them loses it)."""
    folder = Path(out_dir)
    held = [name for name in _PRECIOUS if (folder / name).exists()] if folder.is_dir() else []
    if held:
        raise OutputLocationError(
            f"--space {str(out_dir)!r} holds {', '.join(held)} (analyze results or a model); a Space folder never "
            f"replaces them, even with --overwrite. Give a new folder, e.g. --space {folder.name}-space.")
    with _named_space():
        return check_output_dir(out_dir, overwrite, inputs)


def write_space(out_dir: str | Path, repo_id: str, *, overwrite: bool = False, title: str | None = None,
                inputs: dict | None = None) -> Path:
    """Write ``app.py``, the explorer beside it, ``requirements.txt`` (PyPI packages only) and a README with
    Space metadata into ``out_dir`` (atomically).

    Args:
        repo_id: the Hub id of the exported decomposed model the Space shows (``user/name``).
        title: the Space's title (default: derived from ``repo_id``).
        inputs: flag -> path of the command's inputs, which the Space folder must not be, hold or lie in.
    """
    import gradio

    if not isinstance(repo_id, str) or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise DecompValueError(f"--repo-id {repo_id!r}: a Space shows a model pushed to the Hub; give its id as "
                               f"user/name (push it first with `hf-decomp push MODEL_DIR --repo-id user/name`).")
    data = SpaceCardData(title=title or f"{repo_id.split('/')[1]} explorer"[:60], sdk="gradio",
                         sdk_version=gradio.__version__, app_file="app.py", models=[repo_id], license="apache-2.0",
                         tags=["hf-decomp", "interpretability"], emoji="🔍", colorFrom="indigo", colorTo="red",
                         pinned=False)
    card = SpaceCard(f"---\n{data.to_yaml()}\n---\n" + BODY.format(repo_id=repo_id))
    check_space_dir(out_dir, overwrite, inputs)
    with _named_space(), staged_output_dir(out_dir, overwrite, inputs) as staging:
        (staging / "app.py").write_text(APP_TEMPLATE.format(repo_id=repo_id), encoding="utf-8")
        shutil.copyfile(EXPLORER_SOURCE, staging / EXPLORER_FILE)
        (staging / "requirements.txt").write_text(REQUIREMENTS.format(gradio=gradio.__version__), encoding="utf-8")
        card.save(staging / "README.md")
    return Path(out_dir)
