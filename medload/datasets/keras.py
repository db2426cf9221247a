"""``KerasBatches``: a Keras 3 ``PyDataset`` over a medload store (any Keras backend).

Keras is imported here alone (it comes with ``pip install 'medload[tf]'``). ``model.fit``
takes it directly; Keras' own ``workers`` / ``use_multiprocessing`` read batches in parallel.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from medload._optional import require
from medload.datasets.numpy_batches import NumpyBatches

if TYPE_CHECKING:
    import keras
else:
    keras = require("keras", "medload.datasets.KerasBatches")

__all__ = ["KerasBatches"]


class KerasBatches(keras.utils.PyDataset):
    """Batches ``(image (B, H, W, C) float32, label (B,) int64)`` for ``model.fit``.

    Parameters
    ----------
    store, split, splits, batch_size, shuffle, channels, labels, label_key, normalize, seed
        As for :class:`~medload.datasets.NumpyBatches` (images are channels-last).
    workers, use_multiprocessing, max_queue_size
        Keras' ``PyDataset`` options.

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
            with_mask=False,
        )
        #: Class names by label, when the store (or ``labels``) names them.
        self.classes = self.batches.classes

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> Any:
        out = self.batches.batch(int(index))
        if self.batches.has_labels:
            return out["image"], out["label"]
        return out["image"]

    def on_epoch_end(self) -> None:
        # A new shuffled order for the next epoch (seeded: the same seed repeats the run).
        self.batches.set_epoch(self.batches.epoch + 1)
