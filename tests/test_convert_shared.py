"""Issue 6, point 1: `medload convert` over all of ../shared/data at once, then info and preview."""

from __future__ import annotations

import json
import re

import pytest

import medload
from medload.cli import main

from tests.conftest import shared_path
from tests.test_cli import _png_size

# MR without N4 so the whole run stays well under a minute; CT and the rest keep their defaults.
CHEAP_MR = {
    "medload_pipeline": 1,
    "steps": [
        {"name": "percentile_clip", "params": {"lower": 1.0, "upper": 99.0, "mask": "foreground"}},
        {"name": "zscore", "params": {"mask": "foreground"}},
    ],
}


@pytest.mark.slow
def test_convert_all_shared_data_then_info_and_preview(tmp_path, capsys):
    data = shared_path()
    mr = tmp_path / "mr.json"
    mr.write_text(json.dumps(CHEAP_MR))
    out = tmp_path / "out"
    code = main(
        [
            "convert",
            str(data),
            "-o",
            str(out),
            "--size",
            "64",
            "--workers",
            "2",
            "--quiet",
            "--config",
            f"MR={mr}",
            "--source-map",
            str(tmp_path / "source-map.json"),
        ]
    )
    report = json.loads((out / "report.json").read_text())
    counts = report["counts"]
    assert code == (0 if counts["failed"] == counts["unreadable_files"] == 0 else 1)
    assert counts["series"] >= 60 and counts["converted"] >= 60
    assert counts["converted"] + counts["failed"] == counts["series"]
    assert counts["skipped_files"] >= 1 and report["skipped_files"]  # README, LICENSE, ... with kinds

    # every failure is the readers refusing a series, with the reason; nothing failed later
    failed = [s for s in report["series"] if s["status"] == "failed"]
    assert all(s["stage"] == "read" and s["reason"] and s["error"].endswith("Error") for s in failed), failed
    refused = {s["source_hash"] for s in failed}
    for series in medload.scan(data):
        if series.source_hash in refused:
            with pytest.raises(medload.MedloadError):
                medload.load(series)
    assert all(f["reason"] for f in report["files"])
    # the known broken series are among the refused ones, with what is wrong
    # (the report names folders by pseudonym; the source map, kept outside the output, maps them)
    names = json.loads((tmp_path / "source-map.json").read_text())["names"]
    assert any(
        "missing slices" in s["reason"]
        and any("failing/sliceincrement" in names.get(k, "") for k in re.findall(r"dir-[0-9a-f]{16}", s["reason"]))
        for s in failed
    )

    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["volumes"] == counts["converted"] and info["slices"] == counts["slices_written"]
    assert all(shape.endswith("64x64") for shape in info["slice_shapes"])  # frames/channels ahead
    assert {"CT", "MR"} <= set(info["modalities"])

    png = tmp_path / "montage.png"
    assert main(["preview", str(out), "--out", str(png), "--n", "12", "--tile", "96"]) == 0
    assert _png_size(png) == (4 * 96, 3 * 96)


def test_real_ct_with_its_segmentation_mask_matched_by_grid(tmp_path):
    ct = shared_path("totalsegmentator_ct", "example_ct_dicom")
    seg = shared_path("totalsegmentator_ct", "example_seg_dicom.nii.gz")
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "segmentation.nii.gz").write_bytes(seg.read_bytes())  # a name that matches nothing
    report = medload.convert(ct, tmp_path / "out", pipeline="ct-abdomen", masks=masks, workers=0, progress=False)
    assert report.ok and report.counts["converted"] == 1
    # named by its pseudonym in the report (mask names can be patients' names); report.paths maps it
    assert report.paths["names"][report["series"][0]["mask"]] == str(masks / "segmentation.nii.gz")
    import nibabel as nib
    import numpy as np

    mask = medload.Volume.from_nifti(nib.load(str(seg)))
    store = medload.open(tmp_path / "out")
    rec = store.volumes[0]
    got = store.read_mask(0, 0, rec.n_slices)
    assert rec.has_mask and got.shape == mask.shape == (20, 512, 512) and int(got.max()) > 0
    # same label at the same world position, voxel by voxel (the file stores rows bottom-up)
    index = np.indices(got.shape).reshape(3, -1)
    world = rec.affine[:3, :3] @ index + rec.affine[:3, 3:]
    source = np.rint(np.linalg.inv(mask.affine[:3, :3]) @ (world - mask.affine[:3, 3:])).astype(int)
    assert np.array_equal(got.reshape(-1), np.rint(mask.array[tuple(source)]).astype(got.dtype))
    assert rec.intensity == "HU window 40/400 (abdomen) scaled to [0,1]"
