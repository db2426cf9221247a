"""Per-channel mean/std normalization at serve time: ImageNet's, given numbers, or the training split's own.

Stores hold plain images scaled to ``[0, 1]`` (the ``image`` preset); networks pretrained on
ImageNet expect ``(x - mean) / std`` with ImageNet's statistics, and a network trained from
scratch is often better served by the dataset's own, computed on the training split only (the
validation and test patients must not leak into them).

Examples
--------
>>> import numpy as np
>>> norm = ChannelNormalize([0.5], [0.25])
>>> norm(np.array([[[0.5, 1.0]]], np.float32)).tolist()
[[[0.0, 2.0]]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from medload.errors import MedloadError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ChannelNormalize", "channel_stats", "resolve_normalize"]

#: torchvision's ImageNet statistics (R, G, B) for images in ``[0, 1]``.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ChannelNormalize:
    """``(image - mean) / std`` per channel, for channel-first ``(C, H, W)`` / ``(B, C, H, W)`` or, with ``channels_last``, ``(..., C)``.

    Applied to an item dict (a torch dataset's ``transform=``) it changes ``item["image"]``;
    torch tensors and numpy arrays both work.

    Parameters
    ----------
    mean, std : sequence of float
        One value per channel (or one for all).
    channels_last : bool
        The channel axis is the last one (TensorFlow/Keras layout).

    Examples
    --------
    >>> import numpy as np
    >>> norm = ChannelNormalize(IMAGENET_MEAN, IMAGENET_STD)
    >>> out = norm({"image": np.ones((3, 2, 2), np.float32)})["image"]
    >>> [round(float(v), 4) for v in out[:, 0, 0]]
    [2.2489, 2.4286, 2.64]
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], *, channels_last: bool = False) -> None:
        self.mean = np.asarray(mean, np.float32).reshape(-1)
        self.std = np.asarray(std, np.float32).reshape(-1)
        if self.mean.shape != self.std.shape or not np.all(self.std > 0) or not np.all(np.isfinite(self.mean)):
            raise MedloadError(
                f"normalize: mean and std need one finite value per channel and std > 0, found mean={mean}, std={std}."
            )
        self.channels_last = bool(channels_last)

    def _shape(self, ndim: int) -> tuple[int, ...]:
        if self.channels_last or ndim < 3:
            return (-1,)
        return (-1, 1, 1) if ndim == 3 else (1, -1, 1, 1)

    def __call__(self, x: Any) -> Any:
        if isinstance(x, dict):
            out = dict(x)
            out["image"] = self(x["image"])
            return out
        channels = x.shape[-1] if self.channels_last else x.shape[-3]
        if self.mean.size not in (1, channels):
            raise MedloadError(
                f"normalize: {self.mean.size} channel statistics for images with {channels} channels; "
                "give one mean/std per channel (ImageNet's are for RGB: convert without --grayscale or use channels='replicate3')."
            )
        shape = self._shape(x.ndim)
        mean, std = self.mean.reshape(shape), self.std.reshape(shape)
        if hasattr(x, "numpy") and not isinstance(x, np.ndarray):  # a torch tensor
            import torch

            return (x - torch.from_numpy(mean)) / torch.from_numpy(std)
        return ((x - mean) / std).astype(np.float32, copy=False)

    def params(self) -> dict[str, list[float]]:
        """The statistics, JSON-able, to write beside a trained model."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    def __repr__(self) -> str:
        return f"ChannelNormalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


def channel_stats(batches: Any) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation over every pixel of ``batches`` (float64 sums).

    Parameters
    ----------
    batches : iterable of dict
        :class:`~medload.datasets.NumpyBatches` of the training split (``image`` ``(B, C, H, W)``).

    Examples
    --------
    >>> import numpy as np
    >>> mean, std = channel_stats([{"image": np.array([[[[0.0, 1.0]]]], np.float32)}])
    >>> mean, std
    ([0.5], [0.5])
    """
    total = total_sq = np.zeros(0)
    count = 0
    for batch in batches:
        image = np.asarray(batch["image"], np.float64)
        axes = (0, 2, 3) if image.ndim == 4 else (1, 2)
        s, sq = image.sum(axis=axes), np.square(image).sum(axis=axes)
        total = s if count == 0 else total + s
        total_sq = sq if count == 0 else total_sq + sq
        count += image.size // s.size
    if count == 0:
        raise MedloadError("channel_stats: no images to compute statistics from (an empty split?).")
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return [float(v) for v in mean], [float(max(v, 1e-6)) for v in std]


def resolve_normalize(normalize: Any, *, channels_last: bool, train_batches: Any = None) -> ChannelNormalize | None:
    """``None``, ``"imagenet"``, ``"train"`` (statistics of ``train_batches``), ``(mean, std)`` or a ChannelNormalize.

    Examples
    --------
    >>> resolve_normalize("imagenet", channels_last=True).mean.tolist() == list(np.float32(IMAGENET_MEAN))
    True
    """
    if normalize is None or isinstance(normalize, ChannelNormalize):
        return normalize
    if isinstance(normalize, str):
        if normalize == "imagenet":
            return ChannelNormalize(IMAGENET_MEAN, IMAGENET_STD, channels_last=channels_last)
        if normalize == "train":
            if train_batches is None:
                raise MedloadError("normalize='train' needs the training split's batches to compute its statistics.")
            return ChannelNormalize(*channel_stats(train_batches), channels_last=channels_last)
        raise MedloadError(f"normalize must be None, 'imagenet', 'train' or (mean, std), found {normalize!r}.")
    try:
        mean, std = normalize
    except (TypeError, ValueError):
        raise MedloadError(f"normalize must be None, 'imagenet', 'train' or (mean, std), found {normalize!r}.") from None
    return ChannelNormalize(mean, std, channels_last=channels_last)
