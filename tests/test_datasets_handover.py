"""A transform passed to a dataset as it is, as a user copying a MONAI tutorial does: the item's affine stays true.

The store holds an oblique volume whose first three channels are each voxel's own world
coordinates (RAS mm) and whose fourth is one everywhere. Linear interpolation keeps a linear
function exactly, so after any spatial transform an item's pixel must still hold the world point
its ``affine`` gives it: ``image[:3, v] == affine @ v`` wherever channel 3 says no zero padding
reached the pixel. The mask holds a label that is a function of the world point too (which side
of two planes it lies on), so nearest-neighbour resampling must keep ``mask[v] ==
label(affine @ v)`` but for pixels next to the planes.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import medload

torch = pytest.importorskip("torch")
mt = pytest.importorskip("monai.transforms")
tio = pytest.importorskip("torchio")

from medload.datasets import SliceDataset, VolumeDataset  # noqa: E402
from medload.datasets import StaleAffineWarning  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="monai")
warnings.filterwarnings("ignore", category=UserWarning, module="monai")

SHAPE = (10, 16, 14)  # slices, rows, columns
KEYS = ["image", "mask"]


def oblique_affine() -> np.ndarray:
    angle = np.deg2rad(20.0)
    turn = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = turn @ np.array([[0, 0, 0.8], [0, 0.9, 0], [2.5, 0, 0]])  # slices along S, 2.5 mm apart
    affine[:3, 3] = (-12.0, 7.0, 30.0)
    return affine


def label_of(world: np.ndarray) -> np.ndarray:
    """The mask's label at world points ``(..., 3)``: 1 + which side of two planes through the volume."""
    centre = oblique_affine() @ np.append((np.array(SHAPE) - 1) / 2, 1.0)
    return 1 + (world[..., 0] > centre[0]) + 2 * (world[..., 2] > centre[2])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), axis=-1).astype(np.float64)
    world = grid @ oblique_affine()[:3, :3].T + oblique_affine()[:3, 3]
    image = np.concatenate([world.transpose(3, 0, 1, 2), np.ones((1, *SHAPE))]).astype(np.float32)
    path = tmp_path_factory.mktemp("handover") / "store.h5"
    meta = {"patient_key": "p", "series_key": "s", "source_hash": "h", "channels": ["R", "A", "S", "one"]}
    with medload.Store.create(path, dtype="float32") as st:
        st.add(medload.Volume(image, oblique_affine(), modality="MR", meta=meta), mask=label_of(world).astype(np.uint8), label=1)
    return path


def assert_aligned(item) -> None:
    """Each unpadded pixel's mask label is the label of the world point its image channels hold."""
    image, mask = item["image"].numpy(), item["mask"]
    assert mask.dtype == torch.int64
    inside = image[3].reshape(-1) > 0.9999
    held = image[:3].reshape(3, -1).T[inside]
    assert (mask.numpy().reshape(-1)[inside] == label_of(held)).mean() > 0.9


def assert_geometry_true(item, *, rim: int = 0) -> None:
    """Every unpadded pixel (``rim`` pixels from the edge left out) holds the world point the item's
    affine gives it; the mask, its label there."""
    assert_aligned(item)
    image, mask, affine = item["image"].numpy(), item["mask"], item["affine"].numpy()
    assert mask.dtype == torch.int64 and np.isfinite(affine).all()
    if rim:
        core = np.zeros(image.shape[1:], bool)
        core[tuple(slice(rim, n - rim) for n in image.shape[1:])] = True
        image = np.where(core, image, 0.0)  # the rim counts as padded
    spatial = image.shape[1:]
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in spatial], indexing="ij"), axis=-1).reshape(-1, len(spatial))
    if len(spatial) == 2:
        grid = np.concatenate([grid, np.zeros((len(grid), 1))], axis=1)  # a slice's pixel (row, column, 0)
    world = grid @ affine[:3, :3].T + affine[:3, 3]
    inside = image[3].reshape(-1) > 0.9999  # no zero padding mixed in
    assert inside.mean() > 0.3, "the transform padded most of the item: the check proves little"
    held = image[:3].reshape(3, -1).T
    np.testing.assert_allclose(held[inside], world[inside], atol=0.02)
    labels = mask.numpy().reshape(-1)[inside]
    assert (labels == label_of(world[inside])).mean() > 0.9


def _3d() -> dict:
    return {
        "RandFlipd": mt.Compose([mt.RandFlipd(keys=KEYS, prob=1.0, spatial_axis=a) for a in (0, 2)]),
        "RandRotate90d": mt.RandRotate90d(keys=KEYS, prob=1.0, max_k=3, spatial_axes=(1, 2)),
        "RandAffined": mt.RandAffined(
            keys=KEYS,
            prob=1.0,
            rotate_range=(0.3, 0.3, 0.3),
            translate_range=(1, 2, 2),
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
        "RandSpatialCropd": mt.RandSpatialCropd(keys=KEYS, roi_size=(8, 12, 10), random_size=False),
        "Spacingd": mt.Spacingd(keys=KEYS, pixdim=(1.5, 0.7, 0.7), mode=("bilinear", "nearest"), padding_mode="zeros"),
        "Orientationd": mt.Orientationd(keys=KEYS, axcodes="LPI", labels=None),
    }


@pytest.mark.parametrize("name", list(_3d()))
def test_a_bare_monai_transform_on_volume_items_keeps_the_affine_true(store, name):
    transform = _3d()[name]
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=3)
    item = VolumeDataset(store, transform=transform)[0]
    assert_geometry_true(item)
    assert_geometry_true(VolumeDataset(store)[0])  # the check holds on the stored grid too


def _2d() -> dict:
    return {
        "RandFlipd": mt.RandFlipd(keys=KEYS, prob=1.0, spatial_axis=1),
        "RandRotate90d": mt.RandRotate90d(keys=KEYS, prob=1.0, max_k=3),
        "RandAffined": mt.RandAffined(
            keys=KEYS, prob=1.0, rotate_range=0.4, translate_range=(2, 2), mode=("bilinear", "nearest"), padding_mode="zeros"
        ),
        "RandSpatialCropd": mt.RandSpatialCropd(keys=KEYS, roi_size=(12, 10), random_size=False),
        "Spacingd": mt.Spacingd(keys=KEYS, pixdim=(0.6, 0.6), mode=("bilinear", "nearest"), padding_mode="zeros"),
    }


@pytest.mark.parametrize("name", list(_2d()))
def test_a_bare_monai_transform_on_slice_items_keeps_the_affine_true(store, name):
    transform = _2d()[name]
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=5)
    ds = SliceDataset(store, transform=transform)
    for i in (2, 7):
        assert_geometry_true(ds[i])


def test_spacingd_on_a_bare_slice_gets_the_pixel_size_asked_for(store):
    # MONAI given plain tensors would take the pixels for 1 mm ones and give 0.54 x 0.48 mm.
    spacingd = mt.Spacingd(keys=KEYS, pixdim=(0.6, 0.6), mode=("bilinear", "nearest"), padding_mode="zeros")
    item = SliceDataset(store, transform=spacingd)[3]
    np.testing.assert_allclose(item["spacing"].numpy(), [2.5, 0.6, 0.6], atol=1e-6)
    assert item["image"].shape[1] == 24  # 16 rows of 0.9 mm at 0.6 mm
    assert_geometry_true(item)


def test_monai_inside_the_users_own_function_leaves_no_stale_affine(store):
    # MONAI given plain tensors takes their affine for the identity; the item's affine cannot follow.
    flip = mt.RandFlipd(keys=KEYS, prob=1.0, spatial_axis=1)
    ds = VolumeDataset(store, transform=lambda item: flip(item))
    with pytest.warns(StaleAffineWarning, match="MONAI"):
        item = ds[0]
    assert torch.isnan(item["affine"]).all() and torch.isnan(item["spacing"]).all()


def test_a_transform_that_changes_the_grid_leaves_no_stale_affine(store):
    def crop(item):
        item["image"], item["mask"] = item["image"][:, 2:, 3:], item["mask"][:, 2:, 3:]
        return item

    with pytest.warns(StaleAffineWarning, match="grid changed"):
        item = SliceDataset(store, transform=crop)[0]
    assert torch.isnan(item["affine"]).all()
    spacing = item["spacing"].numpy()
    assert spacing[0] == pytest.approx(2.5) and np.isnan(spacing[1:]).all()


def test_an_intensity_transform_keeps_the_affine(store):
    plain = SliceDataset(store)[4]
    with warnings.catch_warnings():
        warnings.simplefilter("error", StaleAffineWarning)
        item = SliceDataset(store, transform=mt.ScaleIntensityd(keys=["image"]))[4]
        doubled = SliceDataset(store, transform=lambda item: dict(item, image=item["image"] * 2))[4]
    torch.testing.assert_close(item["affine"], plain["affine"])
    torch.testing.assert_close(doubled["affine"], plain["affine"])


def test_torchvision_v2_flip_leaves_no_stale_affine(store):
    v2 = pytest.importorskip("torchvision.transforms.v2", reason="torchvision does not import here")
    ds = SliceDataset(store, tv_tensors=True, transform=v2.RandomHorizontalFlip(p=1.0))
    with pytest.warns(StaleAffineWarning, match="torchvision"):
        item = ds[0]
    assert torch.isnan(item["affine"]).all()
    np.testing.assert_allclose(item["spacing"].numpy(), SliceDataset(store)[0]["spacing"].numpy())  # a flip keeps pixel size
    assert torch.equal(item["mask"], torch.flip(SliceDataset(store)[0]["mask"], dims=(-1,)))


def test_monai_tutorial_keys_name_the_mask_label_and_are_told_what_medload_calls_it(store):
    # MONAI's tutorials use keys=["image", "label"] for the segmentation; a medload item's "label" is its class.
    ds = SliceDataset(store, transform=mt.RandFlipd(keys=["image", "label"], prob=1.0, spatial_axis=0))
    with pytest.raises(medload.MedloadError, match=r"keys=\['image', 'mask'\]"):
        ds[0]


def test_torchvision_v2_moves_the_mask_without_tv_tensors_asked_for(store):
    v2 = pytest.importorskip("torchvision.transforms.v2", reason="torchvision does not import here")
    # Given plain tensors, v2 flips the first (the image) and leaves the mask: the dataset hands it tv_tensors.
    item = SliceDataset(store, transform=v2.RandomHorizontalFlip(p=1.0))[0]
    plain = SliceDataset(store)[0]
    assert torch.equal(item["image"], torch.flip(plain["image"], dims=(-1,)))
    assert torch.equal(item["mask"], torch.flip(plain["mask"], dims=(-1,)))


def test_monai_pos_neg_crops_reading_label_key_label_are_told_to_read_the_mask(store):
    crop = mt.RandCropByPosNegLabeld(keys=KEYS, label_key="label", spatial_size=(4, 8, 8), num_samples=2)
    with pytest.raises(medload.MedloadError, match="label_key='mask'"):
        VolumeDataset(store, transform=crop)[0]
    crop = mt.RandCropByPosNegLabeld(keys=KEYS, label_key="mask", spatial_size=(4, 8, 8), num_samples=2)
    crop.set_random_state(seed=0)
    for item in VolumeDataset(store, transform=crop)[0]:  # one item per sample, each with its own affine
        assert tuple(item["image"].shape[1:]) == (4, 8, 8)
        assert_geometry_true(item)


@pytest.mark.parametrize(
    "make", [lambda: tio.ToCanonical(), lambda: tio.Resample((1.5, 0.7, 0.7))], ids=["ToCanonical", "Resample"]
)
def test_a_bare_torchio_transform_on_volume_items_keeps_the_affine_true(store, make):
    # TorchIO refuses a plain dict (it asks for include=); the dataset hands it a Subject with the affine.
    assert_geometry_true(VolumeDataset(store, transform=make())[0], rim=1)  # SimpleITK extends the border


@pytest.mark.parametrize(
    "make",
    [
        lambda: tio.RandomFlip(axes=(0, 1, 2), flip_probability=1.0),
        lambda: tio.RandomAffine(degrees=15, translation=2, image_interpolation="linear", default_pad_value=0),
    ],
    ids=["RandomFlip", "RandomAffine"],
)
def test_a_bare_torchio_augmentation_moves_image_and_mask_alike(store, make):
    # TorchIO's augmentations make another patient on the same grid: the affine stays, the content moves.
    torch.manual_seed(2)
    item, plain = VolumeDataset(store, transform=make())[0], VolumeDataset(store)[0]
    assert_aligned(item)
    assert not torch.equal(item["image"], plain["image"])
    torch.testing.assert_close(item["affine"], plain["affine"])


def test_a_bare_torchio_flip_on_a_slice_mirrors_the_patients_left_and_right(store):
    plain = SliceDataset(store)[4]
    out = SliceDataset(store, transform=tio.Flip(axes=("LR",)))[4]
    assert_aligned(out)
    # The oblique slice's columns run closest to R: those are what a left-right flip mirrors.
    assert torch.equal(out["image"], torch.flip(plain["image"], dims=(-1,)))
