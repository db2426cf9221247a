"""``Store.add`` in Python stores meta through the allow-list ``medload.convert`` applies.

A notebook's ``store.add(medload.load(path))`` stored ``load``'s meta as given: a NIfTI's file
name (its description), a BIDS sidecar's SeriesDescription, ``meta["phi"]`` of a
``load(..., keep_phi=True)``, problem messages naming the source folders. Each output is
searched with :func:`fixtures.phi.search_output` (every byte, UTF-8/UTF-16/Latin-1, any case,
every HDF5 attribute); ``keep_phi=True`` stores meta as given, so the search can fail.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import pytest

import medload
from fixtures.phi import search_output
from fixtures.synthetic import write_dicom_series, write_nifti
from medload.store import MetaNotStoredWarning

NAME = "Quagmirova^Zoltaneous"
WORDS = ["Quagmirova", "Zoltaneous", "Brumblesnatch", "Pickwickian"]


def _named_nifti(tmp_path: Path) -> Path:
    """A NIfTI file named after the patient, in a folder named after them, with the name in its
    header's descrip and in its BIDS sidecar's SeriesDescription."""
    path = tmp_path / "Quagmirova Zoltaneous" / "Zoltaneous_Quagmirova_T1.nii.gz"
    write_nifti(path, shape=(4, 6, 6), sidecar={"Modality": "MR", "SeriesDescription": "Brumblesnatch head"})
    image = nib.load(path)
    image.header["descrip"] = b"Quagmirova^Zoltaneous MRN 4711"
    nib.save(image, path)
    assert nib.load(path).header["descrip"].tobytes().startswith(b"Quagmirova")
    return path


def _volumes(tmp_path: Path) -> list[medload.Volume]:
    """What a notebook loads: the NIfTI (modality given, so a problem names the file), and a DICOM
    series with a missing slice (interpolated) loaded with keep_phi, with a problem that names its
    folder as scan's do (``series 1 (4 files under ...)``) and identifying keys added."""
    nifti = medload.load(_named_nifti(tmp_path), modality="CT")
    assert "Brumblesnatch" in nifti.meta["description"] and any("Quagmirova" in p.message for p in nifti.problems)
    folder = tmp_path / NAME / "Pickwickian_ct"
    truth = write_dicom_series(folder, shape=(5, 6, 6), patient_name=NAME, series_description="Brumblesnatch", return_array=False)
    Path(sorted(truth["files"])[2]).unlink()
    dicom = medload.load(folder, keep_phi=True, on_gap="interpolate")
    assert dicom.meta["phi"]["PatientName"] == NAME
    gap = {"kind": "slice_gap", "message": f"series 1 (4 files under {folder}): 1 slice missing"}
    planted = {"patient_name": NAME, "series_description": "Brumblesnatch", "problems": [*dicom.meta["problems"], gap]}
    return [nifti, dicom.with_array(dicom.array, meta={**dicom.meta, **planted})]


def test_store_add_stores_no_name_of_a_loaded_volume_by_default(tmp_path):
    volumes = _volumes(tmp_path)
    out = tmp_path / "out"
    with medload.Store.create(out / "s.h5") as store:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # load's own keys (description, phi) are dropped without a warning
            store.add(volumes[0])
        with pytest.warns(MetaNotStoredWarning, match=r"\['patient_name'\]"):  # the one a caller added
            store.add(volumes[1])
    assert search_output(out, WORDS + [str(tmp_path)]) == {}
    records = {r.source: r for r in medload.open(out / "s.h5").volumes}
    assert {r.source_hash for r in records.values()} == {v.meta["source_hash"] for v in volumes}  # resumable as before
    nifti, dicom = records["nifti"], records["dicom"]
    assert nifti.meta["problems"][0]["kind"] == "modality_overridden" and dicom.modality == "CT"
    assert {p["kind"] for p in dicom.meta["problems"]} >= {"slice_gap", "slices_interpolated"}
    assert dicom.meta["kvp"] == volumes[1].meta["kvp"]  # acquisition parameters stay
    # keep_phi stores meta as given: the same search finds the names (it can fail).
    with medload.Store.create(tmp_path / "kept" / "s.h5", keep_phi=True) as store:
        for vol in volumes:
            store.add(vol)
    assert set(search_output(tmp_path / "kept", WORDS)) == set(WORDS)


def test_a_callers_own_meta_key_is_named_when_it_is_left_out(tmp_path):
    vol = medload.Volume(
        medload.load(write_nifti(tmp_path / "t1.nii.gz")["path"]).array,
        medload.load(tmp_path / "t1.nii.gz").affine,
        meta={"source_hash": "h", "diagnosis": "glioma", "description": "Quagmirova"},
    )
    with medload.Store.create(tmp_path / "s.h5") as store:
        with pytest.warns(MetaNotStoredWarning, match=r"\['diagnosis'\].*keep_phi=True") as caught:
            store.add(vol)
        assert "Quagmirova" not in str(caught[0].message) and "glioma" not in str(caught[0].message)
    (record,) = medload.open(tmp_path / "s.h5").volumes
    assert "diagnosis" not in record.meta and "description" not in record.meta
    with medload.Store.create(tmp_path / "kept.h5", keep_phi=True) as store:
        store.add(vol)
    (record,) = medload.open(tmp_path / "kept.h5").volumes
    assert record.meta["diagnosis"] == "glioma"
