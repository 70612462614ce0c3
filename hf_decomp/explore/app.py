"""The Gradio explorer: Image, Class and Model tabs over an :class:`ExploredModel`.

:class:`Explorer` holds the handlers as plain methods (tested directly); :func:`build_app` wires them
to Gradio components; :func:`launch` serves the app (127.0.0.1, no share link unless asked).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # the explorer never needs the network

from PIL import Image  # noqa: E402

from ..analysis.thumbnails import SHOWN  # noqa: E402
from ..data.loader import _DECODE_ERRORS, decode_image  # noqa: E402
from ..utils.errors import DecompError  # noqa: E402
from . import views  # noqa: E402
from .images import DatasetImages  # noqa: E402
from .source import ExploredModel, open_explored  # noqa: E402
from .views import (  # noqa: E402
    activation_figure,
    class_markdown,
    contribution_figure,
    histogram_figure,
    model_summary,
    predict,
    strips_image,
)

__all__ = ["Explorer", "build_app", "launch"]

logger = logging.getLogger(__name__)

GALLERY_SIZE = 12
GALLERY_HEIGHT = 520  # pixels: 4 rows of 3 tiles with their captions, without a scroll bar
_EMPTY_IMAGE_VIEW = (None, None, None, None)  # full, decomposed, contributions, maps


class Explorer:
    """The explorer's state and handlers; every handler returns what its Gradio outputs show.

    Args:
        explored: the model and its decomposition (:func:`~hf_decomp.explore.source.open_explored`).
        cache_dir: where figures are drawn (default: a fresh temporary folder).
    """

    def __init__(self, explored: ExploredModel, cache_dir: str | Path | None = None):
        self.explored = explored
        self.cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="hf_decomp_explore_"))
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.eval_images = (DatasetImages(explored.dataset, explored.eval_split)
                            if explored.dataset and explored.eval_split else None)
        source = explored.examples.source if explored.examples is not None else {}
        self.stats_images = (DatasetImages(explored.dataset if source.get("dataset") is None else
                                           _local_or(source["dataset"], explored.dataset),
                                           source["split"], source.get("image_column"))
                             if source.get("split") else None)
        self._predict = lru_cache(maxsize=256)(self._predict_row)
        self.gallery_rows: list[int] = []

    # ---- Image tab --------------------------------------------------------------------------------
    def gallery(self) -> list[tuple[Image.Image, str]]:
        """The first images of the evaluation split, to pick from."""
        if self.eval_images is None:
            return []
        try:
            rows = self.eval_images.num_rows
            count = min(GALLERY_SIZE, rows)
            self.gallery_rows = [i * rows // count for i in range(count)]  # spread: splits are often sorted by label
            return [(image, self._label(label)) for i in self.gallery_rows  # the label only: it fits the tile
                    for image, label in [self.eval_images.row(i)]]
        except (DecompError, OSError) as e:  # the app still works on uploads
            logger.warning("no dataset images to pick from: %s", e)
            return []

    def _label(self, label: int | None) -> str:
        return "" if label is None or not 0 <= label < len(self.explored.label_names) else \
            self.explored.label_names[label]

    def _predict_row(self, index: int):
        image, label = self.eval_images.row(index)
        return image, label, self._image_outputs(image)

    def explore_row(self, index) -> tuple:
        """Image tab outputs for row ``index`` of the evaluation split."""
        if self.eval_images is None:
            return ("No dataset images are available for this model; upload an image instead.",
                    *_EMPTY_IMAGE_VIEW, None)
        try:
            index = int(index)
        except (TypeError, ValueError):
            return (f"Image number {index!r} is not a number.", *_EMPTY_IMAGE_VIEW, None)
        rows = self.eval_images.num_rows
        if not 0 <= index < rows:
            return (f"Image #{index} does not exist: the {self.eval_images.split_name} split has rows "
                    f"0..{rows - 1}.", *_EMPTY_IMAGE_VIEW, None)
        image, label, (message, *outputs) = self._predict(index)
        truth = f" True label: **{self._label(label)}**." if label is not None else ""
        return (f"Image #{index} of {self.eval_images.split_name}.{truth} " + message, *outputs, image)

    def explore_upload(self, path) -> tuple:
        """Image tab outputs for an uploaded file; a file that is not an image gives a message."""
        if not path:
            return ("Upload an image file (PNG, JPEG, ...).", *_EMPTY_IMAGE_VIEW, None)
        try:
            image = decode_image(str(path))
        except _DECODE_ERRORS as e:
            return (f"**{Path(str(path)).name} is not an image** ({type(e).__name__}); upload a PNG or JPEG "
                    f"file.", *_EMPTY_IMAGE_VIEW, None)
        message, *outputs = self._image_outputs(image)
        return (f"Uploaded {Path(str(path)).name}. " + message, *outputs, image)

    def _image_outputs(self, image: Image.Image) -> tuple:
        prediction = predict(self.explored, image)
        full = prediction["full_top"]
        agree = ""
        if full is not None:
            same = prediction["full_predicted_label"] == prediction["predicted_label"]
            agree = " (the full model agrees)" if same else f" (the full model says {prediction['full_predicted_label']})"
        message = f"Decomposed prediction: **{prediction['predicted_label']}**{agree}."
        maps = activation_figure(self.explored, image, prediction["predicted"], self.cache_dir)
        contributions = contribution_figure(self.explored, prediction, self.cache_dir)
        return message, full, prediction["decomposed_top"], str(contributions), None if maps is None else str(maps)

    # ---- Class tab --------------------------------------------------------------------------------
    def class_view(self, class_name: str, only_this_class: bool = True, progress=None) -> tuple:
        """(markdown, histogram png, png of the top images of each influential feature)."""
        names = self.explored.label_names
        if class_name not in names:
            return f"Unknown class {class_name!r}.", None, None
        c = names.index(class_name)
        histogram = histogram_figure(self.explored, c, self.cache_dir)
        return class_markdown(self.explored, c), None if histogram is None else str(histogram), \
            self._strips(c, only_this_class, progress)

    def _strips(self, c: int, only_this_class: bool, progress) -> str | None:
        """One image: a row per influential feature of its top activating images (the thumbnails analyze saved;
        for older results folders, the dataset's images found by content key)."""
        examples = self.explored.examples
        if examples is None:
            return None
        path = self.cache_dir / f"strips-{c}-{'class' if only_this_class else 'all'}.png"
        if path.is_file():
            return str(path)
        report = (lambda fraction, text: progress(fraction, desc=text)) if progress is not None else None
        strips = []
        for j in self.explored.index_sets[c]:
            found = []
            for entry in examples.query(j, c if only_this_class else None)[:SHOWN]:
                shown = self._top_image(entry["key"], report)
                if shown is not None:
                    found.append((shown[0], f"{self._label(shown[1])}\nx = {entry['activation']:.2f}"))
            strips.append((f"feature #{j}", found))
        if not any(images for _, images in strips):
            return None
        return str(strips_image(strips, path))

    def _top_image(self, key: int, report) -> tuple[Image.Image, int | None] | None:
        thumbnails = self.explored.thumbnails
        if thumbnails is not None and key in thumbnails:
            return thumbnails.image(key), thumbnails.label(key)
        return None if self.stats_images is None else self.stats_images.by_key(key, report)

    # ---- Model tab --------------------------------------------------------------------------------
    def model_view(self) -> tuple[str, list[tuple[str, str]]]:
        return model_summary(self.explored), [(str(p), p.stem) for p in self.explored.figures]


def _local_or(recorded: str, fallback: str | None) -> str:
    from .source import resolve_dataset

    resolved = resolve_dataset(recorded)
    return resolved if Path(resolved).exists() or fallback is None else fallback


def build_app(explorer: Explorer):
    """The Gradio Blocks app of ``explorer``."""
    import gradio as gr

    explored = explorer.explored
    views.import_pyplot()
    with gr.Blocks(title=f"hf-decomp explorer: {explored.name}") as app:
        gr.Markdown(f"## hf-decomp explorer — {explored.name}\nClass-specific features (Badola et al., "
                    f"*Decomposing the Deep*): each class c reads only its influential features I_c.")
        with gr.Tab("Image"):
            with gr.Row():
                with gr.Column(scale=1):
                    gallery = gr.Gallery(value=explorer.gallery(), label="dataset images (click one)", columns=3,
                                         height=GALLERY_HEIGHT, object_fit="contain", allow_preview=False,
                                         elem_id="image-gallery")
                    with gr.Row():
                        row = gr.Number(value=0, precision=0, label="or image number", elem_id="image-number")
                        show = gr.Button("Explore image", elem_id="explore-image")
                    upload = gr.File(label="or upload an image", type="filepath", elem_id="upload")
                    shown = gr.Image(label="image", type="pil", interactive=False, height=160, elem_id="shown-image")
                with gr.Column(scale=2):
                    message = gr.Markdown(elem_id="image-message")
                    with gr.Row():
                        # an exported model keeps only W_c[I_c]: no full-model prediction to show
                        full = gr.Label(num_top_classes=5, label="full model (top-5)", elem_id="full-top5",
                                        visible=explored.has_full_weight)
                        decomposed = gr.Label(num_top_classes=5, label="decomposed (top-5)", elem_id="decomposed-top5")
                    gr.Markdown("**Influential features of the decomposed prediction**: contributions W_cj · x_j")
                    contributions = gr.Image(show_label=False, interactive=False, elem_id="contributions", height=260)
                    gr.Markdown("**Activation maps** of the predicted class: all / non-influential / influential "
                                "channels")
                    maps = gr.Image(show_label=False, interactive=False, elem_id="activation-maps", height=260)
            outputs = [message, full, decomposed, contributions, maps, shown]
            show.click(explorer.explore_row, inputs=row, outputs=outputs, api_name="explore_row")
            upload.upload(explorer.explore_upload, inputs=upload, outputs=outputs, api_name="explore_upload")
            gallery.select(_gallery_handler(explorer), None, outputs, api_name=False)
        with gr.Tab("Class"):
            with gr.Row():
                chosen = gr.Dropdown(explored.label_names, value=explored.label_names[0], label="class",
                                     elem_id="class-choice")
                only = gr.Checkbox(value=True, label="top images among this class only")
                go = gr.Button("Show class", elem_id="show-class")
            class_text = gr.Markdown(elem_id="class-message")
            histogram = gr.Image(label="top-k1 vote histogram", interactive=False, elem_id="class-histogram",
                                 height=340)
            strips = gr.Image(label="top activating statistics images of each influential feature (activation x_j)",
                              interactive=False, elem_id="class-strips")

            def class_handler(name, only_this, progress=gr.Progress()):
                return explorer.class_view(name, only_this, progress)

            go.click(class_handler, inputs=[chosen, only], outputs=[class_text, histogram, strips],
                     api_name="class_view")
        with gr.Tab("Model"):
            summary, figures = explorer.model_view()
            gr.Markdown(summary, elem_id="model-summary")
            if figures:
                gr.Gallery(value=figures, label="figures of the run (sweep, overlap, histograms, ...)", columns=2)
            else:
                gr.Markdown("_No figures in this folder (run `hf-decomp report` to draw the k1 × k2 sweep and the "
                            "overlap)._")
    return app


def _gallery_handler(explorer: Explorer):
    import gradio as gr

    def handler(event):
        return explorer.explore_row(explorer.gallery_rows[event.index])

    handler.__annotations__ = {"event": gr.SelectData}  # a real class, not a string: Gradio reads it to pass the event
    return handler


def theme():
    """System fonts only: the default theme would fetch web fonts from the network."""
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "monospace"])


def launch(run_or_model: str, *, host: str = "127.0.0.1", port: int | None = None, share: bool = False,
           dataset: str | None = None, block: bool = True):
    """Open ``run_or_model`` and serve the explorer; returns the app (and, unblocked, keeps serving)."""
    explorer = Explorer(open_explored(run_or_model, dataset=dataset))
    app = build_app(explorer)
    app.queue().launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True,
                       theme=theme(), quiet=not block, allowed_paths=[str(explorer.cache_dir)] +
                       [str(p.parent) for p in explorer.explored.figures])
    # the figures' modules load while the page does, not at startup nor in the first view
    threading.Thread(target=views.warm_up, name="explorer-warm-up", daemon=True).start()
    if block:
        app.block_thread()
    return app
