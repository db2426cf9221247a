"""``Series``: what :func:`medload.scan` finds, described from headers alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medload.problems import Problem, read_problems

__all__ = ["Series"]


@dataclass(frozen=True)
class Series:
    """One volume-to-be found by :func:`medload.scan`, described without reading pixels.

    A DICOM "series" (one SeriesInstanceUID) that holds several volumes (localizers, echoes,
    orientations, image sizes) is split into several ``Series``; temporal positions of one
    volume stay together and become a frames axis.

    Attributes
    ----------
    kind : str
        ``"dicom"``, ``"nifti"`` or ``"image"`` (PNG, JPEG, TIFF, BMP).
    files : tuple of str
        Absolute paths of the files that make the volume (any order; ``load`` sorts them).
    series_key, study_key, patient_key : str
        Keyed pseudonyms (see :mod:`medload.deid`); the same patient gives the same key.
    modality : str
        DICOM Modality code, or for NIfTI from a BIDS sidecar, else ``"unknown"``.
    description : str
        SeriesDescription / protocol name (for NIfTI: the file name).
    shape : tuple of int
        The array shape :func:`medload.load` will return: ``(Z, Y, X)`` or ``(T, Z, Y, X)``.
    spacing : tuple of float or None
        ``(z, y, x)`` voxel size in mm as far as headers tell.
    problems : tuple of Problem
        Problems found in headers (gaps, duplicates, tilt, ...), each a
        :class:`~medload.problems.Problem` (decide by its ``kind``; its ``message`` is a full sentence).
    source_hash : str
        What tells this source's volume apart for resumable conversion: a digest of its
        instance UIDs and file sizes (a file's bytes) keyed with the pseudonym key
        (:func:`medload.deid.keyed_source_hash`), ``src-`` and 32 hex digits.
    info : dict
        JSON-able details the reader needs to load exactly this volume (e.g. which
        ImageType or echo it was split by). Not part of the public contract.
    headers : tuple
        DICOM only: the parsed headers (``medload.io.headers.FileHeader``) of ``files`` as scan
        read them; ``load`` reuses each one whose file is unchanged. Not part of the public
        contract.
    burned_in_annotation : str
        DICOM BurnedInAnnotation: ``"YES"`` if any file says its pixels hold burned-in text
        (:func:`medload.load` refuses it unless ``allow_burned_in=True``), ``"NO"`` if every
        file says none, ``""`` when not said (NIfTI: always). See ``docs/deidentification.md``.

    Examples
    --------
    >>> s = Series(kind="nifti", files=("/data/t1.nii.gz",), series_key="ser-1",
    ...            study_key="stu-1", patient_key="pat-1", modality="MR",
    ...            description="t1.nii.gz", shape=(176, 256, 256), spacing=(1.0, 1.0, 1.0))
    >>> s.n_slices
    176
    """

    kind: str
    files: tuple[str, ...]
    series_key: str
    study_key: str
    patient_key: str
    modality: str = "unknown"
    description: str = ""
    shape: tuple[int, ...] = ()
    spacing: tuple[float, float, float] | None = None
    problems: tuple[Problem, ...] = ()
    source_hash: str = ""
    info: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    headers: tuple[Any, ...] = field(default=(), compare=False, hash=False, repr=False)
    burned_in_annotation: str = ""

    def __post_init__(self) -> None:
        # Records, whatever was passed (a plain sentence becomes kind "unclassified").
        object.__setattr__(self, "problems", read_problems(self.problems))

    @property
    def n_slices(self) -> int:
        """Number of slices (Z) of the volume."""
        return int(self.shape[-3]) if len(self.shape) >= 3 else 0

    @property
    def n_frames(self) -> int:
        """Number of frames (1 for a 3D volume)."""
        return int(self.shape[0]) if len(self.shape) == 4 else 1

    def volume_meta(self) -> dict[str, Any]:
        """The keys every loaded Volume's ``meta`` takes from its Series (pseudonyms, hash).

        Examples
        --------
        >>> Series("dicom", ("/x.dcm",), "ser-1", "stu-1", "pat-1").volume_meta()["source_key"]
        'ser-1'
        """
        return {
            "source": self.kind,
            "source_key": self.series_key,
            "series_key": self.series_key,
            "study_key": self.study_key,
            "patient_key": self.patient_key,
            "source_hash": self.source_hash,
            "description": self.description,
        }

    def summary(self) -> dict[str, Any]:
        """A JSON-able row for tables and reports (no file paths, no identifying fields).

        Examples
        --------
        >>> Series("nifti", ("/x.nii",), "ser-1", "stu-1", "pat-1", shape=(2, 3, 4)).summary()["slices"]
        2
        """
        return {
            "patient_key": self.patient_key,
            "study_key": self.study_key,
            "series_key": self.series_key,
            "kind": self.kind,
            "modality": self.modality,
            "description": self.description,
            "shape": list(self.shape),
            "slices": self.n_slices,
            "frames": self.n_frames,
            "spacing": list(self.spacing) if self.spacing else None,
            "files": len(self.files),
            "burned_in_annotation": self.burned_in_annotation,
            "problems": [p.to_json() for p in self.problems],
        }
