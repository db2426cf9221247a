"""Converting folders of 2D images: labels and class names from class folders or a CSV, patient
keys from file names, pixels back within the stored precision, bad files reported."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout

import numpy as np
import pytest

import medload
import medload.cli
from fixtures.images import write_bad_images, write_image_folder
from medload.datasets import NumpyBatches, split

PATTERN = r"(?P<patient>\d+)_"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("conv")
    truth = write_image_folder(root / "src", n_per_class=6, images_per_patient=2)
    # labels="folders": the folder names are class names (said, they are written as they are).
    report = medload.convert(root / "src", root / "out", workers=0, progress=False, patient_pattern=PATTERN, labels="folders")
    return root, truth, report


def _file_of(source):
    """source_hash -> relative path, from a fresh scan."""
    found = medload.scan(source)
    base = str(source.resolve()) + "/"
    return {s.source_hash: s.files[0][len(base) :] for s in found}


def test_class_folders_give_labels_and_class_names(converted):
    root, truth, report = converted
    assert report.ok and report.counts["converted"] == len(truth) == 18
    assert report["options"]["labels"]["from"] == "class folders"
    store = medload.open(root / "out")
    assert store.classes == ["effusion", "normal", "pneumonia"]
    files = _file_of(root / "src")
    for rec in store.volumes:
        rel = files[rec.source_hash]
        assert store.classes[rec.label] == truth[rel]["class"] == rec.meta["class_name"]
    out = io.StringIO()
    with redirect_stdout(out):
        medload.cli.main(["info", str(root / "out")])
    text = re.sub(r"\s+", " ", out.getvalue())
    assert "0 effusion, 1 normal, 2 pneumonia" in text and "normal (1): 6" in text
    out = io.StringIO()
    with redirect_stdout(out):
        medload.cli.main(["info", str(root / "out"), "--json"])
    assert json.loads(out.getvalue())["classes"] == ["effusion", "normal", "pneumonia"]


def test_pixels_read_back_equal_the_decoded_files_within_stored_precision(converted):
    root, truth, _ = converted
    store = medload.open(root / "out")
    files = _file_of(root / "src")
    for i, rec in enumerate(store.volumes):
        expected = truth[files[rec.source_hash]]["array"]
        full = 65535.0 if expected.dtype == np.uint16 else 255.0
        image = store.read_slices(i, 0, 1)[0]  # (H, W) or (3, H, W), [0, 1]
        want = expected / full if expected.ndim == 2 else np.moveaxis(expected, -1, 0) / full
        assert image.shape == want.shape
        # uint8 store: one step of the recorded scale, halved, is the stored precision.
        assert np.abs(image - want).max() <= rec.scale / 2 + 1e-6, files[rec.source_hash]
        if expected.dtype == np.uint8:  # 8-bit sources come back exactly
            np.testing.assert_array_equal(np.rint(image * 255), want * 255)


def test_patient_splits_from_a_file_name_pattern_keep_patients_apart(converted):
    root, truth, _ = converted
    files = _file_of(root / "src")
    # Grey and colour images mixed: one channel count for the datasets with --grayscale.
    report = medload.convert(
        root / "src", root / "grey", workers=0, progress=False, patient_pattern=PATTERN, grayscale=True, size=16, labels="folders"
    )
    assert report.ok
    store = medload.open(root / "grey")
    parts = split(store, fractions={"train": 0.5, "val": 0.25, "test": 0.25}, seed=4)
    real = {}
    for name in parts:
        batches = NumpyBatches(store, name, splits=parts, batch_size=4)
        assert batches.classes == ["effusion", "normal", "pneumonia"]
        vols = {int(v) for b in batches for v in b["volume"]}
        real[name] = {truth[files[store.volumes[v].source_hash]]["patient"] for v in vols}
        # Every image of a patient in this split is in it: a patient is never cut in two.
        n_images = sum(1 for t in truth.values() if t["patient"] in real[name])
        assert n_images == len(vols)
    names = list(real)
    for a in names:
        for b in names:
            assert a == b or not (real[a] & real[b]), (a, b, real[a] & real[b])
    assert sum(len(v) for v in real.values()) == 9  # 18 images, 2 per patient


def test_labels_and_patients_from_csv(tmp_path):
    truth = write_image_folder(tmp_path / "src", n_per_class=2)
    rels = sorted(truth)
    (tmp_path / "labels.csv").write_text(
        "file,label\n" + "".join(f"{r},{'sick' if 'normal' not in r else 'well'}\n" for r in rels)
    )
    (tmp_path / "patients.csv").write_text(
        "filename,patient_id\n" + "".join(f"{r.split('/')[-1]},P{i % 2}\n" for i, r in enumerate(rels))
    )
    report = medload.convert(
        tmp_path / "src",
        tmp_path / "out",
        workers=0,
        progress=False,
        labels=tmp_path / "labels.csv",
        patients=tmp_path / "patients.csv",
        grayscale=True,
    )
    assert report.ok and report["options"]["patients"]["matched_images"] == 6
    store = medload.open(tmp_path / "out")
    assert store.classes == ["sick", "well"]
    assert len({r.patient_key for r in store.volumes}) == 2
    assert all(r.channels is None and len(r.slice_shape) == 2 for r in store.volumes)  # --grayscale
    assert all(r.history[0][0] == "grayscale" for r in store.volumes)


def test_every_bad_file_is_named_and_the_batch_goes_on(tmp_path):
    write_image_folder(tmp_path / "src", n_per_class=2)
    bad = write_bad_images(tmp_path / "src" / "normal")
    report = medload.convert(tmp_path / "src", tmp_path / "out", workers=0, progress=False)
    assert report.counts["converted"] == 6 and not report.ok
    # report.json names files by pseudonym (de-identified); report.paths (in memory) maps them back
    names = report.paths["names"]

    def on_screen(text: str) -> str:
        return re.sub(r"(?:file|dir)-[0-9a-f]{16}", lambda m: names.get(m.group(0), m.group(0)), text)

    messages = {names[f["file"]]: on_screen(f["reason"]) for f in report["files"]}
    messages.update(
        {on_screen(s["reason"]).split(":")[0]: on_screen(s["reason"]) for s in report["series"] if s["status"] == "failed"}
    )
    written = (tmp_path / "out" / "report.json").read_text()
    for name, what in bad.items():
        hit = [m for p, m in messages.items() if p.endswith(name)]
        assert hit and what in hit[0] and name in hit[0], (name, messages)
        assert name not in written
