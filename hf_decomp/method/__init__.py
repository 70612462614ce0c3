"""The method itself, as pure functions over streamed statistics.

statistics (per-class histograms and sums) -> criteria (a score per class and feature, one registry)
-> selection (index sets) -> indices (the saved artifact) -> bias correction. The head that uses the
sets is :class:`hf_decomp.portable.decomposed_head.DecomposedLinear`.
"""
