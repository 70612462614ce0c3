"""The names ``hf-decomp specialize`` accepts, importable without torch (the CLI builds its parser from them).

``tests/test_specialize_criteria.py`` checks that :data:`CRITERIA` lists exactly the registered criteria.
"""

CRITERIA = ("taylor", "propagated", "votes-block", "votes-bn", "magnitude")
ALLOCATIONS = ("global", "uniform")
# the default criterion, fixed before the committed study ran (benchmarks/results/specialize reports how it fared)
DEFAULT_CRITERION = "taylor"
