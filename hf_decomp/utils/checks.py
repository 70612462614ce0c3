"""Checks of user-given sizes, in one place, so every entry point refuses a bad value the same way.

Each check runs before any pass over the data: a wrong ``k`` or batch size found after an hour of
feature extraction costs the hour.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

from .errors import DecompValueError

__all__ = ["check_k", "check_k_values", "resolve_k", "check_width_fraction", "check_positive_int"]


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(name: str, value, flag: str | None = None) -> int:
    """``value`` must be an int >= 1 (batch sizes, step counts); ``flag`` names the CLI option in the error."""
    if not _is_int(value) or value < 1:
        how = f"{flag} N" if flag else f"{name}=N"
        raise DecompValueError(f"{name}={value!r} must be a positive integer; give {how} with N >= 1.")
    return value


def check_k(name: str, value, num_features: int, *, width_of: str = "the model's feature width",
            hint: str | None = None) -> int | None:
    """One k (``k1``, ``k2``, ``k``) must be an int in [1, d]; None passes (not used).

    The one owner of this check: every entry point (API and CLI) calls it before any pass over data.
    ``width_of`` says what d is; ``hint`` replaces the closing "choose --{name} in that range".
    """
    if value is None:
        return None
    if not _is_int(value):
        raise DecompValueError(f"{name}={value!r} must be an integer in [1, d={num_features}]")
    if not 1 <= value <= num_features:
        raise DecompValueError(
            f"{name}={value} must be between 1 and d={num_features} ({width_of}); "
            f"{hint or f'choose --{name} in that range.'}")
    return int(value)


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


def check_width_fraction(name: str, value) -> float:
    """A k given as a share of the width (``k1_ratio``, specialize's k1 fraction): a number in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise DecompValueError(f"{name}={value!r} must be a fraction of the width in (0, 1] (e.g. 0.05; 1 = "
                               f"every feature)")
    return float(value)


def resolve_k(name: str, value: int | float, width: int, layer: str | None = None) -> int:
    """An absolute k (int, 1..width) or a fraction of the width (float in (0, 1)) as an int for one layer."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, float)):
        raise TypeError(f"{name} must be an int or a fraction, got {type(value).__name__}")
    if isinstance(value, float) and value < 1:
        if not value > 0:
            raise DecompValueError(f"{name}={value}: a fraction of the layer width must be in (0, 1)")
        return max(1, round(value * width))
    if isinstance(value, float) and not value.is_integer():
        raise DecompValueError(f"{name}={value} is neither a whole number nor a fraction in (0, 1)")
    return check_k(name, int(value), width, width_of=f"the width of layer {layer or 'final'!r}",
                   hint=f"give a fraction of the width instead (e.g. {name}=0.1) to use the same share in "
                        f"every layer.")
