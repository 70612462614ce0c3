"""Tables, curve and ``summary.json`` of the specialist study (``benchmarks/specialize_study.py``).

Reads every finished run under ``DIR/runs/<model>/<subset>/`` and writes into ``DIR``:

- ``summary.json``: one row per model x subset x criterion x budget (protocol ``fixed-recipe``: one
  recipe fixed in advance, last epoch, all test images of the subset), plus one row per model x
  subset x budget for the criterion chosen on test half A and read on half B, then the reverse,
  averaged (protocol ``test-half-crossfit``, ``criterion`` = ``"chosen on half"``);
- ``summary.md``: the tables (mean over the subsets that every criterion finished) and the targets;
- ``summary.png``: accuracy after recovery against the fraction of multiply-adds, one line per criterion.

    python benchmarks/specialize_report.py benchmarks/results/specialize
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from hf_decomp.metrics.crossfit import crossfit_choice

CHOSEN = "chosen on half"


def load_runs(folder: Path) -> tuple[list[dict], dict]:
    """Finished runs and, per (model, subset), the full model's numbers."""
    runs, full = [], {}
    for subset_dir in sorted((folder / "runs").glob("*/*")):
        model, subset = subset_dir.parent.name, subset_dir.name
        if (subset_dir / "full.json").is_file():
            full[model, subset] = json.loads((subset_dir / "full.json").read_text())
        for path in sorted(subset_dir.glob("*-*-*.json")):
            run = json.loads(path.read_text())
            run["subset"] = subset
            runs.append(run)
    return runs, full


def summary_rows(runs: list[dict], full: dict) -> list[dict]:
    rows = []
    groups = defaultdict(dict)
    for run in runs:
        reference = full[run["model"], run["subset"]]
        rows.append({"model": run["model"], "classes": run["classes"], "criterion": run["criterion"],
                     "allocation": run["allocation"], "macs_ratio": run["macs_fraction"],
                     "accuracy": run["test_accuracy"], "restricted_full_accuracy": reference["test_accuracy"],
                     "protocol": "fixed-recipe", "epochs": run["epochs"], "cpu_minutes": run["cpu_minutes"],
                     "latency_batch64_ratio": run["latency_ms"]["batch64"] / reference["latency_ms"]["batch64"]})
        groups[run["model"], run["subset"], run["allocation"], run["budget"]][run["criterion"]] = run
    for (model, subset, allocation, budget), by_criterion in sorted(groups.items()):
        if len(by_criterion) < 2:
            continue
        choice = crossfit_choice({c: r["half_a"] for c, r in by_criterion.items()},
                                 {c: r["half_b"] for c, r in by_criterion.items()})
        reference = full[model, subset]
        any_run = next(iter(by_criterion.values()))
        rows.append({"model": model, "classes": any_run["classes"], "criterion": CHOSEN, "allocation": allocation,
                     "macs_ratio": max(r["macs_fraction"] for r in by_criterion.values()),
                     "accuracy": choice["accuracy"],
                     "restricted_full_accuracy": (reference["half_a"] + reference["half_b"]) / 2,
                     "protocol": "test-half-crossfit", "epochs": any_run["epochs"],
                     "cpu_minutes": sum(r["cpu_minutes"] for r in by_criterion.values()),
                     "chosen": [choice["chosen_on_a"], choice["chosen_on_b"]],
                     "candidates": sorted(by_criterion)})
    return rows


def _mean(values):
    return sum(values) / len(values) if values else float("nan")


def tables(rows: list[dict]) -> str:
    """Per model and budget: subsets x criteria, and the mean over subsets every criterion finished."""
    lines = ["## Class specialists on CIFAR-10 subsets", "",
             "Accuracy (%) among the subset's classes on the CIFAR-10 test images of those classes. Per criterion: "
             "protocol **fixed-recipe** (one distillation recipe fixed before the study, last epoch, nothing chosen; "
             "all test images of the subset). Column *chosen on half*: protocol **test-half-crossfit** (the criterion "
             "chosen on one seeded class-stratified half of the test images and read on the other, both ways, "
             "averaged). *full* is the full model restricted to the subset's logits.", ""]
    budgets = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        subset = ",".join(row["classes"])
        budgets[row["model"], row["allocation"]][_budget_of(row)][subset, row["criterion"]] = row
    for (model, allocation), per_budget in sorted(budgets.items()):
        for budget, cells in sorted(per_budget.items(), reverse=True):
            criteria = sorted({c for _, c in cells if c != CHOSEN}) + ([CHOSEN] if any(c == CHOSEN for _, c in cells) else [])
            subsets = sorted({s for s, _ in cells})
            lines += [f"### {model}, budget {budget} of the MACs, {allocation} allocation", "",
                      "| subset | full | " + " | ".join(criteria) + " |",
                      "|---|---|" + "---|" * len(criteria)]
            complete = [s for s in subsets if all((s, c) in cells for c in criteria)]
            for subset in subsets:
                reference = next(r for (s, _), r in cells.items() if s == subset)["restricted_full_accuracy"]
                values = [f"{cells[subset, c]['accuracy']:.2f}" if (subset, c) in cells else "–" for c in criteria]
                lines.append(f"| {subset} | {reference:.2f} | " + " | ".join(values) + " |")
            if complete:
                reference = _mean([next(r for (s, _), r in cells.items() if s == subset)["restricted_full_accuracy"]
                                   for subset in complete])
                means = [_mean([cells[s, c]["accuracy"] for s in complete]) for c in criteria]
                lines.append(f"| **mean of {len(complete)}** | {reference:.2f} | "
                             + " | ".join(f"**{m:.2f}**" for m in means) + " |")
                macs = _mean([cells[s, c]["macs_ratio"] for s in complete for c in criteria if c != CHOSEN])
                minutes = _mean([cells[s, c]["cpu_minutes"] for s in complete for c in criteria if c != CHOSEN])
                lines += ["", f"Measured MACs fraction {macs:.3f} (mean); {minutes:.1f} CPU-minutes per run (mean)."]
            lines.append("")
    return "\n".join(lines)


def targets(rows: list[dict]) -> str:
    """The issue's targets, each with the measured number (means over the subsets that finished)."""
    lines = ["### Targets", ""]

    def cells(model, budget, criterion):
        return {",".join(r["classes"]): r for r in rows
                if r["model"] == model and _budget_of(r) == budget and r["criterion"] == criterion}

    for model, budget, margin in (("cifar10_resnet20", 0.3, 1.0), ("cifar10_resnet56", 0.3, 1.0),
                                  ("cifar10_resnet20", 0.15, 2.0)):
        chosen = cells(model, budget, CHOSEN)
        if not chosen:
            lines.append(f"- {model} ≤ {budget} MACs, within {margin} point(s) of the restricted full model: not measured")
            continue
        gap = _mean([r["restricted_full_accuracy"] - r["accuracy"] for r in chosen.values()])
        verdict = "met" if gap <= margin else "missed"
        lines.append(f"- {model} ≤ {budget} MACs, criterion chosen on half (cross-fitted), over {len(chosen)} subset(s) "
                     f"({', '.join(sorted(chosen))}): {gap:.2f} points below the restricted full model "
                     f"(target ≤ {margin}): **{verdict}**")
    magnitude = cells("cifar10_resnet20", 0.15, "magnitude")
    for criterion in sorted({r["criterion"] for r in rows} - {"magnitude", CHOSEN}):
        mine = cells("cifar10_resnet20", 0.15, criterion)
        common = sorted(set(mine) & set(magnitude))
        if common:
            difference = _mean([mine[s]["accuracy"] - magnitude[s]["accuracy"] for s in common])
            lines.append(f"- cifar10_resnet20 ≤ 0.15 MACs, {criterion} − L1 magnitude (same allocation and recovery, "
                         f"{len(common)} subset(s)): {difference:+.2f} points (target ≥ +1.0)")
    ratios = [r["latency_batch64_ratio"] for r in rows if r["criterion"] != CHOSEN and _budget_of(r) == 0.3
              and "latency_batch64_ratio" in r]
    if ratios:
        lines.append(f"- latency at ≤ 0.3 MACs, batch 64, one thread, ÷ the full model's: {_mean(ratios):.2f} mean "
                     f"({min(ratios):.2f}–{max(ratios):.2f}) over {len(ratios)} runs (target ≤ 0.40); measured inside the "
                     f"study runs, on a shared machine")
    return "\n".join(lines)


def _budget_of(row: dict) -> float:
    """The requested budget a row belongs to (MACs land just under it)."""
    for budget in (0.1, 0.15, 0.2, 0.3, 0.5, 0.7):
        if row["macs_ratio"] <= budget + 1e-9:
            return budget
    return 1.0


def curve(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted({r["model"] for r in rows})
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model and r["criterion"] != CHOSEN]
        subsets_per_budget = defaultdict(lambda: defaultdict(dict))
        for r in mine:
            subsets_per_budget[_budget_of(r)][r["criterion"]][",".join(r["classes"])] = r
        for criterion in sorted({r["criterion"] for r in mine}):
            points = []
            for budget, per_criterion in sorted(subsets_per_budget.items()):
                common = set.intersection(*[set(v) for v in per_criterion.values()])
                if criterion in per_criterion and common:
                    points.append((_mean([per_criterion[criterion][s]["macs_ratio"] for s in common]),
                                   _mean([per_criterion[criterion][s]["accuracy"] for s in common])))
            if points:
                ax.plot(*zip(*points), marker="o", label=criterion)
        full = _mean([r["restricted_full_accuracy"] for r in mine])
        ax.axhline(full, color="k", linestyle="--", linewidth=1, label="full model, restricted")
        ax.set(title=f"{model} (mean over subsets)", xlabel="fraction of the full model's MACs",
               ylabel="test accuracy among the subset's classes (%)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, nargs="?", default=Path("benchmarks/results/specialize"))
    args = parser.parse_args(argv)
    runs, full = load_runs(args.folder)
    rows = summary_rows(runs, full)
    (args.folder / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    text = tables(rows) + "\n" + targets(rows) + "\n"
    (args.folder / "summary.md").write_text(text)
    if rows:
        curve(rows, args.folder / "summary.png")
    print(text)


if __name__ == "__main__":
    main()
