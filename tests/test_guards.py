"""Each guard here has a test that fails when the guard is deleted (checked by deleting it)."""

from __future__ import annotations

import pytest

from hf_decomp.method.indices import InfluentialIndices
from hf_decomp.utils.errors import DecompValueError


def test_index_artifact_refuses_duplicate_indices():
    with pytest.raises(DecompValueError, match=r"class 1 \('b'\): duplicate indices in \[2, 2\]"):
        InfluentialIndices(sets=[[0, 1], [2, 2]], num_features=4, label_names=["a", "b"])


def test_index_artifact_refuses_out_of_range_and_empty_sets():
    with pytest.raises(DecompValueError, match=r"class 0 \('a'\): indices \[4\] are outside \[0, 4\)"):
        InfluentialIndices(sets=[[4], [1]], num_features=4, label_names=["a", "b"])
    with pytest.raises(DecompValueError, match=r"class 1 \('b'\) has an empty index set"):
        InfluentialIndices(sets=[[0], []], num_features=4, label_names=["a", "b"])
    with pytest.raises(DecompValueError, match="2 index sets but 3 label names"):
        InfluentialIndices(sets=[[0], [1]], num_features=4, label_names=["a", "b", "c"])
