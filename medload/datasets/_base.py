"""What SliceDataset and VolumeDataset share: the lazy per-process store handle, the choice
of volumes (split), labels, masks and channels, all worked out once, as numpy, in ``__init__``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medload._optional import require
from medload.datasets.handover import checked_geometry, holds_torchvision_v2, item_transform, moves_pixels_unreported
from medload.datasets.labels import resolve_labels
from medload.datasets.seeding import WorkerSeeds
from medload.datasets.splits import split as make_split
from medload.errors import ConfigError, MedloadError


class MaskWarning(UserWarning):
    """A dataset serves no masks although some selected volumes have one."""


def open_reader(store: Any) -> tuple[Any, str | None]:
    """A StoreReader and the path it came from (``None`` if the reader does not say)."""
    if isinstance(store, (str, Path)):
        from medload.store import open as open_store

        return open_store(store), str(store)
    if hasattr(store, "read_slices") and hasattr(store, "volumes"):
        path = getattr(store, "path", None)
        return store, (str(path) if path is not None else None)
    raise MedloadError(
        f"a dataset needs a store: a path to an .h5 file or a folder of shards, or "
        f"medload.open(path); found {type(store).__name__}."
    )


def torch_from_numpy(array: np.ndarray) -> Any:
    """``torch.from_numpy``, torch imported on first use (``import medload.datasets`` stays light)."""
    return require("torch", "medload datasets").from_numpy(array)


def _select(
    records: list[Any], volume_labels: np.ndarray, chosen: np.ndarray, select: Any, split: str | None, store_name: str
) -> np.ndarray:
    """The chosen volumes that ``select`` keeps (refused when it keeps none)."""
    kept = chosen & select_volumes(records, volume_labels, select)
    if not kept.any():
        raise ConfigError(
            f"select={select!r} keeps none of the {int(chosen.sum())} volumes of {store_name}"
            f"{'' if split is None else f' in split {split!r}'}; they are: {_kinds(records, chosen)}."
        )
    return kept


def _masks(selected: list[Any], with_mask: bool | None, store_name: str) -> bool:
    """Whether items carry a mask: ``with_mask`` checked against the selected volumes."""
    has_mask = [bool(getattr(r, "has_mask", False)) for r in selected]
    if with_mask is None:
        # Default: masks only when every selected volume has one. A converted export
        # usually has masks for a few series only; a batch cannot mix items with and
        # without a mask, so that store is served without masks rather than refused.
        if any(has_mask) and not all(has_mask):
            warnings.warn(
                f"{sum(has_mask)} of {len(has_mask)} selected volumes of {store_name} have a mask, so items "
                "carry no mask (with_mask=None serves masks only when every volume has one). Pass "
                "with_mask=False to silence this, or select the volumes with masks "
                "(select=lambda record: record.has_mask).",
                MaskWarning,
                stacklevel=4,  # the caller of the dataset's class, past __init__ and this function
            )
        return all(has_mask)
    if with_mask and not all(has_mask):
        missing = next(r.key for r, m in zip(selected, has_mask) if not m)
        raise MedloadError(
            f"with_mask=True but volume {missing!r} of {store_name} has no mask "
            f"({sum(has_mask)} of {len(has_mask)} selected volumes have one); items could not be "
            "batched. Pass with_mask=None (masks only when every volume has one), with_mask=False, "
            "or select volumes that all have masks."
        )
    return bool(with_mask)


class StoreDatasetBase:
    """Selection, labels, masks and channels over a store; subclasses add the items."""

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
        tv_tensors: bool = False,
        select: Any = None,
        seed: int = 0,
    ) -> None:
        # Modules do not pickle (spawned workers get the dataset pickled): keep a flag, import on use.
        self.tv_tensors = bool(tv_tensors)
        if self.tv_tensors:
            require("torchvision.tv_tensors", "tv_tensors=True (torchvision v2 items)")
        reader, path = open_reader(store)
        self._reader: Any = reader
        self._path = path
        self.transform = transform
        self._seeds = WorkerSeeds()  # each worker's own random stream for the transform
        self.standardize = bool(standardize)
        self.return_tuple = bool(return_tuple)
        self.seed = int(seed)
        self.split = split
        store_name = path or "the store"

        records = list(reader.volumes)
        if not records:
            raise MedloadError(f"store {store_name} holds no complete volume; convert some data into it first.")
        #: Volume keys in store order (``item["volume"]`` indexes this list).
        self.volume_keys: list[str] = [str(r.key) for r in records]
        # Spacing travels with each item (physical augmentations need it); a plain list per
        # volume, so workers share nothing mutable.
        self._spacings: list[tuple[float, ...]] = [tuple(float(v) for v in r.spacing) for r in records]
        self._spacing_rows = np.asarray(self._spacings, np.float64)  # the same as rows, copied per item
        # The stored grid's affine (voxel (z, y, x) -> RAS+ mm) per volume: MONAI and TorchIO
        # need it to reorient or resample; without it they assume the identity.
        self._affines: list[np.ndarray] = [np.asarray(r.affine, dtype=np.float64).reshape(4, 4) for r in records]

        chosen = self._by_split(records, split, splits, store_name)
        self.volume_labels, self.classes = resolve_labels(records, labels, label_key=label_key, store_name=store_name)

        if select is not None:
            chosen = _select(records, self.volume_labels, chosen, select, split, store_name)
        self.volume_ids = np.flatnonzero(chosen).astype(np.int64)
        selected = [records[i] for i in self.volume_ids]
        self.has_labels = bool((self.volume_labels[self.volume_ids] >= 0).any())
        if self.return_tuple and not self.has_labels:
            raise MedloadError(
                f"return_tuple=True gives (image, label) but no selected volume of {store_name} has a label; "
                "pass labels= (a CSV, a mapping or label_from(...)) or return_tuple=False."
            )

        self.with_mask = _masks(selected, with_mask, store_name)
        if self.return_tuple and with_mask:
            raise ConfigError(
                "return_tuple=True gives (image, label), which would drop the masks asked for with with_mask=True; "
                "use the items' dicts (item['image'], item['mask'], item['label']), or with_mask=None."
            )
        self._channel_index: dict[int, Any] = {}
        self.replicate3 = channels == "replicate3"
        counts = self._channels(selected, channels, store_name)
        #: Channels per slice as read (before 2.5D context stacking or replication).
        self.stored_channels = counts.pop()

    def _by_split(
        self, records: list[Any], split: str | None, splits: Mapping[str, Sequence[str]] | None, store_name: str
    ) -> np.ndarray:
        """Which volumes the split holds: by patient, never by slice."""
        if split is None:
            chosen = np.ones(len(records), bool)
        else:
            if splits is None:
                splits = make_split(self._reader, seed=self.seed)
            if split not in splits:
                raise MedloadError(
                    f"split {split!r} is not one of {sorted(splits)} (store {store_name}); pass one of "
                    f"those, or splits=medload.split(store, fractions={{...}}) naming {split!r}."
                )
            patients = {str(p) for p in splits[split]}
            if not patients:
                n = len({str(r.patient_key) for r in records})
                raise MedloadError(
                    f"split {split!r} holds no patient: the {n} patients of store {store_name} were split "
                    f"{ {k: len(v) for k, v in splits.items()} } and {split!r} got none. With so few patients pass "
                    "splits=medload.split(store, fractions={...}) (or folds=) that gives it some, or split=None."
                )
            chosen = np.array([str(r.patient_key) in patients for r in records], bool)
            if not chosen.any():
                raise MedloadError(
                    f"split {split!r} ({len(patients)} patients) selects no volume of store {store_name}; "
                    "the splits were made for other patients (check the store and the splits' source)."
                )
        return chosen

    def _channels(self, selected: list[Any], channels: None | str | Sequence[str], store_name: str) -> set[int]:
        """The stored channels served of each selected volume (``_channel_index``); the counts seen."""
        counts = set()
        for vid, rec in zip(self.volume_ids, selected):
            stored = list(getattr(rec, "channels", None) or [])
            # The count comes from the stored shape, (Z, C, H, W) or (Z, H, W): a 4D volume
            # without channel names (fMRI frames, DWI) has C channels, not one.
            shape = tuple(getattr(rec, "shape", ()))
            n_stored = int(shape[1]) if len(shape) == 4 else max(len(stored), 1)
            if channels is None or self.replicate3:
                idx = None
                n = n_stored
                if self.replicate3 and n_stored != 1:
                    raise MedloadError(
                        f"channels='replicate3' copies one stored channel three times, but volume {rec.key!r} "
                        f"has {n_stored} channels{(' ' + str(stored)) if stored else ''}; pass channels=None or a list of names."
                    )
            elif isinstance(channels, str):
                raise MedloadError(f"channels must be None, 'replicate3' or a list of channel names, found {channels!r}.")
            else:
                wanted = [str(c) for c in channels]
                absent = [c for c in wanted if c not in stored]
                if absent:
                    raise MedloadError(
                        f"channels {absent} are not stored in volume {rec.key!r} of {store_name}; "
                        f"it has {stored or (f'{n_stored} unnamed channels' if n_stored > 1 else 'one unnamed channel')}."
                    )
                idx = np.array([stored.index(c) for c in wanted], np.int64)
                n = len(wanted)
            self._channel_index[int(vid)] = idx
            counts.add(n)
        if len(counts) > 1:
            raise MedloadError(
                f"the selected volumes of {store_name} have different channel counts {sorted(counts)}; "
                "pass channels=[names] to pick the same channels from each, or select={'channels': n} "
                "to serve the volumes of one count."
            )
        return counts

    # --- the store handle ----------------------------------------------------------------------
    @property
    def reader(self) -> Any:
        """The read-only StoreReader.

        It pickles as its path and metadata and opens its h5py files lazily in each process
        (dropping, never using, handles inherited through fork), so the dataset needs no
        ``worker_init_fn`` and workers never re-scan the store's attributes.
        """
        return self._reader

    # --- helpers for subclasses ---------------------------------------------------------------
    def _read(self, volume: int, start: int, stop: int, *, verify: bool | None = None) -> np.ndarray:
        """Slices ``start:stop`` of one volume as float32 ``(n, C, H, W)``, channels chosen; checked
        against their checksums when ``verify`` (default: the reader's ``verify_slices``) says so."""
        # numpy only, torch.from_numpy at the end: torch ops on every slice would wake torch's
        # intra-op threads, which costs milliseconds per call in a busy main process
        # (measured with bench/loader.py: 0-worker loading 15x slower with 2 threads).
        image = (
            self._reader.read_slices(volume, start, stop)
            if verify is None
            else self._reader.read_slices(volume, start, stop, verify=verify)
        )
        if image.ndim == 3:
            return image[:, None]
        idx = self._channel_index[volume]
        return image if idx is None else image[:, idx]

    def _read_mask(self, volume: int, start: int, stop: int, *, verify: bool | None = None) -> np.ndarray:
        """Mask slices ``start:stop`` as int64 ``(n, 1, H, W)``: channel-first like the image."""
        mask = (
            self._reader.read_mask(volume, start, stop)
            if verify is None
            else self._reader.read_mask(volume, start, stop, verify=verify)
        )
        return mask.astype(np.int64)[:, None]

    def _item_numbers(self, volume: int, label: int | None) -> dict[str, Any]:
        """``spacing`` (and ``label``) of an item: fresh tensors (a transform may change them in place), made
        from numpy (``torch.tensor`` of a tuple costs several times more, per item)."""
        numbers: dict[str, Any] = {}
        if label is not None:
            numbers["label"] = torch_from_numpy(np.array(label, np.int64))
        numbers["spacing"] = torch_from_numpy(self._spacing_rows[volume].copy())
        return numbers

    @property
    def transform(self) -> Callable[[Any], Any] | None:
        """The item transform; a MONAI or TorchIO transform set here runs as
        :class:`~medload.datasets.MonaiTransform` or :class:`~medload.datasets.TorchIOTransform`
        (see :mod:`medload.datasets.handover`: the library gets the item's affine and updates it).
        """
        return self._transform

    @transform.setter
    def transform(self, transform: Callable[[Any], Any] | None) -> None:
        self._transform = item_transform(transform)
        self._unreported = transform is not None and moves_pixels_unreported(transform)
        # torchvision v2 moves only the first plain tensor of a dict (the image, not its mask): give it tv_tensors.
        self._v2 = transform is not None and holds_torchvision_v2(transform)

    def _transformed(self, item: dict[str, Any]) -> Any:
        """``item`` through :attr:`transform`, reseeded first in a DataLoader worker new to it (see
        :mod:`medload.datasets.seeding`); an ``affine`` the transform left stale becomes NaN."""
        transform = self._transform
        if transform is None:
            return item
        self._seeds.check(transform)
        before: dict[str, Any] = {
            k: item[k] for k in ("image", "affine", "spacing") if k in item
        }  # the transform may change item in place
        return checked_geometry(before, transform(item), unreported=self._unreported, transform=transform)

    def _wrap(self, item: dict[str, Any]) -> dict[str, Any]:
        """With ``tv_tensors=True`` or a torchvision v2 transform: image and mask as torchvision's ``Image`` and ``Mask``."""
        if self.tv_tensors or self._v2:
            from torchvision import tv_tensors

            item["image"] = tv_tensors.Image(item["image"])
            if "mask" in item:
                item["mask"] = tv_tensors.Mask(item["mask"])
        return item


#: What ``select={...}`` may ask about a volume.
SELECT_KEYS = ("modality", "channels", "shape", "label")


def select_volumes(records: Sequence[Any], labels: np.ndarray, select: Any) -> np.ndarray:
    """Which volumes ``select`` keeps: a predicate on the :class:`~medload.store.VolumeRecord`,
    or a mapping of criteria that must all hold.

    Criteria: ``modality`` (a code or a collection of codes), ``channels`` (a count, or names
    that must all be stored), ``shape`` (the slice size ``(H, W)``), ``label`` (a class value
    or a collection of them; ``-1`` is "no label").

    Examples
    --------
    >>> from types import SimpleNamespace as R
    >>> recs = [R(modality="CT", shape=(4, 8, 8), channels=None), R(modality="MR", shape=(4, 2, 6, 6), channels=("T2", "ADC"))]
    >>> select_volumes(recs, np.array([0, 1]), {"modality": "MR"}).tolist()
    [False, True]
    >>> select_volumes(recs, np.array([0, 1]), {"channels": 1, "shape": (8, 8)}).tolist()
    [True, False]
    >>> select_volumes(recs, np.array([0, 1]), lambda r: r.modality == "CT").tolist()
    [True, False]
    """
    if callable(select):
        return np.array([bool(select(r)) for r in records], bool)
    if not isinstance(select, Mapping):
        raise ConfigError(f"select must be a function of a VolumeRecord or a mapping of {list(SELECT_KEYS)}; found {select!r}.")
    unknown = sorted(set(select) - set(SELECT_KEYS))
    if unknown:
        raise ConfigError(f"select: {unknown} not among {list(SELECT_KEYS)}; pass a function for other choices.")

    def one_of(value: Any) -> set[Any]:
        return {value} if isinstance(value, (str, int, np.integer)) else set(value)

    keep = np.ones(len(records), bool)
    for i, rec in enumerate(records):
        shape = tuple(int(v) for v in rec.shape)
        names = tuple(rec.channels or ())
        n_channels = shape[1] if len(shape) == 4 else 1
        if "modality" in select and str(rec.modality) not in {str(m) for m in one_of(select["modality"])}:
            keep[i] = False
        if "channels" in select:
            want = select["channels"]
            if isinstance(want, (int, np.integer)):
                keep[i] &= n_channels == int(want)
            else:
                keep[i] &= set(one_of(want)) <= set(names)
        if "shape" in select and shape[-2:] != tuple(int(v) for v in select["shape"]):
            keep[i] = False
        if "label" in select and int(labels[i]) not in {int(v) for v in one_of(select["label"])}:
            keep[i] = False
    return keep


def _kinds(records: Sequence[Any], chosen: np.ndarray) -> str:
    """A short census of the chosen volumes: modality, channels, slice size."""
    from collections import Counter

    census = Counter(
        f"{r.modality} {r.shape[1] if len(r.shape) == 4 else 1}ch {r.shape[-2]}x{r.shape[-1]}"
        for r, c in zip(records, chosen)
        if c
    )
    return ", ".join(f"{n} x {what}" for what, n in census.most_common(6))


def standardize_channels(image: np.ndarray, *, eps: float = 1e-6) -> np.ndarray:
    """Zero mean, unit standard deviation per channel of ``(C, ...)`` (a constant channel: zero mean only).

    Examples
    --------
    >>> x = standardize_channels(np.arange(8, dtype=np.float32).reshape(1, 2, 4))
    >>> round(float(x.mean()), 6), round(float(x.std()), 6)
    (0.0, 1.0)
    """
    flat = image.reshape(image.shape[0], -1)
    mean = flat.mean(axis=1, dtype=np.float64)
    std = flat.std(axis=1, dtype=np.float64)
    std = np.where(std < eps, 1.0, std)
    shape = (image.shape[0],) + (1,) * (image.ndim - 1)
    return ((image - mean.reshape(shape)) / std.reshape(shape)).astype(np.float32, copy=False)
