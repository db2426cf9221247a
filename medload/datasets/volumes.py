"""``VolumeDataset``: one item per stored volume (3D), or random 3D patches of it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medload._optional import require
from medload.datasets._base import StoreDatasetBase, standardize_channels
from medload.errors import ConfigError, MedloadError

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "medload.VolumeDataset")

__all__ = ["VolumeDataset", "patch_origin"]


def patch_origin(
    shape: Sequence[int],
    patch_size: Sequence[int],
    *,
    rng: np.random.Generator,
    mask: np.ndarray | None = None,
    foreground_ratio: float = 0.0,
) -> tuple[np.ndarray, bool]:
    """Choose the corner of a random patch; with probability ``foreground_ratio`` centred on
    a random foreground voxel of ``mask``.

    Returns the origin (may be negative or run past the end when the volume is smaller than
    the patch; the caller pads) and whether a foreground voxel was the centre.

    Examples
    --------
    >>> mask = np.zeros((10, 10, 10), np.int64); mask[7, 7, 7] = 1
    >>> origin, fg = patch_origin((10, 10, 10), (3, 3, 3), rng=np.random.default_rng(0),
    ...                           mask=mask, foreground_ratio=1.0)
    >>> origin.tolist(), fg
    ([6, 6, 6], True)
    """
    bounds = np.asarray(shape, np.int64)
    size = np.asarray(patch_size, np.int64)
    want_fg = foreground_ratio > 0 and rng.random() < foreground_ratio
    if want_fg and mask is not None:
        fg = np.flatnonzero(mask > 0)
        if fg.size:
            centre = np.array(np.unravel_index(fg[rng.integers(fg.size)], mask.shape), np.int64)
            origin = centre - size // 2
            # Keep the patch inside the volume where the volume is big enough.
            origin = np.clip(origin, 0, np.maximum(bounds - size, 0))
            return origin, True
    high = np.maximum(bounds - size, 0) + 1
    origin = np.array([rng.integers(h) for h in high], np.int64)
    return origin, False


class VolumeDataset(StoreDatasetBase, torch.utils.data.Dataset[Any]):
    """A map-style PyTorch dataset with one item per volume, or random patches of volumes.

    Parameters
    ----------
    store, split, splits, transform, channels, with_mask, standardize, labels, label_key, return_tuple, tv_tensors, select
        As for :class:`medload.SliceDataset` (``standardize`` is per volume or patch).
    patch_size : (int, int, int), optional
        ``(Z, H, W)`` of random patches. ``None``: whole volumes.
    samples_per_volume : int
        Patches drawn from each volume per epoch (``len = volumes * samples_per_volume``).
    foreground_ratio : float
        Probability that a patch is centred on a random voxel of the mask's foreground
        (``mask > 0``); otherwise its position is uniform. Needs masks in the store.
    seed : int
        Seed of the patch positions and of the default split.

    Notes
    -----
    Items: ``image`` float32 ``(C, Z, H, W)``; ``mask`` int64 ``(1, Z, H, W)``, channel-first
    like the image (MONAI and TorchIO's convention); ``label`` int64 scalar; ``spacing`` float64
    ``(3,)`` in mm along (Z, H, W); ``affine`` float64 ``(4, 4)``, the item's voxel
    ``(z, y, x)`` to RAS+ millimetres (the stored grid's affine, moved to the patch's corner),
    which MONAI (``MetaTensor.affine``) and TorchIO (``ScalarImage(affine=...)``) need to
    reorient or resample: :class:`medload.datasets.MonaiTransform` and
    :class:`medload.datasets.TorchIOTransform` hand it over; ``volume``, ``key``; for patches
    also ``origin`` (int64 ``(3,)``, the patch corner in voxels). A volume smaller than the
    patch is padded with zeros (image and mask) at its end.

    The random patch of item ``i`` comes from ``numpy.random.default_rng((seed, epoch, i))``:
    the same item whichever worker reads it, so runs repeat and any number of workers gives
    the same patches; never global random state. Call :meth:`set_epoch` before each epoch
    for new patches (like ``DistributedSampler.set_epoch``); the epoch lives in shared
    memory, so persistent workers see it too. Whole volumes differ in shape: use
    ``batch_size=1`` or ``collate_fn=medload.datasets.pad_collate``.

    Every slice an item reads (image and mask) is checked against its stored checksum, as
    :meth:`~medload.store.StoreReader.read_volume` checks, whatever ``verify_slices`` says: a
    damaged slice is a :class:`~medload.errors.ChecksumError` naming the file, volume and slices,
    never a silently wrong volume. It costs one CRC-32 of the bytes just decoded: +19 % CPU for
    a whole 200 x 512 x 512 volume, +44 % for a 64 x 128 x 128 patch of it, whose whole slices
    are read and checked (``bench/checksums.py``), small beside a 3D training step; a slice
    loader would pay more for it than for decoding, so :class:`~medload.SliceDataset` checks
    only with ``verify_slices=True``.

    Examples
    --------
    >>> import tempfile, os, numpy as np, medload
    >>> path = os.path.join(tempfile.mkdtemp(), "v.h5")
    >>> vol = medload.Volume(np.ones((6, 8, 8), np.float32), np.eye(4), modality="CT",
    ...                      meta={"patient_key": "p1", "series_key": "s1", "source_hash": "h1"})
    >>> with medload.Store.create(path) as st:
    ...     _ = st.add(vol)
    >>> ds = VolumeDataset(path, patch_size=(4, 4, 4), samples_per_volume=2)
    >>> len(ds), tuple(ds[1]["image"].shape)
    (2, (1, 4, 4, 4))
    """

    def __init__(
        self,
        store: Any,
        split: str | None = None,
        *,
        splits: Mapping[str, Sequence[str]] | None = None,
        transform: Callable[[Any], Any] | None = None,
        channels: None | str | Sequence[str] = None,
        with_mask: bool | None = None,
        standardize: bool = False,
        labels: Any = None,
        label_key: str = "patient",
        return_tuple: bool = False,
        patch_size: Sequence[int] | None = None,
        samples_per_volume: int = 1,
        foreground_ratio: float = 0.0,
        tv_tensors: bool = False,
        select: Any = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            store,
            split,
            splits=splits,
            transform=transform,
            channels=channels,
            with_mask=with_mask,
            standardize=standardize,
            labels=labels,
            label_key=label_key,
            return_tuple=return_tuple,
            tv_tensors=tv_tensors,
            select=select,
            seed=seed,
        )
        self.patch_size: tuple[int, ...] | None = None
        if patch_size is not None:
            self.patch_size = tuple(int(p) for p in patch_size)
            if len(self.patch_size) != 3 or min(self.patch_size) < 1:
                raise ConfigError(f"VolumeDataset: patch_size must be three positive sizes (Z, H, W), found {self.patch_size}.")
        self.samples_per_volume = int(samples_per_volume)
        if self.samples_per_volume < 1:
            raise ConfigError(f"VolumeDataset: samples_per_volume must be >= 1, found {samples_per_volume}.")
        if patch_size is None and self.samples_per_volume != 1:
            raise ConfigError("VolumeDataset: samples_per_volume > 1 needs patch_size (whole volumes are all alike).")
        self.foreground_ratio = float(foreground_ratio)
        if not 0.0 <= self.foreground_ratio <= 1.0:
            raise ConfigError(f"VolumeDataset: foreground_ratio must be in [0, 1], found {foreground_ratio}.")
        if self.foreground_ratio > 0 and not self.with_mask:
            raise MedloadError(
                "VolumeDataset: foreground_ratio > 0 samples patches around mask foreground, but the "
                "selected volumes (some or all) have no masks, or with_mask=False; store masks or set foreground_ratio=0."
            )
        records = self.reader.volumes  # one read-only tuple, read once here
        self._shapes = {int(v): tuple(int(s) for s in records[v].shape) for v in self.volume_ids}
        # Shared memory: set_epoch in the main process reaches persistent workers (fork and spawn).
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def set_epoch(self, epoch: int) -> None:
        """Draw other patches from now on (call before iterating each epoch)."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return int(self.volume_ids.size * self.samples_per_volume)

    def __getitem__(self, index: int) -> Any:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"VolumeDataset index {index} is out of range for {n} items.")
        index = int(index) % n
        volume = int(self.volume_ids[index // self.samples_per_volume])
        depth = self._shapes[volume][0]
        item: dict[str, Any] = {}
        affine = self._affines[volume]
        if self.patch_size is None:
            image = self._read(volume, 0, depth, verify=True).transpose(1, 0, 2, 3)  # (C, Z, H, W)
            mask = self._read_mask(volume, 0, depth, verify=True).transpose(1, 0, 2, 3) if self.with_mask else None
        else:
            image, mask, origin = self._patch(volume, index, self.patch_size)
            item["origin"] = torch.from_numpy(origin)
            affine = affine.copy()
            affine[:3, 3] += affine[:3, :3] @ origin  # the patch's voxel (0, 0, 0) is the volume's voxel origin
        image = np.ascontiguousarray(image, dtype=np.float32)
        if self.replicate3:
            image = np.repeat(image, 3, axis=0)
        if self.standardize:
            image = standardize_channels(image)
        item = {"image": torch.from_numpy(image), **item}
        if mask is not None:
            item["mask"] = torch.from_numpy(np.ascontiguousarray(mask))
        item.update(self._item_numbers(volume, int(self.volume_labels[volume]) if self.has_labels else None))
        item["affine"] = torch.from_numpy(np.array(affine, dtype=np.float64))
        item["volume"] = volume
        item["key"] = self.volume_keys[volume]
        item = self._transformed(self._wrap(item))
        if self.return_tuple:
            return item["image"], item["label"]
        return item

    def _patch(self, volume: int, index: int, patch_size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        rng = np.random.default_rng((self.seed, int(self._epoch), index))
        spatial = (self._shapes[volume][0],) + self._shapes[volume][-2:]
        full_mask = None
        if self.foreground_ratio > 0:
            full_mask = self._read_mask(volume, 0, spatial[0], verify=True)[:, 0]
        origin, _ = patch_origin(spatial, patch_size, rng=rng, mask=full_mask, foreground_ratio=self.foreground_ratio)
        size = np.asarray(patch_size)
        lo = np.maximum(origin, 0)
        hi = np.minimum(origin + size, spatial)
        block = self._read(volume, lo[0], hi[0], verify=True)[:, :, lo[1] : hi[1], lo[2] : hi[2]].transpose(1, 0, 2, 3)
        image = np.zeros((block.shape[0], *patch_size), np.float32)
        dst = tuple(slice(a - o, b - o) for a, b, o in zip(lo, hi, origin))
        image[(slice(None), *dst)] = block
        mask = None
        if self.with_mask:
            src = full_mask[lo[0] : hi[0]] if full_mask is not None else self._read_mask(volume, lo[0], hi[0], verify=True)[:, 0]
            mask = np.zeros((1, *patch_size), np.int64)
            mask[(slice(None), *dst)] = src[None, :, lo[1] : hi[1], lo[2] : hi[2]]
        return image, mask, origin.astype(np.int64)

    def __repr__(self) -> str:
        what = f"patches {self.patch_size} x{self.samples_per_volume}" if self.patch_size else "whole volumes"
        return f"VolumeDataset({len(self)} items of {self.volume_ids.size} volumes, {what}, split={self.split!r})"
