"""Items fit MONAI, TorchIO and torchvision v2: random flips, affines and crops move image and mask alike.

The store holds an image that is 1.0 exactly where its mask is 1 (an off-centre L-shaped
lesion, so no flip or rotation maps it onto itself) and 0.0 elsewhere. After any spatial
augmentation applied to the item, the mean image value inside the augmented mask stays near
1.0 (up to interpolation at the lesion's edge); a mask moved differently from the image
drops it far below (checked too, so the number can fail).
"""

from __future__ import annotations

import numpy as np
import pytest

import medload

torch = pytest.importorskip("torch")
monai_transforms = pytest.importorskip("monai.transforms")

from medload.datasets import SliceDataset, VolumeDataset

SIZE, DEPTH = 48, 12
# Bilinear resampling blurs the lesion's one-pixel rim: aligned items stay above this, a mask
# moved differently from its image falls below 0.5 (test_the_check_fails_when_only_the_image_moves).
ALIGNED = 0.9


def lesion(depth: int = DEPTH) -> np.ndarray:
    mask = np.zeros((depth, SIZE, SIZE), np.uint8)
    mask[2:9, 4:20, 4:10] = 1  # the long arm of the L, in the upper left quadrant
    mask[2:9, 14:20, 10:22] = 1  # the foot
    return mask


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("aug") / "lesion.h5"
    mask = lesion()
    image = mask.astype(np.float32)
    vol = medload.Volume(
        image, np.diag([3.0, 0.8, 0.7, 1.0]), modality="CT", meta={"patient_key": "p", "series_key": "s", "source_hash": "h"}
    )
    with medload.Store.create(path, dtype="float32", compression=None) as st:
        st.add(vol, mask=mask)
    return path


def mean_inside(image, mask) -> float:
    image = torch.as_tensor(np.asarray(image), dtype=torch.float32)
    mask = torch.as_tensor(np.asarray(mask)) > 0.5
    assert mask.any(), "the augmented mask lost the lesion"
    return float(image[0][mask[0]].mean())


def moved(before, after) -> bool:
    """True when the augmentation changed the mask (so the check below is not vacuous)."""
    a, b = np.asarray(before), np.asarray(after)
    return a.shape != b.shape or not np.array_equal(a, b)


def test_items_are_channel_first_with_spacing(store):
    item = SliceDataset(store)[4]
    assert tuple(item["image"].shape) == (1, SIZE, SIZE) and tuple(item["mask"].shape) == (1, SIZE, SIZE)
    assert item["spacing"].tolist() == [3.0, 0.8, 0.7]
    assert mean_inside(item["image"], item["mask"]) == 1.0
    vitem = VolumeDataset(store)[0]
    assert tuple(vitem["image"].shape) == (1, DEPTH, SIZE, SIZE) and tuple(vitem["mask"].shape) == (1, DEPTH, SIZE, SIZE)


def _monai_2d():
    mt = monai_transforms
    keys = ["image", "mask"]
    return {
        "flip rows": mt.RandFlipd(keys=keys, prob=1.0, spatial_axis=0),
        "flip columns": mt.RandFlipd(keys=keys, prob=1.0, spatial_axis=1),
        "affine": mt.RandAffined(
            keys=keys,
            prob=1.0,
            rotate_range=(0.6,),
            translate_range=(4, 6),
            scale_range=(0.15, 0.15),
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
        "crop": mt.RandSpatialCropd(keys=keys, roi_size=(32, 32), random_size=False),
    }


@pytest.mark.parametrize("name", list(_monai_2d()))
def test_monai_2d_transforms_keep_mask_on_the_image(store, name):
    transform = _monai_2d()[name]
    transform.set_random_state(seed=3)
    ds = SliceDataset(store, transform=transform)
    plain = SliceDataset(store)
    for i in (3, 5, 7):  # slices through the lesion
        out = ds[i]
        assert out["mask"].shape[0] == 1 and out["image"].shape[1:] == out["mask"].shape[1:]
        assert moved(plain[i]["mask"], out["mask"]), name
        assert mean_inside(out["image"], out["mask"]) > ALIGNED, name


def test_the_check_fails_when_only_the_image_moves(store):
    # The number above must be able to fail: flip the image alone, or the old (H, W) mask layout
    # that MONAI flipped along W while flipping the image along H.
    item = SliceDataset(store)[5]
    flipped = monai_transforms.Flip(spatial_axis=0)(item["image"])
    assert mean_inside(flipped, item["mask"]) < 0.5
    old_layout_mask = monai_transforms.Flip(spatial_axis=0)(item["mask"][0])  # (H, W) read as (C=H, W): flips W
    assert mean_inside(flipped, torch.as_tensor(np.asarray(old_layout_mask))[None]) < 0.5


def test_monai_3d_affine_and_crop_keep_mask_on_the_volume(store):
    mt = monai_transforms
    keys = ["image", "mask"]
    transform = mt.Compose(
        [
            mt.RandFlipd(keys=keys, prob=1.0, spatial_axis=2),
            mt.RandAffined(
                keys=keys, prob=1.0, rotate_range=(0.0, 0.0, 0.5), translate_range=(0, 3, 3), mode=("bilinear", "nearest")
            ),
            mt.RandSpatialCropd(keys=keys, roi_size=(8, 40, 40), random_size=False),
        ]
    )
    transform.set_random_state(seed=0)
    out = VolumeDataset(store, transform=transform)[0]
    assert tuple(out["mask"].shape) == (1, 8, 40, 40)
    assert mean_inside(out["image"], out["mask"]) > ALIGNED


def test_torchio_flip_affine_crop_keep_mask_on_the_volume(store):
    tio = pytest.importorskip("torchio")
    item = VolumeDataset(store)[0]
    spacing = item["spacing"].tolist()
    subject = tio.Subject(
        image=tio.ScalarImage(tensor=item["image"], affine=np.diag([*spacing, 1.0])),
        mask=tio.LabelMap(tensor=item["mask"], affine=np.diag([*spacing, 1.0])),
    )
    torch.manual_seed(0)
    transforms = {
        "flip": tio.RandomFlip(axes=(0, 1, 2), flip_probability=1.0),
        "affine": tio.RandomAffine(scales=0.1, degrees=(0, 0, 0, 0, 25, 25), translation=2, image_interpolation="linear"),
        "crop": tio.Crop((2, 2, 4, 6, 8, 4)),
    }
    for name, transform in transforms.items():
        out = transform(subject)
        assert out["mask"].data.shape == out["image"].data.shape, name
        assert moved(subject["mask"].data, out["mask"].data), name
        assert mean_inside(out["image"].data, out["mask"].data) > ALIGNED, name


def test_torchvision_v2_moves_tv_tensor_items_alike(store):
    pytest.importorskip("torchvision")
    from torchvision.transforms import v2

    transform = v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.RandomResizedCrop((32, 32), scale=(0.5, 1.0))])
    torch.manual_seed(0)
    out = SliceDataset(store, transform=transform, tv_tensors=True)[5]
    assert tuple(out["mask"].shape) == (1, 32, 32)
    assert mean_inside(out["image"], out["mask"]) > ALIGNED


def test_tv_tensors_without_torchvision_names_the_install(store):
    try:
        import torchvision  # noqa: F401
    except ImportError:
        with pytest.raises(medload.MedloadError, match="torchvision"):
            SliceDataset(store, tv_tensors=True)
    else:
        item = SliceDataset(store, tv_tensors=True)[5]
        assert type(item["mask"]).__name__ == "Mask" and type(item["image"]).__name__ == "Image"


@pytest.mark.parametrize("channels_last", [False, True])
def test_numpy_batches_masks_have_the_images_layout(store, channels_last):
    from medload.datasets.numpy_batches import NumpyBatches

    batch = next(iter(NumpyBatches(store, batch_size=DEPTH, channels_last=channels_last, shuffle=False)))
    image, mask = batch["image"], batch["mask"]
    assert mask.shape == image.shape  # one channel each: (N, 1, H, W) or (N, H, W, 1)
    np.testing.assert_array_equal(mask.astype(np.float32), image)  # the lesion image is its mask
