"""``scan``: headers only, files by content not name, counts and problems, deterministic.

The fast header walk (``medload.io.fastheader``) must read exactly what pydicom reads: a
table test compares both on every DICOM file of pydicom's test data and ../shared/data.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

import medload.io.codecs
import medload.io.dicom
from fixtures.synthetic import write_dicom_series, write_nifti
from medload.io import ScanResult, load, scan
from medload.io.headers import read_header
from medload.problems import ProblemKind
from tests.conftest import SHARED_DATA

PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _comparable(h):
    if h is None or isinstance(h, str):
        return h
    # pydicom keeps trailing spaces inside multi-valued CS (e.g. 'DERIVED '); the fast path
    # strips them as the standard says; compare without that padding.
    params = {
        k: (
            v.strip() if isinstance(v, str) else [x.strip() if isinstance(x, str) else x for x in v] if isinstance(v, list) else v
        )
        for k, v in h.params.items()
    }
    frames = [
        (
            f.frame,
            f.mosaic,
            f.position,
            f.orientation,
            f.pixel_spacing,
            f.slope,
            f.intercept,
            f.time_key,
            tuple(str(x).strip() for x in f.split_key),
            f.uid,
        )
        for f in h.frames
    ]
    return (
        h.sop_class,
        h.modality,
        h.series_uid,
        h.study_uid,
        h.patient_id,
        h.series_number,
        h.description.strip(),
        h.rows,
        h.columns,
        h.samples,
        h.photometric,
        h.bits_stored,
        h.signed,
        h.bits_allocated,
        h.transfer_syntax,
        h.is_image,
        params,
        frames,
    )


def _read(path: Path, specific: bool):
    try:
        return read_header(str(path), specific=specific)
    except Exception as exc:  # compare the kind of failure too
        return type(exc).__name__


@pytest.mark.parametrize("source", ["pydicom", "shared"])
def test_fast_header_reads_what_pydicom_reads(source):
    if source == "pydicom":
        files = _all_files(PYDICOM_FILES)
    else:
        if not SHARED_DATA.exists():
            pytest.skip(f"needs real scanner data at {SHARED_DATA}")
        files = [p for p in _all_files(SHARED_DATA) if "dcm_qa_nih" not in str(p) or p.name.endswith("1.dcm")]
    compared = 0
    differ = []
    for path in files:
        fast, slow = _read(path, True), _read(path, False)
        if fast is None and slow is not None and not isinstance(slow, str) and not slow.is_image:
            continue  # not DICOM by our first-bytes test, a non-image to pydicom: both skipped
        if _comparable(fast) != _comparable(slow):
            differ.append(path.name)
        compared += fast is not None and not isinstance(fast, str)
    # Two deliberately odd pydicom files where the full read finds elements the scan set
    # leaves out (a preamble without the DICM marker; a private nested sequence): both are
    # non-images either way.
    allowed = {"meta_missing_tsyntax.dcm", "nested_priv_SQ.dcm"}
    assert set(differ) <= allowed, differ
    assert compared > (100 if source == "pydicom" else 80)


def test_scan_reads_no_pixels(tmp_path, monkeypatch):
    truth = write_dicom_series(tmp_path, shape=(5, 4, 4), seed=1)
    os.remove(truth["files"][2])

    def no_pixels(*args, **kwargs):
        raise AssertionError("scan decoded pixels")

    monkeypatch.setattr(medload.io.codecs, "decode", no_pixels)
    monkeypatch.setattr(medload.io.codecs, "read_native", no_pixels)
    monkeypatch.setattr(medload.io.dicom, "decode", no_pixels)
    monkeypatch.setattr(medload.io.dicom, "read_native", no_pixels)
    found = scan(tmp_path)
    assert found[0].shape == (4, 4, 4)
    assert found[0].spacing == pytest.approx((2.0, 0.8, 0.6))
    assert any(p.kind is ProblemKind.SLICE_GAP and "missing slices: 1 slice(s)" in p.message for p in found[0].problems)


def test_files_are_recognised_by_content_not_name(tmp_path):
    truth = write_dicom_series(tmp_path / "a", shape=(3, 4, 4), seed=2, shuffle=True)  # no extensions
    for i, f in enumerate(truth["files"]):
        os.rename(f, tmp_path / "a" / f"notes_{i}.txt")
    (tmp_path / "a" / "fake.dcm").write_text("I am not DICOM")
    write_nifti(tmp_path / "vol.nii.gz", shape=(4, 5, 6))
    shutil.copy(tmp_path / "vol.nii.gz", tmp_path / ".hidden.nii.gz")
    found = scan(tmp_path)
    assert sorted(s.kind for s in found) == ["dicom", "nifti"]
    assert found.skipped["not DICOM"] == 1  # fake.dcm
    assert found.n_files == 5  # hidden entries are never scanner output
    dicom = next(s for s in found if s.kind == "dicom")
    assert dicom.shape == (3, 4, 4)
    np.testing.assert_array_equal(load(dicom).array, truth["array"])


def test_dicomdir_and_non_image_objects_are_skipped_and_counted(tmp_path):
    write_dicom_series(tmp_path / "ct", shape=(2, 4, 4), seed=3)
    for name, dest in (("dicomdirtests/DICOMDIR", "DICOMDIR"), ("rtstruct.dcm", "rs"), ("rtplan.dcm", "plan")):
        shutil.copy(PYDICOM_FILES / name, tmp_path / dest)
    found = scan(tmp_path)
    assert isinstance(found, ScanResult) and len(found) == 1
    assert found.skipped == {"Media Storage Directory (DICOMDIR)": 1, "RT Structure Set": 1, "RT Plan": 1}
    assert found.errors == [] and found.n_files == 5


def test_order_and_keys_are_deterministic(tmp_path):
    for i, n in enumerate((7, 3, 5)):
        write_dicom_series(tmp_path / f"s{i}", shape=(2, 3, 3), series_number=n, seed=i, series_description=f"number {n}")
    a, b = scan(tmp_path, phi_key="k"), scan(tmp_path, phi_key="k")
    assert [s.description for s in a] == ["number 3", "number 5", "number 7"]
    assert [s.series_key for s in a] == [s.series_key for s in b]
    assert [s.source_hash for s in a] == [s.source_hash for s in b]
    assert len({s.series_key for s in a}) == 3
    assert all(s.series_key.startswith("ser-") and s.study_key.startswith("stu-") for s in a)
    # a different secret gives different pseudonyms for the same patient
    assert scan(tmp_path, phi_key="other")[0].patient_key != a[0].patient_key


def test_summary_has_no_paths_or_identifying_values(tmp_path):
    truth = write_dicom_series(tmp_path, shape=(2, 3, 3), seed=4)
    row = scan(tmp_path)[0].summary()
    text = repr(row)
    assert str(tmp_path) not in text
    for value in truth["phi"].values():
        assert str(value) not in text


def test_echoes_and_image_types_split_one_series_uid(tmp_path):
    e1 = write_dicom_series(tmp_path / "e1", modality="MR", shape=(3, 4, 4), seed=5, extra_tags={"EchoNumbers": 1})
    write_dicom_series(
        tmp_path / "e2", modality="MR", shape=(3, 4, 4), seed=6, series_uid=e1["series_uid"], extra_tags={"EchoNumbers": 2}
    )
    for f in (tmp_path / "e2").iterdir():  # new instance UIDs: a real second echo
        ds = pydicom.dcmread(f)
        ds.SOPInstanceUID = ds.SOPInstanceUID[:60] + ".2"
        ds.save_as(f)
    found = scan(tmp_path)
    assert [s.shape for s in found] == [(3, 4, 4), (3, 4, 4)]
    np.testing.assert_array_equal(load(found[0]).array, e1["array"].astype(np.uint16))


def test_shared_data_scan_finds_each_volume():
    root = SHARED_DATA / "dcm_qa_nih" / "In"
    if not root.exists():
        pytest.skip(f"needs real scanner data at {root}")
    found = scan(root)
    assert len(found) == 8
    assert found.skipped["not DICOM"] == 10  # the README-*.txt files
    shapes = sorted(s.shape for s in found)
    assert shapes == [(2, 5, 72, 72)] * 4 + [(10, 15, 64, 64)] * 4


def test_patients_without_id_are_not_pooled(tmp_path):
    for i in range(2):
        write_dicom_series(tmp_path / f"p{i}", shape=(2, 3, 3), seed=10 + i, patient_id="", series_description=f"anon {i}")
    found = scan(tmp_path)
    assert len(found) == 2
    assert found[0].patient_key != found[1].patient_key
    assert "pat-none" not in {s.patient_key for s in found}


def test_series_without_patient_study_or_series_uid_are_distinct_patients(tmp_path):
    # As the TotalSegmentator sample CT: PatientID, StudyInstanceUID and SeriesInstanceUID empty.
    blank = {"PatientID": "", "StudyInstanceUID": "", "SeriesInstanceUID": ""}
    for i in range(2):
        write_dicom_series(tmp_path / f"case{i}", shape=(2, 3, 3), seed=20 + i, extra_tags=blank, return_array=False)
    found = scan(tmp_path)
    assert len(found) == 2
    assert len({s.patient_key for s in found}) == 2
    assert len({s.study_key for s in found}) == 2
    assert len({s.series_key for s in found}) == 2
    assert not {"pat-none", "stu-none", "ser-none"} & {k for s in found for k in (s.patient_key, s.study_key)}
    for s in found:
        assert any(p.kind is ProblemKind.PATIENT_UNKNOWN and "folder" in p.message for p in s.problems)
    assert [load(s).shape for s in found] == [(2, 3, 3), (2, 3, 3)]
    # The folder keys are stable: the same export scanned again gives the same keys.
    assert [s.patient_key for s in scan(tmp_path)] == [s.patient_key for s in found]


def test_series_of_one_anonymous_study_stay_one_patient(tmp_path):
    shared = {"PatientID": "", "StudyInstanceUID": "1.2.826.0.1.3680043.8.498.4242"}
    for i in range(2):
        write_dicom_series(
            tmp_path / f"series{i}", shape=(2, 3, 3), seed=30 + i, series_number=i + 1, extra_tags=shared, return_array=False
        )
    write_dicom_series(tmp_path / "other", shape=(2, 3, 3), seed=33, patient_id="", return_array=False)
    found = scan(tmp_path)
    assert len(found) == 3
    in_study = [s for s in found if s.files[0].startswith(str(tmp_path / "series"))]
    other = [s for s in found if s not in in_study]
    assert len(in_study) == 2 and len(other) == 1
    assert in_study[0].patient_key == in_study[1].patient_key
    assert in_study[0].study_key == in_study[1].study_key
    assert in_study[0].series_key != in_study[1].series_key
    assert other[0].patient_key != in_study[0].patient_key
    assert all(ProblemKind.PATIENT_UNKNOWN in {p.kind for p in s.problems} for s in found)


def test_totalsegmentator_anonymous_ct_is_not_pat_none():
    from tests.conftest import shared_path

    folder = shared_path("totalsegmentator_ct", "example_ct_dicom")
    (series,) = scan(folder)
    assert series.patient_key != "pat-none" and series.study_key != "stu-none"
    assert ProblemKind.PATIENT_UNKNOWN in {p.kind for p in series.problems}


def test_symlinked_export_is_followed_and_loops_end(tmp_path):
    real = tmp_path / "storage" / "series"
    write_dicom_series(real, shape=(3, 4, 4), seed=40, return_array=False)
    export = tmp_path / "export"
    export.mkdir()
    (export / "linked").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(tmp_path / "storage", target_is_directory=True)  # storage/series/loop -> storage
    (export / "self").symlink_to(export, target_is_directory=True)  # export/self -> export
    one_file = sorted(p for p in real.iterdir() if p.is_file() and not p.is_symlink())[0]
    (export / "again.dcm").symlink_to(one_file)  # the same file by a second path
    found = scan(export)
    assert len(found) == 1
    assert found[0].shape == (3, 4, 4) and len(found[0].files) == 3 and found.n_files == 3
    assert load(found[0]).shape == (3, 4, 4)
    # a symlink given as the source itself
    assert [s.shape for s in scan(export / "linked")] == [(3, 4, 4)]


def test_fast_header_keyword_table_matches_pydicoms_dictionary() -> None:
    # the fast header pass reads elements by this table; a wrong tag or VR would read another
    # element (or misread its bytes) without pydicom ever being asked
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    from medload.io.keywords import KEYWORDS

    wrong = {k: (hex(tag), vr) for k, (tag, vr) in KEYWORDS.items() if tag_for_keyword(k) != tag or dictionary_VR(tag) != vr}
    assert len(KEYWORDS) > 60 and not wrong, wrong
