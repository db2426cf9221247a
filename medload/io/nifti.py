"""NIfTI reader: ``.nii`` / ``.nii.gz`` files to :class:`~medload.volume.Volume`, through nibabel.

Axis convention
---------------
NIfTI stores voxels as ``(i, j, k[, t])``: ``i`` the fastest (columns), ``j`` the rows,
``k`` the slices, ``t`` the frames, and its affine maps ``(i, j, k)`` to RAS+ millimetres.
medload's arrays are the NIfTI axes reversed, ``(t, k, j, i)`` = ``(T, Z, Y, X)``, and the
affine's first three columns are permuted to ``(k, j, i)`` to match, so every voxel keeps its
world position: medload axis 0 is the NIfTI slice axis ``k``, rows are ``j``, columns ``i``.
:meth:`Volume.from_nifti` and :meth:`Volume.to_nifti` implement exactly this, so a round trip
through ``vol.to_nifti()`` is exact. Reversing the axes of nibabel's (Fortran-ordered) array
gives a C-contiguous array without a copy.

What the reader does
--------------------
- Scaling: ``scl_slope`` / ``scl_inter`` are applied; a scaled image is returned as float32
  (nibabel alone would return float64, twice the memory for no precision a scanner has).
  Unscaled images keep their stored dtype.
- Geometry: the affine nibabel chooses (sform if its code is set, else qform, else voxel
  sizes alone, which is reported in ``meta["problems"]``). Spatial units of metres or microns
  are converted to millimetres.
- 4D images become frames ``(T, Z, Y, X)``; a 4D image with one frame becomes 3D; 2D images
  become ``(1, Y, X)``.
- Modality: a BIDS sidecar ``.json`` beside the file (its ``Modality`` key, else the BIDS suffix
  of the file name: ``T1w``, ``bold``, ``dwi``... -> MR, ``ct`` -> CT, ``pet`` -> PT); else the
  caller's ``modality=``; else ``"unknown"``. A caller's ``modality=`` that disagrees with the
  sidecar wins, and the disagreement is written to ``meta["problems"]``.
- Keys: ``series_key`` (and ``source_key``) is a pseudonym of the scanned root's name and the
  file's path below it (``scan_nifti(..., root=)``, :mod:`medload.io.sources`; the absolute
  path without a root); ``patient_key`` / ``study_key`` are pseudonyms of the BIDS dataset and
  its ``sub-XX`` / ``sub-XX/ses-YY`` found in that path (:func:`~medload.io.bids.subject_folder`:
  ``sub-01`` of two datasets is two people), else of the same path as the series. ``source_hash`` is a digest of the whole file (:data:`SOURCE_HASH_PREFIX`)
  keyed with the pseudonym key (:func:`medload.deid.keyed_source_hash`: a plain digest would
  let whoever holds the file find its volume): two files are one series converted once only
  when their bytes are equal.
- Only a whitelist of sidecar fields reaches ``meta`` (no names, dates or institutions).
  Sidecar times are seconds in BIDS; medload's ``echo_time`` / ``repetition_time`` are
  milliseconds, as in DICOM, so they are converted.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from medload.deid import PhiKey, clean_modality, keyed_source_hash
from medload.errors import ConfigError, MedloadError, ReadError, UnsupportedError
from medload.geometry import spacing_from_affine
from medload.io.bids import file_stem, read_sidecar, sidecar_meta, suffix_modality
from medload.limits import check_volume_size
from medload.io.series import Series
from medload.io.sources import nifti_keys
from medload.io.sources import source_name as _source_name
from medload.io.validate import check_grid
from medload.problems import Problem, ProblemKind
from medload.volume import Volume

if TYPE_CHECKING:
    from nibabel import Nifti1Image
    from nibabel.arrayproxy import ArrayProxy

__all__ = ["is_nifti", "scan_nifti", "load_nifti", "NIFTI_SUFFIXES", "SOURCE_HASH_PREFIX", "is_header_only_hash"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")

_UNIT_TO_MM = {"meter": 1000.0, "mm": 1.0, "micron": 0.001, "unknown": 1.0}


# --- detection --------------------------------------------------------------------------
def _has_nifti_suffix(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _has_nifti_magic(path: Path) -> bool:
    """NIfTI-1 (``n+1`` at byte 344) or NIfTI-2 (``n+2`` at byte 4) single-file magic."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(348)
    except OSError:
        return False
    if len(head) >= 348 and head[344:348] == b"n+1\x00":
        return int.from_bytes(head[:4], "little") == 348 or int.from_bytes(head[:4], "big") == 348
    return len(head) >= 8 and head[4:8] == b"n+2\x00"


def is_nifti(path: str | Path, *, check_magic: bool = True) -> bool:
    """Whether ``path`` is a NIfTI file medload reads (``.nii`` / ``.nii.gz``).

    A file with a NIfTI suffix counts even if broken, so that loading it gives an error that
    names it. A file without the suffix counts when ``check_magic`` and its first 348 bytes
    hold the NIfTI-1 or NIfTI-2 magic (one small read; gzip without the suffix is not opened).

    Parameters
    ----------
    path : str or Path
        A file.
    check_magic : bool
        Also look at the header of files without a NIfTI suffix.

    Examples
    --------
    >>> is_nifti("brain.nii.gz", check_magic=False)
    True
    >>> is_nifti("IM0001.dcm", check_magic=False)
    False
    """
    path = Path(path)
    if _has_nifti_suffix(path):
        return True
    return check_magic and path.is_file() and _has_nifti_magic(path)


# --- header reading ---------------------------------------------------------------------
@contextlib.contextmanager
def _header_errors(path: Path) -> Iterator[None]:
    """nibabel's refusals of a header, anywhere from opening it to reading its voxels, as a ReadError.

    nibabel checks a header lazily: ``HeaderDataError`` (vox_offset inside the header, an
    unknown datatype code, a bad magic, an extension that cannot be read, a NaN
    scl_inter) and ``ValueError`` (a quaternion that is not one) come from whichever
    property first touches the field, so one guard around the whole read catches them all.
    """
    from nibabel.filebasedimages import ImageFileError
    from nibabel.spatialimages import HeaderDataError, HeaderTypeError

    try:
        yield
    except MedloadError:
        raise
    except (
        HeaderDataError,
        HeaderTypeError,
        ImageFileError,
        ValueError,
        TypeError,
        struct.error,
        EOFError,
        zlib.error,
        OSError,
    ) as exc:
        raise ReadError(
            f"NIfTI file {path}: its header cannot be used ({type(exc).__name__}: {exc}); expected a "
            "NIfTI-1/2 header with a known datatype, vox_offset after the header, a valid magic and "
            "readable extensions. The header is damaged: re-export the file."
        ) from None


def _open(path: Path) -> Nifti1Image:
    """``nibabel.load`` with errors that name the file and say what to do."""
    import nibabel as nib

    if not path.exists():
        raise ReadError(f"NIfTI file {path} does not exist; check the path (scan a folder with medload.scan).")
    if path.is_dir():
        raise ReadError(f"{path} is a folder, not a NIfTI file; use medload.scan(folder) to find the series in it.")
    if path.name.lower().endswith(".gz"):
        with open(path, "rb") as fh:
            magic = fh.read(2)
        if magic != b"\x1f\x8b":
            raise ReadError(
                f"NIfTI file {path} ends in .gz but is not gzip-compressed (first bytes {magic!r}, "
                "expected b'\\x1f\\x8b'); rename it to .nii if it is an uncompressed NIfTI, else re-export it."
            )
    try:
        if _has_nifti_suffix(path):
            image = nib.load(str(path), mmap=False)
        else:  # nibabel picks the format by suffix; a NIfTI without one is opened by its magic
            with open(path, "rb") as fh:
                head = fh.read(8)
            klass = nib.Nifti2Image if head[4:8] == b"n+2\x00" else nib.Nifti1Image
            holder = nib.fileholders.FileHolder(str(path))
            image = klass.from_file_map({"header": holder, "image": holder}, mmap=False)
    except (nib.filebasedimages.ImageFileError, gzip.BadGzipFile, EOFError, zlib.error, OSError, ValueError) as exc:
        raise ReadError(
            f"Could not read {path} as NIfTI ({type(exc).__name__}: {exc}); expected a NIfTI-1/2 "
            "file (.nii or gzip-compressed .nii.gz). The file may be truncated or not NIfTI: re-export it."
        ) from exc
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise UnsupportedError(
            f"{path} opened as {type(image).__name__}, not NIfTI; medload reads NIfTI-1/2 "
            "(.nii, .nii.gz). Convert it first, e.g. with nibabel: nib.save(nib.Nifti1Image(...), 'x.nii.gz')."
        )
    return image


def _medload_shape(path: Path, nifti_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape :func:`load_nifti` returns for a NIfTI shape ``(i, j, k[, t[, ...]])``."""
    shape = tuple(int(v) for v in nifti_shape)
    while len(shape) > 3 and shape[-1] == 1:  # trailing singleton time / component axes
        shape = shape[:-1]
    if len(shape) == 5 and shape[3] == 1:  # (i, j, k, 1, c): components stand in for frames
        shape = shape[:3] + shape[4:]
    if len(shape) > 4:
        raise UnsupportedError(
            f"NIfTI file {path} has shape {nifti_shape}: more than 4 dimensions (e.g. time x "
            "components). medload reads 3D or 4D; split it first, e.g. with nibabel's image.slicer."
        )
    if len(shape) == 1:
        shape = shape + (1,)
    if len(shape) == 2:
        shape = shape + (1,)
    return tuple(reversed(shape))


def _affine_and_problems(path: Path, image: Nifti1Image) -> tuple[np.ndarray, str, list[Problem]]:
    """The NIfTI ``(i, j, k)`` affine in mm, which header field it came from, and problems."""
    header = image.header
    problems: list[Problem] = []
    sform_code = int(header["sform_code"])
    qform_code = int(header["qform_code"])
    if sform_code > 0:
        source = "sform"
    elif qform_code > 0:
        source = "qform"
    else:
        source = "pixdim"
        problems.append(
            Problem(
                ProblemKind.NO_WORLD_GEOMETRY,
                f"{path.name} has neither sform nor qform (both codes 0): the affine holds the voxel "
                "sizes only, so the world position and orientation are unknown.",
            )
        )
    affine = np.array(image.affine, dtype=np.float64)
    if source == "sform" and qform_code > 0:
        qform = np.asarray(header.get_qform(), dtype=np.float64)
        if not np.allclose(qform, affine, atol=0.01):
            problems.append(
                Problem(
                    ProblemKind.SFORM_QFORM_DISAGREE,
                    f"{path.name}: sform and qform disagree (largest difference "
                    f"{float(np.abs(qform - affine).max()):.3g} mm); the sform was used, as nibabel does.",
                )
            )
    unit = header.get_xyzt_units()[0]
    factor = _UNIT_TO_MM.get(unit, 1.0)
    if factor != 1.0:
        affine[:3, :] *= factor
        problems.append(
            Problem(ProblemKind.UNITS_CONVERTED, f"{path.name} gives spatial units in {unit}s; the affine was converted to mm.")
        )
    # The readers' one test of a grid (finite, voxel sizes 1 nm to 100 m, axes not collinear by the
    # scale-free unit_axes_volume): an absolute determinant test here refused micrometre voxels.
    check_grid(f"NIfTI file {path} ({source})", affine)
    return affine, source, problems


#: How a NIfTI's unkeyed digest of the whole file's bytes starts (an earlier medload stored it
#: as it is; now :func:`medload.deid.keyed_source_hash` of it).
SOURCE_HASH_PREFIX = "nifti-sha256:"


def _source_hash(path: Path) -> str:
    """``nifti-sha256:`` + a digest of every byte of the file: equal only for the same image.

    A digest of the header and the file size (what medload used before) is equal for every
    image of one protocol registered to one template (an uncompressed MNI or BraTS set, one
    header for all): the converter took them for one series converted once, and masks and
    resumes matched the wrong file.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return SOURCE_HASH_PREFIX + digest.hexdigest()[:32]


def is_header_only_hash(source_hash: str) -> bool:
    """Whether ``source_hash`` is a NIfTI digest of header and file size only (medload 0.1 and 0.2
    up to this change: 16 hexadecimal digits), which cannot tell two images of one header apart.

    Examples
    --------
    >>> is_header_only_hash("0123456789abcdef"), is_header_only_hash(SOURCE_HASH_PREFIX + "0" * 32)
    (True, False)
    >>> is_header_only_hash("sha256:0123456789abcdef")   # a 2D image's: never a NIfTI's
    False
    """
    return len(source_hash) == 16 and all(c in "0123456789abcdef" for c in source_hash)


def _check_sizes(path: Path, image: Nifti1Image) -> None:
    """Every size the header claims, checked before a voxel is read (issue 11: header bombs).

    An uncompressed file must hold ``vox_offset`` + the voxels it claims; any file, compressed
    or not, must stay under the per-volume limit (``medload.limits``) in the dtype load
    returns (float32 when scaled).
    """
    header = image.header
    dims = tuple(int(v) for v in header["dim"][1 : 1 + int(header["dim"][0])]) if 1 <= int(header["dim"][0]) <= 7 else ()
    if not dims or any(d <= 0 for d in dims):
        raise ReadError(
            f"NIfTI file {path} has dimensions {tuple(int(v) for v in header['dim'])} (dim[0] = number of "
            "axes, then their sizes): an axis count outside 1..7 or an empty axis; the header is damaged, re-export it."
        )
    try:
        stored = np.dtype(header.get_data_dtype())
    except Exception as exc:
        raise ReadError(
            f"NIfTI file {path}: datatype {int(header['datatype'])} is not a known voxel type ({exc}); re-export it."
        ) from exc
    n_voxels = int(np.prod(dims, dtype=object))
    claimed = n_voxels * stored.itemsize
    if not str(path).lower().endswith(".gz"):
        offset = float(header["vox_offset"]) if "vox_offset" in header else 0.0
        if np.isfinite(offset) and offset < header.sizeof_hdr + 4:  # as nibabel: not inside the header
            offset = float(header.sizeof_hdr + 4)
        size = path.stat().st_size
        if not np.isfinite(offset) or offset < 0 or offset + claimed > size:
            raise ReadError(
                f"NIfTI file {path}: the header claims {claimed} bytes of voxels ({dims} x {stored}) from byte "
                f"{offset:g}, but the file has {size} bytes: it is truncated or its header is damaged; re-export it."
            )
    try:
        slope, inter = header.get_slope_inter()
    except Exception as exc:  # nibabel refuses some scale fields (HeaderDataError)
        raise ReadError(
            f"NIfTI file {path}: scl_slope/scl_inter cannot be used ({type(exc).__name__}: {exc}); re-export it."
        ) from exc
    scaled = (slope is not None and slope != 1.0) or (inter is not None and inter != 0.0)
    check_volume_size(f"NIfTI file {path}", dims, 4 if scaled else stored.itemsize)
    for name, value in (("scl_slope", slope), ("scl_inter", inter)):
        if value is not None and not np.isfinite(value):
            raise ReadError(
                f"NIfTI file {path}: {name} is {value}; expected a finite number; the header is damaged, re-export it."
            )


def _describe(
    path: Path,
    image: Nifti1Image,
    *,
    root: str | Path | None,
    phi_key: str | bytes | PhiKey | None,
    modality: str | None,
    source: str | None = None,
    source_hash: str | None = None,
    keyed_hash: bool = True,
) -> dict[str, Any]:
    """Everything scan and load share: shape, geometry, modality, keys, meta (``source_hash``:
    scan's, so that load does not hash the file again; else the file's, keyed unless told not)."""
    _check_sizes(path, image)
    shape = _medload_shape(path, image.shape)
    affine, affine_source, problems = _affine_and_problems(path, image)
    sidecar = read_sidecar(path)
    sidecar_modality = None
    if sidecar is not None:
        given = clean_modality(sidecar.get("Modality"))  # free text is no modality: "unknown"
        sidecar_modality = (given if given != "unknown" else None) or suffix_modality(path)
    else:
        sidecar_modality = suffix_modality(path)
    if modality:
        if sidecar_modality and sidecar_modality != modality:
            problems.append(
                Problem(
                    ProblemKind.MODALITY_OVERRIDDEN,
                    f"{path.name}: modality {modality!r} was given by the caller, the BIDS sidecar or "
                    f"file name says {sidecar_modality!r}; the caller's was used.",
                )
            )
        chosen = str(modality)
    else:
        chosen = sidecar_modality or "unknown"
    medload_affine = affine[:, [2, 1, 0, 3]]
    spacing = tuple(float(v) for v in np.round(spacing_from_affine(medload_affine), 6))
    keys = nifti_keys(path, root, source=source, secret=phi_key)
    meta: dict[str, Any] = {
        "source": "nifti",
        "source_key": keys["series_key"],
        **keys,
        "source_hash": source_hash or (keyed_source_hash(_source_hash(path), phi_key) if keyed_hash else _source_hash(path)),
        "description": file_stem(path),
        "intensity": "HU" if chosen == "CT" else "scanner units",
        "affine_source": affine_source,
    }
    meta.update(sidecar_meta(sidecar))
    if len(shape) == 4:
        zooms = image.header.get_zooms()
        time_unit = image.header.get_xyzt_units()[1]
        if len(zooms) > 3 and zooms[3] > 0 and time_unit in ("sec", "msec", "usec"):
            scale = {"sec": 1000.0, "msec": 1.0, "usec": 0.001}[time_unit]
            meta["frame_interval_ms"] = round(float(zooms[3]) * scale, 6)
    meta["problems"] = problems
    return {
        "shape": shape,
        "affine": medload_affine,
        "spacing": spacing,
        "modality": chosen,
        "keys": keys,
        "meta": meta,
        "problems": tuple(problems),
    }


# --- public -----------------------------------------------------------------------------
def scan_nifti(
    path: str | Path,
    *,
    phi_key: str | bytes | PhiKey | None = None,
    root: str | Path | None = None,
    source_name: str | None = None,
    keyed_hash: bool = True,
) -> Series:
    """Describe one NIfTI file from its header (no voxels read) as a :class:`Series`.

    Parameters
    ----------
    path : str or Path
        A ``.nii`` or ``.nii.gz`` file.
    phi_key : str, bytes or PhiKey, optional
        Secret of the pseudonyms (default: :func:`medload.deid.resolve_key`'s).
    root : str or Path, optional
        The folder being scanned (the source); keys are pseudonyms of its name and the path
        below it (:mod:`medload.io.sources`), so the same export moved elsewhere gets the same
        keys, and ``sub-01`` of two datasets is two patients. Default: the absolute path
        (unique, but the keys change when the files move).
    source_name : str, optional
        The source's name in its keys; default its folder's own name (``medload.convert``
        names two sources of one name by their parent folders too).
    keyed_hash : bool
        ``False``: ``source_hash`` is the file's unkeyed digest (:data:`SOURCE_HASH_PREFIX`), for a
        reader that combines several files and keys their digests once (nnU-Net's cases). Never
        store it: whoever holds the file can recompute it.

    Returns
    -------
    Series
        ``kind="nifti"``, ``shape`` exactly as :func:`load_nifti` returns it.

    Raises
    ------
    ReadError
        The file is missing, truncated or not NIfTI; the message names it.

    Examples
    --------
    >>> import tempfile, numpy as np, nibabel as nib
    >>> path = tempfile.mkdtemp() + "/t1.nii.gz"
    >>> nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.eye(4)), path)
    >>> scan_nifti(path).shape
    (6, 5, 4)
    """
    path = Path(path).resolve()
    with _header_errors(path):
        image = _open(path)
        info = _describe(path, image, root=root, phi_key=phi_key, modality=None, source=source_name, keyed_hash=keyed_hash)
    return Series(
        kind="nifti",
        files=(str(path),),
        series_key=info["keys"]["series_key"],
        study_key=info["keys"]["study_key"],
        patient_key=info["keys"]["patient_key"],
        modality=info["modality"],
        description=info["meta"]["description"],
        shape=info["shape"],
        spacing=info["spacing"],
        problems=info["problems"],
        source_hash=info["meta"]["source_hash"],
        info={
            "root": str(Path(root).resolve()) if root is not None else None,
            "source_name": (source_name or _source_name(root)) if root is not None else None,
        },
    )


def _read_voxels(path: Path, image: Nifti1Image) -> np.ndarray:
    proxy = cast("ArrayProxy", image.dataobj)  # _open reads a file: its data object is an ArrayProxy
    try:
        slope = float(proxy.slope)
        inter = float(proxy.inter)
        raw = proxy.get_unscaled()
    except (EOFError, zlib.error, OSError, ValueError) as exc:
        raise ReadError(
            f"NIfTI file {path}: the header reads but the voxels do not ({type(exc).__name__}: "
            f"{exc}); the file is probably truncated. Re-export or re-copy it."
        ) from exc
    if raw.dtype.kind not in "biuf":
        raise UnsupportedError(
            f"NIfTI file {path} stores {raw.dtype} voxels (RGB or complex); medload reads "
            "scalar images. Split the channels first (e.g. numpy.real / the RGB fields)."
        )
    if raw.dtype == np.bool_:
        raw = raw.astype(np.uint8)
    if not raw.dtype.isnative:  # big-endian files: torch and h5py want native byte order
        raw = raw.astype(raw.dtype.newbyteorder("="))
    if slope == 1.0 and inter == 0.0:
        return raw
    if not (np.isfinite(slope) and np.isfinite(inter)) or slope == 0.0:
        raise ReadError(
            f"NIfTI file {path}: scl_slope {slope} / scl_inter {inter}; expected finite numbers and a "
            "slope other than 0; the header is damaged, re-export it."
        )
    # float32 in place: one output-sized buffer instead of nibabel's float64 (2x the memory).
    out = raw.astype(np.float32, order="K")
    with np.errstate(over="ignore", invalid="ignore"):
        if slope != 1.0:
            out *= np.float32(slope)
        if inter != 0.0:
            out += np.float32(inter)
    if raw.dtype.kind in "iub" or np.isfinite(raw).all():
        if not np.isfinite(out).all():  # an overflow of float32, not values the file holds
            raise ReadError(
                f"NIfTI file {path}: scl_slope {slope:g} and scl_inter {inter:g} take voxel values beyond "
                "float32's range (3.4e38); the header is damaged, re-export it."
            )
    return out


def load_nifti(
    series_or_path: Series | str | Path, *, modality: str | None = None, phi_key: str | bytes | PhiKey | None = None
) -> Volume:
    """Load a NIfTI file as a :class:`Volume` ``(Z, Y, X)`` or ``(T, Z, Y, X)``.

    Axes are NIfTI's reversed (see the module docstring): axis 0 is the NIfTI slice axis ``k``.

    Parameters
    ----------
    series_or_path : Series or str or Path
        A :class:`Series` from :func:`scan_nifti` (its keys are kept) or a file path.
    modality : str, optional
        Used when no BIDS sidecar says it; wins over the sidecar if given (noted in
        ``meta["problems"]``).
    phi_key : str, bytes or PhiKey, optional
        For a path: the secret of the pseudonyms, as :func:`scan_nifti`'s (a Series keeps the
        keys its scan made).

    Returns
    -------
    Volume
        Scaled voxels (float32 when ``scl_slope``/``scl_inter`` are set, else the stored dtype),
        the affine nibabel chooses (in mm), modality and JSON-able meta.

    Raises
    ------
    ReadError
        Missing, truncated, garbage, or ``.nii.gz`` that is not gzip; the message names the file.
    UnsupportedError
        More than 4 dimensions, or non-scalar voxels.

    Examples
    --------
    >>> import tempfile, numpy as np, nibabel as nib
    >>> path = tempfile.mkdtemp() + "/ct.nii.gz"
    >>> image = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4), np.diag([0.5, 0.5, 2, 1]))
    >>> image.header.set_slope_inter(1.0, -1024.0)
    >>> nib.save(image, path)
    >>> vol = load_nifti(path, modality="CT")
    >>> vol.shape, vol.array.dtype, vol.spacing
    ((4, 3, 2), dtype('float32'), (2.0, 0.5, 0.5))
    >>> float(vol.array[1, 2, 0])   # NIfTI voxel (i=0, j=2, k=1)
    -1015.0
    """
    root = source = scanned_hash = None
    keys_from_series: dict[str, str] | None = None
    if isinstance(series_or_path, Series):
        if series_or_path.kind != "nifti" or len(series_or_path.files) != 1:
            raise ConfigError(
                f"load_nifti needs a NIfTI Series with one file; found kind={series_or_path.kind!r} "
                f"with {len(series_or_path.files)} files. Use medload.load(series) for DICOM."
            )
        path = Path(series_or_path.files[0])
        root = (series_or_path.info or {}).get("root")
        source = (series_or_path.info or {}).get("source_name")
        scanned_hash = series_or_path.source_hash or None
        keys_from_series = {
            "series_key": series_or_path.series_key,
            "study_key": series_or_path.study_key,
            "patient_key": series_or_path.patient_key,
        }
        modality = modality or (series_or_path.modality if series_or_path.modality != "unknown" else None)
    else:
        path = Path(series_or_path).resolve()
    with _header_errors(path):
        image = _open(path)
        info = _describe(path, image, root=root, phi_key=phi_key, modality=modality, source=source, source_hash=scanned_hash)
        meta = info["meta"]
        if keys_from_series is not None:  # keep the keys scan made (they may use a phi_key)
            meta.update(keys_from_series)
            meta["source_key"] = keys_from_series["series_key"]
        data = _read_voxels(path, image)
    nifti_shape = tuple(reversed(info["shape"]))
    if data.shape != nifti_shape:  # drop singleton frames / add a slice axis; order="A": no copy
        data = data.reshape(nifti_shape, order="A")
    data = data.transpose(*range(data.ndim)[::-1])  # (t, k, j, i): a C-contiguous view
    return Volume(np.ascontiguousarray(data), info["affine"], modality=info["modality"], meta=meta)
