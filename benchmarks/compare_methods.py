"""Comparison table: decomposed accuracy and rho per selection method, with/without bias correction and refit.

    python benchmarks/compare_methods.py --model cifar10_resnet20 cifar10_resnet56 \
        --k2-grid 1 2 3 5 10 20 --out runs/compare [--finetune-metrics runs/finetune/metrics.json]

Uses the cached CIFAR-10 train/test features (computed once if missing). ``--val-split`` (default
5,000) holds a seeded, class-stratified part of train out for validation (or names a split); the
statistics, selection and refits use the rest of train, every choice (pruning's keep fraction) is made
on validation, and the test split is scored once at the end. For each model, method and k: accuracy
of the head with the original weights and biases ("plain"), with bias correction ("+corr") and with
correction + L-BFGS refit on the fit features ("+corr+refit"; backbone untouched). ``pruning``
selects with refits, so its columns are its sets under the same three steps.
Writes ``compare.md`` and ``compare.json`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from hf_decomp.commands.common import add_deprecated_alias
from hf_decomp.data import load_image_split
from hf_decomp.data.holdout import DEFAULT_VAL_SIZE, parse_val_split, stratified_split
from hf_decomp.method.bias_correction import bias_corrected_head
from hf_decomp.method.criteria import list_criteria
from hf_decomp.models import load_classifier
from hf_decomp.passes.feature_cache import cached_features
from hf_decomp.portable.decomposed_head import DecomposedLinear
from hf_decomp.recovery.refit import decompose_head, refit_head
from hf_decomp.utils.markdown import markdown_table


@torch.no_grad()
def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * float((logits.argmax(1) == labels).float().mean())


def compare_model(name: str, methods, ks, max_iter: int, val_split, seed: int, keeps) -> tuple[dict, list[dict]]:
    adapter = load_classifier(name)
    train_x, train_y = cached_features(adapter, load_image_split(None, "train"))
    val_split = parse_val_split(val_split)
    if isinstance(val_split, int):
        fit_rows, val_rows = stratified_split(train_y, val_split, seed)
        fit_x, fit_y, val_x, val_y = train_x[fit_rows], train_y[fit_rows], train_x[val_rows], train_y[val_rows]
    else:
        fit_x, fit_y = train_x, train_y
        val_x, val_y = cached_features(adapter, load_image_split(None, val_split))
    weight, bias = adapter.weight.detach().float().cpu(), adapter.bias.detach().float().cpu()
    mean = fit_x.double().mean(0).float()
    rows, scored = [], []
    for k in ks:
        for method in methods:
            started = time.time()
            best = None
            for keep in (keeps if method == "pruning" else [0.5]):
                selected = decompose_head(weight, bias, fit_x, fit_y, criterion=method, k2=k, keep=keep,
                                          bias_correction=False, refit=(method == "pruning"), max_iter=max_iter)
                plain = DecomposedLinear(weight, bias, selected.index_sets())
                corrected = bias_corrected_head(plain, weight, mean)
                refit = selected if method == "pruning" else refit_head(corrected, fit_x, fit_y, max_iter=max_iter)
                val = accuracy(refit(val_x), val_y)
                if best is None or val > best[0]:
                    best = (val, keep, plain, corrected, refit)
            val, keep, plain, corrected, refit = best
            rows.append({"model": name, "method": method, "k": k, "keep": keep if method == "pruning" else None,
                         "validation_refit_accuracy": val, "seconds": time.time() - started,
                         "heads": (plain, corrected, refit)})
    # the test split, read once, after every choice is made
    test_x, test_y = cached_features(adapter, load_image_split(None, "test"))
    full = {"validation": accuracy(val_x @ weight.T + bias, val_y), "test": accuracy(test_x @ weight.T + bias, test_y)}
    for row in rows:
        plain, corrected, refit = row.pop("heads")
        accs = {"plain": accuracy(plain(test_x), test_y), "corrected": accuracy(corrected(test_x), test_y),
                "refit": accuracy(refit(test_x), test_y)}
        row.update({"full_accuracy": full["test"], **{f"{s}_accuracy": a for s, a in accs.items()},
                    **{f"{s}_rho": a / full["test"] for s, a in accs.items()},
                    "validation_full_accuracy": full["validation"]})
        scored.append(row)
        print(f"{name} {row['method']:12s} k={row['k']:<3d} val refit {row['validation_refit_accuracy']:.2f} | test "
              f"plain {accs['plain']:.2f}  +corr {accs['corrected']:.2f}  +corr+refit {accs['refit']:.2f}  "
              f"(full {full['test']:.2f}, {row['seconds']:.0f} s)", flush=True)
    split = {"kind": "held-out", "rows": val_split, "seed": seed, "fit_rows": int(fit_y.numel())} \
        if isinstance(val_split, int) else {"kind": "named", "split": val_split, "rows": int(val_y.numel())}
    return {"test": full["test"], "validation": full["validation"], "val_split": split}, scored


def _percent(value) -> str:
    return "–" if value is None else f"{value:.2f}"


def _recipe_options(finetune: dict) -> str:
    """The fine-tuning options that differ from the defaults (frozen batch norms, clipping, ...)."""
    defaults = {"freeze_bn": False, "clip_grad": None, "backbone_lr_scale": 1.0, "head_warmup": 0.0}
    return ", ".join(f"{key}={finetune[key]}" for key, default in defaults.items()
                     if finetune.get(key, default) != default)


def _describe_split(split: dict) -> str:
    if split["kind"] == "named":
        return f"the dataset's {split['split']!r} split ({split['rows']} images)"
    return (f"{split['rows']} train images held out (seed {split['seed']}, stratified by class); "
            f"the other {split['fit_rows']} are the fit set")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["cifar10_resnet20", "cifar10_resnet56"], metavar="NAME")
    parser.add_argument("--methods", nargs="+", default=["histogram", "contribution", "label-free", "pruning"],
                        choices=list_criteria(set_size="k"))
    parser.add_argument("--k2-grid", nargs="+", type=int, default=[1, 2, 3, 5, 10, 20], metavar="N",
                        help="features kept per class to compare")
    add_deprecated_alias(parser, "--ks", "--k2-grid", "k2_grid", type=int, nargs="+")
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--val-split", default=str(DEFAULT_VAL_SIZE),
                        help="images held out from train (seeded, stratified) or a split name; choices are made on it")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out validation images")
    parser.add_argument("--keep", type=float, nargs="+", default=[0.5, 0.75],
                        help="pruning keep fractions to try; the best on validation is reported")
    parser.add_argument("--finetune-metrics", nargs="*", default=[],
                        help="metrics.json files written by `hf-decomp finetune` to add to the table")
    parser.add_argument("--reuse", nargs="+", default=None, metavar="COMPARE_JSON",
                        help="compare.json of earlier runs: re-render (and merge) their rows, e.g. to add "
                             "--finetune-metrics or to put the models of separate runs in one table")
    parser.add_argument("--out", default="runs/compare")
    args = parser.parse_args()
    torch.manual_seed(0)

    rows, fulls, finetuned = [], {}, []
    for path in args.reuse or []:
        earlier = json.loads(Path(path).read_text())
        rows += [r for r in earlier["rows"] if r["model"] not in fulls]
        fulls = {**earlier["full_accuracy"], **fulls}
        finetuned += [f for f in earlier.get("finetuned", []) if f not in finetuned]
    if args.reuse:
        args.model = list(fulls)
    for name in args.model:
        if name not in fulls:
            fulls[name], model_rows = compare_model(name, args.methods, args.k2_grid, args.max_iter, args.val_split,
                                                    args.seed, args.keep)
            rows += model_rows
    for path in args.finetune_metrics:
        m = json.loads(Path(path).read_text())
        ft, val = m.get("finetune", {}), m.get("validation", {})
        finetuned.append({"model": m["model"], "method": m["method"], "k": m["k"], "keep": m.get("keep"),
                          "refit_accuracy": m.get("refit_accuracy", m["decomposed_accuracy"]),
                          "finetuned_accuracy": m.get("finetuned_accuracy"), "full_accuracy": m["full_accuracy"],
                          "validation_refit_accuracy": val.get("refit_accuracy"),
                          "validation_finetuned_accuracy": val.get("finetuned_accuracy"),
                          "epochs": ft.get("epochs"), "lr": ft.get("lr"), "distill": ft.get("distill", 0.0),
                          "seed": ft.get("seed"), "best_step": (ft.get("validation") or {}).get("best_step"),
                          "options": _recipe_options(ft),
                          "validation_history": [h["accuracy"] for h in (ft.get("validation") or {}).get("history", [])],
                          "steps": ft.get("steps"),
                          # a run folder's metrics.json is named by its folder; a copied file by its own name
                          "source": Path(path).parent.name if Path(path).name == "metrics.json" else Path(path).stem})

    lines = ["# Decomposed accuracy (CIFAR-10 test) by selection method", "",
             "Validation: " + _describe_split(next(iter(fulls.values()))["val_split"]) + ". Statistics, selection "
             "and refits use the rest of train; every choice (pruning's keep fraction, from "
             f"{', '.join(map(str, args.keep))}) is made on validation; the test split is scored once, at the end.",
             "",
             "plain = original weights and biases on the kept features; +corr = bias correction "
             "b_c += sum_{j not in I_c} W_cj mean(x_j); +corr+refit = kept weights and biases refit with "
             "L-BFGS on the fit features (backbone untouched). rho = decomposed / full accuracy (test).", ""]
    for name in args.model:
        lines += [f"## {name} (full accuracy: test {fulls[name]['test']:.2f} %, validation "
                  f"{fulls[name]['validation']:.2f} %)", ""]
        table = [[r["method"], r["k"], "" if r.get("keep") is None else f"{r['keep']:g}",
                  f"{r['validation_refit_accuracy']:.2f}",
                  f"{r['plain_accuracy']:.2f} ({r['plain_rho']:.3f})",
                  f"{r['corrected_accuracy']:.2f} ({r['corrected_rho']:.3f})",
                  f"{r['refit_accuracy']:.2f} ({r['refit_rho']:.3f})"] for r in rows if r["model"] == name]
        lines += [markdown_table(["method", "k", "keep", "validation +corr+refit %", "test plain % (rho)",
                                  "test +corr % (rho)", "test +corr+refit % (rho)"], table), ""]
    if finetuned:
        lines += ["## Fine-tuned (whole network, `hf-decomp finetune`)", ""]
        table = [[f["model"], f["method"], f["k"], "" if f.get("keep") is None else f"{f['keep']:g}", f"{f['epochs']:g}", f"{f['lr']:g}", f"{f['distill']:g}", f.get("options") or "", f.get("seed"),
                  f"{f['best_step']}/{f['steps']}", " → ".join(f"{a:.2f}" for a in f.get("validation_history") or []),
                  _percent(f.get("validation_refit_accuracy")),
                  _percent(f.get("validation_finetuned_accuracy")), f"{f['refit_accuracy']:.2f}",
                  f"{f['finetuned_accuracy']:.2f} ({f['finetuned_accuracy'] / f['full_accuracy']:.3f})"]
                 for f in finetuned if f.get("finetuned_accuracy") is not None]
        lines += ["The model kept is the one best on validation (checked before training, every `--eval-every` "
                  "epochs and at the end: `chosen step`); the test split is read once, for that model. keep = the "
                  "pruning keep fraction of the refit head it starts from.", "",
                  markdown_table(["model", "method", "k", "keep", "epochs", "lr", "distill", "options", "seed", "chosen step",
                                  "validation at each check %", "validation refit %", "validation fine-tuned %", "test refit %",
                                  "test fine-tuned % (rho)"], table), ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text("\n".join(lines))
    (out / "compare.json").write_text(json.dumps({"full_accuracy": fulls, "rows": rows, "finetuned": finetuned},
                                                 indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
