"""``SliceDataset``: one item per stored 2D slice, with optional 2.5D context, for PyTorch."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medload._optional import require
from medload.datasets._base import StoreDatasetBase, standardize_channels
from medload.errors import ConfigError
from medload.datasets.world import slice_bases

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "medload.SliceDataset")

__all__ = ["SliceDataset"]


class SliceDataset(StoreDatasetBase, torch.utils.data.Dataset[Any]):
    """A map-style PyTorch dataset with one item per slice of a medload store.

    Parameters
    ----------
    store : str, Path or StoreReader
        A store file, a folder of shards, or ``medload.open(path)``.
    split : str, optional
        Name of a split (``"train"``, ``"val"``, ``"test"``, or of ``splits``); patients of
        other splits are left out. ``None``: every volume.
    splits : mapping of str to list of str, optional
        Split name to patient keys, e.g. from :func:`medload.split`. Default:
        ``medload.split(store, seed=seed)`` (80/10/10 by patient).
    transform : callable, optional
        Applied to each item dict (``image``, ``mask``, ...) before it is returned, so
        MONAI dictionary transforms and torchvision v2 transforms fit.
    context : int
        2.5D: stack ``context`` neighbouring slices on each side as channels, ordered from
        ``slice - context`` to ``slice + context`` (each contributing all its channels).
        At the first and last slices of a volume the missing neighbours repeat the edge
        slice (no zeros, no slice of another volume).
    channels : None, "replicate3" or list of str
        ``None``: every stored channel (one for a plain slice, three for
        ``["brain", "subdural", "bone"]`` windows). ``"replicate3"``: one stored channel
        copied three times, for ImageNet-pretrained networks. A list: those stored channels.
    with_mask : bool or None
        Return the stored mask of each slice as ``mask``. ``None`` (default): masks when every
        selected volume has one, else no masks (a store where only some series have masks, as
        converting a typical export gives, is served without them). ``True``: masks, and a
        :class:`~medload.errors.MedloadError` naming a volume without one if any lacks it.
        ``False``: never.
    standardize : bool
        Per image and channel, subtract the mean and divide by the standard deviation.
    labels : None, str, Path, mapping or LabelFrom
        Class labels: ``None`` the labels stored with each volume; a CSV path or mapping
        keyed by ``label_key``; :func:`medload.datasets.label_from` for folder-name style.
    label_key : {"patient", "study", "series", "volume"}
        What the CSV or mapping keys are.
    return_tuple : bool
        Return ``(image, label)`` like torchvision's ``ImageFolder`` instead of a dict (refused
        with ``with_mask=True``, whose masks it would drop).
    tv_tensors : bool
        Return ``image`` as ``torchvision.tv_tensors.Image`` and ``mask`` as
        ``torchvision.tv_tensors.Mask`` (needs torchvision), so torchvision v2 transforms
        move both alike and resize the mask with nearest neighbours.
    select : callable or mapping, optional
        Which volumes to serve besides the split: a function of the
        :class:`~medload.store.VolumeRecord` (``lambda r: r.has_mask``), or criteria that must
        all hold: ``{"modality": "CT", "channels": 3, "shape": (256, 256), "label": [0, 1]}``
        (see :func:`medload.datasets._base.select_volumes`).
    mixed_sizes : bool
        Serve volumes whose slices differ in size. By default they are refused with the sizes
        found, since a batch stacks slices of one size; with ``True`` batch them with
        ``DataLoader(..., collate_fn=medload.datasets.pad_collate)`` (zero padding) or
        ``batch_size=1``.
    seed : int
        Seed of the default split.

    Notes
    -----
    Items: ``image`` float32 ``(C, H, W)`` with ``C = (2 * context + 1) * channels`` (3 with
    ``"replicate3"``); ``mask`` int64 ``(1, H, W)``, channel-first like the image, so MONAI
    (``RandFlipd``, ``RandAffined``, ``RandSpatialCropd`` with ``keys=["image", "mask"]``),
    TorchIO and torchvision v2 transforms move image and mask alike; ``label`` int64 scalar
    tensor (``-1`` = no label), present when any selected volume is labelled; ``spacing``
    float64 ``(3,)``, the stored grid's spacing in mm along (slice, row, column), so
    ``spacing[1:]`` is the item's in-plane pixel size; ``affine`` float64 ``(4, 4)``, the
    slice's voxel ``(row, column, 0)`` to RAS+ millimetres: the world point of the stored
    volume's voxel ``(slice, row, column)`` (columns: row step, column step, slice step; see
    :mod:`medload.datasets.world`), so TorchIO's anatomical axis names and ``ToCanonical``
    mean the patient's axes (through :class:`~medload.datasets.TorchIOTransform`, or
    ``tio.ScalarImage(tensor=item["image"][..., None], affine=item["affine"])``); ``volume``
    (int, index into :attr:`volume_keys`), ``slice`` (int), ``key`` (str, the volume's key).

    Each process opens its own read-only store handle on first use (after a fork or in a
    spawned worker), so any number of DataLoader workers, ``persistent_workers``,
    ``pin_memory`` and ``DistributedSampler`` work without a ``worker_init_fn``. Nothing is
    cached per item, so worker memory does not grow epoch after epoch.
    :meth:`__getitems__` reads runs of consecutive slices of a batch in one call.
    Random transforms that draw from torch's generator are seeded per worker by the
    DataLoader; pass ``generator=torch.Generator().manual_seed(s)`` to repeat a run exactly.

    Examples
    --------
    >>> import tempfile, os, numpy as np, medload
    >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> vol = medload.Volume(np.zeros((4, 8, 8), np.float32), np.eye(4), modality="CT",
    ...                      meta={"patient_key": "p1", "series_key": "s1", "source_hash": "h1"})
    >>> with medload.Store.create(path) as st:
    ...     _ = st.add(vol, label=1)
    >>> ds = SliceDataset(path, context=1)
    >>> item = ds[0]
    >>> len(ds), tuple(item["image"].shape), item["image"].dtype, int(item["label"])
    (4, (3, 8, 8), torch.float32, 1)
    """

    def __init__(
        self,
        store: Any,
        split: str | None = None,
        *,
        splits: Mapping[str, Sequence[str]] | None = None,
        transform: Callable[[Any], Any] | None = None,
        context: int = 0,
        channels: None | str | Sequence[str] = None,
        with_mask: bool | None = None,
        standardize: bool = False,
        labels: Any = None,
        label_key: str = "patient",
        return_tuple: bool = False,
        tv_tensors: bool = False,
        select: Any = None,
        mixed_sizes: bool = False,
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
        context = int(context)
        if context < 0:
            raise ConfigError(f"SliceDataset: context must be >= 0 slices on each side, found {context}.")
        if self.replicate3 and context:
            raise ConfigError(
                "SliceDataset: channels='replicate3' and context>0 both fill the channel axis; "
                "choose one (context=1 already gives 3 channels)."
            )
        self.context = context
        sizes = sorted({tuple(int(v) for v in self.reader.volumes[int(v)].shape[-2:]) for v in self.volume_ids})
        self.mixed_sizes = len(sizes) > 1
        if self.mixed_sizes and not mixed_sizes:
            raise ConfigError(
                f"the selected volumes of {self._path or 'the store'} have slices of {len(sizes)} sizes "
                f"({', '.join(f'{h}x{w}' for h, w in sizes[:6])}{' ...' if len(sizes) > 6 else ''}); a batch "
                "stacks slices of one size. Convert with --size N (convert(size=N)), serve one size with "
                f"select={{'shape': {sizes[0]}}}, or pass mixed_sizes=True and batch with "
                "collate_fn=medload.datasets.pad_collate (or batch_size=1)."
            )
        index = self.reader.index
        rows = np.isin(np.asarray(index["volume"]), self.volume_ids)
        # Per-item lookups are plain numpy arrays: cheap in __getitem__, shared copy-on-write by workers.
        self._vol = np.ascontiguousarray(index["volume"][rows], dtype=np.int64)
        self._slice = np.ascontiguousarray(index["slice"][rows], dtype=np.int64)
        self._label = self.volume_labels[self._vol]
        self._n = int(self._vol.shape[0])
        self._depth = np.array([r.shape[0] for r in self.reader.volumes], np.int64)
        self._offsets = np.arange(-context, context + 1, dtype=np.int64)
        # Each volume's slice-0 affine and slice step, once: an item's affine is a copy with its origin moved.
        self._slice_bases, self._slice_steps = slice_bases(self._affines)
        self.channels_out = 3 if self.replicate3 else (2 * context + 1) * self.stored_channels

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> Any:
        # The one-item path skips the run grouping of __getitems__: per-item cost is what a
        # DataLoader without batched fetch pays for every slice.
        n = self._n
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"SliceDataset index {index} is out of range for {n} slices.")
        v, s = int(self._vol[i]), int(self._slice[i])
        image = self._images(v, s, s + 1)[0]
        mask = self._read_mask(v, s, s + 1)[0] if self.with_mask else None
        return self._item(i, v, s, image, mask)

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """Items of a batch; consecutive slices of one volume are read in one store call."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = self._n
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = int(idx[(idx < -n) | (idx >= n)][0])
            raise IndexError(f"SliceDataset index {bad} is out of range for {n} slices.")
        idx = np.where(idx < 0, idx + n, idx)
        vols, slices = self._vol[idx], self._slice[idx]
        breaks = np.flatnonzero((vols[1:] != vols[:-1]) | (slices[1:] != slices[:-1] + 1)) + 1
        starts = np.concatenate(([0], breaks)).tolist()
        ends = np.concatenate((breaks, [idx.size])).tolist()
        items: list[Any] = []
        for a, b in zip(starts, ends):
            v, s0, s1 = int(vols[a]), int(slices[a]), int(slices[b - 1]) + 1
            images = self._images(v, s0, s1)
            masks = self._read_mask(v, s0, s1) if self.with_mask else None
            for j in range(b - a):
                items.append(self._item(int(idx[a + j]), v, s0 + j, images[j], None if masks is None else masks[j]))
        return items

    def _images(self, volume: int, start: int, stop: int) -> np.ndarray:
        """``(n, C_out, H, W)`` float32 for slices ``start:stop`` with their context."""
        k = self.context
        if k == 0:
            images = self._read(volume, start, stop)
            if self.replicate3:
                images = np.repeat(images, 3, axis=1)
            return images
        depth = int(self._depth[volume])
        lo, hi = max(start - k, 0), min(stop + k, depth)
        block = self._read(volume, lo, hi)  # (m, C, H, W)
        # Neighbours beyond the volume's ends repeat the edge slice (clip), documented above.
        wanted = np.clip(np.arange(start, stop)[:, None] + self._offsets[None, :], 0, depth - 1) - lo
        stacked = block[wanted]  # (n, 2k+1, C, H, W)
        return stacked.reshape(stacked.shape[0], -1, *stacked.shape[-2:])

    def _item(self, i: int, volume: int, slice_: int, image: np.ndarray, mask: np.ndarray | None) -> Any:
        if self.standardize:
            image = standardize_channels(image)
        item: dict[str, Any] = {"image": torch.from_numpy(image)}
        if mask is not None:
            item["mask"] = torch.from_numpy(mask)
        item.update(self._item_numbers(volume, int(self._label[i]) if self.has_labels else None))
        item["affine"] = torch.from_numpy(self._slice_bases[volume] + self._slice_steps[volume] * slice_)
        item["volume"] = volume
        item["slice"] = slice_
        item["key"] = self.volume_keys[volume]
        item = self._transformed(self._wrap(item))
        if self.return_tuple:
            return item["image"], item["label"]
        return item

    def loader(
        self,
        batch_size: int,
        *,
        shuffle: bool = False,
        num_workers: int = 0,
        pin_memory: bool = False,
        drop_last: bool = False,
        sampler: Any = None,
        distributed: bool = False,
        generator: Any = None,
        compact: bool = False,
        ring_buffers: bool = True,
        **dataloader_kwargs: Any,
    ) -> Any:
        """A ready DataLoader of whole batches: each worker reads a batch into one preallocated tensor.

        Runs of consecutive slices are read in one store call, straight into the batch (in a
        worker, into the shared memory it crosses to the main process in); there are no per-item
        tensors and no ``default_collate``. The batches equal what ``DataLoader(self, batch_size,
        ...)`` gives with the same sampler and generator: ``image`` ``(B, C, H, W)``, ``mask``,
        ``label``, ``volume``, ``slice`` stacked, ``key`` a list (``(image, label)`` with
        ``return_tuple``). With a ``transform`` the batch is made item by item instead.

        Parameters
        ----------
        batch_size : int
            Slices per batch.
        shuffle : bool
            A new random order each epoch (``RandomSampler(generator=generator)``).
        num_workers, pin_memory, drop_last, generator
            As for ``torch.utils.data.DataLoader``; workers persist between epochs unless
            ``persistent_workers=False`` is passed.
        sampler : torch Sampler of item indices, optional
            E.g. ``DistributedSampler(ds, num_replicas, rank)``; batches are cut from its order.
        distributed : bool
            ``DistributedSampler(self, shuffle=shuffle, seed=self.seed)`` of the initialized
            process group; call ``loader.set_epoch(epoch)`` before each epoch.
        compact : bool
            Images (and masks) in the stored type, uint8 for the default store (a quarter of
            float32's bytes through worker pipes and to the GPU), with ``scale`` and
            ``offset`` per item; ``loader.decode(batch, device)`` gives the float values
            there (standardization and ``"replicate3"`` done on the device).
        ring_buffers : bool
            With workers: batches cross through a few shared-memory buffers made once and
            reused (a yielded batch's image and mask lie in one, lent to you until the batch
            and every view of it are gone); False: a fresh shared-memory segment per tensor
            per batch, torch's way, several times slower on small machines.
        **dataloader_kwargs
            Other DataLoader arguments (``prefetch_factor``, ``worker_init_fn``,
            ``multiprocessing_context``, ``timeout``, ``persistent_workers``).

        Examples
        --------
        >>> import tempfile, os, numpy as np, medload
        >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
        >>> with medload.Store.create(path) as st:
        ...     _ = st.add(medload.Volume(np.random.default_rng(0).random((10, 8, 8)), np.eye(4)), label=1)
        >>> loader = SliceDataset(path).loader(4, shuffle=True, compact=True)
        >>> batch = loader.decode(next(iter(loader)))
        >>> len(loader), tuple(batch["image"].shape), batch["image"].dtype, batch["label"].tolist()
        (3, (4, 1, 8, 8), torch.float32, [1, 1, 1, 1])
        """
        from medload.datasets.loader import slice_loader

        return slice_loader(
            self,
            batch_size,
            shuffle=shuffle,
            num_workers=num_workers,
            pin_memory=pin_memory,
            drop_last=drop_last,
            sampler=sampler,
            distributed=distributed,
            generator=generator,
            seed=self.seed,
            compact=compact,
            ring_buffers=ring_buffers,
            **dataloader_kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"SliceDataset({len(self)} slices of {len(self.volume_ids)} volumes, split={self.split!r}, "
            f"context={self.context}, channels={self.channels_out}, mask={self.with_mask}, labels={self.has_labels})"
        )
