"""The errors medload raises.

Every failure a user can cause or meet in a real export ends in a :class:`MedloadError`
subclass whose message names the file or series, what was expected, what was found and
what to do about it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MedloadError",
    "ReadError",
    "GeometryError",
    "FrameOrderError",
    "UnsupportedError",
    "MissingDependencyError",
    "StoreError",
    "PipelineMismatchError",
    "TransformError",
    "ConfigError",
    "BurnedInAnnotationError",
    "LimitError",
]


class MedloadError(Exception):
    """Base class of every error medload raises on purpose."""


class ReadError(MedloadError):
    """A file could not be read: not DICOM/NIfTI, truncated, or pixels that do not decode."""


class GeometryError(MedloadError):
    """A series does not form one volume: gaps, duplicates, uneven spacing, mixed orientation."""


class FrameOrderError(GeometryError):
    """The images at some slice positions of a 4D series cannot be put in one frame order.

    ``positions_mm`` holds those positions (distance along the slice normal, mm).
    """

    def __init__(self, message: str, positions_mm: tuple[float, ...] = ()) -> None:
        super().__init__(message)
        self.positions_mm = tuple(positions_mm)


class UnsupportedError(MedloadError):
    """The input is valid but medload does not handle it (yet); the message says what does."""


class MissingDependencyError(MedloadError, ImportError):
    """An optional package is needed; the message names the ``pip install`` that provides it."""


class StoreError(MedloadError):
    """An HDF5 store is missing, not a medload store, of another schema, or incomplete."""


class PipelineMismatchError(StoreError):
    """A store was written with another pipeline than the one asked for now.

    Attributes
    ----------
    path : str
        The store file.
    stored, wanted : Any
        The pipeline configuration the store holds (``None`` when unreadable) and the one asked
        for, as JSON-able values, so that a caller can say what differs without reading the
        message.
    """

    def __init__(self, message: str, *, path: str = "", stored: Any = None, wanted: Any = None) -> None:
        super().__init__(message)
        self.path = path
        self.stored = stored
        self.wanted = wanted

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes, attributes kept
        return (_rebuild, (type(self), str(self), self.__dict__))


def _rebuild(cls: type, message: str, state: dict[str, Any]) -> Exception:
    exc = cls(message, **state)
    return exc


class TransformError(MedloadError, ValueError):
    """A transform was given a parameter or a volume it cannot work with."""


class ConfigError(MedloadError):
    """A setting is missing or does not fit: the pseudonym key file, a key other than the store's."""


class BurnedInAnnotationError(UnsupportedError):
    """A series says its pixels hold burned-in text (BurnedInAnnotation YES): names may be in them."""
class LimitError(ReadError):
    """A header claims a size beyond the per-volume limit (``MEDLOAD_MAX_VOLUME_BYTES``)."""
