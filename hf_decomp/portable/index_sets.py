"""Validation of per-class index sets: the one place that decides what a valid decomposition is."""

from __future__ import annotations

import operator
from collections.abc import Sequence

__all__ = ["as_index", "check_index_sets", "is_index"]


def is_index(value) -> bool:
    """A Python or numpy integer; not a bool, float (2.7 would silently become 2), NaN or string."""
    return not isinstance(value, bool) and hasattr(value, "__index__")


def as_index(value, where: str, error: type[Exception] = ValueError) -> int:
    """``value`` as an ``int`` when :func:`is_index`, else ``error`` naming it."""
    if isinstance(value, bool):
        raise error(f"{where}: {value!r} is not a feature index (an integer)")
    if not is_index(value):
        raise error(
            f"{where}: {value!r} is not a feature index (an integer); the file was edited or damaged. "
            f"Re-create it (`hf-decomp analyze`, or re-export the model)."
        )
    return operator.index(value)


def check_index_sets(index_sets, num_features: int, label_names: Sequence[str] | None = None,
                     error: type[Exception] = ValueError, fix: str = "") -> list[list[int]]:
    """Per class, a non-empty list of distinct integer indices in [0, num_features).

    Args:
        index_sets: one sequence of feature indices per class.
        num_features: d, the width of the features the indices point into.
        label_names: one name per class (named in messages; their count must match).
        error: the ``ValueError`` subclass to raise.
        fix: a sentence appended to range errors (what the user should do).

    Returns:
        The sets as lists of ``int``.
    """
    if isinstance(index_sets, (str, bytes, dict)) or not hasattr(index_sets, "__iter__"):
        raise error(f"index sets must be one list of indices per class, got {type(index_sets).__name__}")
    sets = []
    for c, subset in enumerate(index_sets):
        if isinstance(subset, (str, bytes, dict)) or not hasattr(subset, "__iter__"):
            raise error(f"class {c}: {subset!r:.80} is not a list of feature indices")
        sets.append([as_index(i, f"class {c}", error) for i in subset])
    if label_names is not None and len(label_names) != len(sets):
        raise error(f"{len(sets)} index sets but {len(label_names)} label names; expected one set per class")
    if not sets:
        raise error("index_sets is empty: expected one index list per class")
    for c, subset in enumerate(sets):
        name = f"class {c} ({label_names[c]!r})" if label_names is not None else f"class {c}"
        if not subset:
            raise error(f"{name} has an empty index set; every class needs at least one feature")
        bad = [i for i in subset if not 0 <= i < num_features]
        if bad:
            raise error(f"{name}: indices {bad} are outside [0, {num_features}) (d={num_features}){fix}")
        if len(set(subset)) != len(subset):
            raise error(f"{name}: duplicate indices in {subset}")
    return sets
