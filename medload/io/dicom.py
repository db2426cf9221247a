"""Load one DICOM volume: sorted slices, rescaled values, the RAS+ affine, honest metadata.

``load_dicom`` re-reads the headers of the series' files (cheap), arranges the images in
space and time (``sorting.arrange``), refuses what would be a wrong volume (or applies the
documented fix the caller asked for), then decodes each file once, straight into the output
array, applying RescaleSlope/Intercept per image.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from medload.io.burnedin import pixel_text_risk
from medload.errors import (
    BurnedInAnnotationError,
    ConfigError,
    FrameOrderError,
    GeometryError,
    MedloadError,
    ReadError,
    UnsupportedError,
)
from medload.geometry import default_plane_affine, dicom_affine, slice_normal
from medload.io.codecs import add_intercept, decode, read_native
from medload.io.duplicates import drop_identical
from medload.io.dicomvolume import dicom_meta, frames_axis
from medload.io.frame import Frame
from medload.io.headers import FileHeader, burned_in_annotation, read_header, unchanged
from medload.limits import check_volume_size
from medload.io.mosaic import cut_tile
from medload.io.series import Series
from medload.io.sorting import SPACING_KINDS, Layout, arrange
from medload.io.stored import LookedUp, TableFor, fits, look_up, stored_range
from medload.io.validate import check_rescale_stated
from medload.problems import Problem, ProblemKind
from medload.volume import Volume

__all__ = ["load_dicom", "load_dicom_stored", "ON_GAP"]

#: What ``on_gap`` may be: refuse a series with missing or unevenly spaced slices, or
#: interpolate it linearly onto an even grid (step = span / round(span / median step)).
ON_GAP = ("error", "interpolate")

# fmt: off
_PHI_FIELDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "AccessionNumber",
    "StudyDate", "StudyTime", "SeriesDate", "InstitutionName", "ReferringPhysicianName",
    "StudyInstanceUID", "SeriesInstanceUID", "StudyID",
)
# fmt: on


def _frames_of(series: Series) -> tuple[list[Frame], list[FileHeader]]:
    from medload.io.scan import volume_key

    want = series.info.get("split")
    orientation = series.info.get("orientation")
    heads: list[FileHeader] = []
    frames: list[Frame] = []
    scanned = {hh.path: hh for hh in series.headers}
    for path in series.files:
        try:
            h = scanned[path] if path in scanned and unchanged(scanned[path]) else read_header(path)
        except FileNotFoundError as exc:  # pragma: no cover - read_header wraps OSError
            raise ReadError(f"{path}: file of series {series.series_key} is gone since scan; scan again.") from exc
        if h is None or not h.is_image:
            raise ReadError(
                f"{path}: listed in series {series.series_key} but is no longer a DICOM image; scan the folder again."
            )
        mine = [
            f
            for f in h.frames
            if (want is None or volume_key(f) == want)
            and (
                orientation is None
                or f.orientation is None
                or np.abs(np.asarray(f.orientation) - np.asarray(orientation)).max() <= 1e-3
            )
        ]
        if mine:
            heads.append(h)
            frames.extend(mine)
    if not frames:
        raise ReadError(
            f"series {series.series_key} ({series.description!r}): none of its {len(series.files)} files holds its images any more; scan the folder again."
        )
    return frames, heads


def _output_dtype(heads: list[FileHeader], frames: list[Frame]) -> np.dtype:
    """Smallest dtype holding every rescaled value the headers allow (float32 if non-integer)."""
    if any(hh.modality_lut for hh in heads):
        return np.dtype(np.float32)  # LUT outputs: any integers up to 24 bits, exactly
    slopes = np.array([f.slope for f in frames])
    intercepts = np.array([f.intercept for f in frames])
    if not (np.all(slopes == np.round(slopes)) and np.all(intercepts == np.round(intercepts))):
        return np.dtype(np.float32)
    lo, hi = stored_range(max(hh.bits_stored for hh in heads), heads[0].signed)
    ends = np.concatenate([slopes * lo + intercepts, slopes * hi + intercepts])
    vmin, vmax = float(ends.min()), float(ends.max())
    for dt in (np.uint8, np.int16, np.uint16):
        info = np.iinfo(dt)
        if info.min <= vmin and vmax <= info.max:
            return np.dtype(dt)
    if max(hh.bits_stored for hh in heads) > 16:
        # 32-bit samples (RGB secondary captures, RT Dose): their own width, never int64,
        # which NIfTI tools refuse.
        for wide in (np.uint32, np.int32):
            info = np.iinfo(wide)
            if info.min <= vmin and vmax <= info.max:
                return np.dtype(wide)
        return np.dtype(np.float64)
    # The header allows values beyond 16 bits (e.g. 16 bits stored plus an intercept of -1024)
    # but real data rarely uses them: start at 16 bits and widen if a slice needs it
    # (_widen), so memory stays at 2 bytes a voxel for the common CT case.
    return np.dtype(np.int16) if vmin < 0 else np.dtype(np.uint16)


def _widen(out: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``out`` itself, or a wider integer copy that holds ``[lo, hi]``."""
    info = np.iinfo(out.dtype)
    if info.min <= lo and hi <= info.max:
        return out
    for dt in (np.int16, np.uint16, np.int32, np.uint32, np.int64):
        if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max and np.dtype(dt).itemsize >= out.dtype.itemsize:
            return out.astype(dt)
    return out.astype(np.int64)


def _interpolate_grid(layout: Layout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Even grid over the layout's span: (target distances, lower index, weight of upper)."""
    d = layout.grid_distances
    span = float(d[-1] - d[0])
    n = int(round(span / layout.median_step)) + 1
    targets = np.linspace(d[0], d[-1], n)
    lower = np.clip(np.searchsorted(d, targets, side="right") - 1, 0, len(d) - 2)
    weight = (targets - d[lower]) / (d[lower + 1] - d[lower])
    return targets, lower, np.clip(weight, 0.0, 1.0)


def _decode_files(
    frames: list[Frame], layout: Layout, heads: list[FileHeader], dtype: np.dtype, label: str, monochrome1: bool
) -> np.ndarray:
    """Decode each file once; place its images at their ``(t, z)`` with per-image rescale."""
    h = heads[0]
    n_z, n_t = layout.shape_zt
    samples = h.samples
    shape = (n_t, n_z, h.rows, h.columns) + ((samples,) if samples > 1 else ())
    out = np.empty(shape, dtype=dtype)
    where: dict[str, list[tuple[int, int, Frame]]] = {}
    for t, row in enumerate(layout.grid):
        for z, i in enumerate(row):
            where.setdefault(frames[i].file, []).append((t, z, frames[i]))
    bits = max(hh.bits_stored for hh in heads)
    tiles_of = {hh.path: hh.mosaic_tiles for hh in heads}
    head_of = {hh.path: hh for hh in heads}
    stored_lo, stored_hi = stored_range(bits, h.signed)
    for path in sorted(where):
        pixels = _read_native(head_of[path], where[path])
        if pixels is None:
            pixels = _read_pydicom(path, label)
        for t, z, f in where[path]:
            if f.frame >= 0:
                image = pixels[f.frame] if pixels.ndim >= (4 if samples > 1 else 3) else pixels
            else:
                image = pixels
            if f.mosaic >= 0:
                image = cut_tile(image, f.mosaic, tiles_of[path], h.rows, h.columns)
            if image.shape[:2] != (h.rows, h.columns):
                raise ReadError(
                    f"{path}: image is {image.shape[:2]}, expected {(h.rows, h.columns)} like the rest of {label}; remove the file or load it on its own."
                )
            if monochrome1:
                image = _invert(image, bits, h.signed)
            if dtype.kind == "f":
                out[t, z] = image * f.slope + f.intercept if (f.slope != 1.0 or f.intercept != 0.0) else image
                continue
            rescaled = (stored_lo * f.slope + f.intercept, stored_hi * f.slope + f.intercept)
            stored = image.dtype.kind in "iu" and image.dtype.itemsize <= out.dtype.itemsize  # not a palette's uint16
            if stored and fits(out.dtype, *rescaled) and fits(np.dtype(np.int32), *rescaled):
                # The stored range after rescale fits the output and int32: compute in int32 into
                # the output slice, no temporary. Not when only an output widened to int64 by an
                # earlier slice fits: int32 products would wrap, silently (slope 70000, 16 bits).
                if f.slope == 1.0:
                    add_intercept(image, f.intercept, out[t, z])
                else:
                    np.add(
                        np.multiply(image, np.int32(f.slope), dtype=np.int32),
                        np.int32(f.intercept),
                        out=out[t, z],
                        casting="unsafe",
                    )
                continue
            if (
                f.slope != 1.0
                or f.intercept != 0.0
                or image.dtype.kind not in "iu"
                or image.dtype.itemsize > out.dtype.itemsize
                or (image.dtype.kind == "u" and out.dtype.kind == "i" and image.dtype.itemsize == out.dtype.itemsize)
            ):
                image = image.astype(np.int64) * int(f.slope) + int(f.intercept)
                lo, hi = int(image.min()), int(image.max())
                out = _widen(out, lo, hi)
            out[t, z] = image
    return out


_NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _read_native(h: FileHeader, placed: list[tuple[int, int, Frame]], into: np.ndarray | None = None) -> np.ndarray | None:
    """Uncompressed grey-scale pixels (every frame of a multi-frame file) read straight from the file (``into``: see read_native)."""
    if h.transfer_syntax not in _NATIVE or h.samples != 1 or h.photometric == "PALETTE COLOR" or h.modality_lut:
        return None
    multi = any(f.frame >= 0 for _, _, f in placed)
    pixels = read_native(
        h.path,
        rows=h.stored_rows,
        columns=h.stored_columns,
        bits_allocated=h.bits_allocated,
        bits_stored=h.bits_stored,
        signed=h.signed,
        # where scan's walk found PixelData (the header is reused only for an unchanged file)
        location=(h.pixel_offset, h.pixel_bytes) if h.pixel_offset is not None and h.pixel_bytes is not None else None,
        frames=multi,
        into=into,
    )
    # A frame beyond the pixels read (PixelData shorter than NumberOfFrames): pydicom says why.
    return None if pixels is None or (multi and max(f.frame for _, _, f in placed) >= len(pixels)) else pixels


def _read_pydicom(path: str, label: str) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(path, force=True)
    except OSError as exc:
        raise ReadError(
            f"{path}: cannot be opened since scan ({type(exc).__name__}: {exc}); check that the file exists and is readable, then load {label} again."
        ) from exc
    except Exception as exc:
        raise ReadError(
            f"{path}: cannot be read ({type(exc).__name__}: {exc}); the file is damaged, remove it or re-export {label}."
        ) from exc
    pixels = decode(ds, path)
    try:
        if "ModalityLUTSequence" in ds:
            from pydicom.pixels import apply_modality_lut

            pixels = apply_modality_lut(pixels, ds)  # the LUT replaces RescaleSlope/Intercept
        if str(ds.get("PhotometricInterpretation", "")) == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            pixels = apply_color_lut(pixels, ds)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, struct.error) as exc:
        # pydicom checks a LUT only when applying it (a PALETTE COLOR image without its palette)
        raise ReadError(
            f"{path}: its lookup table (ModalityLUTSequence or PALETTE COLOR palette) cannot be applied "
            f"({type(exc).__name__}: {exc}); the header is damaged, remove the file or re-export {label}."
        ) from None
    return pixels


def _invert(image: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    # MONOCHROME1: the minimum stored value is white. Mirror within the stored range so that
    # higher values are brighter, as for every other grey-scale image.
    lo, hi = stored_range(bits, signed)
    return (lo + hi) - image.astype(np.int64)


def _relative_to(text: str, folder: str, label: str, short_label: str) -> str:
    """``text`` with ``label`` shortened and paths under ``folder`` made relative to it."""
    text = text.replace(label, short_label)
    if folder:
        text = text.replace(folder.rstrip(os.sep) + os.sep, "")
    return text


def _phi(path: str) -> dict[str, Any]:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=list(_PHI_FIELDS))
    return {k: str(ds.get(k)) for k in _PHI_FIELDS if ds.get(k) not in (None, "")}


def load_dicom(
    series: Series, *, modality: str | None = None, keep_phi: bool = False, on_gap: str = "error", allow_burned_in: bool = False
) -> Volume:
    """Load the DICOM volume described by ``series`` (from :func:`medload.scan`).

    Parameters
    ----------
    series : Series
        A DICOM series from :func:`medload.scan`.
    modality : str, optional
        Overrides the Modality tag.
    keep_phi : bool
        Put identifying fields under ``meta["phi"]`` (default: never).
    on_gap : {"error", "interpolate"}
        Missing or unevenly spaced slices: refuse with a :class:`GeometryError` (default), or
        interpolate linearly onto an even grid and say so in ``meta["problems"]``.
    allow_burned_in : bool
        Load a series whose BurnedInAnnotation is YES (refused by default: the pixels hold
        text such as the patient's name). Pass it only once the text is removed or checked.

    Raises
    ------
    BurnedInAnnotationError
        BurnedInAnnotation is YES and ``allow_burned_in`` is False.

    Examples
    --------
    >>> import os, pydicom
    >>> from medload.io.scan import scan
    >>> path = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm")
    >>> vol = load_dicom(scan(path)[0])
    >>> vol.shape, vol.meta["intensity"]
    ((1, 128, 128), 'HU')
    """
    read = _Headers.of(series, modality, on_gap, allow_burned_in)
    array = _decode_files(read.frames, read.layout, read.heads, read.dtype, read.label, read.monochrome1)
    return read.volume(array, keep_phi)


def load_dicom_stored(
    series: Series,
    table_for: TableFor,
    *,
    modality: str | None = None,
    keep_phi: bool = False,
    on_gap: str = "error",
    allow_burned_in: bool = False,
) -> LookedUp | Volume:
    """:func:`load_dicom`'s volume looked up in ``table_for``'s table from its stored values, where it can be.

    A grey-scale, uncompressed series of one frame per position whose every slice rescales
    to integers (CT in HU) is read file by file and each slice looked up at once through its
    own RescaleSlope/Intercept (:func:`medload.io.stored.look_up`): a
    :class:`~medload.io.stored.LookedUp` with the affine and meta :func:`load_dicom` gives, and
    no rescaled volume made. Anything else (compressed, colour, MONOCHROME1, a modality LUT,
    float rescale, time frames, interpolated gaps, no table) is :func:`load_dicom`'s Volume.
    Other parameters and errors as :func:`load_dicom`.

    Examples
    --------
    >>> import os, pydicom
    >>> from medload.io.scan import scan
    >>> path = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files", "CT_small.dcm")
    >>> identity = np.arange(1 << 16, dtype=np.uint16).view(np.int16)   # each int16 value itself
    >>> looked = load_dicom_stored(scan(path)[0], lambda shell, value_range: identity)
    >>> np.array_equal(looked.volume.array, load_dicom(scan(path)[0]).array), looked.value_range
    (True, (-896, 1167))
    """
    read = _Headers.of(series, modality, on_gap, allow_burned_in)
    h, (n_z, n_t) = read.heads[0], read.layout.shape_zt
    storable = (
        n_t == 1
        and h.samples == 1
        and not read.monochrome1
        and read.dtype.kind in "iu"
        and read.dtype.itemsize <= 2
        and all(hh.transfer_syntax in _NATIVE and not hh.mosaic_tiles for hh in read.heads)
        and not (on_gap == "interpolate" and (read.layout.gaps or read.layout.uneven))
    )
    if storable:
        # The Volume of no pixels checks the grid and makes the meta exactly as load_dicom does.
        shell = read.volume(np.empty((1, n_z, 0, 0), read.dtype), keep_phi)
        probe = Volume(np.zeros((1, 1, 1), read.dtype), shell.affine, modality=shell.modality, meta=shell.meta)
        found = look_up(read.frames, read.layout, read.heads, read.dtype, _read_native, lambda got: table_for(probe, got))
        if found is not None:
            array, table, value_range = found
            volume = Volume(array, shell.affine, modality=shell.modality, meta=shell.meta)
            return LookedUp(volume, table, value_range, read.dtype)
    return read.volume(_decode_files(read.frames, read.layout, read.heads, read.dtype, read.label, read.monochrome1), keep_phi)


@dataclass
class _Headers:
    """What a series' headers say of its volume before a pixel is read: frames in place, type, checks done."""

    series: Series
    modality: str | None
    on_gap: str
    frames: list[Frame]
    heads: list[FileHeader]
    layout: Layout
    problems: list[Problem]
    dtype: np.dtype
    risk: str
    folder: str
    label: str

    @property
    def monochrome1(self) -> bool:
        return self.heads[0].photometric == "MONOCHROME1"

    @classmethod
    def of(cls, series: Series, modality: str | None, on_gap: str, allow_burned_in: bool) -> _Headers:
        _refuse_unloadable(series, on_gap)
        frames, heads = _frames_of(series)
        h = heads[0]
        risk = _refuse_burned_in(series, heads, modality, allow_burned_in)
        # Messages of exceptions name the folder in full (they go to the user); meta["problems"]
        # go to stores and reports, so there files are named relative to the series' folder and
        # the description is left out (folder names and descriptions can hold patient names).
        folder = os.path.commonpath([os.path.dirname(hh.path) for hh in heads]) if heads else ""
        label = f"series {series.series_key} ({len(heads)} files in {folder})"
        check_rescale_stated(frames, label)
        frames, layout, problems = _checked_layout(frames, label, on_gap)
        if h.samples not in (1, 3):
            raise UnsupportedError(f"{h.path}: {h.samples} samples per pixel; medload reads grey-scale and RGB images.")
        dtype = _output_dtype(heads, frames)
        n_z, n_t = layout.shape_zt
        check_volume_size(label, (n_t, n_z, h.rows, h.columns, h.samples), dtype.itemsize)
        return cls(series, modality, on_gap, frames, heads, layout, problems, dtype, risk, folder, label)

    def volume(self, array: np.ndarray, keep_phi: bool) -> Volume:
        """The Volume of the decoded ``(T, Z, Y, X[, samples])`` ``array``: placed, its axes named, its meta."""
        h, series, label, problems = self.heads[0], self.series, self.label, list(self.problems)
        if self.monochrome1:
            problems.append(
                Problem(
                    ProblemKind.MONOCHROME1_MIRRORED,
                    "MONOCHROME1 image inverted within its stored range so that higher values are brighter.",
                )
            )
        array, affine = _place(array, self.layout, h, self.on_gap, problems)
        array, meta_extra = frames_axis(array, h, self.frames, self.layout, label, problems)
        modality_out = self.modality or h.modality or "unknown"
        short = f"series {series.series_key}"
        meta = dicom_meta(
            series,
            self.heads,
            self.frames,
            self.layout,
            modality_out,
            meta_extra,
            [p.with_message(lambda m: _relative_to(m, self.folder, label, short)) for p in problems],
        )
        if self.risk:
            meta["pixel_text"] = self.risk
            if self.risk == "possible":
                meta["problems"].append(
                    Problem(
                        ProblemKind.PIXEL_TEXT_POSSIBLE,
                        f"{modality_out} image without BurnedInAnnotation NO: its pixels may hold text (names, dates) "
                        "that medload does not remove; check them before sharing (docs/deidentification.md).",
                    )
                )
        if keep_phi:
            meta["phi"] = _phi(h.path)
        try:
            return Volume(array, affine, modality=modality_out, meta=meta)
        except MedloadError as exc:  # e.g. a singular affine: say which files made it
            raise GeometryError(
                f"{label} (first file {h.path}): {exc} The headers' ImageOrientationPatient, "
                "PixelSpacing and slice positions do not make a valid grid; fix or re-export them."
            ) from exc


def _refuse_unloadable(series: Series, on_gap: str) -> None:
    """A bad ``on_gap``, or a series with damaged files, is refused before any file is read."""
    if on_gap not in ON_GAP:
        raise ConfigError(f"on_gap must be one of {ON_GAP}, found {on_gap!r}.")
    damaged = series.info.get("damaged_files")
    if damaged:
        # A file of this series starts as DICOM and is cut short or damaged: the rest would load
        # one or more slices short, which is a wrong volume, not a smaller one.
        raise ReadError(
            f"series {series.series_key}: {len(damaged)} of its files cannot be read ({', '.join(damaged[:4])}"
            f"{' ...' if len(damaged) > 4 else ''}), so the volume would be incomplete. Re-copy or re-export "
            "them, or remove them and scan again to load the rest."
        )


def _refuse_burned_in(series: Series, heads: list[FileHeader], modality: str | None, allow_burned_in: bool) -> str:
    """The pixel-text risk of the series; refused when it is burned in and not allowed."""
    h = heads[0]
    risk = pixel_text_risk(burned_in_annotation(heads), modality or h.modality, h.sop_class)
    if risk == "burned-in" and not allow_burned_in:
        yes = [hh.path for hh in heads if hh.burned_in_annotation == "YES"]
        raise BurnedInAnnotationError(
            f"series {series.series_key} ({len(heads)} files in "
            f"{os.path.commonpath([os.path.dirname(hh.path) for hh in heads])}): BurnedInAnnotation is YES in "
            f"{len(yes)} file(s) (first {yes[0]}): the pixels hold burned-in text, often the patient's name, ID "
            "or dates, which medload does not remove. Remove it first (e.g. CTP's DicomPixelAnonymizer, "
            "DicomCleaner's blackout), or once you checked the pixels hold nothing identifying, pass "
            "allow_burned_in=True (medload convert --allow-burned-in)."
        )
    return risk


def _checked_layout(frames: list[Frame], label: str, on_gap: str) -> tuple[list[Frame], Layout, list[Problem]]:
    """Arrange the frames (after dropping identical copies); refuse a layout that would be wrong."""
    layout = arrange(frames, label=label)
    problems = list(layout.problems)
    if layout.duplicates:
        frames, note = drop_identical(frames, layout)
        layout = arrange(frames, label=label)
        problems = list(layout.problems) + ([note] if note is not None else [])
    if layout.frame_order_conflicts:
        raise FrameOrderError(layout.frame_order_error, tuple(layout.frame_order_conflicts))
    fatal = [e for e in layout.errors if not (on_gap == "interpolate" and e.kind in SPACING_KINDS)]
    if fatal:
        raise GeometryError(" ".join(e.message for e in fatal))
    return frames, layout, problems


def _place(
    array: np.ndarray, layout: Layout, h: FileHeader, on_gap: str, problems: list[Problem]
) -> tuple[np.ndarray, np.ndarray]:
    """The affine of the decoded ``(T, Z, ...)`` array, evening its slices first where asked."""
    n_z = array.shape[1]
    positions = layout.positions
    if layout.orientation is None:  # no world geometry: DICOM's default plane, as dcm2niix assumes
        shape = (array.shape[1], h.rows, h.columns)  # (Z, rows, columns), of the array or of its shell
        return array, default_plane_affine(shape, layout.pixel_spacing or (1.0, 1.0), h.slice_thickness or 1.0)
    if (layout.gaps or layout.uneven) and on_gap == "interpolate":
        targets, lower, weight = _interpolate_grid(layout)
        array = _interp(array, lower, weight)
        d = layout.grid_distances
        positions = np.array([np.interp(targets, d, positions[:, k]) for k in range(3)]).T
        problems.append(
            Problem(
                ProblemKind.SLICES_INTERPOLATED,
                f"{len(targets) - n_z} slice(s) interpolated linearly to even the grid "
                f"(on_gap='interpolate'; {n_z} acquired slices, step {float(np.diff(targets).mean()):.4f} mm).",
            )
        )
        n_z = len(targets)
    if n_z > 1:
        step = layout.slice_step(positions[0], positions[-1], n_z)
    else:
        step = slice_normal(layout.orientation) * float(h.slice_thickness or 1.0)
    return array, dicom_affine(layout.orientation, positions[0], layout.pixel_spacing or (1.0, 1.0), tuple(step))


def _interp(array: np.ndarray, lower: np.ndarray, weight: np.ndarray) -> np.ndarray:
    a = array[:, lower].astype(np.float32)
    b = array[:, lower + 1].astype(np.float32)
    w = weight.astype(np.float32).reshape((1, -1) + (1,) * (array.ndim - 2))
    out = a * (1 - w) + b * w
    if array.dtype.kind in "iu":
        out = np.rint(out).astype(array.dtype)
    return out
