"""Checks of user-given sizes, in one place, so every entry point refuses a bad value the same way.

Each check runs before any pass over the data: a wrong ``k`` or batch size found after an hour of
feature extraction costs the hour.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import DecompValueError

__all__ = ["check_k", "check_k_values", "check_positive_int"]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_positive_int(name: str, value, flag: str | None = None) -> int:
    """``value`` must be an int >= 1 (batch sizes, step counts); ``flag`` names the CLI option in the error."""
    if not _is_int(value) or value < 1:
        how = f"{flag} N" if flag else f"{name}=N"
        raise DecompValueError(f"{name}={value!r} must be a positive integer; give {how} with N >= 1.")
    return value


def check_k(name: str, value, num_features: int) -> int | None:
    """One k (``k1``, ``k2``, ``k``) must be an int in [1, d]; None passes (not used)."""
    if value is None:
        return None
    if not _is_int(value):
        raise DecompValueError(f"{name}={value!r} must be an integer in [1, d={num_features}]")
    if not 1 <= value <= num_features:
        raise DecompValueError(
            f"{name}={value} must be between 1 and d={num_features} (the model's feature width); "
            f"choose --{name} in that range.")
    return value


def check_k_values(name: str, values: Iterable, num_features: int) -> list[int]:
    """A grid of k values: non-empty, integers in [1, d]. Returns them sorted and unique."""
    values = list(values)
    if not values:
        raise DecompValueError(f"{name} grid is empty; give at least one value, e.g. --{name} 1,5,10")
    bad = [v for v in values if not _is_int(v) or not 1 <= v <= num_features]
    if bad:
        raise DecompValueError(
            f"{name} values {bad} are not integers in [1, d={num_features}] (d is the model's feature width)."
        )
    return sorted(set(values))
