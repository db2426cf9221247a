"""Identifiers planted where the PHI audit (test_phi_audit.py) does not look: ``medload scan
--json`` (meant to be saved and shared), coded header values copied into meta, header values
quoted by refusals, class folders named after patients. Each output is searched with
:func:`fixtures.phi.search_output` (UTF-8 and UTF-16, any case, every HDF5 attribute)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pydicom

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
