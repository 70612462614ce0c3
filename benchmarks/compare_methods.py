"""Comparison table: decomposed accuracy and rho per selection method, with/without bias correction and refit.

    python benchmarks/compare_methods.py --models cifar10_resnet20 cifar10_resnet56 \
        --ks 1 2 3 5 10 20 --out runs/compare [--finetune-metrics runs/finetune/metrics.json]

Uses the cached CIFAR-10 train/test features (computed once if missing). For each model, method and
k: accuracy of the head with the original weights and biases ("plain"), with bias correction
("+corr") and with correction + L-BFGS refit on the training features ("+corr+refit"; backbone
untouched). ``pruning`` selects with refits, so its columns are its sets under the same three steps.
Writes ``compare.md`` and ``compare.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hf_decomp.bias_correction import bias_corrected_head
from hf_decomp.data import load_image_split
from hf_decomp.feature_cache import cached_features
from hf_decomp.head import DecomposedLinear
from hf_decomp.models import load_classifier
from hf_decomp.refit import METHODS, decompose_head, refit_head
from hf_decomp.report import markdown_table


@torch.no_grad()
def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(1) == labels).float().mean())


def compare_model(name: str, methods, ks, max_iter: int) -> tuple[float, list[dict]]:
    adapter = load_classifier(name)
    train_x, train_y = cached_features(adapter, load_image_split(None, "train"))
    test_x, test_y = cached_features(adapter, load_image_split(None, "test"))
    weight, bias = adapter.weight.detach().float().cpu(), adapter.bias.detach().float().cpu()
    full = accuracy(test_x @ weight.T + bias, test_y)
    mean = train_x.double().mean(0).float()
    rows = []
    for k in ks:
        for method in methods:
            started = time.time()
            selected = decompose_head(weight, bias, train_x, train_y, method=method, k=k,
                                      bias_correction=False, refit=(method == "pruning"), max_iter=max_iter)
            plain = DecomposedLinear(weight, bias, selected.index_sets())
            corrected = bias_corrected_head(plain, weight, mean)
            refit = selected if method == "pruning" else refit_head(corrected, train_x, train_y, max_iter=max_iter)
            with torch.no_grad():
                accs = {"plain": accuracy(plain(test_x), test_y), "corrected": accuracy(corrected(test_x), test_y),
                        "refit": accuracy(refit(test_x), test_y)}
            row = {"model": name, "method": method, "k": k, "full_accuracy": full, **{f"{s}_accuracy": a for s, a in accs.items()},
                   **{f"{s}_rho": a / full for s, a in accs.items()}, "seconds": time.time() - started}
            rows.append(row)
            print(f"{name} {method:12s} k={k:<3d} plain {accs['plain']:.2f}  +corr {accs['corrected']:.2f}  "
                  f"+corr+refit {accs['refit']:.2f}  (full {full:.2f}, {row['seconds']:.0f} s)", flush=True)
    return full, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["cifar10_resnet20", "cifar10_resnet56"])
    parser.add_argument("--methods", nargs="+", default=["histogram", "contribution", "label-free", "pruning"],
                        choices=METHODS)
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 2, 3, 5, 10, 20])
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--finetune-metrics", nargs="*", default=[],
                        help="metrics.json files written by `hf-decomp finetune` to add to the table")
    parser.add_argument("--reuse", default=None,
                        help="compare.json of an earlier run: re-render its rows (e.g. to add --finetune-metrics)")
    parser.add_argument("--out", default="runs/compare")
    args = parser.parse_args()
    torch.manual_seed(0)

    rows, fulls = [], {}
    if args.reuse:
        earlier = json.loads(Path(args.reuse).read_text())
        rows, fulls = earlier["rows"], earlier["full_accuracy"]
        args.models = list(fulls)
    for name in args.models:
        if name not in fulls:
            fulls[name], model_rows = compare_model(name, args.methods, args.ks, args.max_iter)
            rows += model_rows
    finetuned = []
    for path in args.finetune_metrics:
        m = json.loads(Path(path).read_text())
        finetuned.append({"model": m["model"], "method": m["method"], "k": m["k"], "refit_accuracy": m["decomposed_accuracy"],
                          "finetuned_accuracy": m.get("finetuned_accuracy"), "full_accuracy": m["full_accuracy"],
                          "epochs": m.get("finetune", {}).get("epochs"), "lr": m.get("finetune", {}).get("lr"),
                          "distill": m.get("finetune", {}).get("distill", 0.0), "source": path})

    lines = ["# Decomposed accuracy (CIFAR-10 test) by selection method", "",
             "plain = original weights and biases on the kept features; +corr = bias correction "
             "b_c += sum_{j not in I_c} W_cj mean(x_j); +corr+refit = kept weights and biases refit with "
             "L-BFGS on the training features (backbone untouched). rho = decomposed / full accuracy.", ""]
    for name in args.models:
        lines += [f"## {name} (full accuracy {fulls[name]:.2f} %)", ""]
        table = [[r["method"], r["k"], f"{r['plain_accuracy']:.2f} ({r['plain_rho']:.3f})",
                  f"{r['corrected_accuracy']:.2f} ({r['corrected_rho']:.3f})",
                  f"{r['refit_accuracy']:.2f} ({r['refit_rho']:.3f})"] for r in rows if r["model"] == name]
        lines += [markdown_table(["method", "k", "plain % (rho)", "+corr % (rho)", "+corr+refit % (rho)"], table), ""]
    if finetuned:
        lines += ["## Fine-tuned (whole network, `hf-decomp finetune`)", ""]
        table = [[f["model"], f["method"], f["k"], f"{f['epochs']:g}", f"{f['lr']:g}", f"{f['distill']:g}",
                  f"{f['refit_accuracy']:.2f}",
                  f"{f['finetuned_accuracy']:.2f} ({f['finetuned_accuracy'] / f['full_accuracy']:.3f})"]
                 for f in finetuned if f.get("finetuned_accuracy") is not None]
        lines += [markdown_table(["model", "method", "k", "epochs", "lr", "distill", "refit %",
                                  "fine-tuned % (rho)"], table), ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text("\n".join(lines))
    (out / "compare.json").write_text(json.dumps({"full_accuracy": fulls, "rows": rows, "finetuned": finetuned},
                                                 indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
