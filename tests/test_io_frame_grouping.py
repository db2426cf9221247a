"""Which images of a DICOM series are slices and which are frames of a 4D volume.

Outside testers met 4D volumes built silently wrong on vendor data. Each test here writes the
header pattern of one such export in code. Every pixel of frame ``t`` at slice ``z`` holds
``100 * t + z`` (``TRUTH``), so an image put at the wrong place shows as a wrong number; where
dcm2niix gives an answer it is compared too.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest

import medload
from fixtures.special import write_image
from medload.errors import FrameOrderError, GeometryError
from medload.io import load, scan
from medload.problems import ProblemKind
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


def test_images_within_the_tolerance_that_only_acquisition_time_tells_apart_are_refused(tmp_path):
    # A single-slice dynamic whose positions jitter by 2 um, or 2 slices 2 um apart acquired
    # twice: only AcquisitionTime tells the 4 images apart. Before this refusal the split made
    # it 2 frames of 2 slices, silently (main kept it 4 frames of one slice, right by chance).
    write_series(
        tmp_path,
        4,
        1,
        lambda t, z: {"ImagePositionPatient": [0.0, 0.0, 0.002 * (t % 2)], "AcquisitionTime": f"{100000 + 10 * t:.2f}"},
    )
    (series,) = scan(tmp_path)
    assert [p.kind for p in series.problems] == [ProblemKind.SLICES_OR_FRAMES]
    with pytest.raises(
        GeometryError, match=r"slices or frames: 4 images .* within 0.01 mm of one another .*TemporalPositionIdentifier"
    ):
        load(series)


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


@pytest.mark.parametrize("decimals", [2, 1])
def test_slices_finer_than_their_written_positions_are_refused_as_rounded_together(tmp_path, decimals):
    # 7.5 um steps written with 2 decimals: 30.12, 30.13, 30.13, 30.14, ... Two slices read as one
    # position. Refused before too, but as "duplicate positions ... identical copies are dropped",
    # which sent the user after copies that are not there.
    rounded_series(tmp_path, "axial", 20, 0.0075 * 10 ** (2 - decimals), decimals, pixel=0.5)
    (series,) = scan(tmp_path)
    assert [p.kind for p in series.problems] == [ProblemKind.POSITIONS_ROUNDED_TOGETHER]
    with pytest.raises(
        GeometryError,
        match=rf"slice positions rounded together: .*up to {0.5 * 10**-decimals:g} mm .*neighbouring written positions "
        rf"are {10**-decimals:g} mm apart.* 20 slices cannot be placed. Re-export .* full precision",
    ):
        load(series)


@pytest.mark.parametrize(("step", "origin", "decimals"), [(0.005, -0.002, 2), (0.5, -0.2, 0)])
def test_slices_rounded_in_pairs_are_refused_not_stacked_as_two_frames(tmp_path, step, origin, decimals):
    # 20 slices 5 um apart written with 2 decimals (or 0.5 mm apart written as integers) pair up
    # at every written position: before, a silently wrong (2, 10) time series of interleaved
    # slices, without a problem. dcm2niix v1.0.20260724 writes it as 10 slices x 2 volumes too.
    write_series(tmp_path, 1, 20, lambda t, z: {"ImagePositionPatient": ["0", "0", f"{origin + step * z:.{decimals}f}"]})
    (series,) = scan(tmp_path)
    assert [p.kind for p in series.problems] == [ProblemKind.POSITIONS_ROUNDED_TOGETHER]
    with pytest.raises(GeometryError, match=r"10 of 10 positions hold 2 images that only InstanceNumber tells apart"):
        load(series)


def test_coarse_positions_with_frame_identifiers_or_copies_are_still_frames_and_copies(tmp_path):
    # Guards: integer positions 1 mm apart, 2 frames told apart by TemporalPositionIdentifier, are
    # a 4D volume; an extra copy of one file (new UID, same InstanceNumber) is dropped as before.
    write_series(
        tmp_path / "frames", 2, 4, lambda t, z: {"ImagePositionPatient": ["0", "0", str(z)], "TemporalPositionIdentifier": t + 1}
    )
    volume = load(tmp_path / "frames")
    np.testing.assert_array_equal(volume.array, truth(2, 4))
    files = write_series(tmp_path / "copy", 1, 4, lambda t, z: {"ImagePositionPatient": ["0", "0", str(z)]})
    ds = pydicom.dcmread(files[2])
    ds.SOPInstanceUID += ".9"
    ds.save_as(tmp_path / "copy" / "again")
    volume = load(tmp_path / "copy")
    np.testing.assert_array_equal(volume.array, truth(1, 4)[0])
    assert any(p.kind is ProblemKind.IDENTICAL_IMAGES_DROPPED for p in volume.problems)


# --- the order of the frames at every position


def hashed(t: int, z: int) -> str:
    """A file name that says nothing of the image (as exports named by UID or hash)."""
    return hashlib.sha1(f"{t}/{z}".encode()).hexdigest()[:12]


#: What tells the frames apart, as written for frame t at slice z.
IDENTIFIERS = {
    "TemporalPositionIdentifier": lambda t, z: {"TemporalPositionIdentifier": t + 1},
    "TriggerTime": lambda t, z: {"TriggerTime": f"{40 * t + 0.3 * z:.1f}"},  # drifts between slices
    "AcquisitionTime": lambda t, z: {"AcquisitionTime": f"{100000 + 10 * t + z / 10:.2f}"},
}
SHUFFLED = np.random.default_rng(5).permutation(4 * 3)
INSTANCE_NUMBERS = {
    "restart per frame": lambda t, z: z + 1,  # equal for every frame at one position
    "shuffled": lambda t, z: int(SHUFFLED[3 * t + z]) + 1,
}


@pytest.mark.parametrize("instance", list(INSTANCE_NUMBERS))
@pytest.mark.parametrize("identifier", list(IDENTIFIERS))
def test_frames_follow_their_identifier_where_instance_numbers_do_not_order_them(tmp_path, identifier, instance):
    # Before, file names (or shuffled InstanceNumbers) ordered the frames: each position in
    # another order (interleaved frames), or one common order made from the most frequent
    # (frames out of time order). dcm2niix v1.0.20260724 mixes frames here too (with seed 5's
    # shuffle and TemporalPositionIdentifier its NIfTI has a z step of 0 and mixed frames).
    def tags(t: int, z: int) -> dict[str, Any]:
        return {"InstanceNumber": INSTANCE_NUMBERS[instance](t, z), **IDENTIFIERS[identifier](t, z)}

    write_series(tmp_path / "dicom", 4, 3, tags, name=hashed)
    volume = load(tmp_path / "dicom")
    np.testing.assert_array_equal(volume.array, truth(4, 3))
    if (identifier, instance) != ("AcquisitionTime", "restart per frame"):  # that one AcquisitionTime orders as it always did
        assert any(p.kind is ProblemKind.FRAMES_REORDERED and identifier in p.message for p in volume.problems)


def test_instance_numbers_that_order_every_position_alike_are_kept_as_dcm2niix_keeps_them(tmp_path):
    # Guard: InstanceNumbers run against TemporalPositionIdentifier, alike at every position.
    # dcm2niix follows InstanceNumber; so does medload (documented in docs/validation.md).
    write_series(
        tmp_path / "dicom", 3, 3, lambda t, z: {"InstanceNumber": (2 - t) * 3 + z + 1, "TemporalPositionIdentifier": t + 1}
    )
    volume = load(tmp_path / "dicom")
    np.testing.assert_array_equal(volume.array, truth(3, 3)[::-1])
    (reference,) = dcm2niix(tmp_path / "dicom", tmp_path / "ref")
    ok, why = match(reference, [("medload", volume)])
    assert ok, why


def test_diffusion_frames_with_restarting_instance_numbers_keep_one_encoding_per_frame(tmp_path):
    # b-value + gradient alone tell the frames apart (no time): every frame must hold one
    # encoding at every position and the table must follow the frames.
    grads = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]

    def tags(t: int, z: int) -> dict[str, Any]:
        return {"InstanceNumber": z + 1, "DiffusionBValue": 0.0 if t == 0 else 1000.0, "DiffusionGradientOrientation": grads[t]}

    write_series(tmp_path, 4, 3, tags, name=hashed)
    volume = load(tmp_path)
    frame_of = volume.array[:, 0, 0, 0] // 100  # which acquisition each frame holds, at slice 0
    np.testing.assert_array_equal(volume.array, truth(4, 3)[frame_of])
    assert volume.meta["diffusion"]["gradients_lps"] == [grads[t] for t in frame_of]


def test_images_that_only_file_names_order_are_refused_naming_them(tmp_path):
    # Same InstanceNumber, no AcquisitionTime, no identifier: which frame is which is unknown.
    # Before, file names ordered them: a 4D volume whose frames mixed acquisitions, silently.
    write_series(tmp_path / "bad", 3, 3, lambda t, z: {"InstanceNumber": z + 1}, name=hashed)
    (series,) = scan(tmp_path / "bad")
    assert [p.kind for p in series.problems] == [ProblemKind.FRAMES_UNORDERED]
    with pytest.raises(FrameOrderError, match=r"frames without an order: 3 of 3 slice positions .*bad/[0-9a-f]{12}") as info:
        load(series)
    assert info.value.positions_mm == (0.0, 3.0, 6.0)
    # a batch goes on past it and names it
    write_series(tmp_path / "good", 2, 3, lambda t, z: {})
    report = medload.convert(tmp_path, tmp_path / "out", workers=0, progress=False)
    assert report.counts["converted"] == 1 and report.counts["failed"] == 1
    assert [s["error"] for s in report.failed] == ["FrameOrderError"]


def test_a_whole_series_copied_with_new_uids_and_the_same_instance_numbers_loads_once(tmp_path):
    # The tie is harmless where the tied images are identical: the copies are dropped, said so.
    # Scan (headers only) counts the tied images once, so it reports the shape load returns:
    # before, scan said (2, 3, 4, 4) and load gave (3, 4, 4).
    for copy in ("a", "b"):
        write_series(tmp_path, 1, 3, lambda t, z: {}, name=lambda t, z, copy=copy: f"{copy}{z}")
    (series,) = scan(tmp_path)
    assert [p.kind for p in series.problems] == [ProblemKind.FRAMES_UNORDERED]
    volume = load(series)
    assert series.shape == volume.shape == (3, SIZE, SIZE)
    np.testing.assert_array_equal(volume.array, truth(1, 3)[0])
    assert any(p.kind is ProblemKind.IDENTICAL_IMAGES_DROPPED for p in volume.problems)


def test_a_copied_time_series_tied_on_every_header_loads_once_and_other_pixels_are_refused(tmp_path):
    # A 2-frame series (TemporalPositionIdentifier) exported twice with new UIDs and the same
    # InstanceNumbers: 4 images per position, 2 of each frame. Before, scan said 4 frames.
    def tags(t: int, z: int) -> dict[str, Any]:
        return {"TemporalPositionIdentifier": t + 1}

    for copy in ("a", "b"):
        write_series(tmp_path / "copy", 2, 3, tags, name=lambda t, z, copy=copy: f"{copy}{t}{z}")
    (series,) = scan(tmp_path / "copy")
    volume = load(series)
    assert series.shape == volume.shape == (2, 3, SIZE, SIZE)
    np.testing.assert_array_equal(volume.array, truth(2, 3))
    # the same headers over other pixels: not copies, nothing orders them; refused, scan says so
    write_series(tmp_path / "other", 2, 3, tags, name=lambda t, z: f"a{t}{z}")
    for t in range(2):
        for z in range(3):
            write_image(
                tmp_path / "other" / f"b{t}{z}",
                image(t, z) + 50,
                {
                    **tags(t, z),
                    "SeriesDescription": "frames synthetic",
                    "InstanceNumber": t * 3 + z + 1,
                    "ImagePositionPatient": [0.0, 0.0, 3.0 * z],
                    "ImageOrientationPatient": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
                    "PixelSpacing": [0.5, 0.5],
                },
            )
    (series,) = scan(tmp_path / "other")
    assert series.shape == (2, 3, SIZE, SIZE)
    assert [p.kind for p in series.problems] == [ProblemKind.FRAMES_UNORDERED]
    with pytest.raises(FrameOrderError, match=r"frames without an order: 3 of 3 slice positions"):
        load(series)


# --- diffusion series with an encoding repeated (several b=0 frames) and shuffled InstanceNumbers

#: b=0 twice (frames 0 and 3), as most DTI protocols interleave b=0 frames.
DTI_GRADIENTS = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
DTI_SHUFFLED = np.random.default_rng(0).permutation(5 * 4)


def dti_tags(instance: str, acquisition_time: bool) -> Callable[[int, int], dict[str, Any]]:
    def tags(t: int, z: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "InstanceNumber": int(DTI_SHUFFLED[4 * t + z]) + 1 if instance == "shuffled" else t * 4 + z + 1,
            "DiffusionBValue": 0.0 if not any(DTI_GRADIENTS[t]) else 1000.0,
            "DiffusionGradientOrientation": DTI_GRADIENTS[t],
        }
        if acquisition_time:
            out["AcquisitionTime"] = f"{100000 + 10 * t + z / 10:.2f}"
        return out

    return tags


def test_two_b0_frames_with_shuffled_instance_numbers_follow_acquisition_time(tmp_path):
    # The encodings put the b=1000 frames in one order at every position, but the two b=0
    # frames look alike: before, their shuffled InstanceNumbers ordered them, so frames 0 and 3
    # swapped between slices (seed 0: at 2 of 4 positions), silently. dcm2niix mixes this
    # series too (it follows InstanceNumber); the same images with InstanceNumbers in
    # acquisition order are its reference.
    write_series(tmp_path / "shuffled", 5, 4, dti_tags("shuffled", True), name=hashed)
    volume = load(tmp_path / "shuffled")
    np.testing.assert_array_equal(volume.array, truth(5, 4))
    assert volume.meta["diffusion"]["gradients_lps"] == DTI_GRADIENTS
    assert any(p.kind is ProblemKind.FRAMES_REORDERED and "AcquisitionTime" in p.message for p in volume.problems)
    write_series(tmp_path / "ordered", 5, 4, dti_tags("in order", True), name=hashed)
    (reference,) = dcm2niix(tmp_path / "ordered", tmp_path / "ref")
    ok, why = match(reference, [("medload", volume)])
    assert ok, why


def test_two_b0_frames_that_nothing_orders_are_refused(tmp_path):
    # No AcquisitionTime: nothing says which b=0 is which where InstanceNumbers are shown shuffled.
    write_series(tmp_path / "dicom", 5, 4, dti_tags("shuffled", False), name=hashed)
    (series,) = scan(tmp_path / "dicom")
    assert [p.kind for p in series.problems] == [ProblemKind.FRAMES_UNORDERED]
    with pytest.raises(FrameOrderError, match=r"2 frames at every position share one identifier \(b=0 gradient") as info:
        load(series)
    assert info.value.positions_mm == (0.0, 3.0, 6.0, 9.0)
    # Guard: InstanceNumbers in acquisition order (alike at every position) are kept, as dcm2niix keeps them.
    write_series(tmp_path / "ordered", 5, 4, dti_tags("in order", False), name=hashed)
    np.testing.assert_array_equal(load(tmp_path / "ordered").array, truth(5, 4))


@pytest.mark.parametrize("gap", ["missing", "tied"])
@pytest.mark.parametrize("identifier", ["TriggerTime", "AcquisitionTime"])
def test_shuffled_instance_numbers_with_an_identifier_missing_or_tied_somewhere_are_refused(tmp_path, identifier, gap):
    # TriggerTime (or AcquisitionTime) orders the frames at slices 0 and 2, where the shuffled
    # InstanceNumbers rank them otherwise; at slice 1 it is missing or the same for every frame.
    # Before, the InstanceNumbers ordered every position: frames mixed, silently.
    def tags(t: int, z: int) -> dict[str, Any]:
        if z != 1:
            written = IDENTIFIERS[identifier](t, z)
        elif gap == "missing":
            written = {}
        else:
            written = IDENTIFIERS[identifier](0, 1)  # the same value for every frame
        return {"InstanceNumber": int(SHUFFLED[3 * t + z]) + 1, **written}

    write_series(tmp_path, 4, 3, tags, name=hashed)
    (series,) = scan(tmp_path)
    assert [p.kind for p in series.problems] == [ProblemKind.FRAMES_UNORDERED]
    with pytest.raises(FrameOrderError, match=rf"{identifier} is missing or equal at 1 of 3 slice positions \(3.00 mm\)") as info:
        load(series)
    assert info.value.positions_mm == (3.0,)


def test_an_identifier_missing_on_some_files_is_refused(tmp_path):
    # Guard: TemporalPositionIdentifier absent from one file: its position holds a frame of no
    # known temporal position; refused naming the position, never guessed.
    def tags(t: int, z: int) -> dict[str, Any]:
        return {} if (t, z) == (2, 1) else {"TemporalPositionIdentifier": t + 1}

    write_series(tmp_path, 3, 3, tags)
    with pytest.raises(FrameOrderError, match="3.00 mm") as info:
        load(tmp_path)
    assert info.value.positions_mm == (3.0,)


def acquisitions_tags(instance: str, acquisition_time: bool) -> Callable[[int, int], dict[str, Any]]:
    """Two acquisitions (AcquisitionNumber 1, 2) of 2 temporal positions each (TemporalPositionIdentifier 1, 2)."""
    shuffled = np.random.default_rng(0).permutation(4 * 3)

    def tags(t: int, z: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "AcquisitionNumber": t // 2 + 1,
            "TemporalPositionIdentifier": t % 2 + 1,
            "InstanceNumber": int(shuffled[3 * t + z]) + 1 if instance == "shuffled" else 3 * t + z + 1,
        }
        if acquisition_time:
            out["AcquisitionTime"] = f"{100000 + 10 * t + z / 10:.2f}"
        return out

    return tags


def test_temporal_positions_repeated_by_acquisition_number_follow_acquisition_time_or_are_refused(tmp_path):
    # AcquisitionNumber and TemporalPositionIdentifier disagree on what a frame is: each temporal
    # position twice at every slice. Before, with shuffled InstanceNumbers the two frames of one
    # temporal position stayed in InstanceNumber order: swapped between slices (seed 0), silently.
    write_series(tmp_path / "timed", 4, 3, acquisitions_tags("shuffled", True), name=hashed)
    volume = load(tmp_path / "timed")
    np.testing.assert_array_equal(volume.array, truth(4, 3))
    write_series(tmp_path / "ordered", 4, 3, acquisitions_tags("in order", False), name=hashed)
    (reference,) = dcm2niix(tmp_path / "ordered", tmp_path / "ref")  # dcm2niix is right where InstanceNumbers are
    ok, why = match(reference, [("medload", volume)])
    assert ok, why
    write_series(tmp_path / "untimed", 4, 3, acquisitions_tags("shuffled", False), name=hashed)
    (series,) = scan(tmp_path / "untimed")
    assert [p.kind for p in series.problems] == [ProblemKind.FRAMES_UNORDERED]
    with pytest.raises(FrameOrderError, match=r"2 frames at every position share one identifier \(temporal position 1;"):
        load(series)


def test_a_temporal_position_missing_on_one_frame_everywhere_with_shuffled_instance_numbers_is_refused(tmp_path):
    # Frame 2 has no TemporalPositionIdentifier at any position; the others' shuffled
    # InstanceNumbers show InstanceNumber is not time order. Before, the frames were put in one
    # order by their identifiers, frame 2 wherever the first position's InstanceNumbers put it:
    # a time series out of time order (seed 5: frames 1, 2, 0, 3), silently.
    def tags(t: int, z: int) -> dict[str, Any]:
        return {"InstanceNumber": int(SHUFFLED[3 * t + z]) + 1, **({} if t == 2 else {"TemporalPositionIdentifier": t + 1})}

    write_series(tmp_path / "dicom", 4, 3, tags, name=hashed)
    (series,) = scan(tmp_path / "dicom")
    assert [p.kind for p in series.problems] == [ProblemKind.FRAMES_UNORDERED]
    with pytest.raises(FrameOrderError, match=r"1 frame\(s\) have no temporal position .*at 3 of 3 slice positions") as info:
        load(series)
    assert info.value.positions_mm == (0.0, 3.0, 6.0)
    # Guard: InstanceNumbers in acquisition order place it, as dcm2niix does
    write_series(tmp_path / "ordered", 4, 3, lambda t, z: {} if t == 2 else {"TemporalPositionIdentifier": t + 1})
    np.testing.assert_array_equal(load(tmp_path / "ordered").array, truth(4, 3))


INSTANCE_LAYOUTS = {
    "volume after volume, interleaved slices": (lambda t, z: 3 * t + [0, 2, 1][z] + 1, True),
    "slice after slice": (lambda t, z: 4 * z + t + 1, True),
    "shuffled": (lambda t, z: int(SHUFFLED[3 * t + z]) + 1, False),
}


@pytest.mark.parametrize("layout", list(INSTANCE_LAYOUTS))
def test_frames_that_only_instance_numbers_order_load_only_where_they_run_in_blocks(tmp_path, layout):
    # No identifier at all: InstanceNumber alone orders the frames. Shuffled between positions
    # (seed 5), it stacked acquisitions mixed between slices, silently (dcm2niix warns "Check
    # sorted order" and stacks them too); volume-wise or slice-wise numbering loads as before.
    number, loads = INSTANCE_LAYOUTS[layout]
    write_series(tmp_path / "dicom", 4, 3, lambda t, z: {"InstanceNumber": number(t, z)}, name=hashed)
    (series,) = scan(tmp_path / "dicom")
    if loads:
        assert series.problems == ()
        np.testing.assert_array_equal(load(series).array, truth(4, 3))
        return
    assert [p.kind for p in series.problems] == [ProblemKind.FRAMES_UNORDERED]
    with pytest.raises(FrameOrderError, match=r"nothing but InstanceNumber orders the frames .*does not run volume after volume"):
        load(series)


# --- echoes, repeats and missing frames


@pytest.mark.parametrize("echo_numbers", [True, False])
def test_multi_echo_series_are_one_volume_per_echo_as_dcm2niix_writes_them(tmp_path, echo_numbers):
    # Guard (passes before and after): two echoes at every position, never interleaved as time
    # frames; with EchoNumbers or EchoTime alone, scan splits them into one Series per echo.
    def tags(t: int, z: int) -> dict[str, Any]:
        return {"EchoTime": [4.5, 9.8][t], **({"EchoNumbers": t + 1} if echo_numbers else {})}

    write_series(tmp_path / "dicom", 2, 3, tags, name=hashed)
    found = scan(tmp_path / "dicom")
    assert [s.shape for s in found] == [(3, SIZE, SIZE)] * 2
    volumes = sorted((load(s) for s in found), key=lambda v: int(v.array.max()))
    for t, volume in enumerate(volumes):
        np.testing.assert_array_equal(volume.array, truth(2, 3)[t])
    references = dcm2niix(tmp_path / "dicom", tmp_path / "ref")
    assert len(references) == 2
    for reference in references:
        ok, why = match(reference, [(f"echo {t + 1}", v) for t, v in enumerate(volumes)])
        assert ok, why


def test_a_repeated_image_in_a_time_series_is_dropped_if_a_copy_and_refused_if_not(tmp_path):
    # Guard: one position holds an extra image with the same TemporalPositionIdentifier.
    def tags(t: int, z: int) -> dict[str, Any]:
        return {"TemporalPositionIdentifier": t + 1}

    write_series(tmp_path / "copy", 2, 3, tags)
    write_image(
        tmp_path / "copy" / "again",
        image(1, 2),
        {
            **tags(1, 2),
            "ImagePositionPatient": [0, 0, 6.0],
            "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
            "PixelSpacing": [0.5, 0.5],
            "InstanceNumber": 6,
        },
    )
    volume = load(tmp_path / "copy")
    np.testing.assert_array_equal(volume.array, truth(2, 3))
    assert any(p.kind is ProblemKind.IDENTICAL_IMAGES_DROPPED and "again" in p.message for p in volume.problems)
    write_series(tmp_path / "repeat", 2, 3, tags)
    write_image(
        tmp_path / "repeat" / "again",
        image(1, 2) + 7,
        {
            **tags(1, 2),
            "ImagePositionPatient": [0, 0, 6.0],
            "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
            "PixelSpacing": [0.5, 0.5],
            "InstanceNumber": 6,
        },
    )
    with pytest.raises(
        GeometryError,
        match=r"duplicate positions: 1 slice position\(s\) hold more images than the others \(2\): 6.00 mm \(3 images",
    ):
        load(tmp_path / "repeat")


def test_a_missing_frame_is_refused_saying_which_frame_is_missing_where(tmp_path):
    # Before: "duplicate positions: 2 slice position(s) hold more images than the others (3)",
    # the complete positions named as the odd ones.
    files = write_series(tmp_path / "dicom", 4, 3, lambda t, z: {"TemporalPositionIdentifier": t + 1})
    Path(files[2 * 3 + 1]).unlink()  # frame 2 at slice 1
    (series,) = scan(tmp_path / "dicom")
    assert [p.kind for p in series.problems] == [ProblemKind.FRAMES_MISSING]
    with pytest.raises(
        GeometryError,
        match=r"series ser-\w+ \(11 files in .*dicom\): missing frames: 1 of 3 slice position\(s\) hold fewer images than the others \(4 each\): 3.00 mm holds 3 \(.*; missing: temporal position 3\)",
    ) as info:
        load(series)
    assert "duplicate" not in str(info.value)
    # without identifiers the message still says where and how many
    files = write_series(tmp_path / "plain", 4, 3, lambda t, z: {})
    Path(files[5]).unlink()
    with pytest.raises(GeometryError, match=r"missing frames: 1 of 3 slice position\(s\) .*6.00 mm holds 3 \("):
        load(tmp_path / "plain")


# --- enhanced multi-frame objects whose frames are stored out of order


def write_enhanced(
    path: Path,
    n_frames: int,
    n_slices: int,
    *,
    dimension_values: bool,
    temporal_index: bool,
    echo_times: Any = None,
    seed: int = 3,
    in_stack: Callable[[int, int], int] | None = None,
    temporal_dimension: bool = True,
) -> None:
    """One enhanced MR object of ``n_frames`` x ``n_slices`` frames stored in a seeded shuffled order.

    Each frame says its place in FrameContentSequence: StackID, InStackPositionNumber, and
    (``temporal_index``) TemporalPositionIndex; with ``dimension_values`` DimensionIndexValues
    (stack, in-stack position, temporal position) under a DimensionIndexSequence; with
    ``echo_times`` frame ``t`` is an echo at ``echo_times[t]`` ms (MREchoSequence); ``in_stack(t, z)``
    replaces InStackPositionNumber ``z + 1``; without ``temporal_dimension`` the dimensions are
    (stack, in-stack position) only.
    """
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    from fixtures.special import ENHANCED_MR_STORAGE

    def item(**sequences: Dataset) -> Dataset:
        out = Dataset()
        for name, value in sequences.items():
            setattr(out, name, DicomSequence([value]))
        return out

    stored = np.random.default_rng(seed).permutation(n_frames * n_slices)
    per_frame, pixels = [], []
    for k in stored:
        t, z = divmod(int(k), n_slices)
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = in_stack(t, z) if in_stack else z + 1
        if temporal_index:
            content.TemporalPositionIndex = t + 1
        if dimension_values:
            content.DimensionIndexValues = [1, content.InStackPositionNumber, t + 1][: 3 if temporal_dimension else 2]
        position, orientation = Dataset(), Dataset()
        position.ImagePositionPatient = [0.0, 0.0, 3.0 * z]
        orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        groups = {"FrameContentSequence": content, "PlanePositionSequence": position, "PlaneOrientationSequence": orientation}
        if echo_times is not None:
            groups["MREchoSequence"] = Dataset()
            groups["MREchoSequence"].EffectiveEchoTime = echo_times[t]
        per_frame.append(item(**groups))
        pixels.append(image(t, z))
    measures = Dataset()
    measures.PixelSpacing = [0.5, 0.5]
    measures.SliceThickness = 3.0
    tags: dict[str, Any] = {
        "InstanceNumber": 1,
        "PerFrameFunctionalGroupsSequence": DicomSequence(per_frame),
        "SharedFunctionalGroupsSequence": DicomSequence([item(PixelMeasuresSequence=measures)]),
        "NumberOfFrames": len(pixels),
    }
    if dimension_values:
        dims = []
        for pointer in (0x00209056, 0x00209057, 0x00209128)[
            : 3 if temporal_dimension else 2
        ]:  # StackID, InStackPositionNumber, TemporalPositionIndex
            d = Dataset()
            d.DimensionIndexPointer = pointer
            d.FunctionalGroupPointer = 0x00209111
            dims.append(d)
        tags["DimensionIndexSequence"] = DicomSequence(dims)
    write_image(path, np.stack(pixels), tags, sop_class=ENHANCED_MR_STORAGE)


@pytest.mark.parametrize(("dimension_values", "temporal_index"), [(True, True), (True, False), (False, True)])
def test_enhanced_frames_stored_out_of_order_follow_their_functional_groups(tmp_path, dimension_values, temporal_index):
    write_enhanced(tmp_path / "dicom" / "enhanced.dcm", 4, 3, dimension_values=dimension_values, temporal_index=temporal_index)
    volume = load(tmp_path / "dicom")
    np.testing.assert_array_equal(volume.array, truth(4, 3))
    if dimension_values:  # dcm2niix sorts by DimensionIndexValues
        (reference,) = dcm2niix(tmp_path / "dicom", tmp_path / "ref")
        ok, why = match(reference, [("medload", volume)])
        assert ok, why


def test_enhanced_frames_stored_out_of_order_without_any_identifier_are_refused(tmp_path):
    # Neither TemporalPositionIndex nor DimensionIndexValues: only the stored order orders the
    # frames, and it is shuffled between positions. Before, a 4D volume of mixed frames, silently.
    write_enhanced(tmp_path / "dicom" / "enhanced.dcm", 4, 3, dimension_values=False, temporal_index=False)
    (series,) = scan(tmp_path / "dicom")
    assert [p.kind for p in series.problems] == [ProblemKind.FRAMES_UNORDERED]
    with pytest.raises(FrameOrderError, match=r"nothing but their stored order in the multi-frame object orders"):
        load(series)


def test_enhanced_in_stack_numbers_changing_within_a_position_order_no_frames(tmp_path):
    # DimensionIndexValues (stack, in-stack position) only, no TemporalPositionIndex, and
    # InStackPositionNumbers shuffled from frame to frame of one position: they sorted each
    # position's frames differently (mixed frames, silently; dcm2niix sorts by them too).
    # Guard: with the temporal position among the dimensions, it orders them whatever the in-stack numbers.
    shuffled = [np.random.default_rng(9 + t).permutation(3) for t in range(4)]

    def in_stack(t: int, z: int) -> int:
        return int(shuffled[t][z]) + 1

    options = {"dimension_values": True, "temporal_index": False, "in_stack": in_stack}
    write_enhanced(tmp_path / "bad" / "enhanced.dcm", 4, 3, temporal_dimension=False, **options)
    (series,) = scan(tmp_path / "bad")
    assert [p.kind for p in series.problems] == [ProblemKind.FRAMES_UNORDERED]
    with pytest.raises(FrameOrderError, match=r"nothing but DimensionIndexValues that change between the frames"):
        load(series)
    write_enhanced(tmp_path / "good" / "enhanced.dcm", 4, 3, **options)
    np.testing.assert_array_equal(load(tmp_path / "good").array, truth(4, 3))


def test_enhanced_multi_echo_frames_are_one_volume_per_echo(tmp_path):
    # Guard (passes before and after): two echoes stored shuffled in one object, never time frames.
    write_enhanced(tmp_path / "dicom" / "echoes.dcm", 2, 3, dimension_values=True, temporal_index=False, echo_times=[4.5, 9.8])
    found = scan(tmp_path / "dicom")
    assert [s.shape for s in found] == [(3, SIZE, SIZE)] * 2
    volumes = sorted((load(s) for s in found), key=lambda v: int(v.array.max()))
    for t, volume in enumerate(volumes):
        np.testing.assert_array_equal(volume.array, truth(2, 3)[t])
