"""Does the timm-free CIFAR image processor give the same predictions as timm's transform?

Exports a decomposed ResNet-20 (index sets: the 5 largest |W_c| per class, no statistics needed), then
runs the CIFAR-10 test split through ``pipeline("image-classification")`` (ViTImageProcessor from the
exported preprocessor_config.json) and through the model on timm's eval transform, and prints the
largest pixel difference and how many predictions differ.

    python scripts/cifar_processor_check.py [--limit N]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from transformers import pipeline

from hf_decomp import InfluentialIndices
from hf_decomp.data import load_image_split
from hf_decomp.data.loader import decode_image
from hf_decomp.hub import build_decomposed_model, save_decomposed_model
from hf_decomp.models import load_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N test images (default: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    adapter = load_classifier("cifar10_resnet20")
    sets = adapter.weight.abs().topk(5, dim=1).indices.tolist()
    model = build_decomposed_model(adapter, InfluentialIndices(sets, adapter.num_features, adapter.label_names))
    split = load_image_split(None, "test", limit=args.limit)
    images = [decode_image(row[split.image_column]).convert("RGB") for row in split.dataset]
    with tempfile.TemporaryDirectory() as tmp:
        save_decomposed_model(model, f"{tmp}/model")
        classifier = pipeline("image-classification", model=f"{tmp}/model")
        processor_name = type(classifier.image_processor).__name__
        max_diff, differ, agree_correct = 0.0, 0, 0
        labels = split.dataset[split.label_column]
        for start in range(0, len(images), 500):
            chunk = images[start:start + 500]
            ours = classifier.image_processor(chunk, return_tensors="pt")["pixel_values"]
            timms = torch.stack([adapter.transform(image) for image in chunk])
            max_diff = max(max_diff, float((ours - timms).abs().max()))
            with torch.no_grad():
                via_timm = model(timms).logits.argmax(-1)
            via_pipeline = [model.config.label2id[top[0]["label"]]
                            for top in classifier(chunk, top_k=1, batch_size=100)]
            differ += sum(int(a != b) for a, b in zip(via_timm.tolist(), via_pipeline))
            agree_correct += sum(int(p == y) for p, y in zip(via_pipeline, labels[start:start + 500]))
    print(f"processor: {processor_name}; images: {len(images)}; max |pixel difference|: {max_diff:.3g}; "
          f"predictions that differ from timm's transform: {differ}; pipeline accuracy: "
          f"{100.0 * agree_correct / len(images):.2f} %")


if __name__ == "__main__":
    main()
