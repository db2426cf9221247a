"""The `medload` command: every --help has an example; wrong input gives one line and a non-zero exit."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import medload
from medload.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ROOT / "fixtures" / "export"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]  # header intact
    return width, height


@pytest.mark.parametrize("command", [[], ["scan"], ["convert"], ["info"], ["preview"], ["qc"]])
def test_every_help_shows_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(command + ["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "example" in text and "medload " + (command[0] if command else "convert") in text.split("example")[-1]


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["convert", "x", "-o", "y", "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
        (["convert", "x"], "required: -o/--out"),
        (["convert", "/no/such/folder", "-o", "out"], "source /no/such/folder does not exist"),
        (["scan", "/no/such/folder"], "/no/such/folder does not exist"),
        (["info", "/no/such/store"], "does not exist"),
        (["preview", "/no/such/store", "--out", "m.png"], "does not exist"),
        (["qc", "/no/such/store"], "/no/such/store does not exist"),
        (["preview", "/no/such/store", "--out", "m.png", "--window", "0"], "expected LOW,HIGH"),
        (["convert", str(EXPORT), "-o", "out", "--preset", "ct-nonsense"], "unknown preset 'ct-nonsense'"),
        (["convert", str(EXPORT), "-o", "out", "--config", "MR=/no/pipe.toml"], "pipeline file /no/pipe.toml does not exist"),
        (["convert", str(EXPORT), "-o", "out", "--size", "big"], "expected N or HxW"),
        (["convert", str(EXPORT), "-o", "out", "--dtype", "float64"], "float64"),
        (["convert", str(EXPORT), "-o", "out.h5", "--workers", "4"], "one file, written by one process"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_wrong_input_gives_one_line_and_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.h5").exists()


def test_the_installed_command_prints_no_traceback():
    run = subprocess.run(
        [sys.executable, "-m", "medload", "convert", "/no/such/folder", "-o", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    assert run.stderr.startswith("medload: error: source /no/such/folder does not exist")


def test_scan_json_lists_series_with_pseudonyms_only(capsys):
    assert main(["scan", str(EXPORT), "--json", "--phi-key", "k"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["series"]) == 4 and payload["files"] > 20
    assert {s["modality"] for s in payload["series"]} >= {"CT", "MR"}
    assert all(s["patient_key"].startswith("pat-") for s in payload["series"])
    assert "Doe^Jane" not in json.dumps(payload)
    assert main(["scan", str(EXPORT)]) == 0
    assert "series in" in capsys.readouterr().out


def test_convert_info_preview_round(tmp_path, capsys):
    out = tmp_path / "out"
    assert (
        main(
            [
                "convert",
                str(EXPORT),
                "-o",
                str(out),
                "--size",
                "48",
                "--workers",
                "0",
                "--preset",
                "MR=none",
                "--masks",
                str(EXPORT / "labels"),
            ]
        )
        == 0
    )
    summary = capsys.readouterr().out
    assert "converted now" in summary and "report:" in summary
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["volumes"] == 3 and info["slices"] == 24 + 16 + 32
    assert info["slice_shapes"] == {"48x48": 3} and info["with_mask"] == 1
    assert info["bytes_on_disk"] > 0 and "by_modality" in info["pipeline"]
    assert main(["info", str(out)]) == 0
    assert "pipeline" in capsys.readouterr().out

    png = tmp_path / "montage.png"
    assert main(["preview", str(out), "--out", str(png), "--n", "6", "--tile", "64"]) == 0
    assert _png_size(png) == (3 * 64, 2 * 64)
    pair = tmp_path / "pairs.png"
    # report.json names no source path (de-identified): the sources are given
    assert main(["preview", str(out), "--out", str(pair), "--n", "3", "--tile", "64", "--before-after"]) == 2
    assert "pass --source" in capsys.readouterr().err
    assert (
        main(["preview", str(out), "--out", str(pair), "--n", "3", "--tile", "64", "--before-after", "--source", str(EXPORT)])
        == 0
    )
    assert _png_size(pair) == (4 * 64, 2 * 64)  # 3 pairs, 4 columns (pairs kept together), 2 rows
    capsys.readouterr()
    assert main(["preview", str(out), "--out", str(tmp_path / "none.png"), "--columns", "0"]) == 2
    err = capsys.readouterr().err
    assert "columns >= 1" in err and "found n=16, tile=128, columns=0" in err and "Traceback" not in err
    assert not (tmp_path / "none.png").exists()


def test_scan_json_leaves_descriptions_out_unless_asked(tmp_path, capsys):
    from fixtures.synthetic import write_dicom_series

    write_dicom_series(tmp_path / "a", shape=(2, 4, 4), seed=1, series_description="Quartermain knee left", return_array=False)
    assert main(["scan", str(tmp_path), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["series"]) == 1 and "description" not in payload["series"][0]
    assert "Quartermain" not in json.dumps(payload)
    assert main(["scan", str(tmp_path), "--json", "--keep-descriptions"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["series"][0]["description"] == "Quartermain knee left"


def test_preview_pairs_each_stored_slice_with_the_source_slice_at_its_position(tmp_path):
    # A pipeline that crops the slice axis (stored slice z is source slice z + 3) and one that
    # flips it (stored slice z is source slice n - 1 - z): the "before" tile must be the source
    # slice in the same plane, found through the affines, not source slice z.
    import numpy as np

    import medload
    from fixtures.synthetic import write_dicom_series
    from medload.preview import _raw_slices
    from medload.transforms import CropForeground, Pipeline, Reorient

    write_dicom_series(tmp_path / "src" / "a", shape=(10, 12, 10), seed=3, return_array=False)
    series = medload.scan(tmp_path / "src")[0]
    volume = medload.load(series)
    source = volume.array
    opposite = {"S": "I", "I": "S", "L": "R", "R": "L", "A": "P", "P": "A"}
    flipped = [opposite[volume.orientation[0]], *volume.orientation[1:]]
    for name, pipe, expected in [
        ("crop", Pipeline([CropForeground(box=[[3, 9], [0, 12], [0, 10]])]), lambda z: z + 3),
        ("flip", Pipeline([Reorient(flipped)]), lambda z: 9 - z),
    ]:
        out = tmp_path / name
        assert medload.convert(tmp_path / "src", out, pipeline=pipe, workers=0, progress=False).ok
        record = medload.open(out).volumes[0]
        raw = _raw_slices([str(tmp_path / "src")], {record.series_key: [(0, record), (2, record)]}, None)
        for z in (0, 2):
            np.testing.assert_array_equal(raw[(record.series_key, z)], source[expected(z)], err_msg=f"{name} z={z}")


def test_exit_status_tells_data_errors_usage_errors_and_bugs_apart(tmp_path, capsys, monkeypatch):
    import medload.cli as cli

    not_a_store = tmp_path / "notes.h5"
    not_a_store.write_bytes(b"plain text, not HDF5")
    assert main(["info", str(not_a_store)]) == 1  # the data: a StoreError
    err = capsys.readouterr().err
    assert err.startswith("medload: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert main(["convert", str(EXPORT), "-o", str(tmp_path / "o"), "--dtype", "float64"]) == 2  # ConfigError
    capsys.readouterr()

    def broken(args):
        raise KeyError("a bug in medload")

    monkeypatch.setitem(cli._COMMANDS, "info", broken)
    assert main(["info", str(not_a_store)]) == 3
    err = capsys.readouterr().err
    assert "internal error" in err and "Traceback (most recent call last)" in err and "KeyError" in err


def test_config_error_is_a_value_error_and_transform_errors_are_config_errors():
    assert issubclass(medload.ConfigError, ValueError) and issubclass(medload.ConfigError, medload.MedloadError)
    assert issubclass(medload.TransformError, medload.ConfigError)
    with pytest.raises(medload.ConfigError, match="Volume array must be 3D"):
        medload.Volume(np.zeros((4, 4)), np.eye(4))
