"""The errors medload raises.

Every failure a user can cause or meet in a real export ends in a :class:`MedloadError`
subclass whose message names the file or series, what was expected, what was found and
what to do about it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MedloadError",
    "ConfigError",
    "ReadError",
    "GeometryError",
    "FrameOrderError",
    "UnsupportedError",
    "MissingDependencyError",
    "StoreError",
    "PipelineMismatchError",
    "TransformError",
    "BurnedInAnnotationError",
    "LimitError",
]


class MedloadError(Exception):
    """Base class of every error medload raises on purpose.

    Raised as one of its subclasses: :class:`ConfigError` (and :class:`TransformError`) when an
    argument or option is wrong, :class:`MissingDependencyError` when a package is missing, the
    others when the data is (:class:`ReadError`, :class:`GeometryError`,
    :class:`UnsupportedError`, :class:`StoreError`). The ``medload`` command exits with 2 for the
    first two kinds and 1 for data errors.
    """


class ConfigError(MedloadError, ValueError):
    """An argument, option or setting is wrong: a value out of range, a path that does not exist,
    options that cannot go together, the pseudonym key file missing, a key other than the store's.
    The message names the argument, the value found and what is allowed.
    """


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


class ChecksumError(StoreError):
    """Stored pixels differ from the checksums written with them: the file was damaged after it was written.

    Attributes
    ----------
    path : str
        The store file (shard) that holds the volume.
    key : str
        The volume's key.
    slices : tuple of int
        The damaged slices (image or mask); empty when the volume has only its one whole-volume
        checksum (stores written before slice checksums).
    """

    def __init__(self, message: str, *, path: str = "", key: str = "", slices: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.path = path
        self.key = key
        self.slices = tuple(slices)

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes, attributes kept
        return (_rebuild, (type(self), str(self), self.__dict__))


def _rebuild(cls: type[Exception], message: str, state: dict[str, Any]) -> Exception:
    exc = cls(message, **state)
    return exc


class TransformError(ConfigError):
    """A transform was given a parameter or a volume it cannot work with."""


class BurnedInAnnotationError(UnsupportedError):
    """A series says its pixels hold burned-in text (BurnedInAnnotation YES): names may be in them."""


class LimitError(ReadError):
    """A header claims a size beyond the per-volume limit (``MEDLOAD_MAX_VOLUME_BYTES``)."""
