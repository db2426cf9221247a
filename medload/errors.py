"""The errors medload raises.

Every failure a user can cause or meet in a real export ends in a :class:`MedloadError`
subclass whose message names the file or series, what was expected, what was found and
what to do about it.
"""

from __future__ import annotations

__all__ = [
    "MedloadError",
    "ReadError",
    "GeometryError",
    "UnsupportedError",
    "MissingDependencyError",
    "StoreError",
    "TransformError",
]


class MedloadError(Exception):
    """Base class of every error medload raises on purpose."""


class ReadError(MedloadError):
    """A file could not be read: not DICOM/NIfTI, truncated, or pixels that do not decode."""


class GeometryError(MedloadError):
    """A series does not form one volume: gaps, duplicates, uneven spacing, mixed orientation."""


class UnsupportedError(MedloadError):
    """The input is valid but medload does not handle it (yet); the message says what does."""


class MissingDependencyError(MedloadError, ImportError):
    """An optional package is needed; the message names the ``pip install`` that provides it."""


class StoreError(MedloadError):
    """An HDF5 store is missing, not a medload store, of another schema, or incomplete."""


class TransformError(MedloadError, ValueError):
    """A transform was given a parameter or a volume it cannot work with."""
