"""A NIfTI or 2D-image key names its source: the same path in two sources is two people.

NIfTI, PNG and nnU-Net files carry no patient ID, so their keys are pseudonyms of where they
lie. medload made them from the path below the scanned folder alone, so ``medload convert
ds001 ds002`` (every BIDS dataset has ``sub-01/anat/sub-01_T1w.nii.gz``) or two image folders
that both hold ``0001.png`` gave two people one patient key and one series key: counted as one
patient, kept in one split, labelled alike by a label CSV keyed by series, paired with one
mask. Now a path-derived key stands for the source's name and the path below it
(``medload.io.sources``); every test here fails on the old keys.
"""

from __future__ import annotations

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import medload
from medload.errors import ConfigError, StoreError
from medload.io import sources as sources_module
from medload.io.nnunet import scan_nnunet

OPTIONS = {"pipeline": "none", "orientation": "acquisition", "dtype": "float32", "workers": 0, "progress": False}
BIDS_FILE = ("sub-01", "anat", "sub-01_T1w.nii.gz")


def _bids(root, value, subjects=("sub-01",)):
    """A BIDS-like dataset whose subjects' T1w volumes are filled with ``value`` (+ subject number)."""
    for n, subject in enumerate(subjects):
        path = root.joinpath(subject, "anat", f"{subject}_T1w.nii.gz")
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(np.full((6, 5, 4), value + n, np.int16), np.eye(4)), path)
    return root


def _pngs(root, value, names=("0001.png",)):
    root.mkdir(parents=True, exist_ok=True)
    for n, name in enumerate(names):
        Image.fromarray(np.full((6, 8), value + n, np.uint8)).save(root / name)
    return root


def _records(out):
    """{first voxel value: volume record}: which source each stored volume came from."""
    with medload.open(out) as store:
        return {int(store.read_volume(i).array.flat[0]): rec for i, rec in enumerate(store.volumes)}


def _two_people_two_keys(out, values, scans):
    records = _records(out)
    assert sorted(records) == sorted(values)
    for field in ("patient_key", "study_key", "series_key"):
        assert len({getattr(r, field) for r in records.values()}) == 2, field
    # the keys convert stores are the keys `medload scan` of each source shows
    for value, found in zip(values, scans):
        assert (records[value].patient_key, records[value].series_key) == (found.patient_key, found.series_key)
    # two people: a patient-level split can put them apart (one patient never is)
    halves = [medload.split(out, fractions={"train": 0.5, "test": 0.5}, seed=seed) for seed in range(8)]
    assert any(len(h["train"]) == len(h["test"]) == 1 for h in halves)


def test_two_bids_datasets_with_the_same_paths_are_two_patients(tmp_path):
    a, b = _bids(tmp_path / "ds001", 100), _bids(tmp_path / "ds002", 200)
    (a / "broken.nii.gz").write_bytes(b"not a NIfTI file")  # an unreadable file is reported, the rest goes on
    report = medload.convert([a, b], tmp_path / "out.h5", **OPTIONS)
    assert report.counts["converted"] == 2 and report.counts["duplicate_series"] == 0, report.counts
    assert report.counts["unreadable_files"] == 1
    _two_people_two_keys(tmp_path / "out.h5", (100, 200), (medload.scan(a)[0], medload.scan(b)[0]))


def test_two_sources_of_one_name_are_told_apart_by_their_parents(tmp_path):
    a, b = _bids(tmp_path / "site_a" / "data", 100), _bids(tmp_path / "site_b" / "data", 200)
    # scanned alone each is "data": the keys of one source do not depend on what else exists
    assert medload.scan(a)[0].patient_key == medload.scan(b)[0].patient_key
    medload.convert([b, a], tmp_path / "out.h5", **OPTIONS)
    records = _records(tmp_path / "out.h5")
    assert len({r.patient_key for r in records.values()}) == len({r.series_key for r in records.values()}) == 2
    # named by their parents in a batch: what scan gives with that name
    assert records[100].patient_key == medload.scan(a, source_name="site_a/data")[0].patient_key


def test_two_image_folders_with_the_same_file_names_are_two_patients(tmp_path):
    a, b = _pngs(tmp_path / "site_a", 10), _pngs(tmp_path / "site_b", 20)
    medload.convert([a, b], tmp_path / "out.h5", **OPTIONS)
    _two_people_two_keys(tmp_path / "out.h5", (10, 20), (medload.scan(a)[0], medload.scan(b)[0]))
    # A patient pattern is the user's own patient id, one id space across sources: 0001 in both
    # folders is one patient (NIH ChestX-ray14 spreads a patient's films over images_001..012/),
    # kept in one split, while the two images stay two series.
    pattern = r"(?P<patient>\d+)\.png"
    medload.convert([a, b], tmp_path / "pattern.h5", patient_pattern=pattern, **OPTIONS)
    records = _records(tmp_path / "pattern.h5").values()
    assert len({r.patient_key for r in records}) == 1 and len({r.series_key for r in records}) == 2
    parts = medload.split(tmp_path / "pattern.h5", fractions={"train": 0.5, "test": 0.5}, seed=0)
    assert sorted(len(keys) for keys in parts.values()) == [0, 1]


def test_nnunet_datasets_of_one_name_with_the_same_cases_are_two_patients(tmp_path):
    def dataset(root, value):
        for sub in ("imagesTr", "labelsTr"):
            (root / sub).mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.full((4, 4, 3), value, np.int16), np.eye(4)), root / "imagesTr" / "case_0000.nii.gz")
        nib.save(nib.Nifti1Image(np.ones((4, 4, 3), np.uint8), np.eye(4)), root / "labelsTr" / "case.nii.gz")
        spec = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1}, "file_ending": ".nii.gz"}
        (root / "dataset.json").write_text(json.dumps(spec))
        return root

    a = dataset(tmp_path / "a" / "Dataset001_Liver", 1)
    b = dataset(tmp_path / "b" / "Dataset001_Liver", 2)
    medload.convert([a, b], tmp_path / "out.h5", **OPTIONS)
    records = _records(tmp_path / "out.h5")
    assert sorted(records) == [1, 2] and len({r.patient_key for r in records.values()}) == 2
    assert records[1].patient_key == scan_nnunet(a, source_name="a/Dataset001_Liver")[0].patient_key
    # alone, a dataset keeps the keys it always had (its folder's name and the case id)
    assert scan_nnunet(a)[0].patient_key == medload.deid.pseudonym("Dataset001_Liver/case", prefix="pat-")


def test_the_same_source_twice_is_one_series(tmp_path):
    a = _bids(tmp_path / "ds001", 100)
    pngs = _pngs(tmp_path / "site_a", 10)
    os.symlink(a, tmp_path / "link_to_ds001")
    report = medload.convert([a, pngs, tmp_path / "link_to_ds001", pngs], tmp_path / "out.h5", **OPTIONS)
    assert report.counts["converted"] == 2 and report.counts["duplicate_series"] == 2, report.counts
    assert len(_records(tmp_path / "out.h5")) == 2


def test_resuming_an_unchanged_multi_source_convert_adds_nothing(tmp_path):
    sources = [_bids(tmp_path / "ds001", 100), _bids(tmp_path / "ds002", 200)]
    sources += [_pngs(tmp_path / "x" / "site", 10), _pngs(tmp_path / "y" / "site", 20)]
    copy = tmp_path / "ds002" / "sub-09" / "anat" / "sub-09_T1w.nii.gz"  # ds001's image again, in ds002
    copy.parent.mkdir(parents=True)
    shutil.copy(tmp_path / "ds001" / os.path.join(*BIDS_FILE), copy)
    out = tmp_path / "out.h5"
    first = medload.convert(sources, out, **OPTIONS)
    assert first.counts["converted"] == 4 and first.counts["duplicate_series"] == 1
    before = {v: (r.key, r.patient_key, r.series_key) for v, r in _records(out).items()}
    # in the other order the copy is found first: its original's stored keys still count as this run's
    again = medload.convert(list(reversed(sources)), out, **OPTIONS)
    assert again.counts["converted"] == 0 and again.counts["already_converted"] == 4, again.counts
    assert {v: (r.key, r.patient_key, r.series_key) for v, r in _records(out).items()} == before


def test_a_store_keyed_without_source_names_is_not_continued(tmp_path, monkeypatch):
    a, b = _bids(tmp_path / "ds001", 100, ("sub-01", "sub-02")), _bids(tmp_path / "ds002", 200)
    pngs = _pngs(tmp_path / "site_a", 10)
    out = tmp_path / "out.h5"
    with monkeypatch.context() as patch:  # the keys medload made before: the path below the source alone
        patch.setattr(sources_module, "path_identity", lambda source, relative: relative)
        medload.convert([a, pngs], out, **OPTIONS)
    assert len(_records(out)) == 3
    # ds002's sub-01 would be a patient of its own while ds001's sub-01 keeps the old key: refused
    with pytest.raises(StoreError, match="keys differ from the keys this run makes") as caught:
        medload.convert([a, b, pngs], out, **OPTIONS)
    assert "--overwrite" in str(caught.value) and "ds001" not in str(caught.value)
    report = medload.convert([a, b, pngs], out, overwrite=True, **OPTIONS)
    assert report.counts["converted"] == 4


def test_a_label_csv_names_one_image_of_one_source(tmp_path):
    a, b = _pngs(tmp_path / "site_a", 10), _pngs(tmp_path / "site_b", 20)
    ambiguous = tmp_path / "ambiguous.csv"
    ambiguous.write_text("file,label\n0001.png,1\n")
    with pytest.raises(ConfigError, match=r"'0001.png' names 2 images \(site_\w/0001.png, site_\w/0001.png\)"):
        medload.convert([a, b], tmp_path / "out.h5", labels=ambiguous, **OPTIONS)
    by_file = tmp_path / "by_file.csv"
    by_file.write_text("file,label\nsite_a/0001.png,0\nsite_b/0001.png,1\n")
    medload.convert([a, b], tmp_path / "files.h5", labels=by_file, **OPTIONS)
    assert {v: r.label for v, r in _records(tmp_path / "files.h5").items()} == {10: 0, 20: 1}
    # keyed by the series keys `medload scan` shows: each row labels its own image only
    by_key = tmp_path / "by_key.csv"
    by_key.write_text(f"series_key,label\n{medload.scan(b)[0].series_key},1\n")
    medload.convert([a, b], tmp_path / "keys.h5", labels=by_key, **OPTIONS)
    assert {v: r.label for v, r in _records(tmp_path / "keys.h5").items()} == {10: None, 20: 1}


def test_a_mask_pairs_with_the_series_it_names_only(tmp_path):
    a, b = _bids(tmp_path / "ds001", 100), _bids(tmp_path / "ds002", 200)
    masks = tmp_path / "masks"
    masks.mkdir()
    mask = np.zeros((6, 5, 4), np.uint8)
    mask[1:3] = 1
    nib.save(nib.Nifti1Image(mask, np.eye(4)), masks / f"{medload.scan(b)[0].series_key}.nii.gz")
    report = medload.convert([a, b], tmp_path / "out.h5", masks=masks, **OPTIONS)
    assert {v: r.has_mask for v, r in _records(tmp_path / "out.h5").items()} == {100: False, 200: True}
    assert report.counts["images_without_mask"] == 1
    # a mask named like a file that both sources hold pairs with neither (it would be a guess)
    shutil.rmtree(masks)
    masks.mkdir()
    nib.save(nib.Nifti1Image(mask, np.eye(4)), masks / "sub-01_T1w.nii.gz")
    report = medload.convert([a, b], tmp_path / "guess.h5", masks=masks, **OPTIONS)
    assert report.counts["images_without_mask"] == 2 and report.counts["masks_without_image"] == 1


def test_one_folder_holding_two_bids_datasets_gives_their_subjects_two_keys(tmp_path):
    parent = tmp_path / "openneuro"
    _bids(parent / "ds001", 100), _bids(parent / "ds002", 200)
    derivative = parent / "ds001" / "derivatives" / "fmriprep" / "sub-01" / "anat" / "sub-01_desc-brain_T1w.nii.gz"
    derivative.parent.mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.full((6, 5, 4), 300, np.int16), np.eye(4)), derivative)
    found = {int(medload.load(s).array.flat[0]): s for s in medload.scan(parent)}
    assert found[100].patient_key != found[200].patient_key
    # a derivative of ds001's sub-01 is ds001's sub-01
    assert found[300].patient_key == found[100].patient_key != found[200].patient_key
    # scanned from inside the dataset (a subject folder, one file), a subject has the key of the
    # dataset's own scan
    dataset = medload.scan(parent / "ds001")[0].patient_key
    assert medload.scan(parent / "ds001" / "sub-01")[0].patient_key == dataset
    assert medload.load(parent / "ds001" / os.path.join(*BIDS_FILE)).meta["patient_key"] == dataset
    assert medload.load(parent / "ds002" / os.path.join(*BIDS_FILE)).meta["patient_key"] != dataset


def test_no_source_folder_name_reaches_the_output(tmp_path):
    a, b = _bids(tmp_path / "zebrahospital", 100), _pngs(tmp_path / "okapiclinic", 10)
    out = tmp_path / "out"
    medload.convert([a, b], out, **OPTIONS)
    for folder, _, files in os.walk(out):
        for name in files:
            data = open(os.path.join(folder, name), "rb").read().lower()
            assert b"zebrahospital" not in data and b"okapiclinic" not in data, name
