"""Datasets and data loaders for image classification."""

from .datasets import ImageSplit, default_eval_split, load_image_split, split_names
from .labels import align_labels
from .loader import ImageBatchCollator, decode_image, default_num_workers, make_dataloader
from .preprocessing import batch_to_device, device_batches, split_preprocessing

__all__ = ["ImageBatchCollator", "ImageSplit", "align_labels", "batch_to_device", "decode_image",
           "default_eval_split", "default_num_workers", "device_batches", "load_image_split", "make_dataloader",
           "split_names", "split_preprocessing"]
