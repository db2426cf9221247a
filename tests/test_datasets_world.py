"""Slice items say where they lie in the world, and the adapters keep it true through transforms.

A slice item's ``affine`` sends its pixel ``(row, column)`` to the world point (RAS+ mm) of the
stored volume's voxel ``(slice, row, column)``, and on real scanner series to the world point
where dcm2niix's NIfTI holds the same value. Through MONAI (2D transforms, run in the slice's
pixel frame) and TorchIO (anatomical axis names, ``ToCanonical``, 2D augmentations), the item
that comes back says where its pixels now lie: each pixel, sent to the world by the new affine
and into the stored volume's grid, finds the value it holds.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings

import numpy as np
import pytest

import medload
from tests.conftest import shared_path
from tests.test_datasets_seam import HU, KEYS, Case, assert_labels_intact

torch = pytest.importorskip("torch")
mt = pytest.importorskip("monai.transforms")
tio = pytest.importorskip("torchio")
nib = pytest.importorskip("nibabel")

from medload.datasets import MonaiTransform, SliceDataset, TorchIOTransform  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="monai")


@pytest.fixture(scope="module", params=["axial", "sagittal", "coronal", "oblique"])
def case(request, tmp_path_factory) -> Case:
    return Case(tmp_path_factory.mktemp(f"world-{request.param}"), request.param)


def pixel_grid(shape) -> np.ndarray:
    """Homogeneous ``(row, column, 0, 1)`` of every pixel of a ``(H, W)`` slice, one per row."""
    rows, cols = np.indices(shape).reshape(2, -1)
    return np.stack([rows, cols, np.zeros_like(rows), np.ones_like(rows)], axis=1).astype(np.float64)


def stored_voxels(item, record) -> np.ndarray:
    """The stored volume's voxel ``(slice, row, column)`` (real-valued) under each pixel of ``item``."""
    world = pixel_grid(item["image"].shape[1:]) @ item["affine"].numpy().T
    return (world @ np.linalg.inv(record.affine).T)[:, :3]


# --- what the datasets serve -----------------------------------------------------------------


def test_a_slice_items_pixel_lies_where_the_volumes_voxel_does(case):
    reader = medload.open(case.store)
    record = reader.volumes[0]
    ds = SliceDataset(case.store)
    for i in (0, len(ds) // 2, len(ds) - 1):
        item = ds[i]
        affine = item["affine"].numpy()
        assert item["affine"].dtype == torch.float64 and affine.shape == (4, 4)
        for r, c in ((0, 0), (5, 7), (27, 23)):
            np.testing.assert_allclose(affine @ (r, c, 0, 1), record.affine @ (item["slice"], r, c, 1), atol=1e-9)
        # Its voxel sizes (row, column, slice step) are the item's spacing (slice, row, column).
        np.testing.assert_allclose(np.linalg.norm(affine[:3, :3], axis=0), item["spacing"].numpy()[[1, 2, 0]])
        # A nibabel image of the slice, (H, W, 1) with this affine, names the volume's plane axes.
        assert nib.aff2axcodes(affine)[:2] == nib.aff2axcodes(record.affine)[1:]


def test_batches_carry_the_items_affines(case):
    ds = SliceDataset(case.store)
    expected = torch.stack([ds[i]["affine"] for i in range(len(ds))])
    plain = torch.cat([b["affine"] for b in torch.utils.data.DataLoader(ds, batch_size=5)])
    assert torch.equal(plain, expected)
    for workers in (0, 2):
        loader = ds.loader(5, num_workers=workers, compact=True)
        got = torch.cat([loader.decode(b, "cpu")["affine"] for b in loader])
        assert got.dtype == torch.float64 and torch.equal(got, expected)


REAL = {
    "sagittal MR (dicom2nifti anatomical)": ("dicom2nifti", "anatomical", "001"),
    "oblique MR (Hitachi)": ("dicom2nifti", "hitachi", "anatomical", "001"),
    "axial MR (Hyperfine enhanced)": ("dicom2nifti", "hyperfine", "anatomical", "001"),
    "coronal MR (generic)": ("dicom2nifti", "generic", "anatomical", "001"),
}


@pytest.mark.parametrize("name", list(REAL))
def test_on_real_series_a_slice_pixel_lies_where_dcm2niix_holds_its_value(name, tmp_path):
    dicom = shared_path(*REAL[name])
    dcm2niix = shutil.which("dcm2niix")
    if dcm2niix is None:
        pytest.skip("dcm2niix not on PATH (pip install dcm2niix)")
    subprocess.run(
        [dcm2niix, "-z", "n", "-b", "n", "-f", "ref", "-o", str(tmp_path), str(dicom)], check=True, capture_output=True
    )
    (nifti,) = tmp_path.glob("ref*.nii")
    reference = nib.load(str(nifti))
    values = np.asarray(reference.dataobj, dtype=np.float32)
    store = tmp_path / "store"
    assert medload.convert(dicom, store, pipeline="none", dtype="float32", workers=0, progress=False).ok
    ds = SliceDataset(store)
    rng = np.random.default_rng(0)
    to_voxel = np.linalg.inv(reference.affine)
    checked = 0
    for i in sorted({0, len(ds) // 2, len(ds) - 1}):
        item = ds[i]
        h, w = item["image"].shape[1:]
        for r, c in zip(rng.integers(h, size=12), rng.integers(w, size=12)):
            world = item["affine"].numpy() @ (r, c, 0, 1)
            voxel = (to_voxel @ world)[:3]
            # The world point is a voxel centre of dcm2niix's grid (to 0.01 mm) holding the same value.
            np.testing.assert_allclose(voxel, np.rint(voxel), atol=0.01 / min(reference.header.get_zooms()[:3]))
            expected = values[tuple(np.rint(voxel).astype(int))]
            np.testing.assert_allclose(float(item["image"][0, r, c]), expected, rtol=1e-5, atol=1e-3)
            checked += 1
    assert checked >= 24


# --- MONAI 2D transforms: the affine that comes back is where the pixels now lie -------------


def _monai_2d() -> dict:
    return {
        "RandFlipd": mt.Compose([mt.RandFlipd(keys=KEYS, prob=1.0, spatial_axis=a) for a in (0, 1)]),
        "RandRotate90d": mt.RandRotate90d(keys=KEYS, prob=1.0, max_k=3),
        "RandSpatialCropd": mt.RandSpatialCropd(keys=KEYS, roi_size=(24, 20), random_size=False),
        "Spacingd": mt.Spacingd(keys=KEYS, pixdim=(0.7, 0.5), mode=("bilinear", "nearest")),
        "RandAffined": mt.RandAffined(
            keys=KEYS, prob=1.0, rotate_range=(0.5,), translate_range=(3, 2), mode=("bilinear", "nearest")
        ),
    }


@pytest.mark.parametrize("name", list(_monai_2d()))
def test_monai_on_a_slice_gives_back_where_its_pixels_lie(case, name):
    transform = _monai_2d()[name]
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=3)
    record = medload.open(case.store).volumes[0]
    stored = medload.open(case.store).read_mask(0, 0, record.shape[0])
    item = _labelled_slice(case)
    out = MonaiTransform(transform)(item)
    assert_labels_intact(out, item)
    voxels = stored_voxels(out, record)
    # Every pixel still lies in the item's slice ...
    np.testing.assert_allclose(voxels[:, 0], item["slice"], atol=1e-6)
    # ... on the stored voxel whose label it holds (exactly for flips, turns and crops; resampled
    # grids put a label's rim between voxels).
    inside = np.all((voxels >= -0.5) & (voxels < np.array(record.shape) - 0.5), axis=1)
    nearest = np.rint(voxels[inside]).astype(int)
    agree = float(np.mean(stored[tuple(nearest.T)] == out["mask"][0].numpy().reshape(-1)[inside]))
    exact = name in ("RandFlipd", "RandRotate90d", "RandSpatialCropd")
    assert agree == 1.0 if exact else agree > 0.97, agree
    if exact:
        np.testing.assert_allclose(voxels, np.rint(voxels), atol=1e-6)
    np.testing.assert_allclose(out["spacing"].numpy(), np.linalg.norm(out["affine"].numpy()[:3, :3], axis=0)[[2, 0, 1]])


# --- TorchIO: anatomical names and ToCanonical mean the patient's axes ------------------------


def _labelled_slice(case) -> dict:
    ds = SliceDataset(case.store)
    return max((ds[i] for i in range(len(ds))), key=lambda it: (len(it["mask"].unique()), int((it["mask"] > 0).sum())))


def test_torchio_flip_lr_mirrors_the_patients_left_and_right(case):
    item = _labelled_slice(case)
    out = TorchIOTransform(tio.Flip(axes=("LR",)))(item)
    np.testing.assert_array_equal(out["affine"].numpy(), item["affine"].numpy())  # TorchIO flips the data, not the grid
    affine = item["affine"].numpy()
    # The world-defined flip: mirror each pixel's world point across the slice's centre along R,
    # on the slice's array axis closest to R (a sagittal slice has none in plane: nothing moves).
    lr_axis = int(np.argmax(np.abs(affine[0, :3])))
    if lr_axis == 2:
        assert case.orientation == "sagittal"
        assert torch.equal(out["image"], item["image"]) and torch.equal(out["mask"], item["mask"])
        return
    assert case.orientation != "sagittal"
    expected_image, expected_mask = (torch.flip(item[k], dims=(lr_axis + 1,)) for k in ("image", "mask"))
    assert torch.equal(out["image"], expected_image) and torch.equal(out["mask"], expected_mask)
    # In world terms: the label lying further right now lies further left, about the slice's centre.
    centre = affine @ (*(np.array(item["image"].shape[1:]) - 1) / 2, 0, 1)
    for k in HU:
        before = affine @ (*np.argwhere(item["mask"][0].numpy() == k).mean(axis=0), 0, 1)
        after = affine @ (*np.argwhere(out["mask"][0].numpy() == k).mean(axis=0), 0, 1)
        if abs(before[0] - centre[0]) > 1.0:
            assert (after[0] - centre[0]) * (before[0] - centre[0]) < 0, (k, before, after, centre)


@pytest.mark.parametrize("by_hand", [False, True], ids=["TorchIOTransform", "Subject built by hand"])
def test_torchio_to_canonical_orders_a_slice_as_ras(case, by_hand):
    item = _labelled_slice(case)
    record = medload.open(case.store).volumes[0]
    if by_hand:  # what a user writes: the item's affine as it is, the slice one voxel thick
        subject = tio.Subject(
            image=tio.ScalarImage(tensor=item["image"][..., None], affine=item["affine"].numpy()),
            mask=tio.LabelMap(tensor=item["mask"][..., None].to(torch.int32), affine=item["affine"].numpy()),
        )
        canonical = tio.ToCanonical()(subject)
        assert nib.aff2axcodes(canonical["image"].affine) == ("R", "A", "S")
        world = pixel_grid((1, 1)) @ canonical["image"].affine.T  # its voxel (0, 0, 0)
        image = canonical["image"].data
        first = (world @ np.linalg.inv(record.affine).T)[0, :3]
        np.testing.assert_allclose(first, np.rint(first), atol=1e-6)
        assert float(image.flatten()[0]) == float(medload.open(case.store).read_slices(0, int(first[0]), int(first[0]) + 1)[0][tuple(np.rint(first[1:]).astype(int))])  # fmt: skip
        return
    out = TorchIOTransform(tio.ToCanonical())(item)
    assert out["image"].ndim == 3 and out["mask"].dtype == torch.int64
    codes = nib.aff2axcodes(out["affine"].numpy())
    assert list(codes[:2]) == [c for c in "RAS" if c != codes[2]], codes  # in-plane axes in RAS order
    voxels = stored_voxels(out, record)
    np.testing.assert_allclose(voxels, np.rint(voxels), atol=1e-6)
    nearest = np.rint(voxels).astype(int)
    stored = medload.open(case.store).read_mask(0, 0, record.shape[0])
    np.testing.assert_array_equal(stored[tuple(nearest.T)], out["mask"][0].numpy().reshape(-1))


@pytest.mark.parametrize(
    "make",
    [
        lambda: tio.RandomAffine(degrees=20, translation=2),
        lambda: tio.RandomElasticDeformation(num_control_points=5, max_displacement=(4, 4, 0)),
        lambda: tio.Compose([tio.ToCanonical(), tio.RandomAffine(degrees=20), tio.Flip(axes=("AP",))]),
    ],
    ids=["RandomAffine", "RandomElasticDeformation", "ToCanonical+RandomAffine+Flip"],
)
def test_torchio_2d_augmentations_turn_a_slice_in_its_own_plane(case, make):
    # TorchIO turns a 2D image about the world's S axis; a sagittal slice turned so leaves its
    # plane and comes back mostly empty. In the slice's own frame both labels survive.
    item = _labelled_slice(case)
    torch.manual_seed(1)
    out = TorchIOTransform(make())(item)
    assert_labels_intact(out, item)
    for k in HU:
        before, after = (int((x["mask"] == k).sum()) for x in (item, out))
        assert after > 0.6 * before, (k, before, after)
    # The grid stays in the slice's plane: the slice step is the same vector.
    np.testing.assert_allclose(np.abs(out["affine"].numpy()[:3, 2]), np.abs(item["affine"].numpy()[:3, 2]), atol=1e-9)


def test_torchio_one_of_runs_each_choice_in_its_own_frame(case):
    # A OneOf mixing a world-named flip with an in-plane augmentation: each choice as it would run alone.
    item = _labelled_slice(case)
    flip_drawn = tio.OneOf({tio.Flip(axes=("LR",)): 1.0, tio.RandomAffine(degrees=20): 0.0})
    alone = TorchIOTransform(tio.Flip(axes=("LR",)))(item)
    out = TorchIOTransform(flip_drawn)(item)
    for key in ("image", "mask", "affine"):
        assert torch.equal(out[key], alone[key]), key
    affine_drawn = tio.Compose([tio.OneOf({tio.Flip(axes=("LR",)): 0.0, tio.RandomAffine(degrees=20): 1.0})])
    torch.manual_seed(1)
    out = TorchIOTransform(affine_drawn)(item)
    assert_labels_intact(out, item)
    for k in HU:  # turned in the slice's plane: both labels survive
        assert int((out["mask"] == k).sum()) > 0.6 * int((item["mask"] == k).sum()), k
    np.testing.assert_allclose(np.abs(out["affine"].numpy()[:3, 2]), np.abs(item["affine"].numpy()[:3, 2]), atol=1e-9)
    never = TorchIOTransform(tio.OneOf([tio.Flip(axes=(0,)), tio.RandomAffine(degrees=20)], p=0.0))(item)
    assert torch.equal(never["image"], item["image"]) and torch.equal(never["affine"], item["affine"])


def test_torchio_resampling_a_slice_keeps_its_slice_step_and_world(case):
    item = _labelled_slice(case)
    out = TorchIOTransform(tio.Resample(0.5))(item)
    assert_labels_intact(out, item)
    # In plane 0.5 mm; the slice axis still steps to the stored neighbours (TorchIO would say 0.5 mm).
    np.testing.assert_allclose(out["spacing"].numpy(), [item["spacing"][0], 0.5, 0.5], atol=1e-9)
    np.testing.assert_allclose(np.abs(out["affine"].numpy()[:3, 2]), np.abs(item["affine"].numpy()[:3, 2]), atol=1e-9)
    record = medload.open(case.store).volumes[0]
    voxels = stored_voxels(out, record)
    np.testing.assert_allclose(voxels[:, 0], item["slice"], atol=1e-6)


def test_torchio_making_a_slice_thicker_is_refused(case):
    with pytest.raises(medload.MedloadError, match="one voxel thick"):
        TorchIOTransform(tio.Pad((0, 0, 0, 0, 1, 1)))(_labelled_slice(case))


def test_albumentations_leaves_no_stale_affine(case):
    A = pytest.importorskip("albumentations")
    from medload.datasets import AlbumentationsTransform

    item = _labelled_slice(case)
    flipped = AlbumentationsTransform(A.HorizontalFlip(p=1.0))(item)
    assert torch.isnan(flipped["affine"]).all()  # albumentations does not say where the pixels went
    brighter = AlbumentationsTransform(A.RandomBrightnessContrast(p=1.0))(item)
    assert torch.equal(brighter["affine"], item["affine"])  # pixel values only: the grid stands


def test_numpy_batches_carry_the_slices_affines(case):
    from medload.datasets import NumpyBatches

    ds = SliceDataset(case.store)
    for batch in NumpyBatches(case.store, batch_size=6, shuffle=True, seed=1):
        for row, (v, s) in enumerate(zip(batch["volume"], batch["slice"])):
            item = ds[int(np.flatnonzero((ds._vol == v) & (ds._slice == s))[0])]
            np.testing.assert_array_equal(batch["affine"][row], item["affine"].numpy())
            np.testing.assert_array_equal(batch["spacing"][row], item["spacing"].numpy())
