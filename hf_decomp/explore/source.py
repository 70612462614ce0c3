"""What the explorer looks at: an analyze results folder, an exported decomposed model folder, or its Hub id.

Everything becomes one :class:`ExploredModel`: a classifier adapter (backbone + final linear layer),
the per-class influential sets, the decomposed head, the run's metrics and, for results folders, the
statistics and the top images of each feature.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError

from ..analysis.folder import ResultsFolder, is_results_folder
from ..analysis.thumbnails import THUMBNAILS_FILE, Thumbnails
from ..analysis.top_images import TOP_IMAGES_FILE, TopImages
from ..method.statistics import ClassStatistics
from ..models import ClassifierAdapter, load_classifier
from ..portable.decomposed_head import DecomposedLinear
from ..utils.errors import DecompError, DecompFileError, DecompValueError
from ..utils.files import finish_replace_before_reading
from ..utils.paths import CIFAR10_HUB_NAME, default_cifar10_dataset

__all__ = ["ExploredModel", "open_explored", "resolve_dataset"]


@dataclass
class ExploredModel:
    """A model and its decomposition, ready to be shown.

    ``adapter``'s linear layer holds the full weight W when ``has_full_weight``; an exported model keeps
    only W_c[I_c], so there the adapter's layer is the decomposed one and full predictions are unknown.
    """

    name: str
    adapter: ClassifierAdapter
    index_sets: list[list[int]]
    head: DecomposedLinear
    has_full_weight: bool
    metrics: dict
    dataset: str | None
    eval_split: str | None
    statistics: ClassStatistics | None = None
    examples: TopImages | None = None
    figures: list[Path] = field(default_factory=list)
    k1: int | None = None
    thumbnails: Thumbnails | None = None  # the Class view's top images, saved by analyze (no dataset read)

    @property
    def label_names(self) -> list[str]:
        return self.adapter.label_names


def resolve_dataset(name: str | None) -> str:
    """The dataset to read images from: the bundled CIFAR-10 stands in for its Hub name (no network)."""
    if name is None or name == CIFAR10_HUB_NAME or name.rstrip("/").endswith("cifar10"):
        return default_cifar10_dataset() if name is None or not Path(name).is_dir() else name
    return name


def _figures(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png")) + sorted(folder.glob("figures/*.png"))


def _from_results(folder: Path, dataset: str | None) -> ExploredModel:
    run = ResultsFolder.load(folder)
    model_name = run.indices.metadata.get("base_model") or run.metrics.model.name
    if _is_exported(Path(str(model_name)).expanduser()):
        raise DecompValueError(
            f"{folder / 'indices.json'} names base_model {model_name!r}, an exported decomposed model (it keeps only "
            f"W_c[I_c], not the full final layer a results folder is explored with); explore that folder itself "
            f"(`hf-decomp explore {model_name}`), or set base_model to the model the analysis ran on.")
    adapter = load_classifier(model_name)
    sets = run.indices.sets
    if adapter.num_features != run.indices.num_features or adapter.num_classes != run.indices.num_classes:
        raise DecompValueError(f"{folder}: its indices are for d={run.indices.num_features}, "
                               f"{run.indices.num_classes} classes, but {model_name!r} has d={adapter.num_features}, "
                               f"{adapter.num_classes} classes.")
    head = DecomposedLinear(adapter.weight.detach().float(), adapter.bias.detach().float(), sets)
    evaluation = run.metrics.data.get("evaluation", {})
    return ExploredModel(
        name=model_name, adapter=adapter, index_sets=sets, head=head, has_full_weight=True,
        metrics=run.metrics.to_dict(),  # the same plain form an exported model's config metrics have
        dataset=resolve_dataset(dataset or evaluation.get("dataset")), eval_split=evaluation.get("split"),
        statistics=run.statistics, examples=run.examples, figures=_figures(folder), k1=run.indices.metadata.get("k1"),
        thumbnails=_thumbnails(folder))


def _thumbnails(folder: Path) -> Thumbnails | None:
    path = folder / THUMBNAILS_FILE
    if not path.is_file():
        return None  # an older analyze: the Class view reads the images from the dataset
    try:
        return Thumbnails.load(folder)
    except DecompError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise DecompFileError(f"{path} is damaged ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                              f"delete it: the explorer then reads the top images from the dataset.") from e


def _adapter_of_exported(model) -> ClassifierAdapter:
    """The exported backbone with a linear layer holding the decomposed weights (zero outside each I_c)."""
    from ..models.loading import adapt_timm_model, adapt_transformers_model

    config, backbone = model.config, model.backbone
    linear = nn.Linear(config.num_features, config.num_labels)
    with torch.no_grad():
        linear.weight.copy_(model.head.dense_weight())
        linear.bias.copy_(model.head.bias)
    if config.backbone_library == "timm":
        backbone.reset_classifier(config.num_labels)
        backbone.get_classifier().load_state_dict(linear.state_dict())
        return adapt_timm_model(backbone, name=config.base_model or config.architecture)

    parent_name, _, child_name = config.backbone_head_path.rpartition(".")
    setattr(backbone.get_submodule(parent_name) if parent_name else backbone, child_name, linear)
    processor_config = dict(config.backbone_processor_config or {})
    processor_type = processor_config.pop("image_processor_type", None)
    from transformers.models.auto.image_processing_auto import get_image_processor_class_from_name

    processor = get_image_processor_class_from_name(processor_type or "ViTImageProcessor")(**processor_config)
    return adapt_transformers_model(backbone, name=config.base_model, processor=processor)


def _from_exported(folder: Path, name: str, dataset: str | None) -> ExploredModel:
    from ..hub import DecomposedForImageClassification

    try:
        model = DecomposedForImageClassification.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise DecompValueError(f"{name!r} looks like an exported decomposed model but does not load: {e}") from e
    adapter = _adapter_of_exported(model)
    sets = model.head.index_sets()
    head = DecomposedLinear(adapter.weight.detach().float(), adapter.bias.detach().float(), sets)
    metrics = {**(model.config.metrics or {}), "model": {"name": name, "num_features": model.config.num_features,
                                                           "num_classes": model.config.num_labels}}
    return ExploredModel(
        name=name, adapter=adapter, index_sets=sets, head=head, has_full_weight=False, metrics=metrics,
        dataset=resolve_dataset(dataset or model.config.dataset), eval_split=metrics.get("eval_split"),
        figures=_figures(folder), k1=model.config.k1, **_carried_top_images(folder))


def _carried_top_images(folder: Path) -> dict:
    """The top images and their thumbnails an exported model carries (``hf-decomp export`` copies them)."""
    if not ((folder / TOP_IMAGES_FILE).is_file() and (folder / THUMBNAILS_FILE).is_file()):
        return {}
    try:
        examples = TopImages.load(folder)
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise DecompFileError(f"{folder / TOP_IMAGES_FILE} is damaged ({type(e).__name__}: {e}); delete it and "
                              f"{THUMBNAILS_FILE} to explore the model without top images.") from e
    return {"examples": examples, "thumbnails": _thumbnails(folder)}


def _is_exported(folder: Path) -> bool:
    config = folder / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "decomp"
    except ValueError:
        return False


def open_explored(run_or_model: str, dataset: str | None = None) -> ExploredModel:
    """Open an analyze results folder, an exported decomposed model folder, or a Hub id of the latter.

    Args:
        run_or_model: the folder or ``user/name`` Hub id.
        dataset: where to read images from (default: the one the run or model records).
    """
    folder = Path(run_or_model).expanduser()
    finish_replace_before_reading(folder)  # a folder a killed writer left mid-replace: finish it first
    if folder.is_dir():
        if is_results_folder(folder):
            return _from_results(folder, dataset)
        if _is_exported(folder):
            return _from_exported(folder, str(run_or_model), dataset)
        raise DecompFileError(
            f"{str(run_or_model)!r} is neither an `hf-decomp analyze` results folder (indices.json + metrics.json) "
            f"nor a decomposed model folder (`hf-decomp export`, config.json with model_type 'decomp'); give one "
            f"of those.")
    if folder.exists() or run_or_model.startswith((".", "/", "~")) or run_or_model.count("/") != 1:
        raise DecompFileError(f"{str(run_or_model)!r} is not a folder nor a Hub id (user/name); give an analyze "
                              f"results folder, an exported model folder, or the Hub id of one.")
    from huggingface_hub import snapshot_download

    try:
        local = Path(snapshot_download(run_or_model))
    except Exception as e:  # noqa: BLE001 - huggingface_hub raises many types for missing repos / no network
        raise DecompFileError(f"Could not download {run_or_model!r} from the Hub ({type(e).__name__}: {e}); "
                              f"check the id and the network, or give a local folder.") from e
    if not _is_exported(local):
        raise DecompFileError(f"Hub repo {run_or_model!r} is not a decomposed model (config.json model_type "
                              f"'decomp'); push one with `hf-decomp export` + `hf-decomp push`.")
    return _from_exported(local, run_or_model, dataset)
