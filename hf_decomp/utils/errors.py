"""Exceptions raised for bad user input.

They subclass the builtin types users already catch (``ValueError``, ``FileNotFoundError``), so
library callers need nothing new, while the CLI can tell input problems (print and exit 2) from bugs
(traceback).
"""


class DecompError(Exception):
    """Base class for every error that is the caller's to fix."""


class DecompValueError(DecompError, ValueError):
    """A value is not allowed; the message names it, the allowed values and the fix."""


class DecompFileError(DecompError, FileNotFoundError):
    """Something that should exist on disk or on the Hub is missing."""


class UnsupportedHeadError(DecompValueError):
    """The model's decision is not one linear layer over pooled features."""


class OutputExistsError(DecompError, FileExistsError):
    """The output directory already holds results."""


class OutputLocationError(DecompError, PermissionError):
    """``--out`` cannot be written, or writing it would destroy an input."""
