"""The explorer of an exported decomposed model, in one file that needs no hf-decomp.

``hf-decomp export --space`` copies this file beside the Space's ``app.py`` (as exported models ship
``portable/``), so a Space installs from PyPI alone: it imports only gradio, torch, transformers (the
model loads with ``trust_remote_code=True`` from its own folder), huggingface_hub, safetensors, numpy
and PIL. hf-decomp's own explorer (``hf_decomp.explore.app``) reuses its drawing helpers.

Tabs: **Image** (pick a top image or upload one: the decomposed top-5 and the contributions
W_cj · x_j of the predicted class's influential features), **Class** (the influential set, which
classes share each feature, each feature's top training images when the model folder carries
them), **Model** (accuracies and rho).
"""

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

__all__ = ["SpaceExplorer", "build_app", "launch", "shared_features", "strips_image", "TOP_IMAGES_FILE",
           "THUMBNAILS_FILE"]

TOP = 5
SHOWN = 8  # top images per feature in the Class view
STRIP_CELL = 80  # pixels per thumbnail in the strips (32 px images are enlarged, nearest neighbour)
TOP_IMAGES_FILE = "top_images.safetensors"  # hf_decomp.analysis.top_images
THUMBNAILS_FILE = "top_images_thumbnails.safetensors"  # hf_decomp.analysis.thumbnails
EMPTY_KEY = np.iinfo(np.int64).max  # an empty top-image slot


def shared_features(index_sets: list[list[int]], c: int) -> dict[int, list[int]]:
    """For each feature j of I_c, the other classes whose set also holds j."""
    return {j: [o for o in range(len(index_sets)) if o != c and j in index_sets[o]] for j in index_sets[c]}


def strips_image(strips: list[tuple[str, list[tuple[Image.Image, str]]]], path: str | Path) -> Path:
    """One row per feature (its name on the left) of thumbnails, each with a caption of up to two lines
    under it (cut to the cell's width). Drawn with PIL: milliseconds, where a matplotlib grid takes a second."""
    font = ImageFont.load_default(size=12)
    label_width, caption, gap = 84, 32, 8
    columns = max(1, max(len(images) for _, images in strips))
    canvas = Image.new("RGB", (label_width + columns * (STRIP_CELL + gap),
                               len(strips) * (STRIP_CELL + caption + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for row, (title, images) in enumerate(strips):
        top = gap + row * (STRIP_CELL + caption + gap)
        draw.text((6, top + STRIP_CELL // 2 - 7), title, fill="black", font=font)
        for column, (image, text) in enumerate(images):
            left = label_width + column * (STRIP_CELL + gap)
            thumb = image.convert("RGB")
            resample = Image.Resampling.NEAREST if max(thumb.size) < STRIP_CELL else Image.Resampling.BILINEAR
            canvas.paste(thumb.resize((STRIP_CELL, STRIP_CELL), resample), (left, top))
            for line, words in enumerate(text.split("\n")[:2]):
                while len(words) > 1 and font.getlength(words) > STRIP_CELL + gap:
                    words = words[:-2] + "…"
                draw.text((left + STRIP_CELL // 2, top + STRIP_CELL + 2 + 14 * line), words, fill="black",
                          font=font, anchor="ma")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _model_folder(model: str) -> Path:
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model))


class SpaceExplorer:
    """An exported decomposed model (a folder or its Hub id) and the explorer's handlers.

    Args:
        model: the model folder written by ``hf-decomp export``, or its Hub id (``user/name``).
        cache_dir: where the strips are drawn (default: a fresh temporary folder).
    """

    def __init__(self, model: str, cache_dir: str | Path | None = None):
        import tempfile

        from transformers import AutoImageProcessor, AutoModelForImageClassification

        self.name = model
        self.folder = _model_folder(model)
        config = json.loads((self.folder / "config.json").read_text())
        if config.get("model_type") != "decomp":
            raise ValueError(f"{model!r} is not a decomposed model (config.json model_type is "
                             f"{config.get('model_type')!r}, not 'decomp'); export one with `hf-decomp export`.")
        self.model = AutoModelForImageClassification.from_pretrained(str(self.folder), trust_remote_code=True).eval()
        self.processor = AutoImageProcessor.from_pretrained(str(self.folder))
        self.label_names = [self.model.config.id2label[c] for c in range(self.model.config.num_labels)]
        self.index_sets = [list(map(int, s)) for s in self.model.config.index_sets]
        self.metrics = dict(self.model.config.metrics or {})
        self.cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="decomp_space_"))
        self.top, self.thumbnails = self._top_images()

    # ---- top images (optional: copied from the analyze results by `hf-decomp export`) ------------------------
    def _top_images(self):
        from safetensors.numpy import load_file

        if not ((self.folder / TOP_IMAGES_FILE).is_file() and (self.folder / THUMBNAILS_FILE).is_file()):
            return None, {}
        top, thumbs = load_file(self.folder / TOP_IMAGES_FILE), load_file(self.folder / THUMBNAILS_FILE)
        thumbnails = {int(k): (Image.fromarray(pixels), None if label < 0 else int(label))
                      for k, pixels, label in zip(thumbs["keys"], thumbs["pixels"], thumbs["labels"])}
        return top, thumbnails

    def top_images(self, j: int, c: int | None) -> list[tuple[Image.Image, int | None, float]]:
        """Feature j's most activating training images (of class c), as stored thumbnails."""
        if self.top is None:
            return []
        if c is None or len(self.top["class_keys"]) == 0:
            keys, values = self.top["keys"][j], self.top["values"][j]
        else:
            keys, values = self.top["class_keys"][c, j], self.top["class_values"][c, j]
        return [(*self.thumbnails[int(k)], float(v)) for k, v in zip(keys, values)
                if k != EMPTY_KEY and int(k) in self.thumbnails][:SHOWN]

    def examples(self) -> list[tuple[Image.Image, str]]:
        """Images to pick from in the Image tab: the stored top images (the model's training images)."""
        seen, picked = set(), []
        for c, features in enumerate(self.index_sets):
            for image, label, _ in self.top_images(features[0], c)[:1] if features else []:
                if id(image) not in seen:
                    seen.add(id(image))
                    picked.append((image, self.label_names[label] if label is not None else ""))
        return picked

    # ---- Image tab ------------------------------------------------------------------------------------
    def predict(self, image: Image.Image) -> dict:
        """Decomposed top-5 {label: probability}, the prediction, and W_cj x_j over its influential set."""
        import torch

        pixels = self.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            output = self.model(pixel_values=pixels, output_contributions=True)
        probabilities = output.logits[0].float().softmax(-1)
        predicted = int(probabilities.argmax())
        values, indices = probabilities.topk(min(TOP, probabilities.numel()))
        per_slot = output.contributions[0, predicted].tolist()
        contributions = sorted(zip(self.index_sets[predicted], per_slot), key=lambda item: -abs(item[1]))
        return {"top": {self.label_names[int(i)]: float(v) for v, i in zip(values, indices)},
                "predicted": predicted, "predicted_label": self.label_names[predicted],
                "contributions": contributions}

    def explore_image(self, image) -> tuple[str, dict | None, str]:
        """(message, top-5, contributions table) of an image (a PIL image or a file path)."""
        if image is None:
            return "Pick an image or upload one (PNG, JPEG, ...).", None, ""
        try:
            image = image if isinstance(image, Image.Image) else Image.open(image)
            image.load()
        except (OSError, ValueError) as e:
            return f"**Not an image** ({type(e).__name__}); upload a PNG or JPEG file.", None, ""
        prediction = self.predict(image)
        c = prediction["predicted"]
        shared = shared_features(self.index_sets, c)
        rows = "\n".join(f"| #{j} | {value:+.3f} | {', '.join(self.label_names[o] for o in shared[j]) or '–'} |"
                         for j, value in prediction["contributions"])
        table = ("| feature j | W_cj · x_j | also influential for |\n| --- | --- | --- |\n" + rows)
        return f"Decomposed prediction: **{prediction['predicted_label']}**.", prediction["top"], table

    # ---- Class tab ------------------------------------------------------------------------------------
    def class_view(self, class_name: str, only_this_class: bool = True) -> tuple[str, str | None]:
        if class_name not in self.label_names:
            return f"Unknown class {class_name!r}.", None
        c = self.label_names.index(class_name)
        shared = shared_features(self.index_sets, c)
        lines = [f"### {class_name}", f"Influential set I_c ({len(self.index_sets[c])} of "
                 f"{self.model.config.num_features} features): **{' '.join(map(str, self.index_sets[c]))}**", "",
                 "| feature | also influential for |", "| --- | --- |"]
        lines += [f"| #{j} | {', '.join(self.label_names[o] for o in others) or '– (only this class)'} |"
                  for j, others in shared.items()]
        strips = [(f"feature #{j}", [(image, f"{self.label_names[label] if label is not None else ''}\nx = {x:.2f}")
                                     for image, label, x in self.top_images(j, c if only_this_class else None)])
                  for j in self.index_sets[c]]
        if not any(images for _, images in strips):
            return "\n".join(lines), None
        path = self.cache_dir / f"strips-{c}-{'class' if only_this_class else 'all'}.png"
        return "\n".join(lines), str(path if path.is_file() else strips_image(strips, path))

    # ---- Model tab ------------------------------------------------------------------------------------
    def model_view(self) -> str:
        m = self.metrics
        facts = [("decomposed accuracy", m.get("decomposed_accuracy"), " %"),
                 ("accuracy of the base model (full final layer)", m.get("full_accuracy"), " %"),
                 ("rho = decomposed / full", m.get("rho"), "")]
        sizes = [len(s) for s in self.index_sets]
        lines = [f"### {self.name}"] + [f"- {name}: **{value:.4g}**{unit}" for name, value, unit in facts
                                        if isinstance(value, (int, float))]
        lines.append(f"- {len(sizes)} classes, d = {self.model.config.num_features} features, mean |I_c| = "
                     f"{sum(sizes) / len(sizes):.1f}; only W_c[I_c] is stored, so each class reads only its set")
        return "\n".join(lines)


def build_app(explorer: SpaceExplorer):
    import gradio as gr

    examples = explorer.examples()
    with gr.Blocks(title=f"decomposed classifier explorer: {explorer.name}") as app:
        gr.Markdown(f"## Decomposed classifier — {explorer.name}\nClass-specific features (Badola et al., "
                    f"*Decomposing the Deep*): each class c reads only its influential features I_c.")
        with gr.Tab("Image"):
            with gr.Row():
                with gr.Column(scale=1):
                    gallery = gr.Gallery(value=examples, label="training images (click one)", columns=3,
                                         height="auto", object_fit="contain", allow_preview=False,
                                         elem_id="space-examples", visible=bool(examples))
                    upload = gr.Image(type="pil", label="or upload an image", sources=["upload"],
                                      elem_id="space-upload")
                with gr.Column(scale=2):
                    message = gr.Markdown(elem_id="space-message")
                    top = gr.Label(num_top_classes=TOP, label="decomposed (top-5)", elem_id="space-top5")
                    table = gr.Markdown(elem_id="space-contributions")
            upload.upload(explorer.explore_image, inputs=upload, outputs=[message, top, table],
                          api_name="explore_image")

            def picked(event: gr.SelectData):
                return explorer.explore_image(examples[event.index][0])

            gallery.select(picked, None, [message, top, table], api_name=False)
        with gr.Tab("Class"):
            with gr.Row():
                chosen = gr.Dropdown(explorer.label_names, value=explorer.label_names[0], label="class",
                                     elem_id="space-class")
                only = gr.Checkbox(value=True, label="top images among this class only")
                go = gr.Button("Show class", elem_id="space-show-class")
            class_text = gr.Markdown(elem_id="space-class-message")
            strips = gr.Image(label="top activating training images of each influential feature (activation x_j)",
                              interactive=False, elem_id="space-strips", visible=explorer.top is not None)
            go.click(explorer.class_view, inputs=[chosen, only], outputs=[class_text, strips], api_name="class_view")
        with gr.Tab("Model"):
            gr.Markdown(explorer.model_view(), elem_id="space-model")
    return app


def launch(model: str, *, host: str = "0.0.0.0", port: int | None = 7860, block: bool = True):
    """Open ``model`` (folder or Hub id) and serve its explorer."""
    explorer = SpaceExplorer(model)
    app = build_app(explorer)
    app.queue().launch(server_name=host, server_port=port, prevent_thread_lock=not block,
                       allowed_paths=[str(explorer.cache_dir)])
    return app
