"""Batch-native loading: :meth:`SliceDataset.loader` gives a DataLoader whose workers build whole batches.

A per-item DataLoader pays for every slice: a tensor per item, then ``default_collate``
copying them all into the batch (in a worker, into shared memory once more). Here the sampler
yields the indices of a whole batch (a ``BatchSampler`` over the same ``RandomSampler``,
``SequentialSampler`` or ``DistributedSampler`` a per-item DataLoader uses, so shuffling and
sharding are unchanged), and :class:`SliceBatches` reads them into one preallocated
``(B, C, H, W)`` array (in a worker: straight into the shared memory the batch crosses to the
main process in), runs of consecutive slices of a volume in one store call. Masks, labels,
volume and slice numbers and keys come batched the same way. The batches hold what
``default_collate`` makes of the items, bit for bit (``tests/test_datasets_loader.py``).

With workers, batches cross to the main process through a ring of shared-memory buffers made
once per iterator (``medload.datasets.ring``): a worker writes a batch into a free slot and sends
only the slot number and the small fields; the batch is lent to the loop as tensors over the slot
and the slot is reused once the batch is gone. torch's own way, a fresh shared-memory segment per
tensor per batch, made 2 workers slower than none (docs/benchmarks.md); ``ring_buffers=False``
keeps it.

``compact=True`` delivers images (and masks) in the stored type, uint8 for the default store,
with each item's ``scale`` and ``offset``: a quarter of float32's bytes cross the process
boundary and the PCIe bus; :meth:`SliceLoader.decode` (``medload.datasets.decode``) turns a
batch into the float item values on the device.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence
from itertools import pairwise
from typing import TYPE_CHECKING, Any

import numpy as np

from medload._optional import require
from medload.datasets._base import standardize_channels
from medload.datasets.decode import decode_batch
from medload.datasets.ring import (
    BatchRing,
    SlotBatch,
    SlotField,
    SlotTicket,
    SlotWriter,
    aligned,
    field_array,
    field_bytes,
    ring_available,
)
from medload.datasets.world import slice_affines
from medload.errors import ConfigError, MedloadError

if TYPE_CHECKING:
    import torch
else:
    torch = require("torch", "medload.datasets.loader")

__all__ = ["EpochBatchSampler", "SliceBatches", "SliceLoader", "slice_loader"]


class EpochBatchSampler(torch.utils.data.BatchSampler):
    """A ``BatchSampler`` that passes :meth:`set_epoch` on to its sampler (a ``DistributedSampler``).

    While :class:`SliceLoader` gives it a ``ring`` (workers running), each batch of indices
    goes out as a :class:`~medload.datasets.ring.SlotTicket` naming the slot to write it into.
    """

    ring: BatchRing | None = None

    def __iter__(self) -> Iterator[Any]:
        ring = self.ring
        if ring is None:
            yield from super().__iter__()
            return
        # The first index of a pass is asked for after torch drained the previous pass's tasks.
        ring.new_epoch()
        for indices in super().__iter__():
            yield ring.ticket(indices)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` like ``DistributedSampler.set_epoch`` (no-op for other samplers)."""
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


def _as_is(batch: Any) -> Any:
    """The DataLoader's collate step: a batch is made whole by the dataset already."""
    return batch


def _image_label(batch: dict[str, Any]) -> tuple[Any, Any]:
    """``return_tuple``'s form of a float batch."""
    return batch["image"], batch["label"]


_TORCH_DTYPE = {
    np.dtype(np.uint8): torch.uint8,
    np.dtype(np.int16): torch.int16,
    np.dtype(np.float16): torch.float16,
    np.dtype(np.float32): torch.float32,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
}


def _empty(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """An uninitialized tensor; in a DataLoader worker, in shared memory (as ``default_collate`` does),
    so sending it to the main process moves no pixels."""
    if torch.utils.data.get_worker_info() is None:
        # numpy's allocation, not torch.empty: torch hands a 16 MB batch back to the system when
        # it is freed, so every new batch page-faulted afresh (measured 8.8 ms against 3.0 ms to
        # allocate and fill a (64, 1, 256, 256) float32 batch); malloc keeps and reuses it.
        return torch.from_numpy(np.empty(shape, dtype))
    elem = torch.empty(0, dtype=_TORCH_DTYPE[np.dtype(dtype)])
    storage = elem._typed_storage()._new_shared(int(np.prod(shape, dtype=np.int64)), device="cpu")
    return elem.new(storage).resize_(*shape)


class SliceBatches(torch.utils.data.Dataset[Any]):
    """Whole batches of a :class:`~medload.datasets.SliceDataset`: ``batches[list_of_indices]`` is one batch.

    Parameters
    ----------
    dataset : SliceDataset
        What to read; its split, context, channels, masks, labels and standardization apply.
    compact : bool
        Images in the stored type with per-item ``scale`` and ``offset`` (float32, ``(B,)``),
        masks in the narrowest integer type holding every selected mask's labels; decode with
        :func:`~medload.datasets.decode.decode_batch`. Channel replication (``"replicate3"``)
        and standardization are then left to the decoding step.

    Notes
    -----
    With a ``transform`` on the dataset (or ``tv_tensors=True``) the batch is made item by item
    (the transform acts on items) and collated with ``default_collate``; ``compact`` is refused then.

    Examples
    --------
    >>> import tempfile, os, numpy as np, medload
    >>> from medload.datasets import SliceDataset
    >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> with medload.Store.create(path) as st:
    ...     _ = st.add(medload.Volume(np.random.default_rng(0).random((6, 8, 8)), np.eye(4)), label=1)
    >>> ds = SliceDataset(path)
    >>> batch = SliceBatches(ds)[[4, 0, 1, 2]]
    >>> tuple(batch["image"].shape), batch["slice"].tolist(), bool((batch["image"][1] == ds[0]["image"]).all())
    ((4, 1, 8, 8), [4, 0, 1, 2], True)
    >>> compact = SliceBatches(ds, compact=True)[[4, 0]]
    >>> compact["image"].dtype, bool((decode_batch(compact)["image"] == batch["image"][:2]).all())
    (torch.uint8, True)
    """

    def __init__(self, dataset: Any, *, compact: bool = False) -> None:
        self.dataset = dataset
        self.compact = bool(compact)
        reader = dataset.reader
        records = [reader.record(int(v)) for v in dataset.volume_ids]
        # Transforms act on items; torchvision's Image/Mask wrappers are per item too.
        self.per_item = dataset.transform is not None or bool(getattr(dataset, "tv_tensors", False))
        if self.per_item:
            if self.compact:
                raise ConfigError(
                    "compact=True delivers stored values for decoding on the device, but the dataset has a "
                    "per-item transform, which needs float items; drop the transform (transform the decoded "
                    "batch instead) or pass compact=False."
                )
            return
        shapes = {tuple(r.shape[-2:]) for r in records}
        if len(shapes) > 1:
            a, b = sorted(shapes)[:2]
            raise MedloadError(
                f"the selected volumes of {dataset._path or 'the store'} have slices of different sizes "
                f"({a} and {b}, {len(shapes)} sizes in all); a batch holds one size. Convert with "
                "--size (ResizeSlices) or give the dataset a transform that makes one size."
            )
        self.slice_shape: tuple[int, int] = shapes.pop()
        stored = {np.dtype(r.dtype) for r in records}
        if self.compact and len(stored) > 1:
            raise ConfigError(
                f"compact=True delivers the stored type, but the selected volumes are stored as "
                f"{sorted(str(d) for d in stored)}; pass compact=False (float32 batches)."
            )
        self.image_dtype = stored.pop() if self.compact else np.dtype(np.float32)
        # compact + replicate3: one channel crosses, the decoding step copies it three times.
        self.channels = dataset.stored_channels if (self.compact and dataset.replicate3) else dataset.channels_out
        self.mask_dtype: np.dtype | None = None
        self.mask_shape: tuple[int, ...] = ()
        if dataset.with_mask:
            first = int(dataset.volume_ids[0])
            # The item's mask shape, whatever the item format: (H, W) or (1, H, W).
            self.mask_shape = tuple(dataset._read_mask(first, 0, 1).shape[1:])
            if self.compact:
                kinds = {reader.mask_dtype(int(v)) for v in dataset.volume_ids}
                self.mask_dtype = np.result_type(*kinds) if kinds else np.dtype(np.uint8)
                if self.mask_dtype == np.bool_:
                    self.mask_dtype = np.dtype(np.uint8)
                if self.mask_dtype not in _TORCH_DTYPE:  # uint16, uint32: the next type torch holds
                    self.mask_dtype = np.dtype(np.int32 if self.mask_dtype.itemsize <= 2 else np.int64)
            else:
                self.mask_dtype = np.dtype(np.int64)
            stored_masks = {reader.mask_dtype(int(v)) for v in dataset.volume_ids}
            # One stored type: a batch's masks read in that type, then cast once if the batch's differs.
            self._mask_stored = stored_masks.pop() if len(stored_masks) == 1 else None
        # Rows as the store holds the slices (no context, every channel, no replication): one
        # read_batch call per batch instead of a store call per run of slices.
        self._plain = (
            dataset.context == 0
            and self.channels == dataset.stored_channels
            and all(dataset._channel_index[int(v)] is None for v in dataset.volume_ids)
        )
        self._scale = np.array([np.float32(r.scale) for r in reader.volumes], np.float32)
        self._offset = np.array([np.float32(r.offset) for r in reader.volumes], np.float32)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, indices: Sequence[int] | SlotTicket) -> Any:
        ds = self.dataset
        ticket = indices if isinstance(indices, SlotTicket) else None
        if ticket is not None:
            indices = ticket.indices
        if self.per_item:
            return torch.utils.data.default_collate(ds.__getitems__(indices))
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        n = len(ds)
        if idx.size and (idx.min() < -n or idx.max() >= n):
            bad = int(idx[(idx < -n) | (idx >= n)][0])
            raise IndexError(f"SliceDataset index {bad} is out of range for {n} slices.")
        idx = np.where(idx < 0, idx + n, idx)
        size = int(idx.size)
        assemble = _image_label if ds.return_tuple and not self.compact else None
        slot = ticket.slot if ticket is not None else None
        if ticket is not None and slot is not None:
            # Straight into the ring's slot: only its number and the small fields cross.
            layout = self._layout(size)
            buffer = self._slot_writer().buffer(ticket)
            mask = field_array(buffer, layout["mask"]) if "mask" in layout else None
            self._read(idx, field_array(buffer, layout["image"]), mask)
            return SlotBatch(ticket.ring, slot, layout, self._fields(idx, mask is not None), assemble)
        image_t = _empty((size, self.channels, *self.slice_shape), self.image_dtype)
        mask_t = None if self.mask_dtype is None else _empty((size, *self.mask_shape), self.mask_dtype)
        self._read(idx, image_t.numpy(), None if mask_t is None else mask_t.numpy())
        batch = {
            k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in self._fields(idx, mask_t is not None).items()
        }
        batch["image"] = image_t
        if mask_t is not None:
            batch["mask"] = mask_t
        return assemble(batch) if assemble is not None else batch

    def _read(self, idx: np.ndarray, image: np.ndarray, mask: np.ndarray | None) -> None:
        """Images (and masks) of dataset positions ``idx`` into ``image`` (and ``mask``), as the items hold them."""
        ds = self.dataset
        vols, slices = ds._vol[idx], ds._slice[idx]
        if self._plain:
            # The common case: the store reads the whole batch, straight into its rows.
            ds.reader.read_batch(vols, slices, image, raw=self.compact)
        else:
            for a, b in _runs(vols, slices):
                self._fill(image[a:b], int(vols[a]), int(slices[a]), int(slices[b - 1]) + 1)
        if mask is not None:
            stored = self._mask_stored
            if stored is None or stored == mask.dtype:  # straight into the rows (mixed types: cast run by run)
                ds.reader.read_mask_batch(vols, slices, mask)
            else:
                mask[...] = ds.reader.read_mask_batch(vols, slices, np.empty(mask.shape, stored))
        if ds.standardize and not self.compact:
            for row in image:
                row[...] = standardize_channels(row)

    def _fields(self, idx: np.ndarray, with_mask: bool) -> dict[str, Any]:
        """The batch's entries in the items' order: small numpy arrays and the keys; image and mask None."""
        ds = self.dataset
        vols = ds._vol[idx]
        fields: dict[str, Any] = {"image": None}
        if with_mask:
            fields["mask"] = None
        if ds.has_labels:
            fields["label"] = ds._label[idx].astype(np.int64)
        fields["spacing"] = ds._spacing_rows[vols]
        fields["affine"] = slice_affines(ds._slice_bases, ds._slice_steps, vols, ds._slice[idx])
        fields["volume"] = vols.astype(np.int64)
        fields["slice"] = ds._slice[idx].astype(np.int64)
        fields["key"] = [ds.volume_keys[v] for v in vols.tolist()]
        if self.compact:
            fields["scale"] = self._scale[vols]
            fields["offset"] = self._offset[vols]
        return fields

    def slot_bytes(self, batch_size: int) -> int:
        """Bytes of a ring slot holding a batch of ``batch_size`` (images, then masks)."""
        return sum(aligned(field_bytes(v)) for v in self._layout(batch_size).values())

    def _layout(self, size: int) -> dict[str, SlotField]:
        """Where a batch of ``size`` lies in a slot: ``name -> (offset, dtype, shape)``."""
        image: SlotField = (0, self.image_dtype.str, (size, self.channels, *self.slice_shape))
        layout = {"image": image}
        if self.mask_dtype is not None:
            layout["mask"] = (aligned(field_bytes(image)), self.mask_dtype.str, (size, *self.mask_shape))
        return layout

    def _slot_writer(self) -> SlotWriter:
        writer = self.__dict__.get("_writer")
        if writer is None:
            writer = self._writer = SlotWriter()
        return writer

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_writer", None)  # a worker maps the slots it is given itself
        return state

    def _fill(self, out: np.ndarray, volume: int, start: int, stop: int) -> None:
        """Rows ``out`` (``(n, C, H, W)``) from slices ``start:stop`` of ``volume``, as the items hold them."""
        ds = self.dataset
        k = ds.context
        channel_index = ds._channel_index[volume]
        stored_3d = len(ds.reader.record(volume).shape) == 3
        raw = self.compact
        if k == 0 and channel_index is None and out.shape[1] == ds.stored_channels:
            # The common case: the store's decoding writes straight into the batch.
            ds.reader.read_slices(volume, start, stop, raw=raw, out=out[:, 0] if stored_3d else out)
            return
        depth = int(ds._depth[volume])
        lo, hi = (max(start - k, 0), min(stop + k, depth)) if k else (start, stop)
        block = ds.reader.read_slices(volume, lo, hi, raw=raw)
        if block.ndim == 3:
            block = block[:, None]
        if channel_index is not None:
            block = block[:, channel_index]
        if k:
            # Neighbours beyond the volume's ends repeat the edge slice, as SliceDataset's items do.
            wanted = np.clip(np.arange(start, stop)[:, None] + ds._offsets[None, :], 0, depth - 1) - lo
            block = block[wanted].reshape(stop - start, -1, *block.shape[-2:])
        out[...] = block  # (n, 1, H, W) broadcasts over replicate3's three channels

    def decode(self, batch: Any, *, device: Any = None, non_blocking: bool = False) -> Any:
        """A batch of this dataset as float items on ``device`` (see :func:`decode_batch`)."""
        ds = self.dataset
        out = decode_batch(
            batch,
            device=device,
            non_blocking=non_blocking,
            standardize=ds.standardize and self.compact,
            replicate3=ds.replicate3 and self.compact,
        )
        if isinstance(out, dict) and ds.return_tuple:
            return out["image"], out["label"]
        return out


def _runs(vols: np.ndarray, slices: np.ndarray) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` positions of runs of consecutive slices of one volume, in batch order."""
    breaks = np.flatnonzero((vols[1:] != vols[:-1]) | (slices[1:] != slices[:-1] + 1)) + 1
    bounds = [0, *breaks.tolist(), int(vols.size)]
    return pairwise(bounds)


class SliceLoader(torch.utils.data.DataLoader[Any]):
    """The DataLoader :meth:`SliceDataset.loader` returns: batches from :class:`SliceBatches`.

    :meth:`decode` turns a batch into float items on a device; :meth:`set_epoch` reshuffles a
    distributed sampler. Everything else is torch's DataLoader.

    With workers (and ``ring_buffers``, the default, on Linux), each iterator owns a
    :class:`~medload.datasets.ring.BatchRing`: at most ``prefetch_factor * num_workers + 2``
    batch-sized shared-memory slots, reused for every batch; a yielded batch's image and mask
    are tensors over its slot, which is reused only once they (and every view of them) are gone.
    """

    # What slice_loader() builds it over (narrower than DataLoader's own annotations).
    dataset: SliceBatches
    sampler: EpochBatchSampler

    def __init__(self, *args: Any, ring_buffers: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Whether batches cross from workers through a ring of reused shared-memory slots.
        self.ring_buffers = bool(ring_buffers) and self.num_workers > 0 and not self.dataset.per_item and ring_available()

    def _get_iterator(self) -> Any:
        if not self.ring_buffers:
            return super()._get_iterator()
        # One ring per iterator: with persistent workers that is every epoch of this loader.
        ring = BatchRing(
            self.dataset.slot_bytes(self.sampler.batch_size), capacity=(self.prefetch_factor or 2) * self.num_workers + 2
        )
        self.sampler.ring = ring
        iterator = super()._get_iterator()
        weakref.finalize(iterator, _close_ring, ring, self.sampler)
        return iterator

    def __iter__(self) -> Any:
        iterator = super().__iter__()
        return _LentBatches(iterator) if self.ring_buffers else iterator

    def decode(self, batch: Any, device: Any = None, *, non_blocking: bool | None = None) -> Any:
        """The batch on ``device`` as the items' float values (compact batches decoded there).

        ``non_blocking`` defaults to ``pin_memory``: pinned batches copy asynchronously.
        """
        if non_blocking is None:
            non_blocking = bool(self.pin_memory)
        return self.dataset.decode(batch, device=device, non_blocking=non_blocking)

    def set_epoch(self, epoch: int) -> None:
        """Pass ``epoch`` to a ``DistributedSampler`` (call it before each epoch, as with torch's)."""
        self.sampler.set_epoch(epoch)


def _close_ring(ring: BatchRing, sampler: EpochBatchSampler) -> None:
    """The iterator (and its workers) is gone: unlink the ring's slots."""
    if sampler.ring is ring:
        sampler.ring = None
    ring.close()


class _LentBatches:
    """Torch's iterator, with each :class:`SlotBatch` opened into tensors over its slot."""

    def __init__(self, iterator: Any) -> None:
        self._iterator = iterator

    def __iter__(self) -> _LentBatches:
        return self

    def __next__(self) -> Any:
        batch = next(self._iterator)
        return batch.open() if isinstance(batch, SlotBatch) else batch

    def __len__(self) -> int:
        return len(self._iterator)


def slice_loader(
    dataset: Any,
    batch_size: int,
    *,
    shuffle: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = False,
    sampler: Any = None,
    distributed: bool = False,
    generator: Any = None,
    seed: int = 0,
    compact: bool = False,
    persistent_workers: bool | None = None,
    ring_buffers: bool = True,
    **dataloader_kwargs: Any,
) -> SliceLoader:
    """A DataLoader of whole batches of ``dataset`` (see :meth:`SliceDataset.loader` for the parameters)."""
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, found {batch_size}.")
    if sampler is not None and (shuffle or distributed):
        raise ConfigError("pass either sampler= or shuffle=/distributed=, not both (the sampler decides the order).")
    if sampler is None:
        if distributed:
            sampler = torch.utils.data.DistributedSampler(dataset, shuffle=shuffle, seed=seed)
        elif shuffle:
            sampler = torch.utils.data.RandomSampler(dataset, generator=generator)
        else:
            sampler = torch.utils.data.SequentialSampler(dataset)
    if persistent_workers is None:
        # Restarting workers each epoch costs seconds (re-import, reopen); keep them by default.
        persistent_workers = num_workers > 0
    return SliceLoader(
        SliceBatches(dataset, compact=compact),
        batch_size=None,
        sampler=EpochBatchSampler(sampler, batch_size, drop_last),
        num_workers=num_workers,
        collate_fn=_as_is,
        pin_memory=pin_memory,
        generator=generator,
        persistent_workers=persistent_workers,
        ring_buffers=ring_buffers,
        **dataloader_kwargs,
    )
