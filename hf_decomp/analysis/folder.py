"""Read back an ``hf-decomp analyze`` results folder: indices, metrics, statistics and top images."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file

from ..method.indices import INDICES_JSON, InfluentialIndices
from ..method.statistics import ClassStatistics
from ..utils.errors import DecompError, DecompFileError, DecompValueError
from ..utils.files import finish_replace_before_reading
from .results import AnalysisMetrics
from .top_images import TOP_IMAGES_FILE, TopImages

__all__ = ["ResultsFolder", "is_results_folder"]


def is_results_folder(path: str | Path) -> bool:
    path = Path(path)
    return (path / INDICES_JSON).is_file() and (path / "metrics.json").is_file()


@dataclass
class ResultsFolder:
    """What ``analyze(out_dir=...)`` wrote, loaded; ``examples`` is None for folders without top images."""

    path: Path
    indices: InfluentialIndices
    metrics: AnalysisMetrics  # metrics.json, typed (older folders' files load too)
    statistics: ClassStatistics | None
    examples: TopImages | None

    @classmethod
    def load(cls, path: str | Path) -> "ResultsFolder":
        path = Path(path)
        finish_replace_before_reading(path)  # a results folder a killed run left mid-replace: finish it first
        if not is_results_folder(path):
            raise DecompFileError(f"{str(path)!r} is not an `hf-decomp analyze` results folder (it needs "
                                  f"{INDICES_JSON} and metrics.json); give the --out folder of analyze.")
        statistics_file = path / "statistics.safetensors"
        statistics = _read(statistics_file, lambda: ClassStatistics.from_state_dict(load_file(statistics_file)),
                           "the vote histograms and the selection come from it, so re-run `hf-decomp analyze` "
                           "into a new --out folder") if statistics_file.is_file() else None
        examples = _read(path / TOP_IMAGES_FILE, lambda: TopImages.load(path),
                         f"delete it (and {TOP_IMAGES_FILE.replace('.safetensors', '.json')}) to go on without top "
                         f"images, or re-run `hf-decomp analyze`") if (path / TOP_IMAGES_FILE).is_file() else None
        try:
            raw = json.loads((path / "metrics.json").read_text())
        except (OSError, ValueError) as e:
            raise DecompFileError(f"{path / 'metrics.json'} is unreadable ({e}); re-run analyze into a new --out "
                                  f"folder.") from e
        metrics = AnalysisMetrics.from_dict(raw, where=str(path / "metrics.json"))
        return cls(path, InfluentialIndices.load(path), metrics, statistics, examples)

    def top_images(self, feature: int, class_: int | None = None) -> list[dict]:
        """Most activating statistics images of ``feature`` (in class ``class_``): [{dataset, split,
        image_column, key, activation}], most activating first."""
        if self.examples is None:
            raise DecompValueError(f"{self.path} holds no {TOP_IMAGES_FILE}; re-run analyze with --top-images N.")
        return self.examples.query(feature, class_)


def _read(path: Path, load, fix: str):
    """``load()``, with a damaged file (truncated, hand-edited, another format) named in one line."""
    try:
        return load()
    except DecompError:
        raise
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise DecompFileError(f"{path} is damaged or not written by hf-decomp ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else 'no detail'}); {fix}.") from e
