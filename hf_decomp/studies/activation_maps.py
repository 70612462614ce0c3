"""Paper Table 7: class activation maps of all, non-influential and influential channels.

For an image and its class c, from the last convolutional maps A (d, h, w) before pooling:

- standard CAM: sum_j W_cj A_j over all d channels;
- influential: the same sum over the class's influential set I_c;
- non-influential: the same sum over as many channels outside I_c; by default those with the
  largest W_cj, i.e. the strongest of the rest, so the comparison is not won by picking useless
  channels (``non_influential="random"``: a seeded random draw instead).

Each map is min-max normalised, upsampled to the input size and overlaid on the image the model saw.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data import ImageSplit
from ..data.label_names import model_class_index
from ..data.labels import label_index, to_model_labels
from ..data.loader import decode_image
from ..models import ClassifierAdapter
from ..utils.errors import DecompValueError, UnsupportedHeadError
from ..utils.markdown import markdown_table
from .common import ModelFeatures, StudyResult
from .plotting import plt, save_figure

__all__ = ["weighted_channel_map", "class_activation_maps", "non_influential_channels", "normalize_map", "map_correlation",
           "candidate_layers", "feature_maps_function", "select_images", "activation_map_study"]

_STRATEGY_TEXT = {"top-weight": "largest W_cj outside the set", "random": "seeded random draw outside the set"}
COLUMNS = ("image", "standard CAM (all channels)", "non-influential channels", "influential channels")


def weighted_channel_map(maps: torch.Tensor, weight_row: torch.Tensor, channels) -> torch.Tensor:
    """sum_{j in channels} W_cj A_j for maps (d, h, w) and a weight row (d,) -> (h, w)."""
    channels = torch.as_tensor(list(channels), dtype=torch.long)
    return torch.einsum("j,jhw->hw", weight_row[channels].to(maps.dtype), maps[channels])


NON_INFLUENTIAL_STRATEGIES = ("top-weight", "random")


def non_influential_channels(weight_row: torch.Tensor, influential, count: int, strategy: str = "top-weight",
                             seed: int = 0) -> list[int]:
    """``count`` channels outside ``influential``: the largest weights for the class, or a seeded random draw."""
    if strategy not in NON_INFLUENTIAL_STRATEGIES:
        raise DecompValueError(f"non_influential={strategy!r} is not one of {', '.join(NON_INFLUENTIAL_STRATEGIES)}")
    excluded = set(int(i) for i in influential)
    if strategy == "random":
        order = torch.randperm(weight_row.numel(), generator=torch.Generator().manual_seed(seed)).tolist()
    else:
        order = torch.sort(weight_row.double(), descending=True, stable=True).indices.tolist()
    return [j for j in order if j not in excluded][:count]


def class_activation_maps(maps: torch.Tensor, weight: torch.Tensor, cls: int, influential,
                          non_influential: str = "top-weight", seed: int = 0) -> dict:
    """The three (h, w) maps of Table 7 for one image's maps (d, h, w) and class ``cls``."""
    row = weight[cls]
    others = non_influential_channels(row.cpu(), influential, len(influential), non_influential, seed + cls)
    return {
        "standard": weighted_channel_map(maps, row, range(maps.shape[0])),
        "non_influential": weighted_channel_map(maps, row, others),
        "influential": weighted_channel_map(maps, row, influential),
        "non_influential_channels": others,
    }


def map_correlation(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson correlation of two maps over pixels (None when one is constant)."""
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    denominator = float(a.norm() * b.norm())
    return float(a @ b) / denominator if denominator > 0 else None


def normalize_map(cam: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Min-max to [0, 1] (a constant map becomes zeros), then bilinear upsampling to ``size``."""
    cam = cam.double()
    low, high = cam.min(), cam.max()
    cam = (cam - low) / (high - low) if float(high - low) > 0 else torch.zeros_like(cam)
    if size is not None and tuple(cam.shape) != tuple(size):
        cam = F.interpolate(cam[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
    return cam.clamp(0, 1)


def _probe_shapes(adapter: ClassifierAdapter) -> dict[str, tuple]:
    shapes, handles = {}, []
    for name, module in adapter.model.named_modules():
        if not name:
            continue

        def hook(module, args, output, name=name):
            if isinstance(output, torch.Tensor):
                shapes[name] = tuple(output.shape)

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            adapter.model(torch.zeros(1, *adapter.input_size, device=adapter.weight.device))
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def candidate_layers(adapter: ClassifierAdapter, limit: int = 8) -> list[str]:
    """Names of modules whose output is 4-D with d channels (usable for class activation maps), last ones."""
    shapes = _probe_shapes(adapter)
    usable = [name for name, shape in shapes.items() if len(shape) == 4 and shape[1] == adapter.num_features]
    return usable[-limit:]


def feature_maps_function(adapter: ClassifierAdapter, layer: str | None = None):
    """pixel values -> (B, d, h, w) maps: the adapter's last maps, or the output of module ``layer``."""
    if layer is None:
        if adapter.has_feature_maps:
            return adapter.forward_feature_maps
        candidates = candidate_layers(adapter)
        hint = f" Layers with {adapter.num_features}-channel 4-D outputs: {candidates}; pass one with --layer." \
            if candidates else " It has no layer with 4-D outputs of the classifier's width either."
        raise UnsupportedHeadError(
            f"Activation maps do not apply to {adapter.name}: it has no convolutional feature maps whose "
            f"average is the classifier's input (not a CNN, or layers sit between maps and pooling).{hint}"
        )
    try:
        module = adapter.model.get_submodule(layer)
    except AttributeError:
        raise DecompValueError(
            f"Layer {layer!r} does not exist in {adapter.name}. Layers with {adapter.num_features}-channel "
            f"4-D outputs (usable here): {candidate_layers(adapter)}."
        ) from None
    shape = _probe_shapes(adapter).get(layer)
    if shape is None or len(shape) != 4 or shape[1] != adapter.num_features:
        raise DecompValueError(
            f"Layer {layer!r} of {adapter.name} outputs {shape}, not (B, {adapter.num_features}, h, w) maps the "
            f"classifier's weights apply to. Usable layers: {candidate_layers(adapter)}."
        )

    def maps_fn(pixel_values: torch.Tensor) -> torch.Tensor:
        captured = []
        handle = module.register_forward_hook(lambda m, a, out: captured.append(out))
        try:
            adapter.model(pixel_values)
        finally:
            handle.remove()
        if not captured:
            raise DecompValueError(f"layer {layer!r} did not run in the forward pass of {adapter.name}")
        return captured[-1]

    return maps_fn


def select_images(split: ImageSplit, label_names: list[str], classes=None, num_images: int | None = None,
                  seed: int = 0) -> list[tuple[Image.Image, int | None]]:
    """(PIL image, label) pairs: the first image of each requested class, or ``num_images`` seeded-random rows.

    Labels are read in the model's class order when ``split.label_order`` says how (see
    :func:`~hf_decomp.data.labels.align_labels`).

    Args:
        classes: class names (of the model) or indices; one image of each, in that order.
        num_images: when no classes are given, how many rows to take.
    """
    if split.streaming:
        raise DecompValueError("activation maps read images by row; load the dataset without streaming")
    rows = split.num_rows
    dataset = split.dataset
    if classes:
        if split.label_column is None:
            raise DecompValueError("choosing images by class needs a labelled dataset (pass --label-column)")
        wanted = [model_class_index(c, label_names) for c in classes]
        labels = dataset.select_columns([split.label_column]).to_dict()[split.label_column]  # one read, not row by row
        labels = to_model_labels(torch.tensor([label_index(v) for v in labels], dtype=torch.long), split).tolist()
        picked = []
        for c in wanted:
            if c not in labels:
                raise DecompValueError(f"the dataset has no image of class {label_names[c]!r} ({c})")
            picked.append(labels.index(c))
    else:
        count = 4 if num_images is None else num_images
        if count < 1:
            raise DecompValueError(f"num_images={count} must be at least 1")
        if count > rows:
            raise DecompValueError(f"{count} images requested but {split.name} [{split.split}] has only {rows}; "
                                   f"ask for at most {rows}.")
        picked = torch.randperm(rows, generator=torch.Generator().manual_seed(seed))[:count].tolist()
    out = []
    for index in picked:
        row = dataset[index]
        label = None
        if split.label_column:
            label = int(to_model_labels(torch.tensor([label_index(row[split.label_column])]), split)[0])
        out.append((decode_image(row[split.image_column]), label))
    return out


def _display_image(adapter: ClassifierAdapter, image: Image.Image, pixel_values: torch.Tensor) -> np.ndarray:
    """The resized/cropped image the model saw, in [0, 1] (the transform without its normalisation)."""
    steps = getattr(adapter.transform, "transforms", None)
    if steps:
        from torchvision.transforms import Compose, Normalize

        shown = Compose([t for t in steps if not isinstance(t, Normalize)])(image)
        if isinstance(shown, torch.Tensor) and shown.shape[-2:] == pixel_values.shape[-2:]:
            return shown.permute(1, 2, 0).clamp(0, 1).numpy()
    x = pixel_values.double()
    return ((x - x.min()) / (x.max() - x.min()).clamp(min=1e-12)).permute(1, 2, 0).numpy()


@torch.no_grad()
def compute_activation_rows(adapter: ClassifierAdapter, images, index_sets, layer: str | None = None,
                            non_influential: str = "top-weight", seed: int = 0) -> list[dict]:
    """Per image: display image, predicted class, target class and the three normalised, upsampled maps."""
    maps_fn = feature_maps_function(adapter, layer)
    device = adapter.weight.device
    weight = adapter.weight.detach().float()
    pixels = [adapter.transform(image) for image, _ in images]
    batch = torch.stack(pixels).to(device)  # one forward for all images: grids are small
    all_maps = maps_fn(batch).float()
    all_probabilities = adapter(batch).softmax(-1)
    rows = []
    for (image, label), pixel_values, maps, probabilities in zip(images, pixels, all_maps, all_probabilities):
        predicted = int(probabilities.argmax())
        target = predicted if label is None or label < 0 else label
        if target >= len(index_sets):
            raise DecompValueError(f"image label {target} is outside the model's {len(index_sets)} classes; use a "
                                   f"dataset labelled for this model")
        cams = class_activation_maps(maps, weight, target, index_sets[target], non_influential, seed)
        size = tuple(pixel_values.shape[-2:])
        rows.append({
            "display": _display_image(adapter, image, pixel_values),
            "label": label, "target": target, "predicted": predicted,
            "probability": float(probabilities[predicted]),
            "maps": {k: normalize_map(cams[k].cpu(), size).numpy() for k in ("standard", "non_influential", "influential")},
            "influential_channels": list(index_sets[target]),
            "non_influential_channels": cams["non_influential_channels"],
            # how much each partial map looks like the standard CAM (before normalisation)
            "correlation_influential": map_correlation(cams["standard"], cams["influential"]),
            "correlation_non_influential": map_correlation(cams["standard"], cams["non_influential"]),
        })
    return rows


def plot_activation_grid(rows: list[dict], label_names, path, title: str, cell: float = 1.8) -> Path:
    """Rows = images; columns = image / standard / non-influential / influential overlays (jet, alpha 0.5)."""
    fig, axes = plt.subplots(len(rows), 4, figsize=(4 * cell, len(rows) * cell + 0.6), squeeze=False)
    for r, row in enumerate(rows):
        panels = [None, row["maps"]["standard"], row["maps"]["non_influential"], row["maps"]["influential"]]
        for column, (ax, cam) in enumerate(zip(axes[r], panels)):
            ax.imshow(row["display"], interpolation="bilinear")
            if cam is not None:
                ax.imshow(cam, cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(COLUMNS[column], fontsize=8)
        name = label_names[row["target"]]
        status = "" if row["predicted"] == row["target"] else f"\npred: {label_names[row['predicted']]}"
        axes[r, 0].set_ylabel(f"{name}{status}", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / fig.get_figheight()))
    return save_figure(fig, path, palette=True)


def activation_map_study(adapter: ClassifierAdapter, split: ImageSplit, index_sets, out_dir, *,
                         selection: str, classes=None, num_images: int | None = None, layer: str | None = None,
                         filename: str = "activation_maps.png", seed: int = 0,
                         non_influential: str = "top-weight") -> StudyResult:
    """Table 7 grid for chosen images of ``split`` with the given index sets.

    Args:
        selection: how ``index_sets`` were chosen, written into the figure title and the report.
        classes / num_images: which images (see :func:`select_images`).
        layer: a module whose (B, d, h, w) output to use instead of the model's last maps.
        non_influential: ``top-weight`` (largest W_cj outside the set) or ``random`` channels for column 3.
    """
    non_influential_channels(adapter.weight[0].detach().cpu(), [], 1, non_influential)  # validate the strategy
    feature_maps_function(adapter, layer)  # a bad layer or a model without maps fails before images are read
    images = select_images(split, adapter.label_names, classes, num_images, seed)
    rows = compute_activation_rows(adapter, images, index_sets, layer, non_influential, seed)
    k = max(len(s) for s in index_sets)
    title = f"{adapter.name}: class activation maps, k = {k} channels per class\nselection: {selection}"
    figure = plot_activation_grid(rows, adapter.label_names, Path(out_dir) / filename, title)
    table = markdown_table(
        ["image class", "predicted (p)", "influential channels", "non-influential channels shown",
         "corr. with CAM: influential", "non-influential"],
        [[adapter.label_names[r["target"]], f"{adapter.label_names[r['predicted']]} ({r['probability']:.2f})",
          " ".join(map(str, r["influential_channels"])), " ".join(map(str, r["non_influential_channels"])),
          r["correlation_influential"], r["correlation_non_influential"]] for r in rows])
    mean_inf = _mean([r["correlation_influential"] for r in rows])
    mean_non = _mean([r["correlation_non_influential"] for r in rows])
    markdown = (
        f"Columns: the image as the model sees it; the standard CAM sum_j W_cj A_j over all "
        f"{adapter.num_features} channels of {'layer ' + repr(layer) if layer else 'the last convolutional maps'}; "
        f"the same sum over {k} non-influential channels ({_STRATEGY_TEXT[non_influential]}); over the class's {k} "
        f"influential channels. Each map min-max normalised and upsampled. Class = the image's label. "
        f"Selection: {selection}.\n\n![activation maps]({filename})\n\nPearson correlation (over the h x w map, "
        f"before normalisation) of each partial map with the standard CAM, mean over the images: influential "
        f"{_fmt(mean_inf)}, non-influential {_fmt(mean_non)}.\n\n" + table
    )
    data = {"selection": selection, "k": k, "layer": layer, "non_influential": non_influential,
            "mean_correlation_influential": mean_inf, "mean_correlation_non_influential": mean_non, "images": [
        {"class": adapter.label_names[r["target"]], "predicted": adapter.label_names[r["predicted"]],
         "probability": r["probability"], "influential_channels": r["influential_channels"],
         "non_influential_channels": r["non_influential_channels"],
         "correlation_influential": r["correlation_influential"],
         "correlation_non_influential": r["correlation_non_influential"]} for r in rows]}
    return StudyResult(Path(filename).stem, f"Activation maps (Table 7): {adapter.name}", markdown, data, [figure])


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def label_free_features(adapter: ClassifierAdapter, dataset: str | None, split: str | None = None, *,
                        limit: int | None = None, seed: int = 0, batch_size: int = 256,
                        num_workers: int | None = None) -> ModelFeatures:
    """ModelFeatures whose 'train' features are the (unlabelled) images of ``split`` itself: the feature
    mean of the label-free ranking comes from the images shown, no labels are read for the selection."""
    from ..data import default_eval_split, load_image_split
    from ..passes.feature_cache import cached_features

    images = load_image_split(dataset, split or default_eval_split(dataset), limit=limit, require_labels=False,
                              seed=seed)
    features, labels = cached_features(adapter, images, batch_size=batch_size, num_workers=num_workers)
    return ModelFeatures(adapter.name, adapter.weight.detach().float().cpu(), adapter.bias.detach().float().cpu(),
                         adapter.label_names, features, labels, features[:0], labels[:0], adapter=adapter)
