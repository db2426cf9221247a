"""Source hashes are keyed: no output holds a digest that whoever holds the sources can compute.

A store records each volume's ``source_hash`` (resume and dedup match by it), and the report
names it. medload used to store plain digests: of a DICOM series' SOPInstanceUIDs and file
sizes (the PACS holds both), of a NIfTI or image file's bytes. Anyone with the source (or a
guess) could recompute one and find the volume. Now it is ``src-`` + HMAC under the pseudonym
key; a store written with the plain digests is still continued without converting anything twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image

import medload
from fixtures.phi import search_output
from fixtures.stores import as_earlier_medload
from fixtures.synthetic import write_dicom_series, write_nifti
from medload.cli import main
from medload.deid import keyed_source_hash, text_bytes
from medload.problems import ProblemKind
from tests.test_nnunet import make_dataset


def _sources(tmp_path: Path) -> list[Path]:
    """A folder with a DICOM series, a NIfTI file and a PNG image; an nnU-Net dataset of two cases."""
    export = tmp_path / "export"
    write_dicom_series(export / "ct", shape=(3, 8, 8), return_array=False)
    write_nifti(export / "t1.nii.gz", shape=(4, 8, 8))
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(export / "photo.png")
    return [export, make_dataset(tmp_path / "Dataset001_Toy", cases=2)]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _plain_digests(sources: list[Path]) -> dict[str, str]:
    """What an earlier medload stored as ``source_hash`` for each source, computed as anyone who
    holds the files (or the PACS's UIDs and sizes) can: {series kind or case: digest}."""
    export, nnunet = sources
    files = sorted(str(p) for p in (export / "ct").iterdir())
    uids = sorted([pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID, 0] for f in files)
    sizes = [size for _, size in sorted((os.path.basename(f), os.path.getsize(f)) for f in files)]
    (dicom,) = [s for s in medload.scan(export, phi_key="any") if s.kind == "dicom"]
    split = dicom.info["split"]  # from the headers alone: UIDs, sizes, orientation
    digests = {
        "dicom": "sha256:" + _sha256(json.dumps([uids, sizes, split]).encode())[:16],
        "nifti": "nifti-sha256:" + _sha256((export / "t1.nii.gz").read_bytes())[:32],
        "image": "sha256:" + _sha256((export / "photo.png").read_bytes() + b"photo.png")[:16],
    }
    for case in ("case000", "case001"):
        channels = ["nifti-sha256:" + _sha256(p.read_bytes())[:32] for p in sorted((nnunet / "imagesTr").glob(case + "_*"))]
        digests[case] = "nnunet-" + _sha256(text_bytes("|".join(["Tr", case, *channels])))[:32]
    return digests


def _stored_hashes(out: Path) -> set[str]:
    with medload.open(out) as store:
        return {v.source_hash for v in store.volumes}


def test_no_output_holds_a_digest_that_the_sources_give(tmp_path, capsys):
    sources = _sources(tmp_path)
    digests = _plain_digests(sources)
    out = tmp_path / "out"
    common = ["--workers", "0", "--quiet", "--size", "8"]
    assert main(["convert", *map(str, sources), "-o", str(out), *common, "--source-map", str(tmp_path / "map.json")]) == 0
    assert main(["qc", str(out), "--workers", "0"]) == 0
    assert main(["info", str(out), "--json"]) == 0
    for source in sources:
        assert main(["scan", str(source), "--json", "--workers", "0"]) == 0
    (out / "printed.txt").write_text(capsys.readouterr().out, encoding="utf-8")
    # 12 hex digits of each digest, in any output: the store, report.json, the QC page, info and scan --json.
    needles = [d.rsplit(":", 1)[-1].rsplit("-", 1)[-1][:12] for d in digests.values()]
    assert search_output(out, needles) == {}
    # What is stored is the keyed form of each digest: the same key matches it again, nothing else does.
    key = medload.deid.resolve_key()
    assert _stored_hashes(out) == {keyed_source_hash(d, key) for d in digests.values()}
    report = json.loads((out / "report.json").read_text())
    assert {e["source_hash"] for e in report["series"]} == _stored_hashes(out)
    assert main(["convert", *map(str, sources), "-o", str(tmp_path / "other"), *common, "--phi-key", "another key"]) == 0
    assert not _stored_hashes(tmp_path / "other") & _stored_hashes(out)
    # Keyed and stable: a second run with the key converts nothing again.
    report = medload.convert(sources, out, workers=0, progress=False, size=8)
    assert report.counts["converted"] == 0 and report.counts["already_converted"] == 5


def test_a_store_of_an_earlier_medload_is_continued_without_converting_anything_twice(tmp_path, monkeypatch):
    sources = _sources(tmp_path)
    digests = _plain_digests(sources)
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        as_earlier_medload(patch)
        first = medload.convert(sources, out, workers=0, progress=False, pipeline="none")
    assert first.counts["converted"] == 5
    assert _stored_hashes(out) == set(digests.values())  # the plain digests, as an earlier medload stored them
    write_nifti(sources[0] / "t2.nii.gz", shape=(4, 8, 8), seed=1)  # one source more
    report = medload.convert(sources, out, workers=0, progress=False, pipeline="none")
    assert (report.counts["already_converted"], report.counts["converted"]) == (5, 1), report.counts
    (note,) = report.resume_notes
    assert note["kind"] == ProblemKind.UNKEYED_SOURCE_HASHES.value and note["message"].startswith("5 volume(s)")
    stored = _stored_hashes(out)
    assert len(stored) == 6 and set(digests.values()) < stored  # kept as they were, the new one keyed
    (new,) = stored - set(digests.values())
    assert new.startswith("src-") and new in {e["source_hash"] for e in report.series}
    again = medload.convert(sources, out, workers=0, progress=False, pipeline="none")
    assert (again.counts["already_converted"], again.counts["converted"]) == (6, 0)
    assert len(_stored_hashes(out)) == 6
