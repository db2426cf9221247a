"""Work a convert does once, not again in every worker (issue 15's conversion CPU).

- The source names that de-identify a series' messages and meta (:class:`medload.deid.SourceNames`:
  a keyed pseudonym and a few path spellings per file) are made by the plan and travel with the
  task; the worker uses them instead of making the same names again.
- A worker process imports what converting needs, not the planning side of the batch
  (plan, job, report, label CSVs, the run lock), nor nibabel for a series without a mask.
- An uncompressed multi-frame file (enhanced MR) whose header scan parsed is not parsed again
  by pydicom to load it: its frames are read at PixelData's offset.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import medload
from fixtures.synthetic import ct_series, write_nifti
from tests.conftest import shared_path
from medload.batch.worker import Job, Task
from medload.deid import SourceNames

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small CT series, a NIfTI file (its name is a hidden text) and its mask folder."""
    root = tmp_path_factory.mktemp("work-once")
    src = root / "export"
    ct_series(src / "PATIENT_SMITH" / "ct1", n_slices=6, size=32, seed=1)
    ct_series(src / "PATIENT_SMITH" / "ct2", n_slices=5, size=32, seed=2)
    write_nifti(src / "brain_of_jones.nii.gz", shape=(4, 16, 16), seed=3)
    masks = root / "masks"
    masks.mkdir()
    write_nifti(masks / "brain_of_jones.nii.gz", shape=(4, 16, 16), dtype="uint8", array=np.ones((4, 16, 16), np.uint8))
    return root


def _plan(root: Path, tmp_path: Path, **options: object) -> object:
    from medload.batch.plan import make_plan

    defaults = dict(
        pipelines={},
        store_options={},
        workers=0,
        dask=None,
        labels=None,
        masks=str(root / "masks"),
        keep_phi=False,
        keep_descriptions=False,
        phi_key=b"a test key of enough bytes for hmac",
        overwrite=True,
        patient_pattern=None,
        patients=None,
        allow_burned_in=False,
        require_masks=False,
    )
    defaults.update(options)
    return make_plan([str(root / "export")], str(tmp_path / "out"), **defaults)


def _job(plan: object) -> Job:
    return Job(
        out=str(plan.out),
        single_file=False,
        pipelines={},
        store_options={},
        keep_phi=plan.keep_phi,
        roots=plan.message_roots,
        keep_descriptions=plan.keep_descriptions,
        key=plan.key,
    )


@pytest.mark.parametrize("options", [{}, {"keep_descriptions": True}, {"keep_phi": True}])
def test_the_plans_names_are_the_workers(sources: Path, tmp_path: Path, options: dict[str, bool]) -> None:
    plan = _plan(sources, tmp_path, **options)
    job = _job(plan)
    assert len(plan.tasks) == 3 and any(t.mask for t in plan.tasks)
    for task in plan.tasks:
        assert task.names is not None
        assert job.names(task) is task.names
        # What the worker made itself before: the same names, field by field.
        made = job.names(Task(task.source_hash, task.series, task.label, task.mask, task.mask_by_grid))
        assert made == task.names
        if not options:
            scrubbed = medload.deid.scrub(" ".join(map(str, task.series.files)), task.names)
            assert "PATIENT_SMITH" not in scrubbed and "jones" not in scrubbed


def test_a_convert_makes_each_series_names_once(sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    made = SourceNames.of.__func__  # type: ignore[attr-defined]

    def counted(cls: type[SourceNames], files: object, **kwargs: object) -> SourceNames:
        calls.append(1)
        return made(cls, files, **kwargs)

    monkeypatch.setattr(SourceNames, "of", classmethod(counted))
    report = medload.convert(
        str(sources / "export"), tmp_path / "out", masks=str(sources / "masks"), workers=0, progress=False, phi_key="k" * 32
    )
    assert report.counts["converted"] == 3
    assert len(calls) == 3  # once per series, in the plan; none in the worker
    text = (tmp_path / "out" / "report.json").read_text()
    assert "PATIENT_SMITH" not in text and "jones" not in text


def test_a_worker_imports_no_planning_module() -> None:
    code = (
        "import sys, medload.batch.worker\n"
        "print(sorted(m for m in sys.modules if m.startswith('medload.batch') or m == 'nibabel'))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['medload.batch', 'medload.batch.fused', 'medload.batch.pipelines', 'medload.batch.worker']"


def test_a_native_multi_frame_file_is_read_once_without_pydicom(monkeypatch: pytest.MonkeyPatch) -> None:
    # Enhanced MR objects (uncompressed): scan parsed the header; load reads every frame from
    # PixelData's offset (codecs.read_native) instead of pydicom parsing the whole file again,
    # and gets the very voxels pydicom's pixel_array gave (per-frame rescale and order as before).
    from medload.io import dicom

    series = [s for s in medload.scan(shared_path("dcm_qa_enh", "In")) if s.headers[0].frames[0].frame >= 0]
    native = [s for s in series if s.headers[0].transfer_syntax in dicom._NATIVE]
    assert len(native) >= 2
    with monkeypatch.context() as m:
        m.setattr(dicom, "_read_native", lambda h, placed: None)  # the pydicom path, as before
        before = {s.source_hash: medload.load(s).array for s in native}

    def refused(path: str, label: str) -> None:
        raise AssertionError(f"{path} was parsed by pydicom again")

    monkeypatch.setattr(dicom, "_read_pydicom", refused)
    for s in native:
        array = medload.load(s).array
        assert array.dtype == before[s.source_hash].dtype
        assert np.array_equal(array, before[s.source_hash])
