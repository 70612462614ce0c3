"""Datasets and data loaders for image classification."""

from .datasets import ImageSplit, default_eval_split, load_image_split, split_names
from .labels import align_labels
from .loader import ImageBatchCollator, decode_image, make_dataloader

__all__ = ["ImageBatchCollator", "ImageSplit", "align_labels", "decode_image", "default_eval_split", "load_image_split",
           "make_dataloader", "split_names"]
