"""De-identification that holds against someone looking for a patient (issue 12).

Keys: no constant key anywhere, the operator's random key file (0600) or a key they give,
the same pseudonyms from scan and load; a store remembers which key made its pseudonyms.
Burned-in text: a series that says its pixels hold text is refused unless allowed.
"""

from __future__ import annotations

import ast
import os
import stat
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import medload
from fixtures.synthetic import write_dicom_series
from medload.deid import fingerprint, pseudonym, resolve_key
from medload.errors import BurnedInAnnotationError, ConfigError, StoreError
from medload.problems import ProblemKind

PACKAGE = Path(medload.__file__).resolve().parent
PATIENT_ID = "MRN12345678"


def _string_constants() -> set[bytes]:
    """Every str/bytes literal in medload's source: any built-in key would be one of them."""
    found: set[bytes] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
                found.add(node.value.encode("utf-8") if isinstance(node.value, str) else node.value)
    return found


def _series(folder: Path, **kw) -> Path:
    write_dicom_series(folder, shape=(3, 8, 8), patient_id=PATIENT_ID, return_array=False, **kw)
    return folder


# --------------------------------------------------------------------------- keys
def test_key_file_is_random_private_created_once_and_reused(config_dir):
    with pytest.warns(UserWarning, match="created your pseudonym key") as caught:
        first = resolve_key()
    assert first.created and first.origin == "key file" and first.path == config_dir / "phi.key"
    assert str(config_dir / "phi.key") in str(caught[0].message)
    assert stat.S_IMODE(os.stat(first.path).st_mode) == 0o600
    text = first.path.read_text().strip()
    assert len(text) == 64 and int(text, 16) > 0  # 256 random bits, as hex
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once: no second message
        again = resolve_key()
    assert not again.created and again.secret == first.secret
    # The fingerprint is not the key, and the key is never in its repr
    assert text not in repr(first) and text not in first.fingerprint
    assert first.fingerprint == fingerprint(text)


def test_without_a_key_no_constant_in_the_source_computes_the_patient_key(tmp_path, config_dir):
    export = _series(tmp_path / "export")
    with pytest.warns(UserWarning):
        key = medload.scan(export)[0].patient_key
    constants = _string_constants()
    assert b"medload-default-pseudonym-key" not in constants  # the old built-in key is gone
    assert len(constants) > 500
    assert key not in {pseudonym(PATIENT_ID, prefix="pat-", secret=c) for c in constants if c}
    # the same user's second run links: the same key file, the same pseudonym
    assert medload.scan(export)[0].patient_key == key
    assert medload.scan(export, phi_key=(config_dir / "phi.key").read_text().strip())[0].patient_key == key


def test_another_user_gets_other_pseudonyms(tmp_path, monkeypatch, config_dir):
    export = _series(tmp_path / "export")
    with pytest.warns(UserWarning):
        mine = medload.scan(export)[0].patient_key
    monkeypatch.setenv("MEDLOAD_CONFIG_DIR", str(tmp_path / "someone-else"))
    with pytest.warns(UserWarning):
        theirs = medload.scan(export)[0].patient_key
    assert mine != theirs


def test_key_precedence_argument_then_environment_then_file(config_dir, monkeypatch):
    assert resolve_key("given").secret == b"given"
    monkeypatch.setenv("MEDLOAD_PHI_KEY", "from-env")
    assert resolve_key().secret == b"from-env" and resolve_key().origin == "environment"
    assert resolve_key("given").secret == b"given"
    assert not (config_dir / "phi.key").exists()  # a key was given: no file made


def test_damaged_or_missing_key_file_is_a_config_error(config_dir):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_key(create=False)
    config_dir.mkdir(parents=True)
    (config_dir / "phi.key").write_text("abc\n")
    with pytest.raises(ConfigError, match=r"phi.key holds 3 characters.*backup"):
        resolve_key()


def test_scan_and_load_give_the_same_keys_dicom_and_nifti(tmp_path):
    dicom = _series(tmp_path / "dicom")
    nifti = tmp_path / "bids" / "sub-07" / "anat" / "sub-07_T1w.nii.gz"
    nifti.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.eye(4)), nifti)
    for secret in ("k1", "k2", None):
        for path in (dicom, nifti):
            series = medload.scan(path, phi_key=secret)[0]
            vol = medload.load(path, phi_key=secret)
            assert (vol.meta["patient_key"], vol.meta["study_key"], vol.meta["series_key"]) == (
                series.patient_key,
                series.study_key,
                series.series_key,
            ), (path, secret)
            assert medload.load(series).meta["patient_key"] == series.patient_key
    assert medload.load(nifti, phi_key="k1").meta["patient_key"] != medload.load(nifti, phi_key="k2").meta["patient_key"]
    # the BIDS subject within its dataset is what a NIfTI patient key stands for (every dataset
    # has a sub-01): loading one file gives the key of its dataset folder's scan
    assert medload.load(nifti, phi_key="k1").meta["patient_key"] == pseudonym("bids/sub-07", prefix="pat-", secret="k1")
    assert medload.scan(tmp_path / "bids", phi_key="k1")[0].patient_key == medload.load(nifti, phi_key="k1").meta["patient_key"]


# --------------------------------------------------------------------------- store
def test_store_refuses_to_continue_with_another_key(tmp_path):
    path = tmp_path / "s.h5"
    vol = medload.Volume(np.zeros((2, 3, 3), np.float32), np.eye(4), meta={"series_key": "ser-1", "source_hash": "a"})
    with medload.Store.create(path, key_fingerprint=fingerprint("k1")) as store:
        store.add(vol)
    assert medload.open(path).key_fingerprint == fingerprint("k1")
    with pytest.raises(StoreError) as caught:
        medload.Store.create(path, key_fingerprint=fingerprint("k2"))
    assert fingerprint("k1") in str(caught.value) and fingerprint("k2") in str(caught.value)
    with medload.Store.create(path, key_fingerprint=fingerprint("k1")) as store:  # same key: resumes
        assert store.add(vol) == "ser-1"
    raw = path.read_bytes()
    assert b"k1" not in raw.replace(fingerprint("k1").encode(), b"")


def test_folder_store_with_shards_of_two_keys_is_refused(tmp_path):
    for i, secret in enumerate(("k1", "k2")):
        vol = medload.Volume(np.zeros((2, 3, 3), np.float32), np.eye(4), meta={"series_key": f"ser-{i}"})
        with medload.Store.create(tmp_path / "out" / f"shard-000{i}.h5", key_fingerprint=fingerprint(secret)) as store:
            store.add(vol)
    with pytest.raises(StoreError, match="patient keys do not match"):
        medload.open(tmp_path / "out")


# --------------------------------------------------------------------------- burned-in text
def test_burned_in_annotation_yes_is_refused_unless_allowed(tmp_path):
    folder = _series(tmp_path / "us-like", extra_tags={"BurnedInAnnotation": "YES"})
    series = medload.scan(folder)[0]
    assert series.burned_in_annotation == "YES"
    assert series.summary()["burned_in_annotation"] == "YES"
    with pytest.raises(BurnedInAnnotationError) as caught:
        medload.load(series)
    message = str(caught.value)
    assert "BurnedInAnnotation is YES" in message and "allow_burned_in=True" in message and str(folder) in message
    vol = medload.load(series, allow_burned_in=True)
    assert vol.shape == (3, 8, 8) and vol.meta["pixel_text"] == "burned-in"
    with pytest.raises(BurnedInAnnotationError):
        medload.load(folder)


def test_ultrasound_without_burned_in_no_is_converted_with_a_warning(tmp_path):
    flagged = medload.load(_series(tmp_path / "us", modality="MR", extra_tags={"Modality": "US"}))
    assert flagged.meta["pixel_text"] == "possible"
    assert any(p.kind is ProblemKind.PIXEL_TEXT_POSSIBLE and "may hold text" in p.message for p in flagged.problems)
    said_no = medload.load(_series(tmp_path / "us-no", modality="MR", extra_tags={"Modality": "US", "BurnedInAnnotation": "NO"}))
    assert "pixel_text" not in said_no.meta
    ct = medload.load(_series(tmp_path / "ct"))
    assert "pixel_text" not in ct.meta and ProblemKind.PIXEL_TEXT_POSSIBLE not in {p.kind for p in ct.problems}


def test_the_command_says_once_where_the_new_key_is(tmp_path, config_dir, capsys, monkeypatch):
    from medload.cli import main

    export = _series(tmp_path / "export")
    assert main(["scan", str(export), "--json"]) == 0
    err = capsys.readouterr().err
    assert err.count("created your pseudonym key") == 1 and str(config_dir / "phi.key") in err
    assert "Back it up" in err
    assert main(["scan", str(export), "--json"]) == 0
    assert "pseudonym key" not in capsys.readouterr().err
    # a usage error makes no key
    other = tmp_path / "other-config"
    monkeypatch.setenv("MEDLOAD_CONFIG_DIR", str(other))
    assert main(["convert", str(export), "-o", str(tmp_path / "out"), "--preset", "ct-nonsense"]) == 2
    assert not (other / "phi.key").exists()


# --------------------------------------------------------------------------- meta allow-list
def test_readers_copy_only_allow_listed_keys_and_defined_image_types(tmp_path):
    import json as _json

    from medload.deid import DESCRIPTOR_KEYS, META_KEYS, deidentified_meta

    dicom = _series(
        tmp_path / "dicom",
        extra_tags={"ImageType": ["ORIGINAL", "PRIMARY", "AXIAL", "SMITHSONVIEW"], "ImageComments": "Smithson moved"},
    )
    nifti = tmp_path / "bids" / "sub-07" / "anat" / "sub-07_T1w.nii.gz"
    nifti.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 5, 6), np.int16), np.eye(4)), nifti)
    nifti.with_name("sub-07_T1w.json").write_text(
        _json.dumps(
            {
                "EchoTime": 0.003,
                "Manufacturer": "Siemens",
                "ImageType": ["DERIVED", "SMITHSONSCREEN"],
                "PatientName": "Smithson^John",
                "InstitutionName": "Quillfeather",
                "ImageComments": "Smithson",
                "AcquisitionDateTime": "2019-07-04T10:11:12",
            }
        )
    )
    for path in (dicom, nifti):
        meta = medload.load(path).meta
        assert set(meta) - META_KEYS - DESCRIPTOR_KEYS == set(), path
        stored = deidentified_meta(meta, [], keep_phi=False)
        text = _json.dumps(stored)
        assert "Smithson" not in text and "SMITHSON" not in text and "Quillfeather" not in text and "2019" not in text
        assert stored["image_type"][0] in ("ORIGINAL", "DERIVED")
        assert not any("SMITHSON" in v for v in meta.get("image_type", []))  # the reader drops it too
    assert medload.load(nifti).meta["echo_time"] == 3.0  # allow-listed values still arrive (ms)


def test_convert_refuses_to_resume_with_another_key(tmp_path):
    export = _series(tmp_path / "export")
    out = tmp_path / "out"
    first = medload.convert(export, out, phi_key="key-one", workers=0, progress=False, pipeline="none")
    assert first.ok and first["phi_key_fingerprint"] == fingerprint("key-one")
    assert medload.open(out).key_fingerprint == fingerprint("key-one")
    with pytest.raises(StoreError) as caught:
        medload.convert(export, out, phi_key="key-two", workers=0, progress=False, pipeline="none")
    assert fingerprint("key-one") in str(caught.value) and fingerprint("key-two") in str(caught.value)
    again = medload.convert(export, out, phi_key="key-one", workers=0, progress=False, pipeline="none")
    assert again.counts["already_converted"] == 1


def test_scan_says_a_series_has_burned_in_text(tmp_path):
    folder = _series(tmp_path / "us-like", extra_tags={"BurnedInAnnotation": "YES"})
    (series,) = medload.scan(folder)
    assert any(
        p.kind is ProblemKind.BURNED_IN_ANNOTATION and p.message.startswith("BurnedInAnnotation YES") for p in series.problems
    )
    (plain,) = medload.scan(_series(tmp_path / "plain"))
    assert ProblemKind.BURNED_IN_ANNOTATION not in {p.kind for p in plain.problems}
