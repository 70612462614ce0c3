"""Configuration of a decomposed image classifier (backbone + class-specific linear head).

Self-contained on purpose: this file is copied next to ``config.json`` by ``save_pretrained`` and
loaded with ``trust_remote_code=True`` where hf-decomp is not installed, so it imports only
transformers and its sibling ``index_sets.py`` (copied with it).
"""

from __future__ import annotations

import re

from transformers import PretrainedConfig

from .index_sets import as_index, check_index_sets, is_index

__all__ = ["DecompConfig", "DecompConfigError"]

# No image backbone pools a million features; a larger num_features is an edited or damaged config.json
# and would allocate terabytes at the first forward.
MAX_NUM_FEATURES = 1 << 20

BACKBONE_LIBRARIES = ("timm", "transformers")
# Backbones whose eval transform is only rescale + normalize (32x32 inputs, no resize or crop): their
# exported image processor is transformers' own ViTImageProcessor, so clients need no timm to preprocess.
TIMM_FREE_PROCESSOR = re.compile(r"^cifar(?:10|100)_resnet\d+$")
HEAD_KERNELS = ("dense", "embedding-bag")


class DecompConfigError(ValueError):
    """A config.json or model.safetensors that does not describe a valid decomposed model.

    Defined here, not in hf-decomp's errors: this file runs as remote code where hf-decomp is not
    installed. hf-decomp's loaders turn it into a one-line ``DecompValueError``.
    """


class DecompConfig(PretrainedConfig):
    r"""
    Configuration of a [`DecomposedForImageClassification`]: a backbone that yields pooled features of
    width d, and a head in which class c only reads its influential features ``index_sets[c]``
    (Badola et al., "Decomposing the Deep").

    Args:
        backbone_library (`str`, *optional*, defaults to `"timm"`):
            `"timm"` or `"transformers"`: which library builds the backbone.
        architecture (`str`, *optional*):
            timm architecture name (e.g. `"resnet50"`, `"cifar10_resnet20"`); timm backbones only.
        pretrained_cfg (`dict`, *optional*):
            timm's pretrained config of the backbone (mean, std, input size, interpolation, crop):
            it rebuilds the eval transform, so no network is needed to preprocess images.
        backbone_transformers_config (`dict`, *optional*):
            the backbone's transformers config (`model.config.to_dict()`); transformers backbones only.
        backbone_head_path (`str`, *optional*):
            dotted name of the final linear layer inside the transformers backbone; it is replaced by
            an identity so that the backbone returns the pooled features.
        num_features (`int`, *optional*):
            d, the width of the pooled features.
        index_sets (`list[list[int]]`, *optional*):
            per class (in class-id order), the indices of the features it keeps.
        k1, k2 (`int`, *optional*):
            features per sample that voted in the histogram / features kept per class.
        selection_method (`str`, *optional*, defaults to `"histogram"`):
            how the sets were chosen (`histogram` = Algorithm 1, `coverage`, `label-free`).
        coverage (`float`, *optional*):
            histogram mass kept per class when sets were chosen by coverage instead of k2.
        base_model (`str`, *optional*):
            the model that was decomposed (Hub id or name).
        dataset (`str`, *optional*):
            the dataset the statistics were gathered on.
        metrics (`dict`, *optional*):
            measured when the model was built: `full_accuracy`, `decomposed_accuracy`, `rho`, ...
        head_kernel (`str`, *optional*, defaults to `"dense"`):
            how the head computes its logits: `"dense"` (one matmul with the masked weight) or
            `"embedding-bag"` (sums only the kept features; faster for large sparse heads). The
            exporter picks the kernel hf-decomp's evaluation used, so reloaded logits match it bit for bit.
        backbone_head_names (`list[str]`, *optional*):
            timm backbones whose logits average several heads (distilled DeiT: `["head", "head_dist"]`): the
            features are the concatenated inputs of these heads (identities in the backbone), d = their sum.

    Example:
        ```python
        >>> config = DecompConfig(architecture="cifar10_resnet20", num_features=4,
        ...                       index_sets=[[0, 1], [2, 3]], id2label={0: "cat", 1: "dog"})
        >>> config.num_labels
        2
        ```
    """

    model_type = "decomp"
    # What register_for_auto_class() would set, in the class itself (not by whoever imports it first):
    # save_pretrained writes the auto_map and copies this file, so folders load with trust_remote_code=True.
    _auto_class = "AutoConfig"

    def __init__(
        self,
        backbone_library: str = "timm",
        architecture: str | None = None,
        pretrained_cfg: dict | None = None,
        backbone_transformers_config: dict | None = None,
        backbone_head_path: str | None = None,
        num_features: int | None = None,
        index_sets: list[list[int]] | None = None,
        k1: int | None = None,
        k2: int | None = None,
        selection_method: str = "histogram",
        coverage: float | None = None,
        base_model: str | None = None,
        dataset: str | None = None,
        metrics: dict | None = None,
        head_kernel: str = "dense",
        backbone_head_names: list[str] | None = None,
        **kwargs,
    ):
        if kwargs.get("id2label") is not None and kwargs.get("label2id") is None:
            kwargs["label2id"] = {name: int(i) for i, name in kwargs["id2label"].items()}
        self.backbone_library = backbone_library
        self.architecture = architecture
        # Written as "timm_pretrained_cfg" where the processor needs no timm (see to_dict).
        self.pretrained_cfg = pretrained_cfg if pretrained_cfg is not None else kwargs.pop("timm_pretrained_cfg", None)
        self.backbone_transformers_config = backbone_transformers_config
        self.backbone_head_path = backbone_head_path
        self.num_features = num_features
        self.index_sets = None if index_sets is None else _checked_index_sets(index_sets)
        self.k1 = k1
        self.k2 = k2
        self.selection_method = selection_method
        self.coverage = coverage
        self.base_model = base_model
        self.dataset = dataset
        self.metrics = metrics or {}
        self.head_kernel = head_kernel
        self.backbone_head_names = list(backbone_head_names) if backbone_head_names else None
        if self.needs_timm_processor:
            # Lets AutoImageProcessor / pipeline build timm's own eval transform from this config.json.
            kwargs.setdefault("image_processor_type", "TimmWrapperImageProcessor")
        elif backbone_library == "timm":
            kwargs.setdefault("image_processor_type", "ViTImageProcessor")
        super().__init__(**kwargs)
        self.validate_decomposition()

    def to_dict(self) -> dict:
        output = super().to_dict()
        # transformers treats any config.json with a "pretrained_cfg" key as a timm checkpoint (and reads
        # its image processor from it): only timm backbones may carry the key.
        if output.get("pretrained_cfg") is None:
            output.pop("pretrained_cfg", None)
        elif not self.needs_timm_processor:  # keep AutoImageProcessor on preprocessor_config.json (no timm)
            output["timm_pretrained_cfg"] = output.pop("pretrained_cfg")
        return output

    @property
    def needs_timm_processor(self) -> bool:
        """True when preprocessing is timm's eval transform (a client needs timm installed)."""
        return self.backbone_library == "timm" and not TIMM_FREE_PROCESSOR.match(self.architecture or "")

    def validate_decomposition(self) -> None:
        """Raise `DecompConfigError` (a `ValueError`) naming the class and index when the index sets do not fit."""
        if self.backbone_library not in BACKBONE_LIBRARIES:
            raise DecompConfigError(
                f"backbone_library={self.backbone_library!r} is not one of {', '.join(BACKBONE_LIBRARIES)}"
            )
        if self.head_kernel not in HEAD_KERNELS:
            raise DecompConfigError(f"head_kernel={self.head_kernel!r} is not one of {', '.join(HEAD_KERNELS)}")
        if self.index_sets is None:
            return  # a bare config (e.g. AutoConfig.for_model) describes no decomposition yet
        if not _is_int(self.num_features) or not 1 <= self.num_features <= MAX_NUM_FEATURES:
            raise DecompConfigError(
                f"num_features={self.num_features!r} must be the positive feature width d, an integer <= {MAX_NUM_FEATURES}; "
                f"config.json was edited or damaged. Re-export the model."
            )
        if len(self.index_sets) != self.num_labels:
            raise DecompConfigError(
                f"config has {len(self.index_sets)} index sets but {self.num_labels} classes (id2label); "
                f"expected one index set per class. Re-export the model from its indices."
            )
        names = [(self.id2label or {}).get(c, f"class_{c}") for c in range(len(self.index_sets))]
        check_index_sets(self.index_sets, int(self.num_features), label_names=names, error=DecompConfigError,
                         fix="; the index sets do not belong to this backbone")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_index_sets(index_sets) -> list[list[int]]:
    """Lists of integer indices; floats (1.5 would silently become 1), strings and bools are refused."""
    if not isinstance(index_sets, (list, tuple)) or not all(isinstance(s, (list, tuple)) for s in index_sets):
        raise DecompConfigError(f"index_sets must be one list of feature indices per class, got {index_sets!r:.80}; "
                                f"re-export the model.")
    for c, subset in enumerate(index_sets):
        bad = [i for i in subset if not is_index(i)]
        if bad:
            raise DecompConfigError(f"class {c}: index_sets holds {bad[:5]}, not integer feature indices; "
                                    f"re-export the model.")
    return [[as_index(i, f"class {c}") for i in subset] for c, subset in enumerate(index_sets)]
