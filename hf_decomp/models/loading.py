"""Load an image classifier by name and wrap it in a :class:`ClassifierAdapter`.

Accepted forms of ``name``:

- ``timm:<arch>[.<tag>]`` or a bare timm registry name (``resnet50.a1_in1k``, ``cifar10_resnet20``)
- ``hf-hub:<org>/<repo>`` or ``local-dir:<path>``: timm models on the Hub or in a folder
- ``transformers:<org>/<repo>`` or a bare ``<org>/<repo>``: ``AutoModelForImageClassification``
- a local directory saved by timm (``config.json`` with ``architecture``) or by transformers
  (``config.json`` with ``model_type``)
"""

from __future__ import annotations

import collections
import difflib
import json
import pickle
import re
from pathlib import Path

import timm
import torch
import torch.nn as nn
from PIL import Image

from ..utils.errors import DecompFileError, DecompValueError
from . import cifar_resnet  # noqa: F401  (registers cifar10_resnet* in timm)
from .adapter import ClassifierAdapter, capture_head_inputs, concatenated_linear_head, split_linear_head

__all__ = ["load_classifier", "adapt_timm_model", "adapt_transformers_model", "ACCEPTED_MODEL_FORMS"]

ACCEPTED_MODEL_FORMS = (
    "'timm:<arch>[.<tag>]' or a bare timm name (e.g. 'cifar10_resnet20', 'resnet50.a1_in1k'); "
    "'hf-hub:<org>/<repo>' or 'local-dir:<path>' (timm); "
    "'transformers:<org>/<repo>' or '<org>/<repo>' (AutoModelForImageClassification); "
    "or a local directory saved by timm or transformers"
)
_TERMINAL_STYLE = re.compile(r"\x1b\[[0-9;]*m")  # torch's bold text in its weights_only message
_CHECKPOINT_SUFFIXES = (".safetensors", ".pth", ".pt", ".th", ".bin", ".ckpt")


def load_classifier(
    name: str,
    *,
    checkpoint: str | Path | None = None,
    pretrained: bool = True,
    device: str | torch.device | None = None,
) -> ClassifierAdapter:
    """Load an image classifier by name (see module docstring for the forms).

    Args:
        name: model name, Hub id or local directory.
        checkpoint: a local weights file for a timm architecture (``name`` gives the architecture).
        pretrained: load pretrained weights (ignored when ``checkpoint`` is given).
        device: where to put the model.

    Example:
        >>> adapter = load_classifier("cifar10_resnet20")
        >>> adapter.num_features, adapter.num_classes
        (64, 10)
    """
    if not isinstance(name, str) or not name.strip():
        raise TypeError(f"model name must be a non-empty string, got {name!r}")
    source, model_id = _resolve_source(name)
    if checkpoint is not None and source != "timm":
        raise DecompValueError(
            f"--weights is for timm architectures; {name!r} resolves to {source}. Use "
            f"'timm:<arch>' with --weights, or save the transformers model to a folder."
        )
    if source == "timm":
        model = _create_timm_model(name, model_id, checkpoint=checkpoint, pretrained=pretrained)
        adapter = adapt_timm_model(model, name=name)
    else:
        adapter = adapt_transformers_model(model_id, name=name)
    if device is not None:
        adapter.to(device)
    return adapter


def _resolve_source(name: str) -> tuple[str, str]:
    prefix, sep, rest = name.partition(":")
    if sep and prefix in ("timm",):
        return "timm", rest
    if sep and prefix == "local-dir" and Path(rest).expanduser().is_dir():
        folder = Path(rest).expanduser()  # a folder TimmWrapperForImageClassification saved loads through it
        return ("timm", name) if _directory_source(folder) == "timm" else ("transformers", str(folder))
    if sep and prefix in ("hf-hub", "hf_hub", "local-dir"):
        return "timm", name
    if sep and prefix in ("transformers", "hf"):
        return "transformers", rest
    if sep and len(prefix) > 1:  # not a Windows drive letter
        raise DecompValueError(f"Unknown model prefix {prefix!r} in {name!r}. Accepted: {ACCEPTED_MODEL_FORMS}.")
    path = Path(name).expanduser()
    if path.is_dir():
        return ("timm", f"local-dir:{path}") if _directory_source(path) == "timm" else ("transformers", str(path))
    if path.is_file():
        hint = " --weights" if path.suffix in _CHECKPOINT_SUFFIXES else ""
        raise DecompValueError(
            f"{name!r} is a file. Give the architecture as the model and the file as the weights: "
            f"--model timm:<arch>{hint} {name}"
        )
    if timm.is_model(name):
        return "timm", name
    if "/" in name and not name.startswith((".", "/")) and name.count("/") == 1:
        return "transformers", name
    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=5)
    suggestion = f" Did you mean one of {close}?" if close else ""
    raise DecompValueError(f"Unknown model {name!r}.{suggestion} Accepted: {ACCEPTED_MODEL_FORMS}.")


def _directory_source(path: Path) -> str:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise DecompValueError(
            f"Model directory {str(path)!r} has no config.json; save the model with timm's "
            f"save_for_hf / push_to_hub or transformers' save_pretrained."
        )
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DecompValueError(f"{config_file} is not valid JSON ({e}); re-save the model.") from e
    if not isinstance(config, dict):
        raise DecompValueError(f"{config_file} holds {type(config).__name__}, not a JSON object; re-save the model.")
    if config.get("model_type") == "timm_wrapper":
        return "transformers"  # saved by transformers' TimmWrapperForImageClassification
    if "architecture" in config:
        return "timm"
    if "model_type" in config:
        return "transformers"
    raise DecompValueError(
        f"{config_file} has neither 'architecture' (timm) nor 'model_type' (transformers)."
    )


def _create_timm_model(name: str, model_id: str, checkpoint, pretrained: bool) -> nn.Module:
    if checkpoint is not None:
        return _timm_from_checkpoint(model_id, Path(checkpoint))
    try:
        return timm.create_model(model_id, pretrained=pretrained)
    except DecompFileError:
        raise
    except (OSError, RuntimeError) as e:
        raise DecompFileError(
            f"Could not load pretrained weights for {name!r} ({type(e).__name__}: {e}). Without "
            f"network access, give a local weights file: --model timm:<arch> --weights FILE, "
            f"or a folder: --model local-dir:PATH, or pre-fill the Hugging Face cache."
        ) from e


def _unpickling_reason(error: Exception) -> str:
    """One line for a refused or broken pickle: torch's 'Unsupported global: ...' line where it gives one."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else "")
    reason = _TERMINAL_STYLE.sub('', reason).split(" Please use")[0]  # not torch's allowlisting advice
    return f"{type(error).__name__}: {reason}"


def _timm_from_checkpoint(arch: str, checkpoint: Path) -> nn.Module:
    if not checkpoint.is_file():
        raise DecompFileError(f"Checkpoint {str(checkpoint)!r} does not exist.")
    try:
        state_dict = timm.models.load_state_dict(str(checkpoint), weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, ValueError) as e:
        raise DecompValueError(
            f"Could not read checkpoint {checkpoint} safely ({_unpickling_reason(e)}). "
            f"Only tensors are loaded (weights_only=True); re-save it as a plain state dict or safetensors."
        ) from e
    classifier_keys = timm.models.get_pretrained_cfg_value(arch.split(".")[0], "classifier") or "fc"
    if isinstance(classifier_keys, str):
        classifier_keys = (classifier_keys,)  # distilled models name two heads: ("head", "head_dist")
    weight = next((state_dict[f"{key}.weight"] for key in classifier_keys if f"{key}.weight" in state_dict), None)
    kwargs = {"num_classes": weight.shape[0]} if weight is not None else {}
    model = timm.create_model(arch, pretrained=False, **kwargs)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise DecompValueError(f"Checkpoint {checkpoint} does not fit architecture {arch!r}: {e}") from e
    return model


def _timm_label_names(model: nn.Module, num_classes: int) -> list[str]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    names = cfg.get("label_names")
    if names and len(names) == num_classes:
        return list(names)
    subset = timm.data.infer_imagenet_subset(model) if num_classes in (1000, 11821, 21841, 21843) else None
    if subset:
        info = timm.data.ImageNetInfo(subset)
        if info.num_classes() == num_classes:
            names = [info.index_to_description(i).split(",")[0] for i in range(num_classes)]
            counts = collections.Counter(names)
            # ImageNet has two "crane"s (bird, machine) and two "maillot"s: one name per class, or the
            # per-class sets (keyed by name in indices.json) would collide.
            return [f"{n} ({info.index_to_label_name(i)})" if counts[n] > 1 else n for i, n in enumerate(names)]
    return [f"class_{i}" for i in range(num_classes)]


def _maps_pool_to_features(maps_fn, features_fn, input_size) -> bool:
    """True when the spatial mean of the maps equals the pooled features (a CAM is meaningful)."""
    probe = torch.randn(2, *input_size, generator=torch.Generator().manual_seed(1))
    try:
        with torch.no_grad():
            maps, features = maps_fn(probe), features_fn(probe)
    except Exception:  # noqa: BLE001 - any failure means "no usable maps"
        return False
    return maps.ndim == 4 and maps.shape[1] == features.shape[1] and torch.allclose(
        maps.mean(dim=(2, 3)), features, atol=1e-4, rtol=1e-3
    )


def adapt_timm_model(model: nn.Module, name: str | None = None) -> ClassifierAdapter:
    """Wrap a timm model (any with ``forward_features``/``forward_head``/``get_classifier``)."""
    model.eval()
    name = name or getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
    head = model.get_classifier()
    data_config = timm.data.resolve_model_data_config(model)
    transform = timm.data.create_transform(**data_config, is_training=False)
    input_size = tuple(data_config["input_size"])
    if isinstance(head, (tuple, list)):
        # Distilled models average several heads: one linear layer over their concatenated inputs.
        heads = list(head)
        classifier = concatenated_linear_head(heads, name)

        def features_fn(x: torch.Tensor) -> torch.Tensor:
            return capture_head_inputs(model, heads, lambda: model(x))

        maps_fn = None
    else:
        classifier = split_linear_head(head, name)

        def features_fn(x: torch.Tensor) -> torch.Tensor:
            return model.forward_head(model.forward_features(x), pre_logits=True)

        maps_fn = model.forward_features
        if not _maps_pool_to_features(maps_fn, features_fn, input_size):
            maps_fn = None
    cfg = dict(getattr(model, "pretrained_cfg", {}) or {})
    adapter = ClassifierAdapter(
        model=model,
        classifier=classifier,
        features_fn=features_fn,
        feature_maps_fn=maps_fn,
        transform=transform,
        label_names=_timm_label_names(model, classifier.out_features),
        name=name,
        source="timm",
        input_size=input_size,
        config={"architecture": cfg.get("architecture"), "pretrained_cfg": _json_safe(cfg),
                "data_config": _json_safe(data_config), "concatenated_heads": _module_names(model, head) if isinstance(head, (tuple, list)) else None},
    )
    adapter.verify_linear_head()
    return adapter


class _ProcessorTransform:
    """PIL image -> pixel values through a transformers image processor (picklable)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=image, return_tensors="pt")["pixel_values"][0]


def _find_transformers_head(model: nn.Module, name: str) -> nn.Linear:
    for attribute in ("classifier", "fc", "head", "linear"):
        head = getattr(model, attribute, None)
        if isinstance(head, nn.Module):
            return split_linear_head(head, name)
    raise DecompValueError(
        f"{name}: found no classification head (looked for attributes classifier, fc, head, linear "
        f"on {type(model).__name__})."
    )


def adapt_transformers_model(model_or_path, name: str | None = None, processor=None) -> ClassifierAdapter:
    """Wrap an ``AutoModelForImageClassification`` model (or load one from a Hub id / folder)."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from ..portable.configuration_decomp import DecompConfigError

    if isinstance(model_or_path, (str, Path)):
        name = name or str(model_or_path)
        try:
            model = AutoModelForImageClassification.from_pretrained(str(model_or_path))
            if _is_timm_wrapper(model):
                return _adapt_timm_wrapper(model, name)
            processor = processor or AutoImageProcessor.from_pretrained(str(model_or_path))
        except OSError as e:
            raise DecompFileError(
                f"Could not load transformers model {name!r}: {e}. Offline, pass a local folder "
                f"written by save_pretrained (model and image processor)."
            ) from e
        except pickle.UnpicklingError as e:  # a pytorch_model.bin holding more than tensors
            raise DecompValueError(
                f"Could not read the weights of transformers model {name!r} safely ({_unpickling_reason(e)}). "
                f"Only tensors are loaded (weights_only=True); re-save it with save_pretrained (model.safetensors)."
            ) from e
        except DecompConfigError as e:  # a decomposed model's config.json / weights edited out of shape
            raise DecompValueError(f"{name}: {e}") from e
    else:
        model = model_or_path
        name = name or getattr(model.config, "name_or_path", None) or type(model).__name__
        if _is_timm_wrapper(model):
            return _adapt_timm_wrapper(model, name)
        if processor is None:
            raise TypeError("adapt_transformers_model(model) needs processor= (an image processor)")
    model.eval()
    classifier = _find_transformers_head(model, name)

    def features_fn(x: torch.Tensor) -> torch.Tensor:
        captured = []
        handle = classifier.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
        try:
            model(pixel_values=x)
        finally:
            handle.remove()
        if not captured or captured[-1].ndim != 2:
            raise DecompValueError(f"{name}: the classifier did not receive pooled (B, d) features.")
        return captured[-1]

    def maps_fn(x: torch.Tensor) -> torch.Tensor:
        return model(pixel_values=x, output_hidden_states=True).hidden_states[-1]

    transform = _ProcessorTransform(processor)
    input_size = tuple(transform(Image.new("RGB", (64, 64))).shape)
    if not _maps_pool_to_features(maps_fn, features_fn, input_size):
        maps_fn = None
    id2label = model.config.id2label or {}
    labels = [id2label.get(i, id2label.get(str(i), f"class_{i}")) for i in range(classifier.out_features)]
    adapter = ClassifierAdapter(
        model=model,
        classifier=classifier,
        features_fn=features_fn,
        feature_maps_fn=maps_fn,
        transform=transform,
        label_names=labels,
        name=name,
        source="transformers",
        input_size=input_size,
        config={"transformers_config": model.config.to_dict(),
                "processor_config": processor.to_dict() if hasattr(processor, "to_dict") else None},
    )
    adapter.verify_linear_head()
    return adapter


def _module_names(model: nn.Module, modules) -> list[str]:
    """Dotted names of ``modules`` inside ``model``, in the order given."""
    names = {id(m): name for name, m in model.named_modules()}
    return [names[id(m)] for m in modules]


def _is_timm_wrapper(model: nn.Module) -> bool:
    """transformers' TimmWrapperForImageClassification: what AutoModelForImageClassification returns for
    timm Hub models (transformers >= 4.47); the real classifier sits in ``model.timm_model``."""
    return getattr(getattr(model, "config", None), "model_type", None) == "timm_wrapper" and hasattr(model, "timm_model")


def _adapt_timm_wrapper(wrapper: nn.Module, name: str) -> ClassifierAdapter:
    """The wrapped timm model through timm's own interface (features, head, eval transform); the
    labels are the wrapper's ``id2label`` (what transformers users see)."""
    timm_model = wrapper.timm_model
    # The wrapper's config.json pretrained_cfg (what its TimmWrapperImageProcessor reads) is the truth.
    # A wrapper built from a TimmWrapperConfig and saved has none: then the timm model's own cfg is used.
    wrapper_cfg = getattr(wrapper.config, "pretrained_cfg", None) or {}
    cfg = {**(getattr(timm_model, "pretrained_cfg", None) or {}), **wrapper_cfg}
    cfg.setdefault("architecture", wrapper.config.architecture)
    timm_model.pretrained_cfg = cfg
    adapter = adapt_timm_model(timm_model, name=name)
    id2label = wrapper.config.id2label or {}
    labels = [id2label.get(i, id2label.get(str(i))) for i in range(adapter.num_classes)]
    if all(labels) and labels != [f"LABEL_{i}" for i in range(adapter.num_classes)]:
        adapter.label_names = labels
    return adapter


def _json_safe(value):
    """Tuples -> lists, drop values JSON cannot hold (callables, tensors)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items() if _is_jsonable(v)}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _is_jsonable(value) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, tuple, dict))
