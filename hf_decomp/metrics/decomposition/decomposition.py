"""Decomposition: full accuracy, decomposed accuracy, rho and per-class rho of a decomposed classifier.

An ``evaluate`` metric module (Badola et al., "Decomposing the Deep"). Self-contained: it imports only
evaluate and datasets, so it also loads from a Hub Space where hf-decomp is not installed.
"""

import datasets
import evaluate

_DESCRIPTION = """
Compares a classifier's full final layer with its decomposed one (class c reads only its influential
features). From the decomposed model's predictions, the full model's predictions and the references:
full_accuracy and decomposed_accuracy (percent), rho = decomposed / full accuracy, and per class the
same three numbers over the samples of that class (rho is None where the full layer got none right).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): the decomposed model's predicted class ids.
    full_predictions (`list` of `int`): the full (original) model's predicted class ids.
    references (`list` of `int`): the true class ids.
    label_names (`list` of `str`, *optional*): names for the per-class results (default: class ids).

Returns:
    full_accuracy (`float`): percent of samples the full model got right.
    decomposed_accuracy (`float`): percent of samples the decomposed model got right.
    rho (`float` or `None`): decomposed_accuracy / full_accuracy (None when full_accuracy is 0).
    samples (`int`): how many samples were scored.
    per_class (`dict`): per class present in the references: samples, full_accuracy, decomposed_accuracy, rho.

Examples:
    >>> metric = evaluate.load(hf_decomp.metrics.path("decomposition"))
    >>> metric.compute(predictions=[0, 1, 1, 0], full_predictions=[0, 1, 1, 1], references=[0, 1, 0, 1])
    {'full_accuracy': 75.0, 'decomposed_accuracy': 50.0, 'rho': 0.6666666666666666, 'samples': 4, ...}
"""

_CITATION = """@article{badola2021decomposing,
  title   = {Decomposing the Deep: Finding Class Specific Filters in Deep CNNs},
  author  = {Badola, Akshay and Roy, Cherian and Padmanabhan, Vineet and Lal, Rajendra},
  journal = {arXiv preprint arXiv:2112.07719},
  year    = {2021}
}"""


def _ratio(numerator, denominator):
    return numerator / denominator if denominator else None


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Decomposition(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Value("int64"),
                "full_predictions": datasets.Value("int64"),
                "references": datasets.Value("int64"),
            }),
            reference_urls=["https://arxiv.org/abs/2112.07719"],
        )

    def _compute(self, predictions, full_predictions, references, label_names=None):
        total = len(references)
        if total == 0:
            raise ValueError("no samples to score: predictions, full_predictions and references are empty")
        counts = {}  # class -> [samples, full correct, decomposed correct]
        for decomposed, full, label in zip(predictions, full_predictions, references):
            entry = counts.setdefault(int(label), [0, 0, 0])
            entry[0] += 1
            entry[1] += int(full == label)
            entry[2] += int(decomposed == label)
        full_correct = sum(entry[1] for entry in counts.values())
        decomposed_correct = sum(entry[2] for entry in counts.values())
        full_accuracy = 100.0 * full_correct / total
        decomposed_accuracy = 100.0 * decomposed_correct / total
        per_class = {}
        for label in sorted(counts):
            samples, full_ok, decomposed_ok = counts[label]
            name = label_names[label] if label_names is not None else label
            per_class[name] = {"samples": samples, "full_accuracy": 100.0 * full_ok / samples,
                               "decomposed_accuracy": 100.0 * decomposed_ok / samples,
                               "rho": _ratio(decomposed_ok, full_ok)}
        return {"full_accuracy": full_accuracy, "decomposed_accuracy": decomposed_accuracy,
                "rho": _ratio(decomposed_accuracy, full_accuracy), "samples": total, "per_class": per_class}
