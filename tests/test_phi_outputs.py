"""Identifiers planted where the PHI audit (test_phi_audit.py) does not look: ``medload scan
--json`` (meant to be saved and shared), coded header values copied into meta, header values
quoted by refusals, class folders named after patients. Each output is searched with
:func:`fixtures.phi.search_output` (UTF-8 and UTF-16, any case, every HDF5 attribute)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pydicom
import pytest

from fixtures.phi import search_output
from fixtures.synthetic import write_dicom_series
from medload.cli import main

#: The patient's name as a folder (DICOM PN form) and as a sub-folder with a space.
PN_FOLDER = "QUAGMIROVA^ZOLTANEOUS"
NAME_FOLDER = "Quagmirova Zoltaneous"
NAME_WORDS = ["Quagmirova", "Zoltaneous", "Brumblesnatch"]


def _grep(folder: Path, text: str, needles: list[str]) -> dict[str, list[str]]:
    """``search_output`` of ``folder`` plus ``text`` (what a command printed) saved beside it."""
    (folder / "printed.txt").write_text(text, encoding="utf-8")
    return search_output(folder, needles)


def _export_with_a_gap_and_a_damaged_file(tmp_path: Path) -> Path:
    """A series with a missing slice and an unreadable file, under folders named after the patient."""
    export = tmp_path / "export"
    series = export / PN_FOLDER / NAME_FOLDER / "Brumblesnatch_ct"
    truth = write_dicom_series(series, shape=(5, 8, 8), seed=3, return_array=False)
    files = sorted(truth["files"], key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    os.remove(files[2])  # a gap: scan's problem names the files on both sides
    Path(files[3]).write_bytes(Path(files[3]).read_bytes()[:600])  # truncated: a damaged file of the series
    other = write_dicom_series(series.parent / "Zoltaneous_scout", shape=(1, 8, 8), seed=4, return_array=False)
    (broken,) = other["files"]
    Path(broken).write_bytes(Path(broken).read_bytes()[:300])  # too short to say its series: unreadable
    return export


def test_scan_json_names_files_by_pseudonym_the_table_by_path(tmp_path, capsys):
    export = _export_with_a_gap_and_a_damaged_file(tmp_path)
    assert main(["scan", str(export), "--json", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    payload = json.loads(printed)
    (series,) = payload["series"]
    assert {p["kind"] for p in series["problems"]} == {"uneven_spacing", "damaged_files"}, series["problems"]
    assert all("file-" in p["message"] or "dir-" in p["message"] for p in series["problems"])
    unreadable = payload["unreadable"]  # the series' damaged file and the scout's
    assert len(unreadable) == 2 and {e["error"] for e in unreadable} == {"ReadError"}
    assert all(e["file"].startswith("file-") and e["reason"].startswith(e["file"]) for e in unreadable)
    out = tmp_path / "printed"
    out.mkdir()
    assert _grep(out, printed, NAME_WORDS + [str(tmp_path)]) == {}
    # The table is the operator's own screen: it names the files so they can act.
    assert main(["scan", str(export), "--workers", "0"]) == 0
    assert NAME_FOLDER in capsys.readouterr().out.replace("\n", "")


def _convert_and_check(source: Path, out: Path, needles: list[str], capsys) -> dict[str, list[str]]:
    """Convert ``source`` with the defaults, draw the QC page, print ``info --json``: every hit."""
    capsys.readouterr()
    assert main(["convert", str(source), "-o", str(out), "--workers", "0", "--quiet", "--size", "8"]) in (0, 1)
    assert main(["qc", str(out), "--workers", "0"]) == 0
    assert main(["info", str(out), "--json"]) == 0
    return _grep(out, capsys.readouterr().out, needles)


def test_coded_header_values_are_kept_only_as_defined_terms(tmp_path, capsys):
    """Modality, PatientPosition, ScanningSequence and PhotometricInterpretation are coded strings
    (CS) copied into meta; a console that types a name there put it in the store."""
    import medload

    planted = {"Modality": "Quagmirova", "PatientPosition": "Zoltaneous", "ScanningSequence": "SE\\Brumblesnatch"}
    write_dicom_series(tmp_path / "src" / "a", shape=(2, 8, 8), seed=1, extra_tags=planted, return_array=False)
    photometric = {"PatientPosition": "HFS", "ScanningSequence": "GR", "PhotometricInterpretation": "Wigglebottom"}
    write_dicom_series(tmp_path / "src" / "b", modality="MR", shape=(2, 8, 8), seed=2, extra_tags=photometric, return_array=False)
    hits = _convert_and_check(tmp_path / "src", tmp_path / "out", NAME_WORDS + ["Wigglebottom"], capsys)
    assert hits == {}, hits
    volumes = sorted(medload.open(tmp_path / "out").volumes, key=lambda v: v.modality)
    assert [v.modality for v in volumes] == ["MR", "unknown"]  # a Modality that is no defined term is unknown
    assert volumes[0].meta["patient_position"] == "HFS" and volumes[0].meta["scanning_sequence"] == "GR"
    assert volumes[1].meta["scanning_sequence"] == "SE"  # the defined term of the two is kept


def test_sidecar_values_of_the_wrong_kind_are_not_stored(tmp_path, capsys):
    """A BIDS sidecar is JSON anyone edits: a name typed as a field strength or a window was stored."""
    import nibabel
    import numpy as np

    import medload

    anat = tmp_path / "src" / "sub-01" / "anat"
    anat.mkdir(parents=True)
    image = nibabel.Nifti1Image(np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7), np.eye(4))
    nibabel.save(image, anat / "sub-01_T1w.nii.gz")
    sidecar = {
        "MagneticFieldStrength": "Quagmirova",
        "FlipAngle": ["Zoltaneous"],
        "WindowCenter": "Brumblesnatch",
        "Manufacturer": "Siemens",
        "EchoTime": 0.005,
        "KVP": True,
    }
    (anat / "sub-01_T1w.json").write_text(json.dumps(sidecar), encoding="utf-8")
    hits = _convert_and_check(tmp_path / "src", tmp_path / "out", NAME_WORDS, capsys)
    assert hits == {}, hits
    (volume,) = medload.open(tmp_path / "out").volumes
    assert volume.meta["echo_time"] == 5.0 and volume.meta["manufacturer"] == "Siemens"
    assert not {"magnetic_field_strength", "flip_angle", "window_center", "kvp"} & set(volume.meta)


def _plant(files: list[str], keyword: str, value: str, vr: str = "LO") -> None:
    """``keyword`` set to ``value`` in each file, written as ``vr`` (a text where a number belongs)."""
    from pydicom.datadict import tag_for_keyword

    for f in files:
        ds = pydicom.dcmread(f)
        ds.add(pydicom.DataElement(tag_for_keyword(keyword), vr, value))
        ds.save_as(f, enforce_file_format=True)


def test_refusals_quote_header_numbers_never_header_text(tmp_path, capsys):
    """A refusal says which attribute is wrong and what it holds; a name typed where a number
    belongs was quoted whole into report.json, the QC page and scan --json."""
    planted = {
        "PixelSpacing": "Quagmirova\\1",
        "ImageOrientationPatient": "Zoltaneous\\0\\0\\0\\1\\0",
        "ImagePositionPatient": "Brumblesnatch\\0\\0",
        "NumberOfFrames": "Wigglebottom",
    }
    for i, (keyword, value) in enumerate(planted.items()):
        truth = write_dicom_series(tmp_path / "src" / f"s{i}", shape=(2, 8, 8), seed=i, return_array=False)
        _plant(truth["files"], keyword, value)
    write_dicom_series(tmp_path / "src" / "good", shape=(2, 8, 8), seed=9, return_array=False)
    needles = NAME_WORDS + ["Wigglebottom"]
    hits = _convert_and_check(tmp_path / "src", tmp_path / "out", needles, capsys)
    assert hits == {}, hits
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    reasons = [e["reason"] for e in report["files"]] + [e["reason"] for e in report["series"] if e.get("reason")]
    for keyword in planted:
        said = [r for r in reasons if f"{keyword} is " in r]
        assert said and all("<text of " in r for r in said), (keyword, reasons)  # what is wrong is said; the text is not
    assert main(["scan", str(tmp_path / "src"), "--json", "--workers", "0"]) == 0
    printed = tmp_path / "scan"
    printed.mkdir()
    assert _grep(printed, capsys.readouterr().out, needles) == {}


def test_folders_taken_for_classes_are_named_only_when_the_operator_says_so(tmp_path, capsys):
    """Images in two or more folders are labelled by folder (ImageFolder's layout) by default;
    an export with a folder per patient (``DOE^BROUHAHAZ/``) wrote the patients' names as class names."""
    import numpy as np
    from PIL import Image

    import medload

    pixels = (np.arange(16 * 16).reshape(16, 16) % 251).astype(np.uint8)
    for who in ("DOE^BROUHAHAZ", "ROE^CATTYWAMPUS"):
        (tmp_path / "src" / who).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.roll(pixels, i + len(who))).save(tmp_path / "src" / who / f"{i}.png")
    hits = _convert_and_check(tmp_path / "src", tmp_path / "out", ["BROUHAHAZ", "CATTYWAMPUS"], capsys)
    assert hits == {}, hits
    store = medload.open(tmp_path / "out")
    assert sorted(v.label for v in store.volumes) == [0, 0, 1, 1]  # still labelled by folder
    assert len(store.classes) == 2 and all(c.startswith("class-") for c in store.classes)
    # Said once, the folder names are class names: written as they are.
    out = tmp_path / "named"
    assert main(["convert", str(tmp_path / "src"), "-o", str(out), "--workers", "0", "--quiet", "--labels", "folders"]) == 0
    assert medload.open(out).classes == ["DOE^BROUHAHAZ", "ROE^CATTYWAMPUS"]


def test_the_run_lock_left_by_a_killed_run_names_no_machine(tmp_path, monkeypatch):
    """A run killed mid-way leaves ``.medload-convert.lock`` in the output folder; it held the
    machine's name (a hospital's workstation, ``RAD-WS-QUAGMIROVA.hospital.example``)."""
    import socket

    import medload
    from medload.batch.runlock import run_lock

    monkeypatch.setattr(socket, "gethostname", lambda: "RAD-WS-QUAGMIROVA.hospital.example")
    out = tmp_path / "out"
    with run_lock(out, False) as path:
        held = path.read_bytes()
        with pytest.raises(medload.StoreError, match=r"another medload convert \(process \d+ on this machine"):
            with run_lock(out, False):
                pass
    assert b"QUAGMIROVA" not in held.upper() and b"hospital" not in held
    assert json.loads(held)["pid"] == os.getpid()


def test_the_report_records_options_without_their_names(tmp_path, capsys):
    """``--patients QUAGMIROVA_ids.csv`` and ``--dask tcp://rad-ws-zoltaneous.hospital.example:8786``:
    report.json recorded the CSV's file name and the scheduler's host name."""
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from medload.batch.job import _report_options

    (tmp_path / "src").mkdir()
    for i in range(2):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "src" / f"{i}.png")
    table = tmp_path / "QUAGMIROVA_ids.csv"
    table.write_text("file,patient_id\n0.png,MRN-1\n1.png,MRN-2\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["convert", str(tmp_path / "src"), "-o", str(out), "--workers", "0", "--quiet", "--patients", str(table)]) == 0
    patients = json.loads((out / "report.json").read_text())["options"]["patients"]
    assert patients["matched_images"] == 2 and patients["file"].startswith("file-")
    assert search_output(out, ["QUAGMIROVA"]) == {}
    given = dict.fromkeys(["size", "resize_mode", "orientation", "dtype", "compression", "workers", "on_gap", "keep_phi"])
    given.update(patient_pattern=None, grayscale=False, image_modality=None, allow_burned_in=False, force=False)
    given.update(require_masks=False, keep_descriptions=False, masks=None, source_map=None)
    plan = SimpleNamespace(labels_info=None, patients_info=None)
    for address, recorded in (("tcp://rad-ws-zoltaneous.hospital.example:8786", "scheduler"), ("local", "local"), (None, None)):
        options = _report_options(dict(given, dask=address), plan, backend="dask", modality=None)
        assert options["dask"] == recorded


def test_an_rt_dose_in_units_that_are_no_defined_term_names_no_units(tmp_path, capsys):
    """DoseUnits (3004,0002) is GY or RELATIVE; any other text went into the stored ``intensity``
    ("dose in QUAGMIROVA ...")."""
    import medload

    source = pydicom.data.get_testdata_file("rtdose.dcm", download=False)
    if source is None:
        pytest.skip("pydicom's rtdose.dcm is not installed")
    ds = pydicom.dcmread(source)
    ds.DoseUnits = "QUAGMIROVA"
    (tmp_path / "src").mkdir()
    ds.save_as(tmp_path / "src" / "dose.dcm")
    hits = _convert_and_check(tmp_path / "src", tmp_path / "out", ["QUAGMIROVA"], capsys)
    assert hits == {}, hits
    (volume,) = medload.open(tmp_path / "out").volumes
    assert volume.intensity.startswith("dose in units DoseUnits does not define (")
