"""Which images of a DICOM series are slices and which are frames of a 4D volume.

Outside testers met 4D volumes built silently wrong on vendor data. Each test here writes the
header pattern of one such export in code. Every pixel of frame ``t`` at slice ``z`` holds
``100 * t + z`` (``TRUTH``), so an image put at the wrong place shows as a wrong number; where
dcm2niix gives an answer it is compared too.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from fixtures.special import write_image
from medload.io import load, scan
from tests.test_io_reference import DCM2NIIX, match
from tests.test_io_rounded_positions import rounded_series

SIZE = 4


def image(t: int, z: int) -> np.ndarray:
    """The pixels of frame ``t`` at slice ``z``: every value ``100 * t + z``."""
    return np.full((SIZE, SIZE), 100 * t + z, dtype=np.uint16)


def truth(n_frames: int, n_slices: int) -> np.ndarray:
    return np.stack([np.stack([image(t, z) for z in range(n_slices)]) for t in range(n_frames)])


def write_series(
    folder: Path, n_frames: int, n_slices: int, tags: Callable[[int, int], dict[str, Any]], *, step: float = 3.0, name=None
) -> list[str]:
    """One file per image; ``tags(t, z)`` adds or overrides the headers of frame ``t`` at slice ``z``."""
    files = []
    for t in range(n_frames):
        for z in range(n_slices):
            base = {
                "SeriesDescription": "frames synthetic",
                "InstanceNumber": t * n_slices + z + 1,
                "ImagePositionPatient": [0.0, 0.0, step * z],
                "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                "PixelSpacing": [0.5, 0.5],
            }
            file = name(t, z) if name else f"IM_{t:03d}_{z:03d}"
            files.append(write_image(folder / file, image(t, z), {**base, **tags(t, z)}))
    return files


def dcm2niix(folder: Path, out: Path) -> list[nib.Nifti1Image]:
    """dcm2niix's NIfTI images of ``folder``, in the order of their names."""
    if DCM2NIIX is None:
        pytest.skip("dcm2niix not on PATH (pip install dcm2niix)")
    out.mkdir()
    subprocess.run([DCM2NIIX, "-z", "n", "-b", "n", "-f", "x", "-o", str(out), str(folder)], check=True, capture_output=True)
    return [nib.load(p) for p in sorted(out.glob("*.nii"))]


# --- slices closer than the same-position tolerance are slices, not frames


def test_micrometre_slices_written_with_3_decimals_are_one_stack_as_dcm2niix_reads_them(tmp_path):
    # 7.5 um steps written 0.000, 0.008, 0.015, ... with 0.5 mm pixels: positions 0.007 mm apart
    # fell inside the 0.01 mm tolerance and consecutive slices paired up as 2 frames of 10 slices.
    written = rounded_series(tmp_path / "dicom", "axial", 20, 0.0075, 3, pixel=0.5)
    (series,) = scan(tmp_path / "dicom")
    volume = load(series)
    assert series.shape == volume.shape == (20, 8, 6)
    np.testing.assert_array_equal(volume.array, written["array"])
    assert volume.spacing[0] == pytest.approx(0.0075, abs=0.0005)
    (reference,) = dcm2niix(tmp_path / "dicom", tmp_path / "ref")
    ok, why = match(reference, [("medload", volume)])
    assert ok, why


def test_micrometre_slices_of_a_time_series_keep_their_frames(tmp_path):
    # The same fine stack acquired 3 times (TemporalPositionIdentifier): 3 frames of 12 slices.
    def tags(t: int, z: int) -> dict[str, Any]:
        return {"ImagePositionPatient": ["0", "0", f"{0.0075 * z:.3f}"], "TemporalPositionIdentifier": t + 1}

    write_series(tmp_path, 3, 12, tags)
    volume = load(tmp_path)
    assert volume.shape == (3, 12, SIZE, SIZE)
    np.testing.assert_array_equal(volume.array, truth(3, 12))


def test_a_few_slices_micrometres_apart_without_frame_identifiers_are_slices(tmp_path):
    # every image within the tolerance of every other: no neighbouring position to measure against
    write_series(tmp_path, 1, 3, lambda t, z: {}, step=0.004)
    volume = load(tmp_path)
    assert volume.shape == (3, SIZE, SIZE)
    np.testing.assert_array_equal(volume.array, truth(1, 3)[0])


@pytest.mark.parametrize("jitter", [0.0, 3e-5, 0.004])
def test_frames_whose_written_positions_jitter_stay_frames(tmp_path, jitter):
    # Guard (passes before and after): a dynamic series whose frames' positions differ by float
    # noise or a few micrometres, against a 3 mm step, is 4 frames of 5 slices.
    write_series(tmp_path, 4, 5, lambda t, z: {"ImagePositionPatient": [0.0, 0.0, 3.0 * z + jitter * (t % 2)]})
    volume = load(tmp_path)
    assert volume.shape == (4, 5, SIZE, SIZE)
    np.testing.assert_array_equal(volume.array, truth(4, 5))


def test_a_single_slice_time_series_with_jittered_positions_stays_frames(tmp_path):
    # Guard: one position, 4 dynamics told apart by TemporalPositionIdentifier, 2 um jitter.
    write_series(
        tmp_path,
        4,
        1,
        lambda t, z: {"ImagePositionPatient": [0.0, 0.0, 0.002 * (t % 2)], "TemporalPositionIdentifier": t + 1},
    )
    volume = load(tmp_path)
    assert volume.shape == (4, 1, SIZE, SIZE)
    np.testing.assert_array_equal(volume.array, truth(4, 1))
