"""What readers put in ``Volume.meta`` goes to stores and reports: no folder names in it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import medload
from fixtures.synthetic import write_dicom_series
from medload.problems import ProblemKind

PATIENT_FOLDER = "QUARTERMAIN_ZEBULON_19230417"


def _series_with_a_problem(tmp_path: Path) -> Path:
    series = tmp_path / "export" / PATIENT_FOLDER / "CT_HEAD"
    write_dicom_series(series, shape=(4, 8, 8), seed=3, return_array=False)
    first = sorted(series.iterdir())[0]
    shutil.copy(first, series / ("copy-of-" + first.name))  # same SOPInstanceUID: dropped, said so
    return series


def test_meta_names_no_absolute_path_nor_parent_folder(tmp_path):
    series = _series_with_a_problem(tmp_path)
    found = medload.scan(tmp_path / "export")
    assert len(found) == 1
    vol = medload.load(found[0])
    assert vol.shape == (4, 8, 8)
    assert ProblemKind.DUPLICATE_IMAGES_DROPPED in {p.kind for p in vol.problems}
    text = json.dumps(vol.meta)
    assert PATIENT_FOLDER not in text
    assert str(tmp_path) not in text and str(series) not in text
    assert "CT_HEAD" not in text


def test_exceptions_keep_the_full_path(tmp_path):
    series = tmp_path / PATIENT_FOLDER
    write_dicom_series(series, shape=(5, 8, 8), seed=4, return_array=False)
    files = sorted(series.iterdir(), key=lambda p: p.name)
    import pydicom

    middle = [f for f in files if abs(float(pydicom.dcmread(f).ImagePositionPatient[2])) < 1e-6]
    (middle or files[2:3])[0].unlink()  # a missing slice: refused, naming the folder
    try:
        medload.load(medload.scan(series)[0])
    except medload.errors.GeometryError as exc:
        assert str(series) in str(exc)
    else:  # pragma: no cover - the reader must refuse a gap
        raise AssertionError("a series with a missing slice was loaded")


#: Every key a reader may put in meta: medload.deid's allow-list (a key not in it never reaches
#: a store). None is in DICOM PS3.15 Table E.1-1's basic profile, except the descriptors
#: (DESCRIPTOR_KEYS), which a default conversion drops. Manufacturer, model, kVp, echo time,
#: ... are not in the basic profile and stay.
from medload.deid import IDENTIFYING_KEYWORDS, META_KEYS as READER_META_KEYS  # noqa: E402


def test_the_allow_list_holds_no_basic_profile_keyword():
    snake = {"".join("_" + c.lower() if c.isupper() else c for c in k).lstrip("_") for k in IDENTIFYING_KEYWORDS}
    assert not READER_META_KEYS & (snake | {k.lower() for k in IDENTIFYING_KEYWORDS})


def test_reader_meta_keys_are_outside_the_basic_profile(tmp_path):
    from fixtures.phi import write_phi_export
    from medload.deid import DESCRIPTOR_KEYS

    phi = write_phi_export(tmp_path / "export")
    volumes = [medload.load(s) for s in medload.scan(tmp_path / "export")]
    assert len(volumes) == 2
    descriptors = [d for values in phi["descriptors"].values() for d in values]
    for vol in volumes:
        keys = set(vol.meta)
        assert keys - READER_META_KEYS - DESCRIPTOR_KEYS == set()
        text = json.dumps(vol.meta)
        # names, IDs, dates, institution, station, serial number: never, not even by default load
        assert [v for v in phi["values"] if v in text] == []
        # the description is the reader's (the converter drops it); protocol/study descriptions are not read
        assert vol.meta["description"] in phi["descriptors"]["series_descriptions"]
        assert [d for d in descriptors if d in text] == [vol.meta["description"]]
    assert {"protocol_name", "body_part", "description"} <= DESCRIPTOR_KEYS
