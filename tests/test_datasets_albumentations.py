"""albumentations at the seam: channels, mask labels, pixel size, and a random stream per worker.

A user of 2D slices (chest films, dermoscopy, one CT slice at a time) reaches for
albumentations, which takes ``(H, W, C)`` numpy images as keyword arguments; medload items
hold ``(C, H, W)`` tensors. These tests check what that user would: after
:class:`medload.datasets.AlbumentationsTransform` the image and mask moved alike (the image
inside each label keeps that label's level), channels stay in order, labels stay labels, the
pixel size is right or said to be unknown; and that random transforms (albumentations' and
MONAI's, which own their generators) draw a different stream in each DataLoader worker and
each epoch, repeatable with the DataLoader's generator.
"""

from __future__ import annotations

import numpy as np
import pytest

import medload

torch = pytest.importorskip("torch")
A = pytest.importorskip("albumentations")
cv2 = pytest.importorskip("cv2")

from medload.datasets import AlbumentationsTransform, MonaiTransform, SliceDataset  # noqa: E402
from medload.errors import MedloadError  # noqa: E402

H, W = 12, 20  # not square: a transposed read of the item shows as a wrong shape
LEVELS = np.array([0.0, 0.25, 0.5, 1.0], np.float32)  # image value of each label 0..3


def labelled_store(path, *, channels: int = 1, slices: int = 4, spacing=(2.0, 0.7, 0.7)) -> str:
    """Slices whose image is LEVELS[mask] (label 3 an L in one corner: no flip maps it onto itself)."""
    mask = np.zeros((slices, H, W), np.uint8)
    mask[:, 2:9, 2:5] = 3
    mask[:, 7:9, 5:12] = 3
    mask[:, 1:4, 14:19] = 1
    mask[:, 8:11, 13:18] = 2
    image = LEVELS[mask]
    affine = np.diag([spacing[0], spacing[1], spacing[2], 1.0])
    with medload.Store.create(path, dtype="float32") as store:
        if channels == 1:
            store.add(medload.Volume(image, affine), mask=mask)
        else:
            stacked = np.stack([image * (c + 1) / channels for c in range(channels)])  # (frames, Z, Y, X)
            store.add(medload.Volume(stacked, affine, meta={"channels": [f"c{c}" for c in range(channels)]}), mask=mask)
    return str(path)


def test_horizontal_flip_moves_columns_not_channels_or_rows(tmp_path):
    ds = SliceDataset(labelled_store(tmp_path / "s.h5"), transform=AlbumentationsTransform(A.HorizontalFlip(p=1.0)))
    plain = SliceDataset(tmp_path / "s.h5")
    item, before = ds[1], plain[1]
    assert tuple(item["image"].shape) == (1, H, W) and item["image"].dtype == torch.float32
    assert torch.equal(item["image"], torch.flip(before["image"], dims=[-1]))
    assert torch.equal(item["mask"], torch.flip(before["mask"], dims=[-1]))
    assert item["mask"].dtype == torch.int64
    assert item["spacing"].tolist() == before["spacing"].tolist()


@pytest.mark.parametrize(
    "transform",
    [
        A.Rotate(limit=(33, 33), interpolation=cv2.INTER_NEAREST, p=1.0),
        A.Affine(scale=1.3, translate_px=(2, -1), rotate=-17, interpolation=cv2.INTER_NEAREST, p=1.0),
        A.Compose([A.VerticalFlip(p=1.0), A.RandomRotate90(p=1.0), A.Transpose(p=1.0)]),
        A.RandomResizedCrop(size=(16, 16), interpolation=cv2.INTER_NEAREST, p=1.0),
        A.ElasticTransform(alpha=30, sigma=4, interpolation=cv2.INTER_NEAREST, p=1.0),
    ],
    ids=["rotate", "affine", "flip-rot90-transpose", "resized-crop", "elastic"],
)
def test_image_and_mask_move_alike(tmp_path, transform):
    ds = SliceDataset(labelled_store(tmp_path / "s.h5"), transform=AlbumentationsTransform(transform))
    for i in range(len(ds)):
        item = ds[i]
        mask = item["mask"][0].numpy()
        assert item["image"].shape[1:] == item["mask"].shape[1:]
        # Nearest neighbours for both: the image inside each label is exactly that label's level.
        np.testing.assert_array_equal(item["image"][0].numpy(), LEVELS[mask])
        assert set(np.unique(mask)) <= {0, 1, 2, 3}


def test_channels_stay_in_order_through_a_spatial_transform(tmp_path):
    path = labelled_store(tmp_path / "rgb.h5", channels=3)
    flip = SliceDataset(path, transform=AlbumentationsTransform(A.Compose([A.HorizontalFlip(p=1.0), A.VerticalFlip(p=1.0)])))
    plain = SliceDataset(path)
    item, before = flip[0], plain[0]
    assert tuple(item["image"].shape) == (3, H, W)
    assert torch.equal(item["image"], torch.flip(before["image"], dims=[-2, -1]))
    # Channel c holds LEVELS * (c + 1) / 3: the largest value per channel says which is which.
    assert [round(float(item["image"][c].max()), 4) for c in range(3)] == [round((c + 1) / 3, 4) for c in range(3)]


def test_pixel_size_kept_by_flips_and_crops_unknown_after_resizing(tmp_path):
    path = labelled_store(tmp_path / "s.h5")
    kept = SliceDataset(path, transform=AlbumentationsTransform(A.Compose([A.HorizontalFlip(p=1.0), A.RandomCrop(8, 8)])))
    assert kept[0]["spacing"].tolist() == [2.0, 0.7, 0.7]
    assert tuple(kept[0]["image"].shape) == (1, 8, 8)
    turned = SliceDataset(path, transform=AlbumentationsTransform(A.RandomRotate90(p=1.0)))
    assert turned[0]["spacing"].tolist() == [2.0, 0.7, 0.7]  # square pixels: a quarter turn keeps them
    resized = SliceDataset(path, transform=AlbumentationsTransform(A.Resize(24, 24)))
    spacing = resized[0]["spacing"].numpy()
    assert spacing[0] == 2.0 and np.isnan(spacing[1:]).all()


def test_a_plain_pixel_transform_keeps_pixel_size_and_mask(tmp_path):
    path = labelled_store(tmp_path / "s.h5")
    ds = SliceDataset(path, transform=AlbumentationsTransform(A.RandomGamma(gamma_limit=(150, 150), p=1.0)))
    item, before = ds[0], SliceDataset(path)[0]
    assert item["spacing"].tolist() == [2.0, 0.7, 0.7]
    assert torch.equal(item["mask"], before["mask"])
    np.testing.assert_allclose(item["image"].numpy(), before["image"].numpy() ** 1.5, atol=1e-5)


def test_an_interpolated_mask_is_refused(tmp_path):
    path = labelled_store(tmp_path / "s.h5")
    # Linear resampling makes labels 1 and 2 along the border of 3 and 0: no check of the
    # values could tell them from real ones, so the wrapper refuses such a transform up front.
    smear = A.Compose([A.HorizontalFlip(p=1.0), A.OneOf([A.Resize(30, 45)], p=1.0)], mask_interpolation=cv2.INTER_LINEAR)
    smeared = smear(image=np.zeros((4, 4, 1), np.float32), mask=np.array([[0, 0, 3, 3]] * 4, np.uint8))["mask"]
    assert {1, 2} & set(np.unique(smeared).tolist())
    with pytest.raises(MedloadError, match="mask_interpolation"):
        AlbumentationsTransform(smear)
    # Filling with an ignore label (255) where a rotation uncovers the edge is fine: nearest still.
    fill = AlbumentationsTransform(A.Rotate(limit=(40, 40), fill_mask=255, interpolation=cv2.INTER_NEAREST, p=1.0))
    mask = SliceDataset(path, transform=fill)[0]["mask"]
    assert set(np.unique(mask.numpy())) <= {0, 1, 2, 3, 255} and (mask == 255).any()


def test_a_volume_item_is_refused(tmp_path):
    path = labelled_store(tmp_path / "s.h5")
    ds = medload.datasets.VolumeDataset(path, transform=AlbumentationsTransform(A.HorizontalFlip(p=1.0)))
    with pytest.raises(MedloadError, match="2D slices"):
        ds[0]


def flips_per_batch(ds, *, epochs: int, workers: int, persistent: bool, seed: int) -> list[list[list[int]]]:
    """Per epoch, per batch: 1 where an item came back flipped left-right (its column 0 > column W-1)."""
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=32,
        num_workers=workers,
        persistent_workers=persistent,
        generator=torch.Generator().manual_seed(seed),
    )
    runs = []
    for _ in range(epochs):
        runs.append([(b["image"][:, 0, :, 0] > b["image"][:, 0, :, -1]).any(dim=1).int().tolist() for b in loader])
    return runs


def ramp_store(path) -> str:
    """64 slices rising left to right: a left-right flip shows as column 0 above the last column."""
    ramp = np.broadcast_to(np.linspace(0, 1, W, dtype=np.float32), (64, H, W))
    with medload.Store.create(path, dtype="float32") as store:
        store.add(medload.Volume(np.ascontiguousarray(ramp), np.eye(4)))
    return str(path)


@pytest.mark.parametrize("library", ["albumentations", "monai", "monai-unwrapped"])
def test_each_worker_and_each_epoch_draws_its_own_augmentations(tmp_path, library):
    if library == "albumentations":
        transform = AlbumentationsTransform(A.Compose([A.HorizontalFlip(p=0.5)]))
    else:
        mt = pytest.importorskip("monai.transforms")
        flip = mt.RandFlipd(keys=["image"], prob=0.5, spatial_axis=1)
        transform = MonaiTransform(flip) if library == "monai" else flip
    ds = SliceDataset(ramp_store(tmp_path / "ramp.h5"), transform=transform)
    runs = flips_per_batch(ds, epochs=2, workers=2, persistent=False, seed=5)
    first, second = runs
    assert 0 < sum(map(sum, first)) < 64  # a coin per item, not all or none
    # Batches 0 and 1 come from workers 0 and 1: the same copy of the generator would flip them alike
    # (one chance in 2**32 that independent coins agree on 32 items).
    assert first[0] != first[1]
    assert first != second  # workers made afresh each epoch draw anew
    again = flips_per_batch(ds, epochs=2, workers=2, persistent=False, seed=5)
    assert again == runs  # repeatable from the DataLoader's generator
