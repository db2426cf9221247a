"""Issue 11, faults: workers end with their parent; one convert per output; locks of the dead."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SLOW_JOB = textwrap.dedent("""
    import os, time

    class Slow:
        def __init__(self, slot):
            self.folder = os.environ["PIDS"]

        def __call__(self, task):
            open(os.path.join(self.folder, str(os.getpid())), "w").close()
            time.sleep(120)

        def close(self):
            pass
""")

MAIN = textwrap.dedent("""
    import sys
    from slowjob import Slow
    from medload.parallel import run_tasks

    if __name__ == "__main__":
        run_tasks(Slow, [(str(i), i) for i in range(4)], workers=2)
""")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL and /proc semantics of Linux")
def test_workers_end_when_the_main_process_is_sigkilled(tmp_path):
    (tmp_path / "slowjob.py").write_text(SLOW_JOB)
    (tmp_path / "main.py").write_text(MAIN)
    pids = tmp_path / "pids"
    pids.mkdir()
    env = dict(os.environ, PIDS=str(pids), PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    main = subprocess.Popen([sys.executable, str(tmp_path / "main.py")], env=env, cwd=tmp_path)
    try:
        deadline = time.time() + 60
        while len(list(pids.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.2)
        workers = [int(p.name) for p in pids.iterdir()]
        assert len(workers) == 2 and all(_alive(w) for w in workers)
        main.send_signal(signal.SIGKILL)
        main.wait()
        deadline = time.time() + 15
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not [w for w in workers if _alive(w)], "workers outlived their SIGKILLed parent"
    finally:
        main.kill()
        for p in pids.iterdir():
            try:
                os.kill(int(p.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


BUSY_JOB = textwrap.dedent("""
    import os

    class Busy:
        def __init__(self, slot):
            self.folder = os.environ["PIDS"]

        def __call__(self, task):
            open(os.path.join(self.folder, str(os.getpid())), "w").close()
            return sum(range(10**13))  # one C call that holds the GIL for hours, as a decoder can

        def close(self):
            pass
""")

DASK_MAIN = textwrap.dedent("""
    from busyjob import Busy
    from medload.parallel import run_tasks

    if __name__ == "__main__":
        run_tasks(Busy, [(str(i), i) for i in range(4)], workers=2, dask="local")
""")


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL and /proc semantics of Linux")
def test_dask_local_workers_end_when_the_main_process_is_sigkilled_even_holding_the_gil(tmp_path):
    # Dask's own check (a thread reading a pipe from the parent) needs the GIL: a worker in a
    # long C call outlived its SIGKILLed parent until the call returned. medload.dask_worker
    # makes the kernel end it (PR_SET_PDEATHSIG), as the local pool's workers.
    pytest.importorskip("distributed")
    psutil = pytest.importorskip("psutil")  # a dependency of distributed
    (tmp_path / "busyjob.py").write_text(BUSY_JOB)
    (tmp_path / "main.py").write_text(DASK_MAIN)
    pids = tmp_path / "pids"
    pids.mkdir()
    env = dict(os.environ, PIDS=str(pids), PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    main = subprocess.Popen([sys.executable, str(tmp_path / "main.py")], env=env, cwd=tmp_path)
    descendants = []
    try:
        deadline = time.time() + 120
        while len(list(pids.iterdir())) < 2 and time.time() < deadline:
            time.sleep(0.2)
        workers = [int(p.name) for p in pids.iterdir()]
        descendants = psutil.Process(main.pid).children(recursive=True)
        assert len(workers) == 2 and all(_alive(w) for w in workers)
        assert set(workers) <= {p.pid for p in descendants}
        main.send_signal(signal.SIGKILL)
        main.wait()
        deadline = time.time() + 15
        while any(_alive(p.pid) for p in descendants) and time.time() < deadline:
            time.sleep(0.2)
        assert not [p.pid for p in descendants if _alive(p.pid)], "dask workers outlived their SIGKILLed parent"
    finally:
        main.kill()
        for p in descendants:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def _ct_folder(tmp_path: Path) -> Path:
    from fixtures.synthetic import write_dicom_series

    src = tmp_path / "src"
    write_dicom_series(src / "a", shape=(3, 8, 6), seed=1, series_uid="1.2.826.0.1.3680043.8.498.1")
    return src


def test_a_second_convert_into_one_output_is_refused_naming_the_holder(tmp_path):
    import medload
    from medload.batch.runlock import run_lock

    src, out = _ct_folder(tmp_path), tmp_path / "out"
    holder = rf"another medload convert \(process {os.getpid()} on "
    with run_lock(out, False), pytest.raises(medload.StoreError, match=holder):  # another run holds the output
        medload.convert(src, out, workers=0, progress=False)
    assert not list(out.glob("shard-*"))  # refused before writing anything
    report = medload.convert(src, out, workers=0, progress=False)
    assert report.counts["converted"] == 1 and not (out / ".medload-convert.lock").exists()


def test_a_run_that_opened_the_lock_file_as_the_holder_removed_it_does_not_share_the_output(tmp_path, monkeypatch):
    # B opens the lock file while A holds it; A ends (removes the file, drops the lock); B then
    # locks the removed file. C, starting now, makes a new lock file: B and C must not both run.
    import fcntl

    import medload
    from medload.batch.runlock import run_lock

    out = tmp_path / "out"
    first = run_lock(out, False)
    first.__enter__()
    real_flock = fcntl.flock
    calls = []

    def flock_once_the_holder_ended(fd, operation):
        if not calls:
            first.__exit__(None, None, None)  # A finishes between B's open and B's flock
        calls.append(fd)
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_once_the_holder_ended)
    with run_lock(out, False) as path:
        assert path.exists()  # B holds the lock file that is there, not a removed one
        with pytest.raises(medload.StoreError, match="another medload convert"), run_lock(out, False):
            pass  # C is refused
    assert not (out / ".medload-convert.lock").exists()


def test_the_run_lock_of_a_killed_convert_is_taken_over(tmp_path):
    import medload

    src, out = _ct_folder(tmp_path), tmp_path / "out"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from medload.batch.runlock import run_lock
        with run_lock(Path({str(out)!r}), False):
            print("held", flush=True)
            time.sleep(120)
    """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(medload.StoreError, match=f"process {holder.pid} "):
            medload.convert(src, out, workers=0, progress=False)
        holder.send_signal(signal.SIGKILL)  # as the OOM killer does: the lock file stays behind
        holder.wait()
        assert (out / ".medload-convert.lock").exists()
        assert medload.convert(src, out, workers=0, progress=False).counts["converted"] == 1
    finally:
        holder.kill()


def test_overwrite_removes_only_what_medload_wrote(tmp_path):
    import medload

    src = _ct_folder(tmp_path)
    out = tmp_path / "out"
    medload.convert(src, out, workers=0, progress=False)
    mine = out / "shard-2023-batch"  # a user's folder whose name looks like a shard
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    (out / "shard-notes.txt").write_text("a user's file")
    report = medload.convert(src, out, workers=0, progress=False, overwrite=True)
    assert report.counts["converted"] == 1
    assert (mine / "notes.txt").read_text() == "keep me"
    assert (out / "shard-notes.txt").read_text() == "a user's file"


def test_convert_into_its_own_source_with_overwrite_keeps_the_source(tmp_path):
    import medload

    src = _ct_folder(tmp_path)
    before = sorted(p.relative_to(src) for p in src.rglob("*"))
    (src / "shard-2023-batch").mkdir()
    (src / "shard-2023-batch" / "x.dcm").write_bytes(b"")
    medload.convert(src, src, workers=0, progress=False, overwrite=True)
    after = {p.relative_to(src) for p in src.rglob("*")}
    assert set(before) <= after and (src / "shard-2023-batch" / "x.dcm").exists()


def test_disk_full_is_a_store_error_with_a_report_and_the_rerun_resumes(tmp_path, monkeypatch):
    """A full disk gave exit 3, a raw OSError, no report.json and a report.json.tmp left."""
    import errno

    import h5py

    import medload
    from fixtures.synthetic import write_dicom_series

    src, out = tmp_path / "src", tmp_path / "out"
    for k in range(4):
        write_dicom_series(
            src / f"s{k}", shape=(6, 16, 16), seed=k, series_number=k + 1, series_uid=f"1.2.826.0.1.3680043.8.498.{k + 20}"
        )
    real_setitem = h5py.Dataset.__setitem__
    budget = {"images": 2}  # the disk fills while the third volume is written

    def setitem(self, index, value):
        if self.name.endswith("/image"):
            if budget["images"] == 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            budget["images"] -= 1
        return real_setitem(self, index, value)

    real_write_text = Path.write_text

    def write_text(self, *args, **kwargs):
        if self.name.startswith("report.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", setitem)
    monkeypatch.setattr(Path, "write_text", write_text)
    report = medload.convert(src, out, workers=0, progress=False, dtype="float32", compression="none")
    monkeypatch.undo()
    assert not report.ok and report.counts["converted"] == 2 and report.counts["failed"] == 2
    failed = [s for s in report.series if s["status"] == "failed"]
    assert all(
        s["error"] == "StoreError"
        and "the disk is full" in s["reason"]
        and "shard-0000.h5" in s["reason"]
        and "MiB free" in s["reason"]
        for s in failed
    )
    assert not (out / "report.json.tmp").exists()  # the report went to the temporary folder
    assert len(medload.open(out).volumes) == 2  # the volumes written before are intact
    again = medload.convert(src, out, workers=0, progress=False, dtype="float32", compression="none")
    assert again.ok and again.counts["converted"] == 2 and again.counts["already_converted"] == 2
    assert (out / "report.json").exists() and len(medload.open(out).volumes) == 4


@pytest.mark.skipif(sys.platform != "linux", reason="SIGKILL semantics of Linux")
def test_sigkill_of_the_main_process_then_a_rerun_gives_the_uninterrupted_content(tmp_path):
    """Issue 11, 'what must be shown' 3: kill -9 of convert alone, then the same command again."""
    import numpy as np

    import medload
    from fixtures.synthetic import write_dicom_series

    src = tmp_path / "src"
    for k in range(6):
        write_dicom_series(
            src / f"s{k}", shape=(24, 64, 64), seed=k, series_number=k + 1, series_uid=f"1.2.826.0.1.3680043.8.498.{k + 70}"
        )
    medload.convert(src, tmp_path / "whole", workers=2, progress=False)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "medload", "convert", str(src), "-o", str(tmp_path / "killed"), "--quiet", "--workers", "2"]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.time() + 60
    while time.time() < deadline and not list((tmp_path / "killed").glob("shard-*")):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert subprocess.run(cmd, env=env, timeout=300, check=False).returncode == 0
    whole, again = medload.open(tmp_path / "whole"), medload.open(tmp_path / "killed")

    def content(store):
        out = {}
        for i, rec in enumerate(store.volumes):
            vol = store.read_volume(i)
            out[vol.meta.get("source_hash", rec)] = (vol.array.tobytes(), np.round(vol.affine, 6).tobytes())
        return out

    assert content(whole) == content(again) and len(content(again)) == 6


@pytest.mark.parametrize(
    ("raised", "said"),
    [
        # The error number decides, whatever the words (a translated strerror, a library's own).
        (OSError(28, "Schreiben fehlgeschlagen: Auf dem Gerät ist kein Speicherplatz mehr verfügbar"), "the disk is full"),
        (OSError(122, "write failed"), "the disk quota is used up"),
        # The words without the number decide nothing: a generic write failure, said as such.
        (OSError("Can't write data (errno = 28, error message = 'No space left on device')"), "write failed while"),
        (OSError(5, "Input/output error"), "write failed while"),
    ],
)
def test_a_full_disk_is_recognized_by_its_error_number(tmp_path, monkeypatch, raised, said):
    import errno

    import h5py
    import numpy as np

    import medload

    assert (errno.ENOSPC, errno.EDQUOT) == (28, 122)  # Linux's numbers, as written above

    def setitem(self, index, value):
        raise raised

    store = medload.Store.create(tmp_path / "s.h5", dtype="float32", compression="none")
    monkeypatch.setattr(h5py.Dataset, "__setitem__", setitem)
    with pytest.raises(medload.StoreError) as info:
        store.add(medload.Volume(np.zeros((2, 4, 4), np.float32), np.eye(4), meta={"series_key": "a"}))
    monkeypatch.undo()
    store.abandon()
    message = str(info.value)
    assert said in message and "s.h5.partial" in message and "MiB free" in message
    assert ("the disk" in message) == (raised.errno in (28, 122))


REAL_WRITE_FAILURE = textwrap.dedent("""
    import os, resource, signal, sys
    import numpy as np
    import medload

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit write() fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))
    store = medload.Store.create(sys.argv[1], dtype="float32", compression="none")
    try:
        for k in range(8):
            vol = medload.Volume(np.full((8, 64, 64), k, np.float32), np.eye(4), meta={"series_key": f"v{k}"})
            store.add(vol)
    except medload.StoreError as exc:
        print(exc.__cause__.errno, "|", exc, flush=True)
    os._exit(0)  # HDF5 cannot close a file past the size limit cleanly; nothing more to test here
""")


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE and SIGXFSZ semantics of Linux")
def test_a_real_hdf5_write_failure_carries_its_error_number(tmp_path):
    # What the errno decision above relies on: h5py passes HDF5's file-driver errno on as
    # OSError.errno (EFBIG here: the file-size limit, a write failure we can cause unprivileged).
    import errno

    (tmp_path / "fill.py").write_text(REAL_WRITE_FAILURE)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, str(tmp_path / "fill.py"), str(tmp_path / "s.h5")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    number, _, message = done.stdout.partition(" | ")
    assert int(number) == errno.EFBIG, done.stdout + done.stderr[-2000:]
    assert "write failed while writing volume" in message and "the disk is full" not in message
