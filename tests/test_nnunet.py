"""nnU-Net / Medical Segmentation Decathlon datasets convert one volume per case, channels stacked.

Before, each channel file was its own volume and its own patient (channel 0 of a case in
train, channel 1 in val) and labelsTr was not paired, with exit status 0.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import medload
from medload.cli import main

SHAPE = (12, 10, 5)  # NIfTI (i, j, k): stored (Z, Y, X) = (5, 10, 12)
CHANNELS = ["T2", "ADC"]


def _value(case: int, channel: int) -> float:
    return 100.0 * (case + 1) + 10.0 * channel


def make_dataset(
    root: Path, cases: int = 3, *, extra_label: bool = False, drop_label: int | None = None, v1: bool = False
) -> Path:
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True)
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    for case in range(cases):
        for ch in range(len(CHANNELS)):
            data = np.full(SHAPE, _value(case, ch), np.float32)
            data[2:6, 3:7, 1:4] += 50.0  # the lesion is brighter in every channel
            nib.save(nib.Nifti1Image(data, affine), root / "imagesTr" / f"case{case:03d}_{ch:04d}.nii.gz")
        if case != drop_label:
            label = np.zeros(SHAPE, np.uint8)
            label[2:6, 3:7, 1:4] = 1 + case % 2
            nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case{case:03d}.nii.gz")
    if extra_label:
        nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.uint8), affine), root / "labelsTr" / "orphan.nii.gz")
    if v1:
        spec = {"modality": {"0": "T2", "1": "ADC"}, "labels": {"0": "background", "1": "edema", "2": "tumour"}}
    else:
        spec = {
            "channel_names": {"0": "T2", "1": "ADC"},
            "labels": {"background": 0, "edema": 1, "tumour": 2},
            "file_ending": ".nii.gz",
            "numTraining": cases,
        }
    (root / "dataset.json").write_text(json.dumps(spec))
    return root


@pytest.mark.parametrize("v1", [False, True])
def test_three_cases_of_two_channels_become_three_volumes_with_masks_and_patients(tmp_path, v1):
    src = make_dataset(tmp_path / "Dataset001_Toy", v1=v1)
    report = medload.convert(src, tmp_path / "out", workers=0, progress=False, pipeline="none")
    assert report.ok and report.counts["converted"] == 3
    assert report.counts["masks_without_image"] == 0 and report.counts["images_without_mask"] == 0
    reader = medload.open(tmp_path / "out")
    records = reader.volumes
    assert len(records) == 3
    assert {r.shape for r in records} == {(5, 2, 10, 12)}  # (Z, C, H, W): two channels per slice
    assert all(r.channels == ("T2", "ADC") and r.has_mask for r in records)
    assert all(r.meta["label_names"] == {"background": 0, "edema": 1, "tumour": 2} for r in records)
    assert len({r.patient_key for r in records}) == 3
    for v, _r in enumerate(records):
        image = reader.read_slices(v, 0, 5)  # (Z, C, H, W) decoded
        mask = reader.read_mask(v, 0, 5)
        inside, outside = mask > 0, mask == 0
        # Each channel's own values: outside the lesion one value per (case, channel), inside +50.
        base = [float(np.median(image[:, c][outside])) for c in range(2)]
        assert base[1] - base[0] == pytest.approx(10.0, abs=0.5)
        for c in range(2):
            assert float(image[:, c][inside].mean()) == pytest.approx(base[c] + 50.0, abs=0.5)
        assert set(np.unique(mask)) == {0, 1 + round((base[0] - 100) / 100) % 2}
    # No case in two splits: the split is by patient, and a case is one patient.
    splits = medload.split(reader, fractions={"train": 0.34, "val": 0.33, "test": 0.33}, seed=1)
    seen: dict[str, str] = {}
    for name in splits:
        if not splits[name]:
            continue
        ds = medload.SliceDataset(tmp_path / "out", name, splits=splits)
        for key in {ds.volume_keys[v] for v in ds.volume_ids}:
            assert seen.setdefault(key, name) == name
    assert len(seen) == 3


def test_masks_that_match_no_image_and_images_without_mask_are_counted_and_can_be_required(tmp_path, capsys):
    src = make_dataset(tmp_path / "Dataset002_Toy", extra_label=True, drop_label=1)
    report = medload.convert(src, tmp_path / "out", workers=0, progress=False, pipeline="none")
    assert report.counts["converted"] == 3
    assert report.counts["masks_without_image"] == 1 and report.counts["images_without_mask"] == 1
    assert sum(r.has_mask for r in medload.open(tmp_path / "out").volumes) == 2
    code = main(
        ["convert", str(src), "-o", str(tmp_path / "strict"), "--require-masks", "--preset", "none", "--workers", "0", "--quiet"]
    )
    err = capsys.readouterr().err
    assert code != 0 and "1 image(s) have no mask and 1 mask file(s) match no image" in err
    assert not (tmp_path / "strict" / "report.json").exists()


def test_a_case_missing_a_channel_is_reported_not_converted_half(tmp_path):
    src = make_dataset(tmp_path / "Dataset003_Toy")
    (src / "imagesTr" / "case001_0001.nii.gz").unlink()
    report = medload.convert(src, tmp_path / "out", workers=0, progress=False, pipeline="none")
    assert report.counts["converted"] == 2 and report.counts["unreadable_files"] == 1
    assert "lacks channel(s) 0001" in report["files"][0]["reason"]
    assert not report.ok


def test_a_masks_folder_holding_the_source_is_refused(tmp_path):
    export = tmp_path / "export"
    (export / "ct").mkdir(parents=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3), np.int16), np.eye(4)), export / "ct" / "a.nii.gz")
    with pytest.raises(medload.MedloadError, match="holds the source"):
        medload.convert(export / "ct", tmp_path / "out", masks=export, workers=0, progress=False)


def test_a_patients_csv_maps_cases_to_patients(tmp_path):
    src = make_dataset(tmp_path / "Dataset004_Toy")
    csv = tmp_path / "patients.csv"
    csv.write_text("file,patient_id\ncase000,P1\ncase001,P1\ncase002,P2\n")  # two scans of P1
    report = medload.convert(src, tmp_path / "out", patients=csv, workers=0, progress=False, pipeline="none")
    assert report.ok
    records = medload.open(tmp_path / "out").volumes
    by_case = {r.patient_key for r in records}
    assert len(records) == 3 and len(by_case) == 2
