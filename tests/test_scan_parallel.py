"""scan(workers=N) reads headers on worker processes and finds exactly what a serial scan finds."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures.synthetic import write_dicom_series, write_nifti
from medload.io import scan
from medload.io.scan import ScanResult
from medload.problems import ProblemKind
from tests.conftest import ROOT, shared_path

import medload.io.collect as collect_module


@pytest.fixture
def pool_for_any_tree(monkeypatch):
    """Use the process pool even for a small tree, in chunks of a few files."""
    monkeypatch.setattr(collect_module, "PARALLEL_MIN_FILES", 1)
    monkeypatch.setattr(collect_module, "CHUNK_FILES", 4)


def _same(parallel: ScanResult, serial: ScanResult) -> None:
    assert parallel.series == serial.series  # same series, same order, same keys and headers
    assert [s.series_key for s in parallel] == [s.series_key for s in serial]
    assert parallel.errors == serial.errors
    assert list(parallel.skipped.items()) == list(serial.skipped.items())
    assert list(parallel.fallbacks.items()) == list(serial.fallbacks.items())
    assert (parallel.n_files, parallel.unmatched_masks) == (serial.n_files, serial.unmatched_masks)
    assert parallel == serial


def _mixed_tree(root: Path) -> None:
    """DICOM series, a damaged slice, non-DICOM files, a NIfTI volume and PNG images."""
    write_dicom_series(root / "ct", shape=(6, 12, 10), series_number=1, seed=1)
    write_dicom_series(root / "mr", shape=(4, 8, 8), modality="MR", series_number=2, patient_id="P2", seed=2)
    damaged = root / "broken"
    write_dicom_series(damaged, shape=(5, 8, 8), series_number=3, patient_id="P3", seed=3)
    victim = sorted(damaged.iterdir())[2]
    victim.write_bytes(victim.read_bytes()[:300])  # cut inside its header
    (root / "notes.txt").write_text("not an image")
    (root / "ct" / "README").write_bytes(b"\x00\x01 binary, not DICOM")
    write_nifti(root / "vol.nii.gz", shape=(4, 5, 6))
    images = root / "xray"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 20), 40 * i, np.uint8)).save(images / f"img{i}.png")


def test_a_parallel_scan_of_a_mixed_tree_equals_the_serial_scan(tmp_path, pool_for_any_tree):
    _mixed_tree(tmp_path)
    serial = scan(tmp_path, workers=0)
    assert sorted({s.kind for s in serial}) == ["dicom", "image", "nifti"]
    assert len(serial.errors) == 1 and serial.errors[0].path.endswith(".dcm")
    assert serial.skipped["not DICOM"] == 2
    damaged = [s for s in serial if any(p.kind is ProblemKind.DAMAGED_FILES for p in s.problems)]
    assert len(damaged) == 1 and damaged[0].shape[0] == 4
    parallel = scan(tmp_path, workers=2)
    _same(parallel, serial)


def test_a_parallel_scan_of_the_shared_data_equals_the_serial_scan(pool_for_any_tree, monkeypatch):
    data = shared_path()
    monkeypatch.setattr(collect_module, "CHUNK_FILES", 64)
    serial = scan(data, workers=0)
    assert len(serial) > 50 and serial.n_files > 500
    _same(scan(data, workers=2), serial)


def test_a_small_tree_is_read_in_this_process(tmp_path, monkeypatch):
    write_dicom_series(tmp_path / "ct", shape=(6, 8, 8))

    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started for 6 files")

    monkeypatch.setattr(collect_module, "run_local", no_pool)
    assert len(scan(tmp_path, workers=4)) == 1


class DyingReader(collect_module._HeaderReader):
    """Reads headers as scan's worker does, but its process dies on any file named crash.dcm,
    as one does when a codec segfaults on a file."""

    def __call__(self, task):
        if any(os.path.basename(f) == "crash.dcm" for f in task):
            os._exit(11)
        return super().__call__(task)


def test_a_worker_that_dies_on_a_file_names_it_and_the_scan_goes_on(tmp_path, pool_for_any_tree, monkeypatch):
    _mixed_tree(tmp_path)
    serial = scan(tmp_path, workers=0)
    crash = tmp_path / "mr" / "crash.dcm"
    shutil.copy(sorted((tmp_path / "mr").glob("*.dcm"))[0], crash)
    monkeypatch.setattr(collect_module, "_HeaderReader", DyingReader)
    parallel = scan(tmp_path, workers=2)
    assert parallel.n_files == serial.n_files + 1
    # the file that killed its worker is an error naming it; the one damaged slice still is
    crashed = [e for e in parallel.errors if e.path == str(crash)]
    assert len(crashed) == 1 and "crash.dcm" in crashed[0].message and "exit code 11" in crashed[0].message
    assert [e for e in parallel.errors if e.path != str(crash)] == serial.errors
    # every other file was read: the series of other folders are those of the serial scan
    mr_folder = str(tmp_path / "mr")
    others = [s for s in parallel if not s.files[0].startswith(mr_folder)]
    assert others == [s for s in serial if not s.files[0].startswith(mr_folder)]
    # the crashed file's series is found, and marked incomplete (its folder holds one series)
    (mr,) = [s for s in parallel if s.files[0].startswith(mr_folder)]
    assert mr.shape == (4, 8, 8) and mr.info["damaged_files"] == [str(crash)]
    assert any(p.kind is ProblemKind.DAMAGED_FILES for p in mr.problems)


SLOW_SCAN = textwrap.dedent("""
    import os, sys, time
    import medload.io.collect as collect

    class SlowReader(collect._HeaderReader):
        def __call__(self, task):
            open(os.path.join(os.environ["PIDS"], str(os.getpid())), "w").close()
            time.sleep(0.5)
            return super().__call__(task)

    if __name__ == "__main__":
        collect.PARALLEL_MIN_FILES, collect.CHUNK_FILES, collect._HeaderReader = 1, 1, SlowReader
        from medload.io import scan
        try:
            scan(sys.argv[1], workers=2)
        except KeyboardInterrupt:
            print("interrupted")
            sys.exit(130)
        print("finished")
""")


@pytest.mark.skipif(sys.platform != "linux", reason="process groups and /proc semantics of Linux")
def test_ctrl_c_stops_a_parallel_scan_and_leaves_no_worker(tmp_path):
    psutil = pytest.importorskip("psutil")
    write_dicom_series(tmp_path / "tree" / "ct", shape=(40, 8, 8))
    (tmp_path / "slowscan.py").write_text(SLOW_SCAN)
    pids = tmp_path / "pids"
    pids.mkdir()
    env = dict(os.environ, PIDS=str(pids), PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    cmd = [sys.executable, str(tmp_path / "slowscan.py"), str(tmp_path / "tree")]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 120
        while len(list(pids.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.1)
        workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
        out, _ = proc.communicate(timeout=120)
        assert (proc.returncode, out.decode().strip()) == (130, "interrupted")
        deadline = time.time() + 15
        alive = workers
        while alive and time.time() < deadline:
            alive = [w for w in workers if psutil.pid_exists(w) and psutil.Process(w).status() != psutil.STATUS_ZOMBIE]
            time.sleep(0.2)
        assert not alive, "scan workers outlived an interrupted scan"
    finally:
        proc.kill()


UNGUARDED = textwrap.dedent("""
    import sys, warnings
    import medload.io.collect as collect
    collect.PARALLEL_MIN_FILES = 1
    from medload.io import scan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found = scan(sys.argv[1], workers=None if sys.argv[2] == "default" else int(sys.argv[2]))
    print(len(found), sum(issubclass(w.category, RuntimeWarning) for w in caught))
""")


@pytest.mark.parametrize(("workers", "warned"), [("default", 0), ("2", 1)])
def test_a_script_without_the_main_guard_scans_in_its_own_process(tmp_path, workers, warned):
    # Worker processes would re-run the script's top level; the default reads here quietly,
    # an explicit workers=2 says why it could not be used.
    write_dicom_series(tmp_path / "tree" / "ct", shape=(6, 8, 8))
    (tmp_path / "unguarded.py").write_text(UNGUARDED)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, str(tmp_path / "unguarded.py"), str(tmp_path / "tree"), workers]
    run = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["1", str(warned)]
