"""The reader contract: every source, DICOM or NIfTI, synthetic or real, passes the same checks.

Issue 2, point 4 (after nibabel's ``test_api_validators``): one test, parametrized over sources.
For each loaded Volume:

- array 3D ``(Z, Y, X)`` or 4D ``(T, Z, Y, X)``, numeric, no wider than 32 bits (float32 when
  rescaled to fractions, an integer type otherwise);
- affine 4x4 float64, finite; where the truth is known (synthetic generators, dcm2niix's
  reference NIfTI, the TotalSegmentator mask's grid) the same voxels at the same world
  coordinates after ``nibabel.as_closest_canonical`` (affine within 0.01 mm); axis 0 is the
  slice axis;
- modality as the source says;
- meta JSON-able with the shared keys (source, keys, source_hash, intensity, problems), and no
  identifying field: neither an ``IDENTIFYING_KEYWORDS`` key nor any identifying value found in
  the source's own headers appears anywhere in ``json.dumps(meta)``;
- ``to_nifti()`` and back gives the same array and affine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest

import medload
from fixtures.make_export import make_export
from fixtures.synthetic import write_dicom_series, write_nifti
from medload.deid import IDENTIFYING_KEYWORDS
from medload.volume import Volume
from tests.conftest import shared_path

Case = dict[str, Any]


def _only(found, **attrs) -> Any:
    hits = [s for s in found if all(getattr(s, k) == v for k, v in attrs.items())]
    assert len(hits) == 1, f"expected one series with {attrs}, scan found {[s.summary() for s in found]}"
    return hits[0]


def _dicom_phi(files: list[str]) -> list[str]:
    """Identifying values as written in the source's own headers (first and last file)."""
    values: set[str] = set()
    for name in {files[0], files[-1]}:
        ds = pydicom.dcmread(name, stop_before_pixels=True)
        for keyword in IDENTIFYING_KEYWORDS:
            value = ds.get(keyword)
            if value is None or isinstance(value, pydicom.Sequence):
                continue
            for part in value if isinstance(value, pydicom.multival.MultiValue) else [value]:
                text = str(part).strip()
                if len(text) >= 5 and text.strip("0") != "":  # short codes would match by chance
                    values.add(text)
    return sorted(values)


# --- the sources ------------------------------------------------------------------------
def _synthetic_dicom(orientation: str, modality: str, **kwargs) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        truth = write_dicom_series(tmp / "series", orientation=orientation, modality=modality, shape=(6, 9, 7), **kwargs)
        return {
            "load": lambda: medload.load(tmp / "series"),
            "array": truth["array"],
            "affine": truth["affine"],
            "slice_normal": truth["slice_normal"],
            "modality": modality,
            "source": "dicom",
            "phi": sorted(set(truth["phi"].values()) | set(_dicom_phi(truth["files"]))),
        }

    return build


def _two_series_in_one_folder(tmp: Path) -> Case:
    write_dicom_series(tmp, series_description="first", seed=1, shape=(4, 8, 8))
    truth = write_dicom_series(
        tmp,
        series_description="second",
        orientation="coronal",
        modality="MR",
        seed=2,
        shape=(5, 6, 8),
        patient_name="Roe^Richard",
        patient_id="FAKE-PID-0002",
    )
    found = medload.scan(tmp)
    return {
        "load": lambda: medload.load(_only(found, description="second")),
        "array": truth["array"],
        "affine": truth["affine"],
        "slice_normal": truth["slice_normal"],
        "modality": "MR",
        "source": "dicom",
        "phi": sorted(truth["phi"].values()),
    }


def _synthetic_nifti(four_d: bool) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        if four_d:
            path = tmp / "sub-03" / "func" / "sub-03_task-rest_bold.nii.gz"
            truth = write_nifti(path, shape=(6, 8, 9), four_d=True, dtype="uint16", sidecar={"RepetitionTime": 2.0})
            modality = "MR"
        else:
            path = tmp / "ct.nii.gz"
            truth = write_nifti(
                path,
                shape=(6, 8, 9),
                dtype="int16",
                scl_slope=0.5,
                scl_inter=-1024.0,
                sidecar={"Modality": "CT", "InstitutionName": "Fake General Hospital"},
            )
            modality = "CT"
        return {
            "load": lambda: medload.load(path),
            "array": truth["array"],
            "affine": truth["affine"],
            "slice_normal": None,
            "modality": modality,
            "source": "nifti",
            "phi": ["Fake General Hospital"],
        }

    return build


def _export(part: str) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        truth = make_export(tmp / "export")[part]
        found = medload.scan(tmp / "export")
        if part == "ct":
            series = _only(found, modality="CT")
        elif part == "mr":
            series = _only(found, modality="MR", kind="dicom")
        elif part == "mr_nifti":
            series = _only(found, modality="MR", kind="nifti")
        else:
            series = _only(found, description="PAT0001_CT_labels")
        phi = ["Doe^Jane", "Roe^Richard", "FAKE-PID-0001", "FAKE-PID-0002", "Fake General Hospital"]
        if part in ("ct", "mr"):
            phi += _dicom_phi(truth["files"])
        return {
            "load": lambda: medload.load(series),
            "array": truth["array"],
            "affine": truth["affine"],
            "slice_normal": truth.get("slice_normal"),
            "modality": {"ct": "CT", "mr": "MR", "mr_nifti": "MR", "labels": "unknown"}[part],
            "source": "nifti" if part in ("mr_nifti", "labels") else "dicom",
            "phi": phi,
        }

    return build


def _real_nifti(name: str) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        path = shared_path("totalsegmentator_ct", name)
        image = nib.load(path)
        return {
            "load": lambda: medload.load(path),
            "array": np.asanyarray(image.dataobj).transpose(2, 1, 0),
            "affine": np.asarray(image.affine)[:, [2, 1, 0, 3]],
            "slice_normal": None,
            "modality": "unknown",
            "source": "nifti",
            "phi": [],
        }

    return build


def _real_totalsegmentator_dicom(tmp: Path) -> Case:
    folder = shared_path("totalsegmentator_ct", "example_ct_dicom")
    grid = nib.load(shared_path("totalsegmentator_ct", "example_seg_dicom.nii.gz"))
    files = sorted(str(p) for p in folder.iterdir())
    return {
        "load": lambda: medload.load(folder),
        "array": None,  # only the grid is known: the mask's
        "grid": (tuple(reversed(grid.shape)), np.asarray(grid.affine)[:, [2, 1, 0, 3]]),
        "affine": None,
        "slice_normal": None,
        "modality": "CT",
        "source": "dicom",
        "phi": _dicom_phi(files),
    }


def _real_dcm_qa_nih(series: str, ref: str) -> Callable[[Path], Case]:
    def build(tmp: Path) -> Case:
        folder = shared_path("dcm_qa_nih", "In", *series.split("/"))
        image = nib.load(shared_path("dcm_qa_nih", "Ref", ref))
        files = sorted(str(p) for p in folder.iterdir() if p.suffix == ".dcm" or not p.suffix)
        return {
            "load": lambda: medload.load(folder),
            "reference": image,  # dcm2niix's NIfTI: compared frame 0, in canonical orientation
            "array": None,
            "affine": None,
            "slice_normal": None,
            "modality": "MR",
            "source": "dicom",
            "phi": _dicom_phi(files),
        }

    return build


SOURCES: dict[str, Callable[[Path], Case]] = {
    "dicom-axial-ct": _synthetic_dicom("axial", "CT"),
    "dicom-sagittal-mr": _synthetic_dicom("sagittal", "MR"),
    "dicom-coronal-ct": _synthetic_dicom("coronal", "CT", rescale=(0.5, -1024.0)),
    "dicom-oblique-mr": _synthetic_dicom("oblique", "MR"),
    "dicom-shuffled-ct": _synthetic_dicom("axial", "CT", shuffle=True),
    "dicom-implicit-oblique-ct": _synthetic_dicom("oblique", "CT", shuffle=True, transfer_syntax="1.2.840.10008.1.2"),
    "dicom-two-series-one-folder": _two_series_in_one_folder,
    "nifti-3d-scaled-ct": _synthetic_nifti(four_d=False),
    "nifti-4d-bids-bold": _synthetic_nifti(four_d=True),
    "export-ct-dicom": _export("ct"),
    "export-mr-dicom": _export("mr"),
    "export-mr-nifti": _export("mr_nifti"),
    "export-labels-nifti": _export("labels"),
    "real-totalsegmentator-ct-dicom": _real_totalsegmentator_dicom,
    "real-totalsegmentator-ct-nifti": _real_nifti("example_ct_sm.nii.gz"),
    "real-totalsegmentator-mr-nifti": _real_nifti("example_mr_sm.nii.gz"),
    "real-dcm_qa_nih-ge-epi": _real_dcm_qa_nih("20180918GE/mr_0004", "DCM2NIIX_regression_test_4.nii"),
    "real-dcm_qa_nih-siemens-mosaic": _real_dcm_qa_nih("20180918Si/mr_0003", "EPI_PE=AP_3.nii"),
}


# --- the checks -------------------------------------------------------------------------
def _canonical(array: np.ndarray, affine: np.ndarray):
    data = array[0] if array.ndim == 4 else array
    image = nib.as_closest_canonical(nib.Nifti1Image(np.asarray(data).transpose(2, 1, 0), affine[:, [2, 1, 0, 3]]))
    return np.asanyarray(image.dataobj), image.affine


def _all_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | set().union(*(_all_keys(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(_all_keys(v) for v in value)) if value else set()
    return set()


@pytest.mark.parametrize("source", list(SOURCES))
def test_reader_contract(source: str, tmp_path: Path) -> None:
    case = SOURCES[source](tmp_path)
    vol = case["load"]()
    assert isinstance(vol, Volume)

    # Array: (Z, Y, X) or (T, Z, Y, X), numeric, at most 32 bits.
    assert vol.array.ndim in (3, 4) and min(vol.array.shape) >= 1
    assert vol.array.dtype.kind in "iuf" and vol.array.dtype.itemsize <= 4, vol.array.dtype
    if vol.modality == "CT" and case["source"] == "dicom":
        assert vol.array.dtype.kind in "if" and float(vol.array.min()) < -500  # HU: air is negative

    # Affine: 4x4 float64 finite; truth where known.
    assert vol.affine.shape == (4, 4) and vol.affine.dtype == np.float64 and np.all(np.isfinite(vol.affine))
    if case.get("array") is not None:
        want_data, want_affine = _canonical(case["array"], case["affine"])
        got_data, got_affine = _canonical(vol.array, vol.affine)
        assert got_data.shape == want_data.shape
        np.testing.assert_allclose(got_affine, want_affine, atol=0.01)
        np.testing.assert_allclose(got_data, want_data, rtol=1e-6, atol=1e-6)
    if case.get("slice_normal") is not None:  # axis 0 is the stacking direction
        step = vol.affine[:3, 0] / np.linalg.norm(vol.affine[:3, 0])
        assert abs(float(step @ case["slice_normal"])) > 0.999
    if case.get("grid") is not None:
        # The mask holds the same voxel centres; it stores rows in the other direction (as
        # dcm2niix does), so the grids are compared in canonical orientation.
        shape, affine = case["grid"]
        _, want_affine = _canonical(np.zeros(shape, np.uint8), affine)
        got, got_affine = _canonical(np.zeros(vol.spatial_shape, np.uint8), vol.affine)
        assert got.shape == tuple(reversed(shape))
        np.testing.assert_allclose(got_affine, want_affine, atol=0.01)
    if case.get("reference") is not None:
        ref = case["reference"]
        ref_data = np.asanyarray(ref.dataobj)
        ref_data = ref_data[..., 0] if ref_data.ndim == 4 else ref_data
        want = nib.as_closest_canonical(nib.Nifti1Image(ref_data, ref.affine))
        got_data, got_affine = _canonical(vol.array, vol.affine)
        assert got_data.shape == want.shape
        np.testing.assert_allclose(got_affine, want.affine, atol=0.01)
        np.testing.assert_allclose(got_data, np.asanyarray(want.dataobj), atol=1e-3)

    # Modality and meta.
    assert vol.modality == case["modality"]
    meta = vol.meta
    text = json.dumps(meta, allow_nan=False)
    assert meta["source"] == case["source"]
    for key in ("source_key", "series_key", "study_key", "patient_key", "source_hash"):
        assert isinstance(meta.get(key), str) and meta[key], key
    assert meta["patient_key"].startswith("pat-") and meta["series_key"].startswith("ser-")
    assert isinstance(meta.get("intensity"), str) and isinstance(meta.get("problems"), list)
    if vol.modality == "CT":
        assert meta["intensity"] == "HU"

    # No identifying field: neither the keywords nor the values the source holds.
    assert not (_all_keys(meta) & set(IDENTIFYING_KEYWORDS)), _all_keys(meta) & set(IDENTIFYING_KEYWORDS)
    leaked = [value for value in case["phi"] if value in text]
    assert not leaked, f"identifying values in meta: {leaked}"

    # to_nifti and back: the same voxels and geometry.
    image = nib.Nifti1Image.from_bytes(vol.to_nifti().to_bytes())
    back = Volume.from_nifti(image)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
