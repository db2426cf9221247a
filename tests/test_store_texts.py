"""Every text a store writes is stored as it is or refused with a ConfigError naming the field.

h5py stores a text attribute as a UTF-8 C string: a NUL character raised h5py's ``ValueError``
("VLEN strings do not support embedded NULLs") and an unpaired surrogate (a file name with bytes
that are not UTF-8, decoded by ``os.fsdecode``) a ``UnicodeEncodeError``, from deep inside
``Store.add``, after the pixels were written. A path with such bytes also stopped a whole
``medload convert`` (its pseudonym could not be made). The first and the last tests fail on the
old code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest

import medload
from fixtures.images import write_image_folder
from fixtures.phi import search_output
from fixtures.synthetic import write_dicom_series, write_nifti
from medload.cli import main
from medload.errors import ConfigError
from medload.volume import Volume

BAD_TEXTS = {"nul": "ser\x001", "surrogate": "ser\udcff1"}
#: meta keys stored as text attributes of their own (the others go into the JSON ``meta``).
TEXT_FIELDS = ("series_key", "source_key", "patient_key", "study_key", "intensity", "source", "source_hash")


def _volume(meta=None, history=()):
    return Volume(np.arange(18, dtype=np.float32).reshape(2, 3, 3), np.eye(4), meta=meta or {}, history=history)


@pytest.mark.parametrize("kind", sorted(BAD_TEXTS))
@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_a_text_attribute_hdf5_cannot_hold_is_refused_naming_the_field(tmp_path, field, kind):
    path = tmp_path / "s.h5"
    with medload.Store.create(path) as store:
        with pytest.raises(ConfigError) as info:
            store.add(_volume({field: BAD_TEXTS[kind]}))
        message = str(info.value)
        assert f"'{field}' (volume.meta['{field}'])" in message
        assert ("NUL character" if kind == "nul" else "unpaired surrogate") in message and "character 3" in message
        assert BAD_TEXTS[kind] not in message  # the text itself is not repeated (it may hold a name)
        # nothing of it was written; the store goes on
        good = store.add(_volume({"series_key": "ser-2", "source_hash": "h2"}))
    (record,) = medload.open(path).volumes
    assert record.key == good == "ser-2"
    with h5py.File(path, "r") as f:
        assert list(f["volumes"]) == ["ser-2"]


def test_texts_inside_meta_history_and_keys_are_stored_as_they_are(tmp_path):
    odd = "GE\x00 \udcff Ärzte"
    history = (("note\x00", {"text": odd, "n": 1}),)
    vol = _volume({"manufacturer": odd, "source_hash": "h", odd: 1}, history=history)
    with medload.Store.create(tmp_path / "s.h5", keep_phi=True) as store:  # meta as given, the odd key too
        key = store.add(vol, key="a\x00b/\udcff")
    (record,) = medload.open(tmp_path / "s.h5").volumes
    assert key == record.key == "a_b"  # a key is sanitized (docs/hdf5-schema.md)
    assert record.meta["manufacturer"] == odd and record.meta[odd] == 1
    with h5py.File(tmp_path / "s.h5", "r") as f:
        assert json.loads(f["volumes/a_b"].attrs["history"]) == [["note\x00", {"n": 1, "text": odd}]]


@pytest.mark.parametrize(("params", "found"), [({"a": float("nan")}, "Out of range float"), ({"a": {1, 2}}, "set")])
def test_a_history_that_is_not_json_is_refused_as_history_not_as_pipeline(tmp_path, params, found):
    with medload.Store.create(tmp_path / "s.h5") as store:
        with pytest.raises(ConfigError, match=f"volume v: its history must be JSON-able.*{found}") as info:
            store.add(_volume({"series_key": "v"}, history=(("step", params),)))
    assert "pipeline" not in str(info.value)


def test_a_key_fingerprint_with_a_nul_is_refused_before_a_file_is_made(tmp_path):
    with pytest.raises(ConfigError, match="'phi_key_fingerprint' holds a NUL character"):
        medload.Store.create(tmp_path / "s.h5", key_fingerprint="ab\x00")
    assert not list(tmp_path.glob("s.h5*"))


def _undecodable(folder: Path, name: bytes) -> Path:
    """``folder/name`` for a name whose bytes are not UTF-8 (as ``os.listdir`` returns it)."""
    path = Path(os.fsdecode(os.fsencode(folder) + b"/" + name))
    try:
        path.mkdir()
        path.rmdir()
    except (OSError, UnicodeEncodeError):
        pytest.skip(f"this file system does not take the file name {name!r}")
    return path


def test_convert_goes_on_past_file_names_that_are_not_utf8_and_names_none(tmp_path):
    export = tmp_path / "export"
    # A series in a folder and files whose names are not UTF-8 (Latin-1 bytes, as old exports write)
    write_dicom_series(export / "a", shape=(4, 12, 10), patient_name="Grubwhistle^Ann", seed=1, series_description="s1")
    folder_a = _undecodable(export, b"GRUBWHISTLE_\xe9\xff")
    os.rename(export / "a", folder_a)
    for name in sorted(os.listdir(folder_a)):
        os.rename(folder_a / name, folder_a / os.fsdecode(b"GRUBWHISTLE\xe9_" + os.fsencode(name)))
    # A series with a missing slice, so that its error names files
    write_dicom_series(export / "b", shape=(5, 12, 10), patient_name="Snorkelwick^Al", seed=2, series_uid="1.2.826.0.1.99")
    sorted((export / "b").iterdir())[2].unlink()
    folder_b = _undecodable(export, b"SNORKELWICK\xff")
    os.rename(export / "b", folder_b)
    # A NIfTI file and an unreadable file
    nifti = _undecodable(export, b"QUIBBLEFROCK_\xff.nii.gz")
    write_nifti(nifti, shape=(4, 8, 9))
    (_undecodable(export, b"FIZZLEBOTTOM\xff.dcm")).write_bytes(b"DICM" * 40)
    out = tmp_path / "out"
    code = main(
        ["convert", str(export), "-o", str(out), "--workers", "0", "--quiet", "--size", "16"]
        + ["--source-map", str(tmp_path / "map.json")]
    )

    assert code == 1  # the series with a gap is reported, the others converted
    report = json.loads((out / "report.json").read_text())
    status = sorted((e["status"], e.get("error")) for e in report["series"])
    assert status == [("converted", None), ("converted", None), ("failed", "GeometryError")]
    (failed,) = [e for e in report["series"] if e["status"] == "failed"]
    assert "missing slices" in failed["reason"] and "file-" in failed["reason"]
    assert len(medload.open(out).volumes) == 2
    assert search_output(out, ["GRUBWHISTLE", "SNORKELWICK", "QUIBBLEFROCK", "FIZZLEBOTTOM"]) == {}
    # The source map (kept outside the output) names each file faithfully: its bytes come back.
    names = json.loads((tmp_path / "map.json").read_text())["names"]
    assert os.fsencode(export) + b"/QUIBBLEFROCK_\xff.nii.gz" in {os.fsencode(n) for n in names.values()}


def test_convert_of_an_image_folder_with_file_names_that_are_not_utf8(tmp_path):
    images = tmp_path / "images"
    written = write_image_folder(images, n_per_class=2, size=(20, 28))
    folder = sorted(p for p in images.iterdir() if p.is_dir())[0]
    _undecodable(folder, b"WIBBLEMORE\xff")
    for path in sorted(folder.iterdir()):
        os.rename(path, folder / os.fsdecode(b"WIBBLEMORE\xff_" + os.fsencode(path.name)))
    out = tmp_path / "out"
    assert main(["convert", str(images), "-o", str(out), "--workers", "0", "--quiet", "--size", "16"]) == 0
    assert len(medload.open(out).volumes) == len(written)
    assert search_output(out, ["WIBBLEMORE"]) == {}


def test_convert_of_an_nnunet_dataset_whose_case_names_are_not_utf8(tmp_path):
    from tests.test_nnunet import make_dataset

    src = make_dataset(tmp_path / "Dataset001_Toy", cases=2)
    _undecodable(src, b"GLOBBERTY\xff")
    for sub in ("imagesTr", "labelsTr"):
        for path in sorted((src / sub).iterdir()):
            os.rename(path, path.parent / path.name.replace("case000", os.fsdecode(b"GLOBBERTY\xff")))
    report = medload.convert(src, tmp_path / "out", workers=0, progress=False, pipeline="none")
    assert [e["status"] for e in report.series] == ["converted", "converted"]
    assert sum(v.has_mask for v in medload.open(tmp_path / "out").volumes) == 2
    assert search_output(tmp_path / "out", ["GLOBBERTY"]) == {}


def test_a_pseudonym_key_whose_bytes_are_not_utf8_works_from_the_environment_and_the_command_line(tmp_path, monkeypatch):
    from medload.deid import pseudonym, resolve_key

    key = os.fsdecode(b"secret-\xff\xfe-" + b"k" * 32)  # as Python hands over argv and the environment
    monkeypatch.setenv("MEDLOAD_PHI_KEY", key)
    from_environment = resolve_key(None)
    assert from_environment.secret == b"secret-\xff\xfe-" + b"k" * 32  # the bytes typed
    assert pseudonym("1.2.3", secret=from_environment) == pseudonym("1.2.3", secret=key)
    write_dicom_series(tmp_path / "src", shape=(2, 4, 4), seed=3)
    assert main(["scan", str(tmp_path / "src"), "--json", "--workers", "0"]) == 0
    assert main(["scan", str(tmp_path / "src"), "--json", "--workers", "0", "--phi-key", key]) == 0
