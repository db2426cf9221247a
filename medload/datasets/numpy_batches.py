"""``NumpyBatches``: framework-free batches of stored slices, for JAX, Keras, tf.data or plain numpy.

The same selection as the torch datasets (patient-level splits, stored labels and class
names, channels), read a batch at a time: consecutive slices of a volume in one store call.
No torch, no tensorflow: a JAX training loop consumes the numpy arrays directly
(``jax.device_put`` or ``jnp.asarray``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from medload.datasets._base import StoreDatasetBase
from medload.datasets.normalize import resolve_normalize
from medload.datasets.world import slice_affines, slice_bases
from medload.errors import MedloadError

__all__ = ["NumpyBatches"]


class NumpyBatches(StoreDatasetBase):
    """Batches of slices as numpy arrays: ``{"image": (B, C, H, W) float32, "label": (B,) int64, ...}``.

    Besides ``image`` (``mask``, ``label``): ``spacing`` ``(B, 3)`` and ``affine`` ``(B, 4, 4)``
    float64, each slice's as in :class:`~medload.datasets.SliceDataset`'s items (pixel
    ``(row, column, 0)`` to RAS+ mm), ``volume`` and ``slice``.

    Parameters
    ----------
    store : str, Path or StoreReader
        A store file, a folder of shards, or ``medload.open(path)``.
    split : str, optional
        ``"train"``, ``"val"``, ``"test"`` (or a name of ``splits``); patients of other splits
        are left out, exactly as in :class:`~medload.datasets.SliceDataset`.
    splits : mapping, optional
        Split name to patient keys (default ``medload.split(store, seed=seed)``).
    batch_size : int
        Slices per batch.
    shuffle : bool
        A new order every epoch, drawn from ``numpy.random.default_rng((seed, epoch))``: the
        same seed gives the same batches, run after run.
    drop_last : bool
        Leave out the last, smaller batch.
    channels, with_mask, labels, label_key, seed
        As for :class:`~medload.datasets.SliceDataset`.
    normalize : None, "imagenet", "train", (mean, std) or ChannelNormalize
        Per-channel ``(x - mean) / std``: ImageNet's statistics, the training split's own
        (computed once, over the ``"train"`` split of the same ``splits``), or given numbers.
    channels_last : bool
        ``image`` as ``(B, H, W, C)`` (Keras, TensorFlow, Flax) instead of ``(B, C, H, W)``.

    Examples
    --------
    >>> import tempfile, os, numpy as np, medload
    >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> with medload.Store.create(path) as st:
    ...     for i in range(3):
    ...         vol = medload.Volume(np.full((2, 4, 4), i, np.float32), np.eye(4),
    ...                              meta={"patient_key": f"p{i}", "series_key": f"s{i}", "source_hash": f"h{i}"})
    ...         _ = st.add(vol, label=i % 2)
    >>> batches = NumpyBatches(path, batch_size=4, channels_last=True)
    >>> [b["image"].shape for b in batches], len(batches)
    ([(4, 4, 4, 1), (2, 4, 4, 1)], 2)
    >>> next(iter(batches))["label"].tolist()
    [0, 0, 1, 1]
    """

    def __init__(
        self,
        store: Any,
        split: str | None = None,
        *,
        splits: Mapping[str, Sequence[str]] | None = None,
        batch_size: int = 32,
        shuffle: bool = False,
        drop_last: bool = False,
        channels: None | str | Sequence[str] = None,
        with_mask: bool | None = None,
        labels: Any = None,
        label_key: str = "patient",
        normalize: Any = None,
        channels_last: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(
            store,
            split,
            splits=splits,
            channels=channels,
            with_mask=with_mask,
            labels=labels,
            label_key=label_key,
            seed=seed,
        )
        if int(batch_size) < 1:
            raise MedloadError(f"NumpyBatches: batch_size must be >= 1, found {batch_size}.")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.channels_last = bool(channels_last)
        self._splits = splits
        self._labels_arg, self._label_key = labels, label_key
        index = self.reader.index
        rows = np.isin(np.asarray(index["volume"]), self.volume_ids)
        self._vol = np.ascontiguousarray(index["volume"][rows], dtype=np.int64)
        self._slice = np.ascontiguousarray(index["slice"][rows], dtype=np.int64)
        self._label = self.volume_labels[self._vol]
        # Per volume, looked up per batch as arrays (StoreReader.volumes copies its list per call).
        records = list(self.reader.volumes)
        self._records = records
        kinds = {(r.dtype, tuple(r.slice_shape)) for r in records}
        kind_of = {k: i for i, k in enumerate(sorted(kinds, key=str))}
        self._vol_kind = np.array([kind_of[(r.dtype, tuple(r.slice_shape))] for r in records], np.int64)
        self._vol_scale = np.array([r.scale for r in records], np.float32)
        self._vol_offset = np.array([r.offset for r in records], np.float32)
        self._vol_all_channels = np.array([self._channel_index.get(i) is None for i in range(len(records))], bool)
        self._slice_bases, self._slice_steps = slice_bases(self._affines)
        self.epoch = 0
        train = None
        if isinstance(normalize, str) and normalize == "train":
            # The training split's statistics, whichever split this serves: val/test never leak into them.
            train = NumpyBatches(store, "train", splits=splits, batch_size=256, channels=channels, with_mask=False, seed=seed)
        self.normalize = resolve_normalize(normalize, channels_last=self.channels_last, train_batches=train)

    # --- sizes and order ---------------------------------------------------------------------
    @property
    def n_items(self) -> int:
        """Slices served per epoch (before ``drop_last``)."""
        return int(self._vol.shape[0])

    def __len__(self) -> int:
        n, b = self.n_items, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffled order :meth:`batch` and iteration use."""
        self.epoch = int(epoch)

    def order(self, epoch: int | None = None) -> np.ndarray:
        """Item positions of one epoch, in serving order."""
        n = self.n_items
        if not self.shuffle:
            return np.arange(n, dtype=np.int64)
        epoch = self.epoch if epoch is None else int(epoch)
        cached = getattr(self, "_order_cache", None)
        if cached is not None and cached[0] == epoch:
            return cached[1]  # batch(i) asks once per batch: one permutation per epoch, not per batch
        order = np.random.default_rng((self.seed, epoch)).permutation(n).astype(np.int64)
        self._order_cache = (epoch, order)
        return order

    def _simple(self, vols: np.ndarray) -> bool:
        """Whether the volumes of a batch can be read raw into one buffer (one type, one slice shape, all channels)."""
        kinds = self._vol_kind[vols]
        return bool(not self.replicate3 and (kinds == kinds[0]).all() and self._vol_all_channels[vols].all())

    def read_stored(self, items: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Images of ``items`` in the stored type, ``(B, C, H, W)``, with each item's ``scale`` and ``offset``.

        ``image * scale + offset`` (per item) is what :meth:`read` gives before normalization;
        a framework does that on its side (``tf_dataset``: in TensorFlow ops, outside Python's
        GIL), and a uint8 store moves a quarter of float32's bytes. Channel selection,
        ``"replicate3"`` and volumes of different stored types fall back to float32 with
        ``scale = 1, offset = 0``.
        """
        idx = np.asarray(items, dtype=np.int64).reshape(-1)
        vols, slices = self._vol[idx], self._slice[idx]
        if not self._simple(vols):
            image = self.read(idx)["image"]
            if self.channels_last:
                image = np.ascontiguousarray(image.transpose(0, 3, 1, 2))
            if self.normalize is not None:
                raise MedloadError("NumpyBatches.read_stored: normalize is applied by the caller; build it with normalize=None.")
            ones = np.ones(idx.size, np.float32)
            return image, ones, np.zeros(idx.size, np.float32)
        first = self._records[int(vols[0])]
        # Each row straight from the file into its place (runs in file order, no reordering copy).
        image = self.reader.read_batch(vols, slices, np.empty((idx.size, *first.slice_shape), np.dtype(first.dtype)), raw=True)
        if image.ndim == 3:
            image = image[:, None]
        return image, self._vol_scale[vols], self._vol_offset[vols]

    def read_masks(self, items: Sequence[int] | np.ndarray) -> np.ndarray:
        """Masks of ``items``, int64 ``(B, 1, H, W)`` (``(B, H, W, 1)`` with ``channels_last``), runs read in one call each."""
        idx = np.asarray(items, dtype=np.int64).reshape(-1)
        vols, slices = self._vol[idx], self._slice[idx]
        sort = np.lexsort((slices, vols))
        sv, ss = vols[sort], slices[sort]
        breaks = np.flatnonzero((sv[1:] != sv[:-1]) | (ss[1:] != ss[:-1] + 1)) + 1
        mask = np.empty((idx.size, 1, *self._records[int(vols[0])].slice_shape[-2:]), np.int64)
        for a, b in zip(np.concatenate(([0], breaks)).tolist(), np.concatenate((breaks, [idx.size])).tolist()):
            mask[sort[a:b]] = self._read_mask(int(sv[a]), int(ss[a]), int(ss[a]) + (b - a))
        return np.ascontiguousarray(mask.transpose(0, 2, 3, 1)) if self.channels_last else mask

    # --- reading -------------------------------------------------------------------------------
    def read(self, items: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """The batch of item positions ``items`` (any order), read in runs of consecutive slices."""
        idx = np.asarray(items, dtype=np.int64).reshape(-1)
        if idx.size == 0:
            raise MedloadError("NumpyBatches.read: no items asked for.")
        vols, slices = self._vol[idx], self._slice[idx]
        if not self.with_mask and self._simple(vols):
            # One raw read into one buffer, then one vectorized decode: measured 4x faster than
            # a float32 array per run of slices on a store of one-slice volumes (2D images).
            stored, scale, offset = self.read_stored(idx)
            image = stored.astype(np.float32) * scale[:, None, None, None] + offset[:, None, None, None]
            return self._finish(idx, vols, slices, image, None)
        # Read sorted runs, then put the rows back in the order asked for.
        sort = np.lexsort((slices, vols))
        sv, ss = vols[sort], slices[sort]
        breaks = np.flatnonzero((sv[1:] != sv[:-1]) | (ss[1:] != ss[:-1] + 1)) + 1
        starts = np.concatenate(([0], breaks)).tolist()
        ends = np.concatenate((breaks, [idx.size])).tolist()
        image = None
        mask = None
        for a, b in zip(starts, ends):
            v, s0 = int(sv[a]), int(ss[a])
            block = self._read(v, s0, s0 + (b - a))
            if self.replicate3:
                block = np.repeat(block, 3, axis=1)
            if image is None:
                image = np.empty((idx.size, *block.shape[1:]), np.float32)
                if self.with_mask:
                    mask = np.empty((idx.size, 1, *block.shape[-2:]), np.int64)  # channel-first, as _read_mask
            if block.shape[1:] != image.shape[1:]:
                raise MedloadError(
                    f"NumpyBatches: slices of volume {self.volume_keys[v]!r} are {block.shape[1:]}, others in the "
                    f"batch {image.shape[1:]}; convert with --size so that every slice has one size."
                )
            image[sort[a:b]] = block
            if mask is not None:
                mask[sort[a:b]] = self._read_mask(v, s0, s0 + (b - a))
        assert image is not None
        return self._finish(idx, vols, slices, image, mask)

    def _finish(
        self, idx: np.ndarray, vols: np.ndarray, slices: np.ndarray, image: np.ndarray, mask: np.ndarray | None
    ) -> dict[str, np.ndarray]:
        if self.channels_last:
            image = np.ascontiguousarray(image.transpose(0, 2, 3, 1))
        if self.normalize is not None:
            image = self.normalize(image)
        out: dict[str, np.ndarray] = {"image": image}
        if mask is not None:
            out["mask"] = mask if not self.channels_last else np.ascontiguousarray(mask.transpose(0, 2, 3, 1))
        if self.has_labels:
            out["label"] = self._label[idx].astype(np.int64)
        out["spacing"] = self._spacing_rows[vols]
        out["affine"] = slice_affines(self._slice_bases, self._slice_steps, vols, slices)
        out["volume"] = vols
        out["slice"] = slices
        return out

    def batch(self, i: int) -> dict[str, np.ndarray]:
        """Batch ``i`` of the current epoch (see :meth:`set_epoch`)."""
        n_batches = len(self)
        if not -n_batches <= i < n_batches:
            raise IndexError(f"NumpyBatches: batch {i} is out of range for {n_batches} batches.")
        i %= n_batches
        order = self.order()
        return self.read(order[i * self.batch_size : (i + 1) * self.batch_size])

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        order = self.order()
        for i in range(len(self)):
            yield self.read(order[i * self.batch_size : (i + 1) * self.batch_size])
        if self.shuffle:
            self.epoch += 1

    def __repr__(self) -> str:
        return (
            f"NumpyBatches({self.n_items} slices of {len(self.volume_ids)} volumes in {len(self)} batches of "
            f"{self.batch_size}, split={self.split!r}, shuffle={self.shuffle}, labels={self.has_labels}, "
            f"normalize={self.normalize!r})"
        )
