"""The command offers what its messages ask for: --modality, --force, --on-gap, --allow-burned-in;
unknown modality keys in --preset MOD=NAME are refused instead of ignored."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import medload
from medload.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]


def _nifti_ct(folder: Path) -> Path:
    folder.mkdir()
    hu = np.full((6, 16, 16), -1000, np.int16)
    hu[:, 4:12, 4:12] = 40  # soft tissue inside air
    path = folder / "ct.nii.gz"
    nib.save(nib.Nifti1Image(hu.transpose(2, 1, 0), np.diag([1.0, 1.0, 2.0, 1.0])), path)
    return path


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def test_modality_lets_a_ct_preset_window_a_nifti_without_sidecar(tmp_path, capsys):
    src = _nifti_ct(tmp_path / "src")
    # Without it the NIfTI's modality is unknown; the CT window refuses it and says which flags help.
    main(["convert", str(src), "-o", str(tmp_path / "a"), "--preset", "ct-abdomen", "--workers", "0", "--quiet"])
    (entry,) = _report(tmp_path / "a")["series"]
    assert entry["status"] == "failed" and "--modality CT" in entry["reason"] and "--force" in entry["reason"]

    assert (
        main(
            [
                "convert",
                str(src),
                "-o",
                str(tmp_path / "b"),
                "--preset",
                "ct-abdomen",
                "--modality",
                "CT",
                "--workers",
                "0",
                "--quiet",
            ]
        )
        == 0
    )
    (entry,) = _report(tmp_path / "b")["series"]
    assert entry["status"] == "converted" and entry["modality"] == "CT"
    reader = medload.open(tmp_path / "b")
    stored = reader.read_slices(0, 0, 6)
    # Window 40/400: air (-1000 HU) -> 0, soft tissue (40 HU, the centre) -> 0.5.
    assert stored.min() == 0.0 and abs(float(stored.max()) - 0.5) <= 1 / 255
    assert "40/400" in reader.volumes[0].intensity

    assert (
        main(["convert", str(src), "-o", str(tmp_path / "c"), "--preset", "ct-abdomen", "--force", "--workers", "0", "--quiet"])
        == 0
    )
    np.testing.assert_array_equal(medload.open(tmp_path / "c").read_slices(0, 0, 6), stored)


@pytest.mark.parametrize("value", ["XYZ=ct-brain", "unknown=ct-brain", "other=none"])
def test_preset_for_a_modality_medload_does_not_know_is_refused(tmp_path, capsys, value):
    src = _nifti_ct(tmp_path / "src")
    code = main(["convert", str(src), "-o", str(tmp_path / "out"), "--preset", value, "--workers", "0", "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and value.split("=")[0].upper() in err and "not a modality" in err
    assert not (tmp_path / "out" / "report.json").exists()


def test_every_flag_a_message_suggests_exists(tmp_path):
    # Messages across the package that tell users "medload convert --flag": each flag must be one
    # the command has (once, users were told to pass on_gap= and force= the command lacked).
    suggested = set()
    for path in (ROOT / "medload").rglob("*.py"):
        suggested |= set(re.findall(r"medload convert (--[a-z][a-z-]*)", path.read_text()))
    convert = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "convert")[1]
    options = {s for action in convert._actions for s in action.option_strings}
    assert {"--modality", "--force", "--on-gap", "--allow-burned-in", "--orientation"} <= options
    assert suggested and suggested <= options, sorted(suggested - options)


def test_on_gap_reaches_the_reader(tmp_path):
    from medload.batch.job import convert

    with pytest.raises(medload.MedloadError, match="on_gap must be one of"):
        convert(str(_nifti_ct(tmp_path / "src")), tmp_path / "out", on_gap="fill", workers=0, progress=False)
