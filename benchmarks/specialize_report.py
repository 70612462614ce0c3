"""Table and figure of ``specialize_study.py`` runs: accuracy against multiply-adds, class-aware vs. magnitude.

    python benchmarks/specialize_report.py benchmarks/results/specialize/resnet20_*.json \
        --out benchmarks/results/specialize/resnet20

Writes ``<out>.md`` (per-subset rows, means over the subsets that finished every configuration,
the targets of issue 11 checked) and ``<out>.png``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from hf_decomp.studies.plotting import plt, save_figure

STAGES = (("refit", "head refit"), ("finetune", "head refit + fine-tuning"))


def load_runs(paths):
    runs, meta = [], {}
    for path in paths:
        data = json.loads(Path(path).read_text())
        runs += data["runs"]
        meta = {k: v for k, v in data.items() if k != "runs"}
        meta["protocol"] = {k: v for k, v in meta.get("protocol", {}).items() if k != "subsets"}
    return runs, meta


def complete_at(by_key, subsets, budget):
    """The subsets that have both methods at ``budget`` (refit stage)."""
    return [s for s in subsets if all((s, m, budget, "refit") in by_key for m in ("class-aware", "magnitude"))]


def guarded(by_key, subset, method, budget):
    """The fine-tuned run, or the refit one where fine-tuning lowered validation accuracy (a choice made
    on validation only, as ``hf-decomp finetune`` keeps its best validation check)."""
    refit, tuned = by_key.get((subset, method, budget, "refit")), by_key.get((subset, method, budget, "finetune"))
    if tuned is None:
        return None
    return tuned if tuned["val_accuracy"] >= refit["val_accuracy"] else refit


def targets(by_key, full, subsets, budgets, budget_limit: float = 0.3) -> list[str]:
    """Issue 11's two targets at the largest budget whose MACs are within ``budget_limit``, mean over ``subsets``."""
    within = [b for b in budgets if complete_at(by_key, subsets, b) == subsets
              and max(by_key[(s, "class-aware", b, "refit")]["macs_fraction"] for s in subsets) <= budget_limit]
    if not within:
        return []
    budget = max(within)

    def mean(method, stage, key="test_accuracy"):
        rows = [guarded(by_key, s, method, budget) if stage == "guarded" else by_key.get((s, method, budget, stage))
                for s in subsets]
        return None if None in rows else sum(r[key] for r in rows) / len(rows)

    full_mean = sum(full[s]["test_accuracy"] for s in subsets) / len(subsets)
    tuned, aware, magnitude = mean("class-aware", "finetune"), mean("class-aware", "refit"), mean("magnitude", "refit")
    lines = ["", f"## Targets (budget {budget}, MACs <= {budget_limit} of the full model, mean over {len(subsets)} subsets)", ""]
    if tuned is not None:
        gap = full_mean - tuned
        lines.append(f"- class-aware after one epoch of fine-tuning: {tuned:.2f} % vs the restricted full model's "
                     f"{full_mean:.2f} %: {gap:.2f} points below (target <= 1.0: {'met' if gap <= 1.0 else 'missed'}).")
    margin = aware - magnitude
    lines.append(f"- no fine-tuning (batch-norm recalibration + head refit): class-aware {aware:.2f} % vs magnitude "
                 f"{magnitude:.2f} %: {margin:+.2f} points (target >= +2.0: {'met' if margin >= 2.0 else 'missed'}).")
    head_margin = mean("class-aware", "refit", "test_accuracy_head_refit_only") - mean(
        "magnitude", "refit", "test_accuracy_head_refit_only")
    lines.append(f"- head refit alone (no batch-norm recalibration): class-aware minus magnitude {head_margin:+.2f} points.")
    if mean("magnitude", "finetune") is not None and tuned is not None:
        lines.append(f"- after fine-tuning: class-aware {tuned:.2f} % vs magnitude {mean('magnitude', 'finetune'):.2f} %; "
                     f"keeping the refit model where fine-tuning lowered validation accuracy: class-aware "
                     f"{mean('class-aware', 'guarded'):.2f} % vs magnitude {mean('magnitude', 'guarded'):.2f} % "
                     f"(restricted full model {full_mean:.2f} %).")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", nargs="+")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    runs, meta = load_runs(args.results)
    full = {r["subset"]: r for r in runs if r["method"] == "full-restricted"}
    by_key = {(r["subset"], r["method"], r["budget"], r["stage"]): r for r in runs if r["method"] != "full-restricted"}
    subsets = sorted(full)
    budgets = sorted({r["budget"] for r in by_key.values()})
    lines = [f"# Class specialists of {meta.get('model')}: class-aware vs. L1 magnitude pruning", "",
             f"Protocol: {json.dumps(meta.get('protocol'))}", "",
             "Accuracy: top-1 among the chosen classes on every CIFAR-10 test image of those classes. "
             "`pruned` = no recovery; `BN` = batch norms recalibrated; `refit` = head refit only; "
             "`BN+refit` = both (the recovery recipe); `FT` = BN+refit then one epoch of distilled fine-tuning "
             "over the training images. k1 and each method's fine-tuning learning rate are chosen on the held-out "
             "validation split at the selection budget; test is read once per configuration.", "",
             "| subset | method | budget | MACs | params | pruned | BN | refit | BN+refit | FT | full restricted | k1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for subset in subsets:
        for budget in budgets:
            for method in ("class-aware", "magnitude"):
                r = by_key.get((subset, method, budget, "refit"))
                if r is None:
                    continue
                ft = by_key.get((subset, method, budget, "finetune"))
                lines.append(
                    f"| {subset} | {method} | {budget} | {r['macs_fraction']:.3f} | {r['params']} | "
                    f"{r['test_accuracy_pruned_only']:.2f} | {r['test_accuracy_bn_recalibrated']:.2f} | "
                    f"{r['test_accuracy_head_refit_only']:.2f} | {r['test_accuracy']:.2f} | "
                    f"{ft['test_accuracy']:.2f} |" if ft else
                    f"| {subset} | {method} | {budget} | {r['macs_fraction']:.3f} | {r['params']} | "
                    f"{r['test_accuracy_pruned_only']:.2f} | {r['test_accuracy_bn_recalibrated']:.2f} | "
                    f"{r['test_accuracy_head_refit_only']:.2f} | {r['test_accuracy']:.2f} | - |")
                lines[-1] += f" {full[subset]['test_accuracy']:.2f} | {r.get('k1_fraction') or '-'} |"
    # means over the subsets that have every (method, budget) at the refit stage
    complete = subsets
    lines += ["", "## Means, per budget over the subsets that have both methods at that budget", "",
              "| method | budget | MACs | pruned | BN | refit | BN+refit | FT (subsets with FT) | FT or BN+refit, better on validation |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    curves = defaultdict(list)
    for method in ("class-aware", "magnitude"):
        for budget in budgets:
            rows = [by_key[(s, method, budget, "refit")] for s in complete_at(by_key, subsets, budget)]
            if not rows:
                continue
            mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
            fts = [by_key[(s, method, budget, "finetune")]["test_accuracy"] for s in complete_at(by_key, subsets, budget)
                   if (s, method, budget, "finetune") in by_key]
            ft = f"{sum(fts) / len(fts):.2f} ({len(fts)})" if fts else "-"
            chosen = [guarded(by_key, s, method, budget)["test_accuracy"] for s in complete_at(by_key, subsets, budget)
                      if (s, method, budget, "finetune") in by_key]
            best = f"{sum(chosen) / len(chosen):.2f}" if chosen else "-"
            lines.append(f"| {method} | {budget} ({len(rows)} subsets) | {mean('macs_fraction'):.3f} | {mean('test_accuracy_pruned_only'):.2f} | "
                         f"{mean('test_accuracy_bn_recalibrated'):.2f} | {mean('test_accuracy_head_refit_only'):.2f} | "
                         f"{mean('test_accuracy'):.2f} | {ft} | {best} |")
            curves[(method, "refit")].append((mean("macs_fraction"), mean("test_accuracy")))
            curves[(method, "head refit only")].append((mean("macs_fraction"), mean("test_accuracy_head_refit_only")))
            if fts and len(fts) == len(rows):
                curves[(method, "finetune")].append((mean("macs_fraction"), sum(fts) / len(fts)))
    if complete:
        full_mean = sum(full[s]["test_accuracy"] for s in complete) / len(complete)
        lines += ["", f"Full model restricted to the subsets (MACs 1.0): mean {full_mean:.2f} %."]
        lines += targets(by_key, full, complete, budgets)
    Path(f"{args.out}.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {"class-aware": "tab:blue", "magnitude": "tab:orange"}
    for (method, stage), points in sorted(curves.items()):
        xs, ys = zip(*sorted(points))
        ax.plot(xs, ys, marker={"refit": "o", "head refit only": "x", "finetune": "s"}[stage],
                linestyle={"refit": "-", "head refit only": ":", "finetune": "--"}[stage],
                color=styles[method], label=f"{method}, {'BN + head refit' if stage == 'refit' else stage}")
    if complete:
        ax.axhline(full_mean, color="gray", linestyle="-.", label="full model, restricted")
    ax.set_xlabel("multiply-adds (fraction of the full model)")
    ax.set_ylabel("test accuracy on the chosen classes (%)")
    ax.set_title(f"{meta.get('model')}: mean over {len(complete)} class subsets")
    ax.legend(fontsize=7)
    save_figure(fig, f"{args.out}.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
