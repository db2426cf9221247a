"""medload against dcm2niix on every DICOM file of the permissive test-data sets on this machine.

Usage::

    python -m tools.validate [--json OUT.json] [--only SUBSTRING]

Sets: pydicom's test files, ``pydicom-data`` (``data_store/data``), nibabel's DICOM test files
(``nibabel/tests/data``, ``nibabel/nicom/tests/data``; ``.dcm.gz`` unpacked to a temporary
folder). Each file is one unit (files of one set share series UIDs across transfer syntaxes,
which dcm2niix would merge); a folder of one series is a unit of its own.

For each unit dcm2niix writes NIfTIs (``-z n -b y -f %s_%p``) and medload scans and loads the
same unit; every dcm2niix volume must be matched by one medload volume: shape, affine within
0.01 mm after ``nibabel.as_closest_canonical``, voxel values, frames in order, and ``.bval`` /
``.bvec`` (compared as world directions) where dcm2niix writes them. Result per unit:

- ``agree``: every dcm2niix volume matched;
- ``refuse``: medload raised a MedloadError (its class and message are the reason);
- ``DISAGREE``: medload returned a volume that does not match dcm2niix's;
- ``dcm2niix-none``: dcm2niix wrote nothing (medload's answer is still recorded).

The table printed is the one in docs/validation.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom

import medload
from medload.errors import MedloadError
from medload.io import load, scan
from medload.io.export import save_nifti


def data_sets() -> dict[str, Path]:
    """The folders of each set present on this machine."""
    sets: dict[str, Path] = {"pydicom": Path(pydicom.__file__).parent / "data" / "test_files"}
    try:
        import data_store  # pydicom-data

        sets["pydicom-data"] = Path(data_store.__file__).parent / "data"
    except ImportError:
        pass
    sets["nibabel"] = Path(nib.__file__).parent / "tests" / "data"
    sets["nibabel-nicom"] = Path(nib.__file__).parent / "nicom" / "tests" / "data"
    return sets


def has_pixels(path: Path) -> bool:
    """Is ``path`` a DICOM file with pixel data (the only files that can make a volume)?"""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=False, force=path.suffix == ".gz", specific_tags=["Rows"])
        return "Rows" in ds
    except Exception:
        return False


def units() -> list[tuple[str, Path]]:
    """(set/name, path) of every DICOM image file of every set."""
    out = []
    for name, folder in data_sets().items():
        for path in sorted(folder.iterdir()):
            if path.is_file() and has_pixels(path):
                out.append((f"{name}/{path.name}", path))
    return out


def bvec_world(bvecs: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (RAS) direction of each FSL-style bvec column, read with its image's affine."""
    v = np.array(bvecs, dtype=float).reshape(3, -1).T
    axes = np.asarray(affine)[:3, :3]
    if np.linalg.det(axes) > 0:
        v[:, 0] = -v[:, 0]
    return v @ (axes / np.linalg.norm(axes, axis=0)).T


#: dcm2niix output name -> (expected result, reason): differences checked and explained. Each
#: is verified against the DICOM standard by a test named in the reason; the comparison itself is
#: not loosened for them (the row says what differs and why).
KNOWN: dict[str, str] = {
    "rtdose": "dcm2niix ignores GridFrameOffsetVector (3004,000C) and DoseGridScaling (3004,000E): "
    "it stacks dose planes 1 mm apart and writes raw integers; medload places them at the offsets "
    "(5 mm here) and writes stored values x DoseGridScaling (tests/test_io_special.py::test_pydicom_rt_dose_test_file_is_placed_and_scaled)",
    "single-slice-normal": "one oblique slice: dcm2niix's slice axis is the scanner z axis, medload's "
    "the plane's normal; every voxel centre is at the same place (checked), only the slab direction "
    "differs",
    "roi": "dcm2niix writes the overlay plane (60xx,3000) as an extra _ROI NIfTI; medload does not read overlays",
    "palette": "PALETTE COLOR: dcm2niix writes the palette indices, medload applies the palette (RGB); "
    "medload's RGB equals pydicom's apply_color_lut of dcm2niix's indices (checked)",
    "rgb32": "dcm2niix does not read 32-bit RGB (it writes one int32 frame); medload's RGB equals "
    "pydicom's pixel_array (checked)",
    "monochrome1": "MONOCHROME1: medload mirrors the values within the stored range so that higher is "
    "brighter (ProblemKind.MONOCHROME1_MIRRORED, said in the volume's problems); dcm2niix keeps them",
    "modality-lut": "Modality LUT Sequence (0028,3000): medload applies it (meta intensity says so), "
    "dcm2niix writes the stored values",
    "lossy-jpeg": "lossy JPEG: dcm2niix's decoder rounds differently (colour conversion and IDCT are not "
    "bit-exact between decoders); medload equals pydicom's decode",
    "decoder": "dcm2niix decodes these pixels differently; medload equals pydicom's decode "
    "(J2K sign taken from the codestream; big-endian 8-bit RGB)",
    "bogus": "no world geometry and dcm2niix warns 'Bogus spatial matrix': it leaves the rows in the "
    "other order than for its other images without geometry (its array differs from medload's by a "
    "row flip); medload's rows are pydicom's, in the same default plane as every image without geometry",
    "b0-table": "a single b=0 volume: dcm2niix writes bval 0; medload records no diffusion table (no gradients to record)",
    "dwi-bval": "Siemens B_value (0019,100C) is 1000 with a gradient in the CSA header (as nibabel's own "
    "test of this file expects); dcm2niix says 'Diffusion image without gradients: assuming B=0'",
}


def canonical(image: nib.Nifti1Image) -> tuple[np.ndarray, np.ndarray]:
    """Every frame (last axis), canonical orientation, scaling applied (RGB: R, G, B frames)."""
    img = nib.as_closest_canonical(image)
    if img.get_data_dtype().names:  # dcm2niix writes RGB as a structured dtype
        rgb = np.asanyarray(img.dataobj)
        data = np.stack([rgb["R"], rgb["G"], rgb["B"]], axis=-1).astype(np.float64)
    else:
        data = img.get_fdata(dtype=np.float64)
    if data.ndim == 3:
        data = data[..., None]
    return np.asarray(data.reshape(data.shape[:3] + (-1,)), dtype=np.float64), img.affine


def corner_centres(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World coordinates of the centres of the grid's 8 corner voxels (4 for one slice, ...)."""
    ijk = np.array(np.meshgrid(*[[0, n - 1] for n in shape[:3]], indexing="ij")).reshape(3, -1).T
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def directions(affine: np.ndarray) -> np.ndarray:
    """Unit axis directions of an affine (3x3)."""
    axes = affine[:3, :3]
    return axes / np.linalg.norm(axes, axis=0)


def compare(ref: nib.Nifti1Image, vol) -> str | None:
    """None when ``vol`` holds ``ref``'s voxels at its places, else what differs.

    Places: the world coordinates of the corner voxels' centres within 0.01 mm, as nibabel reads
    each file. Images without world geometry too: dcm2niix writes them with qform and sform codes
    0, which nibabel places centred on the origin, and medload centres them the same way
    (``medload.geometry.default_plane_affine``).
    """
    data, affine = canonical(vol.to_nifti())
    rdata, raffine = canonical(ref)
    if data.shape != rdata.shape:
        return f"shape {data.shape} vs {rdata.shape}"
    err = float(np.abs(corner_centres(affine, data.shape) - corner_centres(raffine, rdata.shape)).max())
    if err > 0.01:
        return f"corner voxel centres differ by {err:.4f} mm"
    tol = 1e-3 * max(1.0, float(np.abs(rdata).max()))
    diff = np.abs(data - rdata).max(axis=(0, 1, 2))
    if float(diff.max()) > tol:
        bad = [int(t) for t in np.nonzero(diff > tol)[0]]
        return f"voxels differ by up to {float(diff.max()):g} in frame(s) {bad[:10]}"
    return None


def compare_diffusion(ref: Path, vol, work: Path) -> str | None:
    """None when dcm2niix's .bval/.bvec beside ``ref`` equal medload's (bvecs as world directions)."""
    bval = ref.with_suffix(".bval")
    if not bval.exists():
        return None
    ref_b = np.atleast_1d(np.loadtxt(bval))
    ref_v = bvec_world(np.loadtxt(ref.with_suffix(".bvec")), nib.load(ref).affine)
    if not vol.meta.get("diffusion"):
        return "medload has no diffusion table"
    out = save_nifti(vol, work / "ours.nii", bids=True)
    b = np.atleast_1d(np.loadtxt(out[1]))
    if b.shape != ref_b.shape or not np.allclose(b, ref_b, atol=0.5):
        return f"bvals {b.tolist()[:8]} vs {ref_b.tolist()[:8]}"
    v = bvec_world(np.loadtxt(out[2]), nib.load(out[0]).affine)
    if not np.allclose(v, ref_v, atol=1e-3):
        return f"bvecs differ by {float(np.abs(v - ref_v).max()):.3g}"
    return None


def source_facts(path: Path) -> dict:
    """What of the source decides how to compare: geometry present, photometric, bits, modality."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        ds = pydicom.dcmread(fh, force=True)
    has_geometry = "ImageOrientationPatient" in ds or any(
        "PlaneOrientationSequence" in g for g in ds.get("SharedFunctionalGroupsSequence", [])
    )
    return {"ds": ds, "geometry": has_geometry, "photometric": str(ds.get("PhotometricInterpretation", ""))}


def pydicom_reference(ds, vol) -> str | None:
    """None when medload's voxels equal pydicom's decoded pixels, else how they differ.

    The second, independent reference: pydicom's ``pixel_array`` with what DICOM says to apply
    (MONOCHROME1 mirrored within the stored range, the modality LUT or rescale, the palette),
    in the same array order (frames, rows, columns; colour samples first as medload has them).
    """
    from pydicom.pixels import apply_color_lut, apply_modality_lut

    arr = ds.pixel_array
    if ds.PhotometricInterpretation == "MONOCHROME1":
        bits = int(ds.BitsStored)
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if int(ds.PixelRepresentation) else (0, 2**bits - 1)
        arr = (lo + hi) - arr.astype(np.int64)
    if "ModalityLUTSequence" in ds or "RescaleSlope" in ds:
        arr = apply_modality_lut(arr, ds)
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if int(ds.get("SamplesPerPixel", 1)) == 3 or ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = np.moveaxis(arr.reshape((-1,) + arr.shape[-3:]), -1, 0)  # (3, frames, rows, columns)
    try:
        ours = np.asarray(vol.array, dtype=np.float64).reshape(np.shape(arr))
    except ValueError:
        return f"shape {vol.shape} vs pydicom's {np.shape(arr)}"
    d = float(np.abs(ours - arr).max())
    return None if d <= 1e-6 * max(1.0, float(np.abs(arr).max())) else f"voxels differ from pydicom's by up to {d:g}"


def why_dcm2niix_differs(ds, dcm2niix_said: str, ref: nib.Nifti1Image, vol) -> str:
    """The documented reason dcm2niix's voxels differ where medload equals pydicom (each
    reason's evidence checked: the row flip must make them equal)."""
    if "Bogus spatial matrix" in dcm2niix_said:
        theirs, ours = canonical(ref)[0], canonical(vol.to_nifti())[0]
        if theirs.shape == ours.shape and np.array_equal(theirs[:, ::-1], ours):
            return KNOWN["bogus"]
    syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if ds.PhotometricInterpretation == "MONOCHROME1":
        return KNOWN["monochrome1"]
    if "ModalityLUTSequence" in ds:
        return KNOWN["modality-lut"]
    if syntax in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"):
        return KNOWN["lossy-jpeg"]
    return KNOWN["decoder"]


def check(label: str, path: Path, dcm2niix: str) -> dict:
    """One unit: run both, compare, return the row."""
    with tempfile.TemporaryDirectory(prefix="medload-validate-") as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        src.mkdir()
        out.mkdir()
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                (src / path.name[:-3]).write_bytes(fh.read())
        else:
            os.symlink(path, src / path.name)
        proc = subprocess.run(
            [dcm2niix, "-z", "n", "-b", "y", "-f", "%s_%p", "-o", str(out), str(src)], capture_output=True, timeout=300, text=True
        )
        refs = sorted(out.glob("*.nii"))
        vols, refusals = [], []
        try:
            result = scan(src)
            refusals = [f"ReadError: {e.message}" for e in result.errors]
            found = [s for s in result if s.kind == "dicom"]
        except MedloadError as exc:
            found, refusals = [], [f"{type(exc).__name__}: {exc}"]
        for series in found:
            try:
                vols.append(load(series, allow_burned_in=True))
            except MedloadError as exc:
                refusals.append(f"{type(exc).__name__}: {exc}")
        facts = source_facts(path)
        row = {"unit": label, "dcm2niix": [r.name for r in refs], "medload": [v.shape for v in vols], "refused": refusals}
        row["why"] = ""
        if not vols:
            row["result"] = "refuse" if refusals else "DISAGREE"
            row["why"] = (refusals[0] if refusals else "medload found no series and said nothing").replace(str(src), "<in>")
            if not refs:
                row["why"] += " (dcm2niix wrote nothing either)"
            return row
        if not refs:
            bad = [pydicom_reference(facts["ds"], v) for v in vols]
            bad = [b for b in bad if b]
            row["result"] = "DISAGREE" if bad else "agree (pydicom)"
            line = (proc.stdout.strip().splitlines() or ["no output"])[-1][:120].replace(str(src), "<in>")
            row["why"] = "; ".join(bad) or f"dcm2niix wrote nothing ({line}); medload equals pydicom's pixel_array"
            return row
        fails, notes = [], []
        for ref in refs:
            if "_ROI" in ref.name:
                notes.append(KNOWN["roi"])
                continue
            img = nib.load(ref)
            if facts["photometric"] == "PALETTE COLOR" or (
                int(facts["ds"].get("BitsAllocated", 0)) == 32 and int(facts["ds"].get("SamplesPerPixel", 1)) == 3
            ):
                why = [pydicom_reference(facts["ds"], v) for v in vols]
                if None in why:
                    notes.append(KNOWN["palette" if facts["photometric"] == "PALETTE COLOR" else "rgb32"])
                    continue
                fails.append(f"{ref.name}: {'; '.join(w for w in why if w)}")
                continue
            why = [compare(img, v) for v in vols]
            if None not in why:
                if facts["ds"].get("Modality") == "RTDOSE":
                    notes.append(KNOWN["rtdose"])
                    continue
                voxels_only = [i for i, w in enumerate(why) if w.startswith("voxels differ")]
                if voxels_only and pydicom_reference(facts["ds"], vols[voxels_only[0]]) is None:
                    notes.append(
                        why_dcm2niix_differs(facts["ds"], proc.stdout, img, vols[voxels_only[0]])
                        + f" [dcm2niix: {why[voxels_only[0]]}]"
                    )
                    continue
                fails.append(f"{ref.name}: {'; '.join(w for w in why if w)}")
                continue
            vol = vols[why.index(None)]
            if vol.shape[-3] == 1 and facts["geometry"]:
                a, b = canonical(vol.to_nifti())[1], canonical(img)[1]
                if np.abs(a - b).max() > 0.01:
                    notes.append(KNOWN["single-slice-normal"])
            bad = compare_diffusion(ref, vol, Path(tmp))
            if bad:
                b = np.atleast_1d(np.loadtxt(ref.with_suffix(".bval")))
                table = vol.meta.get("diffusion")
                if not table and not b.any():
                    notes.append(KNOWN["b0-table"])
                elif (
                    table
                    and not b.any()
                    and "without gradients"
                    in subprocess.run(
                        [dcm2niix, "-v", "1", "-z", "n", "-o", tmp, str(src)], capture_output=True, text=True
                    ).stdout
                ):
                    notes.append(KNOWN["dwi-bval"])
                else:
                    fails.append(f"{ref.name}: diffusion: {bad}")
        if fails and refusals and len(vols) < len(refs):
            row["result"], row["why"] = "refuse", refusals[0] + " | " + "; ".join(fails)
        elif fails:
            row["result"], row["why"] = "DISAGREE", "; ".join(fails)
        else:
            row["result"], row["why"] = ("agree*" if notes else "agree"), "; ".join(dict.fromkeys(notes))
        return row


def short_reason(row: dict) -> str:
    """The reason of a row in a few words: which KNOWN entry, or the refusal's first clause."""
    why = row.get("why", "")
    for key, text in KNOWN.items():
        if text[:60] in why:
            return f"known: {key}"
    if row["result"] == "refuse":
        text = why.split(": ", 1)[-1].replace("<in>/", "")
        text = re.sub(r" \((?:[^()]|\([^()]*\))*\)", "", text.split("; ")[0]).split(". ")[0]
        return text[:130]
    return why[:110]


def markdown(rows: list[dict]) -> str:
    """The per-file table: set, file, result, reason."""
    lines = ["| set | file | result | reason |", "|---|---|---|---|"]
    for r in rows:
        group, _, name = r["unit"].partition("/")
        lines.append(f"| {group} | `{name}` | {r['result']} | {short_reason(r).replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", default="")
    parser.add_argument("--markdown", type=Path, help="write the per-file table (docs/validation.md's) here")
    args = parser.parse_args(argv)
    dcm2niix = shutil.which("dcm2niix")
    if dcm2niix is None:
        print("dcm2niix not on PATH (pip install dcm2niix)", file=sys.stderr)
        return 2
    rows = []
    for label, path in units():
        if args.only not in label:
            continue
        try:
            row = check(label, path, dcm2niix)
        except Exception as exc:  # a raw exception out of medload is a finding of its own
            row = {"unit": label, "result": "CRASH", "why": f"{type(exc).__name__}: {exc}"[:300]}
        rows.append(row)
        print(f"{row['result']:14} {label:55} {row.get('why', '')[:300]}", flush=True)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["result"]] = counts.get(r["result"], 0) + 1
    print(json.dumps(counts), f"medload {medload.__version__}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    if args.markdown:
        args.markdown.write_text(markdown(rows))
    return 1 if counts.get("DISAGREE") or counts.get("CRASH") else 0


if __name__ == "__main__":
    raise SystemExit(main())
