"""``CommandSettings``: what every typed settings dataclass of a command shares.

A command's settings are one dataclass (like transformers' ``TrainingArguments``) whose field names are
the dests of the command's flags; it validates itself in ``__post_init__`` (before any data is read),
serialises with ``to_dict`` / ``from_dict`` (``metrics.json`` records it under ``settings``), is built
from parsed flags with ``from_namespace`` and from keyword arguments with ``with_overrides``, which also
accepts the old keyword names of ``RENAMED`` with one ``FutureWarning``. ``tests`` check that a command's
parser dests equal ``field_names()``.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import fields
from typing import ClassVar

from .errors import DecompValueError

__all__ = ["CommandSettings", "rename_keywords", "resolve_renamed"]


def rename_keywords(function: str, given: dict, renamed: dict[str, str], stacklevel: int = 3) -> dict:
    """``given`` with the old keyword names of ``renamed`` ({old: new}) replaced by the new ones, after one
    FutureWarning naming them all; giving an old name and its new name together is refused."""
    old_names = [old for old in renamed if old in given]
    if not old_names:
        return given
    warnings.warn(f"{function}(): " + ", ".join(f"{old}= is now {renamed[old]}=" for old in old_names)
                  + "; the old names will be removed in the next release", FutureWarning, stacklevel=stacklevel)
    given = dict(given)
    for old in old_names:
        new = renamed[old]
        if new in given:
            raise DecompValueError(f"{function}() got both {old}= and its new name {new}=; give only {new}=")
        given[new] = given.pop(old)
    return given


class CommandSettings:
    """Mixin of a settings dataclass: field names, JSON round trip, construction from flags or keywords."""

    COMMAND: ClassVar[str] = "the command"  # names the function in errors and warnings
    KIND: ClassVar[str | None] = None  # names the settings in errors (default: the command)
    RENAMED: ClassVar[dict[str, str]] = {}  # old keyword name -> field name

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def to_dict(self) -> dict:
        """JSON-safe settings (tuples become lists)."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict):
        """Settings from :meth:`to_dict`'s output (unknown keys are refused, naming them)."""
        unknown = sorted(set(data) - set(cls.field_names()))
        if unknown:
            raise DecompValueError(f"unknown {cls.KIND or cls.COMMAND} settings {unknown}; known: {', '.join(cls.field_names())}")
        return cls(**data)

    @classmethod
    def from_namespace(cls, args: argparse.Namespace, **overrides):
        """From parsed flags: every field is read from the dest of the same name; ``overrides`` win."""
        values = vars(args)
        return cls(**{**{name: values[name] for name in cls.field_names() if name in values}, **overrides})

    @classmethod
    def with_overrides(cls, settings, overrides: dict, stacklevel: int = 4, function: str | None = None):
        """``settings`` (or the defaults) with keyword ``overrides`` applied; old keyword names are accepted
        with one FutureWarning naming the new ones, unknown ones are refused naming the known ones.
        ``function`` names the caller in both (default: the command)."""
        function = function or cls.COMMAND
        if settings is not None and not isinstance(settings, cls):
            raise TypeError(f"settings must be a {cls.__name__}, not {type(settings).__name__}")
        overrides = rename_keywords(function, overrides, cls.RENAMED, stacklevel=stacklevel)
        unknown = sorted(set(overrides) - set(cls.field_names()))
        if unknown:
            raise TypeError(f"{function}() got unexpected keyword arguments {unknown}; settings are "
                            f"{', '.join(cls.field_names())}")
        values = {name: getattr(settings, name) for name in cls.field_names()} if settings is not None else {}
        return cls(**{**values, **overrides})


def resolve_renamed(function: str, old: dict, renamed: dict[str, str], new: dict, stacklevel: int = 3) -> dict:
    """The new keyword arguments of ``function`` with values given under their old names filled in.

    ``old`` is the function's ``**kwargs`` (only names of ``renamed`` are accepted, with one FutureWarning
    for all); ``new`` maps each new name to the value given (None: not given).
    """
    unknown = sorted(set(old) - set(renamed))
    if unknown:
        raise TypeError(f"{function}() got unexpected keyword arguments {unknown}")
    given = {name: value for name, value in new.items() if value is not None}
    return {**new, **rename_keywords(function, {**given, **old}, renamed, stacklevel=stacklevel + 1)}
