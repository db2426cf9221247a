"""Readers: :func:`scan` finds volumes from headers, :func:`load` reads one into a Volume.

DICOM is read here (``headers``, ``sorting``, ``codecs``, ``dicom``, ``scan``); NIfTI in
``medload.io.nifti``; PNG, JPEG, TIFF and BMP in ``medload.io.images``. All give the same
:class:`~medload.volume.Volume` contract.
"""

from __future__ import annotations

import os
from typing import Any

from medload.errors import ReadError
from medload.deid import PhiKey
from medload.io.export import save_nifti
from medload.io.images import is_image, load_image, scan_image
from medload.io.nifti import is_nifti, load_nifti, scan_nifti
from medload.io.scan import FileProblem, ScanResult, scan
from medload.io.series import Series
from medload.io.stored import LookedUp, TableFor
from medload.io.validate import check_grid
from medload.volume import Volume

__all__ = ["scan", "load", "save_nifti", "Series", "ScanResult", "FileProblem"]


def load(
    series_or_path: Series | str | os.PathLike[str],
    *,
    modality: str | None = None,
    keep_phi: bool = False,
    on_gap: str = "error",
    phi_key: str | bytes | PhiKey | None = None,
    allow_burned_in: bool = False,
) -> Volume:
    """Load one volume: a :class:`Series` from :func:`scan`, a file, or a folder holding one series.

    Parameters
    ----------
    series_or_path : Series, str or path-like
        What to load. A folder must hold exactly one volume; otherwise the error lists what it
        found (use :func:`scan` and pick one).
    modality : str, optional
        Overrides the modality from the headers (NIfTI: used when no BIDS sidecar says).
    keep_phi : bool
        DICOM only: keep identifying fields under ``meta["phi"]``.
    on_gap : {"error", "interpolate"}
        DICOM only: what to do with missing or unevenly spaced slices.
    phi_key : str, bytes or PhiKey, optional
        Secret of the pseudonyms when loading a path (default ``$MEDLOAD_PHI_KEY``, else the
        operator's key file): the keys are those ``scan(path, phi_key=...)`` gives. A Series
        keeps the keys its scan made.
    allow_burned_in : bool
        DICOM only: load a series whose BurnedInAnnotation is YES (refused by default, with
        :class:`~medload.errors.BurnedInAnnotationError`: its pixels hold text such as names).

    Returns
    -------
    Volume

    Raises
    ------
    ReadError, GeometryError, MissingDependencyError, UnsupportedError, BurnedInAnnotationError
        Each names the file or series, what was expected and found, and what to do.

    Examples
    --------
    >>> import os, pydicom
    >>> path = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "MR_small.dcm")
    >>> vol = load(path)
    >>> vol.modality, vol.shape
    ('MR', (1, 64, 64))
    """
    if isinstance(series_or_path, Series):
        volume = _read(series_or_path, modality=modality, keep_phi=keep_phi, on_gap=on_gap, allow_burned_in=allow_burned_in)
        # Every reader's volume passes one check of its grid here: a header value each
        # reader's own checks accept (finite, positive) can still give an affine of 1e308 mm voxels.
        check_grid(_what(series_or_path), volume.affine)
        return volume
    path = os.fspath(series_or_path)
    if not os.path.exists(path):
        raise ReadError(
            f"{path}: no such file or folder; expected a DICOM/NIfTI file, a folder of one series, or a Series from medload.scan()."
        )
    if os.path.isfile(path) and is_nifti(path):
        # Keyed as scan(path) keys it: relative to the file's folder, with the same secret.
        return load(scan_nifti(path, phi_key=phi_key, root=os.path.dirname(path)), modality=modality)
    if os.path.isfile(path) and is_image(path, check_magic=False):
        return load(scan_image(path, root=os.path.dirname(os.path.abspath(path)), phi_key=phi_key), modality=modality)
    found = scan(path, phi_key=phi_key)
    if len(found) != 1:
        if not found:
            why = "; ".join(p.message for p in found.errors[:3]) or f"skipped: {dict(found.skipped)}"
            raise ReadError(f"{path}: no image volume found in {found.n_files} file(s) ({why}).")
        listing = "; ".join(f"[{i}] {s.modality} {s.description!r} shape {s.shape}" for i, s in enumerate(found[:10]))
        raise ReadError(
            f"{path}: holds {len(found)} volumes, expected one ({listing}{' ...' if len(found) > 10 else ''}). "
            "Use medload.scan(path) and load the Series you want."
        )
    return load(found[0], modality=modality, keep_phi=keep_phi, on_gap=on_gap, allow_burned_in=allow_burned_in)


def load_stored(
    series: Series, table_for: TableFor, *, keep_phi: bool = False, on_gap: str = "error", allow_burned_in: bool = False
) -> LookedUp | Volume:
    """:func:`load` of a DICOM ``series`` looked up in ``table_for``'s table from its stored values, where it can be.

    A converter that turns rescaled values straight into stored bytes (``medload.batch.fused``)
    asks for this: a grey-scale uncompressed series whose slices rescale to integers comes back
    as a :class:`~medload.io.stored.LookedUp` (every slice looked up as it is read, no rescaled
    volume made; see :mod:`medload.io.stored` for ``table_for``); anything else as :func:`load`
    gives it. Same checks and errors as :func:`load`.

    Examples
    --------
    >>> import os, pydicom, numpy as np
    >>> path = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm")
    >>> above_zero = (np.arange(1 << 16, dtype=np.uint16).view(np.int16) > 0).astype(np.uint8)
    >>> looked = load_stored(scan(path)[0], lambda shell, value_range: above_zero)
    >>> looked.volume.array.dtype, bool(looked.volume.array.any()), looked.rescaled_dtype
    (dtype('uint8'), True, dtype('int16'))
    """
    options: dict[str, Any] = {"keep_phi": keep_phi, "on_gap": on_gap, "allow_burned_in": allow_burned_in}
    if series.kind != "dicom":
        return load(series, **options)
    from medload.io.dicom import load_dicom_stored

    loaded = load_dicom_stored(series, table_for, **options)
    check_grid(_what(series), loaded.volume.affine if isinstance(loaded, LookedUp) else loaded.affine)
    return loaded


def _read(series: Series, *, modality: str | None, keep_phi: bool, on_gap: str, allow_burned_in: bool) -> Volume:
    """The volume of ``series`` from the reader of its kind."""
    if series.kind == "nifti":
        return load_nifti(series, modality=modality)
    if series.kind == "image":
        return load_image(series, modality=modality)
    if series.kind == "nnunet":
        from medload.io.nnunet import load_nnunet

        return load_nnunet(series, modality=modality)
    from medload.io.dicom import load_dicom

    return load_dicom(series, modality=modality, keep_phi=keep_phi, on_gap=on_gap, allow_burned_in=allow_burned_in)


def _what(series: Series) -> str:
    """The series as error messages name it: its file, or its key and first file."""
    if len(series.files) == 1:
        return series.files[0]
    return (
        f"series {series.series_key} ({len(series.files)} files, first {series.files[0]})"
        if series.files
        else f"series {series.series_key}"
    )
