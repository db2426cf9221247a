"""medload.convert / `medload convert`: resumable after SIGKILL, same content on Dask, PHI stays out."""

from __future__ import annotations

import hashlib
import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import medload
from medload.cli import main

from fixtures.phi import find_values, write_phi_export
from fixtures.synthetic import write_dicom_series

ROOT = Path(__file__).resolve().parents[1]


def _export(folder: Path, n: int, *, slices: int = 12, size: int = 48) -> Path:
    """``n`` small CT/MR series in sub-folders, two patients, seeded."""
    for i in range(n):
        write_dicom_series(
            folder / f"s{i:02d}",
            modality="CT" if i % 2 == 0 else "MR",
            shape=(slices, size, size - 8),
            spacing=(2.0, 0.9, 0.9),
            seed=100 + i,
            series_description=f"series {i}",
            patient_id=f"P{i % 2}",
            return_array=False,
        )
    return folder


def _content(store_path: Path) -> dict[str, dict]:
    """source_hash -> per-slice checksums of the stored bytes (and mask), affine, history, label."""
    reader = medload.open(store_path)
    out = {}
    for i, rec in enumerate(reader.volumes):
        image = reader.read_slices(i, 0, rec.n_slices, raw=True)
        sums = [hashlib.sha256(np.ascontiguousarray(s).tobytes()).hexdigest()[:16] for s in image]
        if rec.has_mask:
            mask = reader.read_mask(i, 0, rec.n_slices)
            sums += ["m" + hashlib.sha256(np.ascontiguousarray(s).tobytes()).hexdigest()[:16] for s in mask]
        out[rec.source_hash] = {
            "slices": sums,
            "affine": np.round(rec.affine, 6).tolist(),
            "history": json.dumps(rec.history),
            "label": rec.label,
            "shape": rec.shape,
            "series_key": rec.series_key,
            "scale": rec.scale,
            "offset": rec.offset,
        }
    reader.close()
    return out


CHEAP = ["--preset", "CT=ct-abdomen", "--preset", "MR=none", "--size", "32"]


def test_convert_small_export_report_and_resume(tmp_path):
    src = _export(tmp_path / "src", 3)
    out = tmp_path / "out"
    report = medload.convert(src, out, pipeline={"MR": "none"}, size=32, workers=0, progress=False)
    assert report.ok and report.counts["converted"] == 3 and report.counts["slices_written"] == 36
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["counts"] == report.counts
    assert {s["status"] for s in on_disk["series"]} == {"converted"}
    store = medload.open(out)
    assert len(store) == 36 and {r.slice_shape for r in store.volumes} == {(32, 32)}
    ct = [r for r in store.volumes if r.modality == "CT"]
    assert ct[0].intensity == "HU window 40/400 (abdomen) scaled to [0,1]"
    assert [h[0] for h in ct[0].history][-2:] == ["window", "resize_slices"]
    before = _content(out)
    # a re-run converts nothing and changes nothing
    again = medload.convert(src, out, pipeline={"MR": "none"}, size=32, workers=0, progress=False)
    assert again.counts["converted"] == 0 and again.counts["already_converted"] == 3
    assert _content(out) == before
    # another pipeline on the same output is refused before anything is written
    with pytest.raises(medload.StoreError, match="another pipeline"):
        medload.convert(src, out, pipeline="ct-brain", size=32, workers=0, progress=False)


def test_one_bad_series_does_not_stop_the_batch_and_the_exit_status_says_so(tmp_path, capsys):
    src = _export(tmp_path / "src", 2)
    # a series with a missing slice: the reader refuses it with a GeometryError
    truth = write_dicom_series(
        tmp_path / "src" / "broken", shape=(6, 16, 16), seed=7, return_array=False, series_description="gap"
    )
    os.remove(truth["files"][3])
    (tmp_path / "src" / "notes.txt").write_text("not an image")
    code = main(["convert", str(src), "-o", str(tmp_path / "out"), "--workers", "2", *CHEAP])
    assert code == 1
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["counts"]["converted"] == 2 and report["counts"]["failed"] == 1
    failed = [s for s in report["series"] if s["status"] == "failed"]
    assert "description" not in failed[0] and "missing slices" in failed[0]["reason"]
    assert str(tmp_path) not in failed[0]["reason"]  # paths relative to the source
    assert report["skipped_files"] == {"not DICOM": 1}
    assert "failed" in capsys.readouterr().out


@pytest.mark.slow
def test_sigkill_midway_then_rerun_gives_the_same_content(tmp_path):
    src = _export(tmp_path / "src", 10, slices=24, size=64)
    args = [
        sys.executable,
        "-m",
        "medload",
        "convert",
        str(src),
        "--workers",
        "2",
        "--quiet",
        "--preset",
        "CT=ct-abdomen",
        "--preset",
        "MR=none",
    ]
    reference = tmp_path / "reference"
    subprocess.run(args + ["-o", str(reference)], check=True, cwd=ROOT, timeout=300)

    out = tmp_path / "out"
    proc = subprocess.Popen(args + ["-o", str(out)], cwd=ROOT, start_new_session=True)
    deadline = time.monotonic() + 120
    # Kill the whole process group (parent and workers) once the shards hold half the bytes of
    # the finished reference: several volumes are complete by then, whatever the machine's load
    # (a fixed byte count raced the first volume's `complete` flag on a busy machine).
    half = 0.5 * sum(p.stat().st_size for p in reference.glob("shard-*.h5"))
    while time.monotonic() < deadline:
        partial = list(out.glob("shard-*.h5.partial")) if out.exists() else []
        if sum(p.stat().st_size for p in partial) > half:
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "report.json").exists(), "the run finished before it was killed; nothing was tested"
    assert list(out.glob("shard-*.h5.partial")), "expected partial shards left by the kill"

    subprocess.run(args + ["-o", str(out)], check=True, cwd=ROOT, timeout=300)
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["converted"] + report["counts"]["already_converted"] == 10
    assert report["counts"]["already_converted"] >= 1  # what the killed run finished was kept
    assert not list(out.glob("*.partial"))
    got, want = _content(out), _content(reference)
    assert len(want) == 10 and got == want


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_content_as_the_local_pool(tmp_path):
    distributed = pytest.importorskip("distributed")
    src = _export(tmp_path / "src", 4)
    pool = medload.convert(src, tmp_path / "pool", pipeline={"MR": "none"}, size=32, workers=2, progress=False)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        on_dask = medload.convert(
            src, tmp_path / "dask", pipeline={"MR": "none"}, size=32, dask=cluster.scheduler_address, progress=False
        )
    assert pool.ok and on_dask.ok and on_dask["options"]["backend"].startswith("dask tcp://")
    assert len(on_dask["shards"]) == 4  # one shard per task
    got, want = _content(tmp_path / "dask"), _content(tmp_path / "pool")
    assert len(want) == 4 and got == want


def test_phi_audit_default_output_and_report_hold_no_identifying_value(tmp_path):
    phi = write_phi_export(tmp_path / "export")
    out = tmp_path / "out"
    assert (
        main(
            [
                "convert",
                str(tmp_path / "export"),
                "-o",
                str(out),
                "--workers",
                "0",
                "--quiet",
                "--phi-key",
                "audit-secret",
                *CHEAP,
            ]
        )
        == 0
    )
    files = sorted(p for p in out.iterdir() if p.is_file())
    assert {p.name for p in files} == {"report.json", "shard-0000.h5"}
    assert len(phi["values"]) > 30
    assert find_values(files, phi["values"]) == {}
    # Descriptions are removed by the basic profile too (kept only with --keep-descriptions).
    descriptors = [d for values in phi["descriptors"].values() for d in values]
    assert find_values(files, descriptors) == {}
    assert "QMI-CT-SCANNER-9" in phi["values"]  # StationName: never written, even with descriptions
    # pseudonyms depend on the key: the same patient, the same key across runs
    store = medload.open(out)
    assert len({r.patient_key for r in store.volumes}) == 2
    assert all(r.patient_key.startswith("pat-") for r in store.volumes)

    kept = tmp_path / "kept"
    assert main(["convert", str(tmp_path / "export"), "-o", str(kept), "--workers", "0", "--quiet", "--keep-phi", *CHEAP]) == 0
    hits = find_values(sorted(kept.glob("*.h5")), phi["names"] + phi["ids"])
    assert sorted(hits) == sorted(phi["names"] + phi["ids"])
    phi_meta = [r.meta.get("phi", {}) for r in medload.open(kept).volumes]
    assert sorted(m["PatientID"] for m in phi_meta) == sorted(phi["ids"])
    # --keep-phi implies --keep-descriptions: the series descriptions are in store and report
    assert sorted(find_values(sorted(kept.iterdir()), phi["descriptors"]["series_descriptions"])) == sorted(
        phi["descriptors"]["series_descriptions"]
    )

    described = tmp_path / "described"
    assert (
        main(
            [
                "convert",
                str(tmp_path / "export"),
                "-o",
                str(described),
                "--workers",
                "0",
                "--quiet",
                "--keep-descriptions",
                *CHEAP,
            ]
        )
        == 0
    )
    files = sorted(p for p in described.iterdir() if p.is_file())
    hits = find_values(files, phi["descriptors"]["series_descriptions"] + phi["values"])
    assert sorted(hits) == sorted(phi["descriptors"]["series_descriptions"])
    assert all(
        set(where) == {"report.json", "shard-0000.h5"} for where in ({Path(f).name for f in found} for found in hits.values())
    )
    stored = sorted(r.meta.get("description") for r in medload.open(described).volumes)
    assert stored == sorted(phi["descriptors"]["series_descriptions"])
    # identified and de-identified volumes never mix in one store
    with pytest.raises(medload.StoreError, match="another pipeline"):
        medload.convert(
            tmp_path / "export",
            out,
            pipeline={"CT": "ct-abdomen", "MR": "none"},
            size=32,
            keep_phi=True,
            workers=0,
            progress=False,
        )


def test_labels_csv_and_masks_folder(tmp_path):
    src = _export(tmp_path / "src", 2)
    series = medload.scan(src)
    csv = tmp_path / "labels.csv"
    csv.write_text(
        "series_key,label\n"
        + "".join(f"{s.series_key},{'tumour' if i else 'normal'}\n" for i, s in enumerate(series))
        + "ser-unknown,normal\n"
    )
    # a mask on the grid of the first series, named after its series key (both series share one
    # grid, so matching by grid alone would be ambiguous and is not done)
    ct = medload.load(series[0])
    mask = ct.with_array((ct.array > ct.array.mean()).astype(np.uint8))
    (tmp_path / "masks").mkdir()
    mask.to_nifti().to_filename(str(tmp_path / "masks" / f"{series[0].series_key}.nii.gz"))
    report = medload.convert(
        src, tmp_path / "out", pipeline={"MR": "none"}, workers=0, progress=False, labels=csv, masks=tmp_path / "masks"
    )
    assert report.ok
    assert report["options"]["labels"]["classes"] == ["normal", "tumour"]
    assert report["options"]["labels"]["unknown_keys"] == ["ser-unknown"]
    store = medload.open(tmp_path / "out")
    by_key = {r.series_key: (i, r) for i, r in enumerate(store.volumes)}
    i, rec = by_key[series[0].series_key]
    assert rec.label == 0 and rec.has_mask
    assert np.array_equal(store.read_mask(i, 0, rec.n_slices), mask.array)
    assert by_key[series[1].series_key][1].label == 1 and not by_key[series[1].series_key][1].has_mask


@pytest.mark.parametrize(
    "content, message",
    [
        (b"series_key,label\nser-a,tumour\nser-b\n", "line 3: expected a series_key and a label"),
        (b"series_key,label\nser-a,\n", "line 2: expected a series_key and a label"),
        ("series_key,label\nser-a,tumeur maligne \xe9\n".encode("latin-1"), "is not a UTF-8 CSV"),
    ],
)
def test_a_bad_labels_file_stops_before_the_batch_with_the_line(tmp_path, content, message):
    src = _export(tmp_path / "src", 1, slices=2, size=16)
    csv = tmp_path / "labels.csv"
    csv.write_bytes(content)
    with pytest.raises(medload.MedloadError, match=message):
        medload.convert(src, tmp_path / "out", labels=csv, workers=0, progress=False)
    assert main(["convert", str(src), "-o", str(tmp_path / "out2"), "--labels", str(csv), "--workers", "0"]) == 2


def test_a_probability_map_as_mask_fails_that_series_not_silently_rounded(tmp_path):
    src = _export(tmp_path / "src", 2)
    series = medload.scan(src)
    ct = medload.load(series[0])
    rng = np.random.default_rng(7)
    probability = ct.with_array(rng.random(ct.shape).astype(np.float32))  # 0..1, not labels
    (tmp_path / "masks").mkdir()
    probability.to_nifti().to_filename(str(tmp_path / "masks" / f"{series[0].series_key}.nii.gz"))
    report = medload.convert(src, tmp_path / "out", pipeline={"MR": "none"}, workers=0, progress=False, masks=tmp_path / "masks")
    by_key = {e["series_key"]: e for e in report["series"]}
    failed = by_key[series[0].series_key]
    assert failed["status"] == "failed" and failed["stage"] == "mask"
    assert "non-integer" in failed["reason"] and "expected integer labels" in failed["reason"]
    assert by_key[series[1].series_key]["status"] == "converted"
    assert report.counts["converted"] == 1 and report.counts["failed"] == 1


def test_a_cifti_file_in_the_masks_folder_fails_that_series_with_a_medload_error(tmp_path):
    # CIFTI-2 is a NIfTI-2 file nibabel opens as a Cifti2Image: no affine, no voxel grid. It
    # ended in an AttributeError from inside Volume.from_nifti (found by mypy: nib.load's type).
    from nibabel import cifti2

    src = _export(tmp_path / "src", 2)
    series = medload.scan(src)
    (tmp_path / "masks").mkdir()
    axes = (cifti2.ScalarAxis(["lesion"]), cifti2.BrainModelAxis.from_mask(np.ones((2, 2, 2), bool), affine=np.eye(4)))
    cifti2.Cifti2Image(np.ones((1, 8), np.float32), header=axes).to_filename(
        str(tmp_path / "masks" / f"{series[0].series_key}.nii")
    )
    report = medload.convert(src, tmp_path / "out", pipeline={"MR": "none"}, workers=0, progress=False, masks=tmp_path / "masks")
    failed = {e["series_key"]: e for e in report["series"]}[series[0].series_key]
    assert failed["status"] == "failed" and failed["stage"] == "mask", failed
    assert "Cifti2Image" in failed["reason"] and "expected a NIfTI label volume" in failed["reason"]
    assert report.counts["converted"] == 1 and report.counts["failed"] == 1


def test_single_file_output_and_its_limits(tmp_path):
    src = _export(tmp_path / "src", 2)
    report = medload.convert(src, tmp_path / "one.h5", pipeline={"MR": "none"}, size=32, progress=False)
    assert report.ok and report["shards"] == ["one.h5"]
    assert (tmp_path / "one.report.json").is_file() and len(medload.open(tmp_path / "one.h5")) == 24
    with pytest.raises(medload.MedloadError, match="one file, written by one process"):
        medload.convert(src, tmp_path / "two.h5", workers=2, progress=False)


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_keeps_what_was_written_and_a_rerun_finishes(tmp_path):
    src = _export(tmp_path / "src", 8, slices=24, size=64)
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "medload",
        "convert",
        str(src),
        "-o",
        str(out),
        "--workers",
        "2",
        "--quiet",
        "--preset",
        "CT=ct-abdomen",
        "--preset",
        "MR=none",
    ]
    proc = subprocess.Popen(args, cwd=ROOT, start_new_session=True, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        partial = list(out.glob("shard-*.h5.partial")) if out.exists() else []
        if any(p.stat().st_size > 40_000 for p in partial):
            break
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True
    assert report["counts"]["converted"] >= 1 and report["counts"]["not_run"] >= 1
    # the workers closed their shards: finished files, no partial ones, readable now
    assert not list(out.glob("*.partial")) and len(medload.open(out).volumes) == report["counts"]["converted"]
    again = subprocess.run(args, cwd=ROOT, timeout=300)
    assert again.returncode == 0
    final = json.loads((out / "report.json").read_text())
    assert final["counts"]["already_converted"] == report["counts"]["converted"]
    assert final["counts"]["converted"] + final["counts"]["already_converted"] == 8


def _export_with_a_broken_series(src: Path) -> Path:
    _export(src, 1)
    truth = write_dicom_series(src / "broken", shape=(6, 16, 16), seed=7, return_array=False, series_description="gap")
    os.remove(truth["files"][3])  # a missing slice: refused by the reader
    return src


def test_quiet_still_prints_one_line_per_failed_series(tmp_path, capsys):
    src = _export_with_a_broken_series(tmp_path / "src")
    code = main(["convert", str(src), "-o", str(tmp_path / "out"), "--workers", "0", "--quiet", *CHEAP])
    assert code == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("failed: ser-") and "missing slices" in lines[0]
    assert "'gap'" not in lines[0]  # no description by default, on screen either


def test_report_paths_are_relative_to_a_relative_source(tmp_path, monkeypatch):
    _export_with_a_broken_series(tmp_path / "export")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    report = medload.convert("../export", "out", pipeline={"MR": "none"}, size=32, workers=0, progress=False)
    (failed,) = report.failed
    reason = failed["reason"]
    # The folder is named by its pseudonym (its name could be a patient's); the terminal and
    # report.paths (in memory, never written) map it back.
    assert "missing slices" in reason and "broken" not in reason
    (folder,) = set(re.findall(r"dir-[0-9a-f]{16}", reason))
    assert report.paths["names"][folder] == str(tmp_path / "export" / "broken")
    assert "../export" not in reason and str(tmp_path) not in reason and "export/" not in reason
    text = (work / "out" / "report.json").read_text()
    assert "../export/" not in text.replace('"../export"', "") and str(tmp_path / "export") not in text


def test_other_pipeline_error_says_what_differs_and_how_to_start_over(tmp_path):
    src = _export(tmp_path / "src", 1)
    out = tmp_path / "out"
    assert medload.convert(src, out, pipeline="ct-abdomen", size=32, workers=0, progress=False).ok
    with pytest.raises(medload.StoreError) as info:
        medload.convert(src, out, pipeline="ct-brain", size=32, workers=0, progress=False)
    message = str(info.value)
    assert "step 2 window: width 400.0 in the store, 80.0 now" in message
    assert "--overwrite" in message
    assert '"steps"' not in message and len(message) < 600  # a diff, not two whole configurations
    with pytest.raises(medload.StoreError) as info:
        medload.convert(src, out, pipeline="ct-abdomen", size=48, workers=0, progress=False)
    assert "resize_slices: size [32, 32] in the store, [48, 48] now" in str(info.value)


def test_nifti_file_names_are_descriptions(tmp_path):
    import nibabel as nib

    src = tmp_path / "nifti"
    src.mkdir()
    name = "Quartermain_Zebulon_head"
    nib.save(nib.Nifti1Image(np.arange(4 * 6 * 5, dtype=np.int16).reshape(5, 6, 4), np.eye(4)), src / f"{name}.nii.gz")
    plain = medload.convert(src, tmp_path / "plain", pipeline="none", workers=0, progress=False)
    assert plain.ok
    files = sorted(p for p in (tmp_path / "plain").iterdir() if p.is_file())
    assert find_values(files, [name]) == {}
    kept = medload.convert(src, tmp_path / "kept", pipeline="none", keep_descriptions=True, workers=0, progress=False)
    assert kept.ok and kept["series"][0]["description"] == name
    assert [r.meta["description"] for r in medload.open(tmp_path / "kept").volumes] == [name]


def test_a_bug_on_one_series_is_reported_as_internal_with_its_traceback_and_exit_3(tmp_path, monkeypatch):
    # A medload bug must not read as "the file is damaged": the entry says internal, holds the
    # traceback, the other series are converted, and the command exits 3 (not 1, a data error).
    import medload.io

    src = _export(tmp_path / "src", 2, slices=3, size=16)

    def buggy(original):
        def buggy_load(series, *args, **kwargs):
            if series.modality == "MR":
                return original(series, *args, **kwargs)
            raise KeyError("a bug in medload")

        return buggy_load

    # the CT's window preset reads it with load_stored (looked up from its codes), the MR with load
    monkeypatch.setattr(medload.io, "load", buggy(medload.io.load))
    monkeypatch.setattr(medload.io, "load_stored", buggy(medload.io.load_stored))
    report = medload.convert(src, tmp_path / "out", workers=0, progress=False)
    (failed,) = report.failed
    assert failed["internal"] is True and failed["stage"] == "read" and failed["error"] == "KeyError"
    assert "not a damaged file" in failed["reason"] and "buggy_load" in failed["traceback"]
    assert report.counts["converted"] == 1
    assert main(["convert", str(src), "-o", str(tmp_path / "out2"), "--workers", "0", "--quiet"]) == 3
