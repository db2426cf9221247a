"""The PHI audit (issue 12): an export with one patient's identifying values in more than 50
places, converted with the defaults; every byte of every file in the output folder is searched
for every value and its words (``SMITHSON`` from ``Smithson^Johnathan``, ``山田`` from a PN's
ideographic group), as UTF-8, UTF-16 and Latin-1, in any case, PN values also with ``^`` as a
space, and inside the HDF5 files with h5py: nothing. With ``--keep-phi`` the expected values appear,
so the search can fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import medload
from fixtures.phi import convert_audit_export, search_output, write_audit_export
from medload.cli import main


@pytest.fixture(scope="module")
def audit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit")
    info = write_audit_export(folder)
    out = folder / "out"
    code = convert_audit_export(info, out, "--source-map", str(folder / "source-map.json"))
    return info, out, code


def test_the_export_plants_values_in_more_than_50_places(audit):
    info, _, _ = audit
    assert len(info["places"]) >= 50
    assert {"SMITHSON", "Smithson", "Johnathan", "MRN12345678", "19230417"} <= set(info["needles"]) | {"SMITHSON"}


def test_default_output_folder_holds_no_identifying_byte(audit):
    info, out, code = audit
    assert code == 1  # the burned-in series and the unreadable file are reported, not converted
    report = json.loads((out / "report.json").read_text())
    by_status = sorted(e["status"] for e in report["series"])
    assert by_status == ["converted"] * 4 + ["failed"], by_status
    (refused,) = [e for e in report["series"] if e["status"] == "failed"]
    assert refused["error"] == "BurnedInAnnotationError" and "BurnedInAnnotation is YES" in refused["reason"]
    assert report["counts"]["unreadable_files"] == 1 and report["files"][0]["file"].startswith("file-")
    (ct,) = [e for e in report["series"] if e.get("mask")]  # the CT series its mask was matched to
    assert ct["mask"].startswith("file-")  # the mask named after the patient was used, by pseudonym
    assert any(
        p["kind"] == "duplicate_images_dropped" and "1 image(s)" in p["message"] for p in ct["problems"]
    )  # the copy named after the patient: said, not named
    volumes = medload.open(out).volumes
    assert len(volumes) == 4 and sum(v.has_mask for v in volumes) == 1
    assert all(v.meta.get("problems") is not None for v in volumes)
    hits = search_output(out, info["needles"])
    assert hits == {}, hits
    assert {p.name for p in out.iterdir()} <= {"report.json"} | {p.name for p in out.glob("shard-*.h5")}


def test_the_qc_page_in_the_output_folder_holds_no_identifying_byte(audit):
    info, out, _ = audit
    assert main(["qc", str(out), "--workers", "0"]) == 0
    assert (out / "qc" / "index.html").is_file()
    hits = search_output(out / "qc", info["needles"])
    assert hits == {}, hits


def test_the_source_map_is_outside_and_maps_pseudonyms_back(audit):
    info, out, _ = audit
    source_map = json.loads((out.parent / "source-map.json").read_text())
    report = json.loads((out / "report.json").read_text())
    unreadable = report["files"][0]["file"]
    assert source_map["names"][unreadable].endswith("Broken_Pickwick_file.dcm")
    (ct,) = [e for e in report["series"] if e.get("mask")]  # the CT series its mask was matched to
    assert source_map["names"][ct["mask"]].endswith("Smithson_head_CT.nii.gz")
    assert sorted(source_map["series"][ct["series_key"]]["files"]) == sorted(
        info["ct_files"]
        + [str(info["export"] / "SMITHSON_JOHNATHAN_MRN12345678" / "CT_Smithson_Johnathan" / "SMITHSON_JOHNATHAN_copy.dcm")]
    )
    assert (out.parent / "source-map.json").stat().st_mode & 0o077 == 0
    assert (
        main(
            [
                "convert",
                str(info["export"]),
                "-o",
                str(out.parent / "again"),
                "--workers",
                "0",
                "--quiet",
                "--source-map",
                str(out.parent / "again" / "map.json"),
            ]
        )
        == 2
    )
    assert not (out.parent / "again" / "map.json").exists()


def test_keep_phi_writes_the_expected_values(audit, tmp_path):
    info, _, _ = audit
    kept = tmp_path / "kept"
    assert convert_audit_export(info, kept, "--keep-phi", "--allow-burned-in") == 1  # the unreadable file
    hits = search_output(kept, info["kept"])
    assert sorted(hits) == sorted(info["kept"]), sorted(set(info["kept"]) - set(hits))
    assert len(medload.open(kept).volumes) == 5  # the burned-in series too, on request


def test_without_a_key_patient_keys_are_the_users_not_the_sources(audit, tmp_path):
    import ast

    info, out, _ = audit
    stored = {v.patient_key for v in medload.open(out).volumes}
    again = tmp_path / "again"
    assert convert_audit_export(info, again) == 1
    assert {v.patient_key for v in medload.open(again).volumes} == stored  # same user, same keys
    constants = set()
    for path in (medload.__file__ and __import__("pathlib").Path(medload.__file__).parent).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str | bytes) and node.value:
                constants.add(node.value)
    guesses = {medload.deid.pseudonym("MRN12345678", prefix="pat-", secret=c) for c in constants}
    assert not stored & guesses
    assert medload.open(out).key_fingerprint == medload.deid.resolve_key().fingerprint


# --------------------------------------------------------------------------- real, public data
def _public_set(name: str, tmp_path_factory) -> Path:
    """The DICOM files of one public test-data set (skips with the reason when absent)."""
    import gzip
    import os

    import nibabel
    import pydicom

    if name == "pydicom":
        return Path(pydicom.__file__).parent / "data" / "test_files"
    if name == "pydicom-data":
        try:
            import data_store
        except ImportError:
            pytest.skip("pydicom-data is not installed (pip install pydicom-data; it is in medload[test])")
        return Path(data_store.__file__).parent / "data"
    # nibabel's DICOM files, the .dcm.gz ones unpacked (scan reads files, not archives)
    folder = tmp_path_factory.mktemp("nibabel-dicom")
    base = Path(nibabel.__file__).parent
    for path in sorted((base / "nicom" / "tests" / "data").glob("*.dcm*")) + sorted((base / "tests" / "data").glob("*.dcm")):
        target = folder / (path.parent.parent.parent.name + "-" + path.name.removesuffix(".gz"))
        if path.suffix == ".gz":
            with gzip.open(path) as fh:
                target.write_bytes(fh.read())
        else:
            os.symlink(path, target)
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pydicom", "pydicom-data", "nibabel"])
def test_public_test_data_converted_with_defaults_holds_no_identifying_byte(name, tmp_path_factory, capsys):
    """Real headers (names, IDs, dates, UIDs, institutions, physicians) and real file names:
    the store, report.json, the QC page and its thumbnails hold none of them; the terminal
    (the operator's own screen, docs/deidentification.md) holds no header value either."""
    from fixtures.phi import public_needles, search_output

    source = _public_set(name, tmp_path_factory)
    needles = public_needles(source)
    assert len(needles) > 100  # names, IDs, dates, UIDs and file names of dozens of files
    out = tmp_path_factory.mktemp(f"public-{name}") / "out"
    assert main(["convert", str(source), "-o", str(out), "--workers", "0"]) in (0, 1)  # 1: broken test files, reported
    assert main(["qc", str(out), "--workers", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert sum(e["status"] == "converted" for e in report["series"]) >= 4
    assert list((out / "qc").rglob("*.jpg")) or list((out / "qc").rglob("*.png"))
    hits = search_output(out, sorted(needles), blank_pixels=True)
    assert hits == {}, {n: (needles[n], w[:3]) for n, w in hits.items()}
    terminal = capsys.readouterr()
    said = (terminal.out + terminal.err).lower()
    header_values = [n for n, w in needles.items() if w not in ("file name", "source folder")]
    assert [n for n in header_values if n.lower() in said] == []


def test_the_public_audit_can_fail_with_keep_phi(tmp_path_factory):
    from fixtures.phi import public_needles, search_output

    source = _public_set("pydicom", tmp_path_factory)
    needles = public_needles(source)
    assert needles["CompressedSamples^CT1"] == "PatientName in CT_small.dcm"
    kept = tmp_path_factory.mktemp("public-kept") / "out"
    main(["convert", str(source / "CT_small.dcm"), "-o", str(kept), "--workers", "0", "--quiet", "--keep-phi"])
    hits = search_output(kept, sorted(needles), blank_pixels=True)
    assert {"CompressedSamples^CT1", "CT_small.dcm"} <= set(hits), sorted(hits)


def test_a_damaged_file_of_a_series_is_named_by_pseudonym(tmp_path):
    """A truncated file scan attaches to its series (same SeriesInstanceUID) is named in the
    refusal and in a problem; it was written as ``[source]/SMITHSON_...dcm`` into report.json
    and the QC page (its name was not among the series' files the scrubber knew)."""
    import pydicom

    export = tmp_path / "export"
    export.mkdir()
    source = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small.dcm"
    for i in range(3):
        ds = pydicom.dcmread(source)
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{i}"
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * i]
        ds.InstanceNumber = i + 1
        ds.save_as(export / f"im{i}.dcm")
    whole = (export / "im2.dcm").read_bytes()
    (export / "im2.dcm").unlink()
    (export / "SMITHSON_JOHNATHAN_slice3.dcm").write_bytes(whole[: len(whole) - 3000])
    out = tmp_path / "out"
    assert main(["convert", str(export), "-o", str(out), "--workers", "0", "--quiet"]) == 1
    assert main(["qc", str(out), "--workers", "0"]) == 0
    report = json.loads((out / "report.json").read_text())
    (failed,) = [e for e in report["series"] if e["status"] == "failed"]
    assert "1 of its files cannot be read (file-" in failed["reason"], failed["reason"]
    assert any(p["kind"] == "damaged_files" and "(file-" in p["message"] for p in failed["problems"])
    hits = search_output(out, ["SMITHSON", "JOHNATHAN", "slice3"])
    assert hits == {}, hits
