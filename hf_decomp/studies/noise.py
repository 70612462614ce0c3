"""Paper Table 8: accuracy of the full layer when a class's influential (or all other) features become noise.

The true class's influential features are replaced by N(0, 1) noise (first column), or every other
feature is (second column); the full dense layer then classifies. If the influential sets carry the
decision, the first column collapses and the second stays close to the full accuracy.

The numbers come from :func:`~hf_decomp.studies.common.evaluate_sets`, analyze's own evaluation with
its per-image content-seeded noise, so they equal ``hf-decomp analyze``'s noise figures.
"""

from __future__ import annotations

from ..utils.markdown import markdown_table
from .common import ModelFeatures, StudyResult, evaluate_sets

__all__ = ["noise_ablation", "noise_study", "noise_table"]


def noise_ablation(mf: ModelFeatures, index_sets, seed: int = 0) -> dict:
    """Accuracies (percent) of the full layer on clean, influential->noise and non-influential->noise features."""
    result = evaluate_sets(mf, index_sets, seed=seed)
    return {"full_accuracy": result["full_accuracy"], **result["noise_ablation"],
            "eval_samples": result["eval_samples"]}


def noise_table(rows: list[dict]) -> str:
    """Markdown Table 8 from depth rows (each holding ``noise_ablation``)."""
    body = [[r["model"], r["k2"], r["full_accuracy"], r["noise_ablation"]["influential_to_noise_accuracy"],
             r["noise_ablation"]["non_influential_to_noise_accuracy"]] for r in rows]
    return markdown_table(["model", "k2", "clean (%)", "influential -> noise (%)", "non-influential -> noise (%)"],
                          body)


def noise_study(rows: list[dict]) -> StudyResult:
    """Table 8 for every model of a depth study (the numbers are computed with its rows)."""
    markdown = (
        "The true class's k2 influential features replaced by N(0, 1) noise, or all its other d - k2 features "
        "replaced instead; the full (dense) layer then classifies the eval features.\n\n" + noise_table(rows)
    )
    data = {"rows": [{"model": r["model"], "k2": r["k2"], "full_accuracy": r["full_accuracy"],
                      **r["noise_ablation"]} for r in rows]}
    return StudyResult("noise", "Noise ablation (Table 8)", markdown, data, [])
