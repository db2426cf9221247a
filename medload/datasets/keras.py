"""``KerasBatches``: a Keras 3 ``PyDataset`` over a medload store (any Keras backend).

Keras is imported here alone (it comes with ``pip install 'medload[tf]'``). ``model.fit``
takes it directly; Keras' own ``workers`` / ``use_multiprocessing`` read batches in parallel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medload._optional import require
from medload.datasets.numpy_batches import NumpyBatches
from medload.errors import MedloadError

if TYPE_CHECKING:
    import keras
else:
    keras = require("keras", "medload.datasets.KerasBatches")

__all__ = ["KerasBatches", "augmented_pair"]

# A mask resampled with nearest neighbours comes back from Keras as whole numbers in float32.
_LABEL_TOLERANCE = 1e-3


def augmented_pair(augment: Any, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(image, mask)`` through a Keras layer in its ``{"images", "segmentation_masks"}`` form; the mask int64.

    Examples
    --------
    >>> image, mask = np.arange(4.0).reshape(1, 1, 4, 1), np.array([0, 0, 1, 2]).reshape(1, 1, 4, 1)
    >>> x, m = augmented_pair(lambda d: {k: np.flip(np.asarray(v), 2) for k, v in d.items()}, image, mask)
    >>> x.ravel().tolist(), m.ravel().tolist(), m.dtype
    ([3.0, 2.0, 1.0, 0.0], [2, 1, 0, 0], dtype('int64'))
    """
    if augment is None:
        return image, mask
    out = augment({"images": image, "segmentation_masks": mask})
    moved = np.asarray(out["segmentation_masks"], dtype=np.float64)
    off = float(np.abs(moved - np.round(moved)).max()) if moved.size else 0.0
    if off > _LABEL_TOLERANCE:
        raise MedloadError(
            f"augment interpolated the mask: its values are {off:.3f} off whole labels; resample masks with "
            "nearest neighbours (Keras layers do when called with {'images': ..., 'segmentation_masks': ...})."
        )
    return np.asarray(out["images"], dtype=np.float32), np.round(moved).astype(np.int64)


class KerasBatches(keras.utils.PyDataset):
    """Batches ``(image (B, H, W, C) float32, label (B,) int64)`` for ``model.fit``, ``(image, mask)``, or both.

    Parameters
    ----------
    store, split, splits, batch_size, shuffle, channels, labels, label_key, normalize, seed
        As for :class:`~medload.datasets.NumpyBatches` (images are channels-last).
    workers, use_multiprocessing, max_queue_size
        Keras' ``PyDataset`` options.
    with_mask : bool
        Batches ``(image, mask)``: the stored masks, int64 ``(B, H, W, 1)``, for segmentation.
    with_label : bool, optional
        As for :func:`~medload.datasets.tf_dataset`: ``None`` labels beside the image alone
        when the store has them; ``True`` with ``with_mask`` gives ``(image, {"mask": mask,
        "label": label})`` for a model with outputs named ``"mask"`` and ``"label"``; ``False``
        never.
    augment : callable, optional
        A Keras 3 preprocessing layer (or ``keras.layers.Pipeline``) run on each batch; with
        ``with_mask`` called as ``augment({"images": image, "segmentation_masks": mask})`` so
        that both move alike (the mask with nearest neighbours, back as int64; a mask no longer
        whole labels is refused). A random layer inside the model moves the image only.

    Examples
    --------
    >>> import tempfile, os, numpy as np, medload
    >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> with medload.Store.create(path) as st:
    ...     for i in range(3):
    ...         vol = medload.Volume(np.full((1, 4, 4), i, np.float32), np.eye(4),
    ...                              meta={"patient_key": f"p{i}", "series_key": f"s{i}", "source_hash": f"h{i}"})
    ...         _ = st.add(vol, label=i)
    >>> data = KerasBatches(path, batch_size=2)
    >>> x, y = data[0]
    >>> len(data), x.shape, y.tolist()
    (2, (2, 4, 4, 1), [0, 1])
    """

    def __init__(
        self,
        store: Any,
        split: str | None = None,
        *,
        splits: Mapping[str, Sequence[str]] | None = None,
        batch_size: int = 32,
        shuffle: bool = False,
        channels: None | str | Sequence[str] = None,
        labels: Any = None,
        label_key: str = "patient",
        normalize: Any = None,
        seed: int = 0,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
        with_mask: bool = False,
        with_label: bool | None = None,
        augment: Any = None,
    ) -> None:
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        self.batches = NumpyBatches(
            store,
            split,
            splits=splits,
            batch_size=batch_size,
            shuffle=shuffle,
            channels=channels,
            labels=labels,
            label_key=label_key,
            normalize=normalize,
            channels_last=True,
            seed=seed,
            with_mask=bool(with_mask),
        )
        self.with_mask = bool(with_mask)
        if with_label and not self.batches.has_labels:
            raise MedloadError(
                f"KerasBatches: with_label=True but no selected volume of {self.batches._path or 'the store'} has a "
                "label; pass labels= (a CSV, a mapping or label_from(...)), or with_label=None."
            )
        #: Whether batches carry the class labels (see ``with_label``).
        self.with_label = self.batches.has_labels and not self.with_mask if with_label is None else bool(with_label)
        self.augment = augment
        #: Class names by label, when the store (or ``labels``) names them.
        self.classes = self.batches.classes

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Any:
        out = self.batches.batch(int(index))
        label = out["label"] if self.with_label else None
        if self.with_mask:
            image, mask = augmented_pair(self.augment, out["image"], out["mask"])
            return (image, mask) if label is None else (image, {"mask": mask, "label": label})
        image = out["image"] if self.augment is None else np.asarray(self.augment(out["image"]))
        return image if label is None else (image, label)

    def on_epoch_end(self) -> None:
        # A new shuffled order for the next epoch (seeded: the same seed repeats the run).
        self.batches.set_epoch(self.batches.epoch + 1)
