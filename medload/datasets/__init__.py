"""PyTorch datasets over a medload store, and patient-level splits.

``SliceDataset`` (one item per 2D slice, optional 2.5D context) and ``VolumeDataset`` (whole
volumes or random 3D patches) need torch and import it on first use; :func:`tf_dataset`
(tf.data) and :class:`KerasBatches` (a Keras 3 PyDataset) import tensorflow / keras on first
use; :class:`NumpyBatches` (JAX, plain numpy), :func:`split`, :func:`label_from` and the label
helpers need numpy only.

Examples
--------
>>> from medload.datasets import split
>>> parts = split([f"pat-{i}" for i in range(10)], fractions={"train": 0.5, "test": 0.5})
>>> sorted(parts), len(parts["train"]) + len(parts["test"])
(['test', 'train'], 10)
"""

from __future__ import annotations

import importlib
from typing import Any

from medload.datasets.labels import LabelFrom, label_from, read_label_csv, resolve_labels
from medload.datasets.normalize import IMAGENET_MEAN, IMAGENET_STD, ChannelNormalize, channel_stats
from medload.datasets.numpy_batches import NumpyBatches
from medload.datasets.splits import DEFAULT_FRACTIONS, patient_hash, split

__all__ = [
    "SliceDataset",
    "VolumeDataset",
    "pad_collate",
    "MonaiTransform",
    "TorchIOTransform",
    "AlbumentationsTransform",
    "split",
    "patient_hash",
    "DEFAULT_FRACTIONS",
    "label_from",
    "LabelFrom",
    "read_label_csv",
    "resolve_labels",
    "NumpyBatches",
    "ChannelNormalize",
    "channel_stats",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "tf_dataset",
    "KerasBatches",
    "MaskWarning",
    "StaleAffineWarning",
]

# torch, tensorflow and keras are imported only when a class needing them is first asked for (PEP 562).
_LAZY = {
    "SliceDataset": "medload.datasets.slices",
    "VolumeDataset": "medload.datasets.volumes",
    "pad_collate": "medload.datasets.collate",
    "MonaiTransform": "medload.datasets.adapters",
    "TorchIOTransform": "medload.datasets.adapters",
    "AlbumentationsTransform": "medload.datasets.adapters",
    "tf_dataset": "medload.datasets.tf",
    "KerasBatches": "medload.datasets.keras",
    "MaskWarning": "medload.datasets._base",
    "StaleAffineWarning": "medload.datasets.handover",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medload.datasets' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
