"""The paper's analyses as studies: each a function from cached features (and images) to a report section.

- :mod:`.histograms` Fig. 2, :mod:`.sweep` Fig. 3, :mod:`.depth` Tables 2-6 and Fig. 4,
  :mod:`.noise` Table 8, :mod:`.overlap` class overlap and mutual information,
  :mod:`.activation_maps` Table 7, :mod:`.csg` the Class-Specific Gates baseline (Table 1),
  :mod:`.report` all of them into ``report.md`` / ``report.json``.
"""

from .common import ModelFeatures, StudyResult, load_model_features
from .suite import ReportSettings, run_report

__all__ = ["ModelFeatures", "StudyResult", "load_model_features", "ReportSettings", "run_report"]
