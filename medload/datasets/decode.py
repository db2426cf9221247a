"""The device-side step of compact batches: stored values to the float items, in torch ops.

A compact batch (``SliceDataset.loader(..., compact=True)``) carries images in the stored type
(uint8 for the default store) with each item's ``scale`` and ``offset``; :func:`decode_batch`
moves it to a device and computes there ``stored * scale + offset`` (the store's own decoding,
the same float32 operations, so the same bits as the float batches), then, where the dataset
asks for them, per-image standardization and the three-fold channel copy of ``"replicate3"``.
It runs wherever torch runs (CPU included).
"""

from __future__ import annotations

from typing import Any

from medload._optional import require

torch = require("torch", "medload.datasets.decode")

__all__ = ["decode_batch", "standardize_batch"]


def standardize_batch(image: Any, *, eps: float = 1e-6) -> Any:
    """Zero mean, unit standard deviation per image and channel of a ``(B, C, H, W)`` float batch.

    The torch twin of :func:`medload.datasets._base.standardize_channels` (float64 statistics,
    a constant channel only centred), on whatever device the batch is.

    Examples
    --------
    >>> x = standardize_batch(torch.arange(16.0).reshape(2, 1, 2, 4))
    >>> [round(float(v), 5) for v in x.mean(dim=(1, 2, 3))], [round(float(v), 5) for v in x.std(dim=(1, 2, 3), unbiased=False)]
    ([0.0, 0.0], [1.0, 1.0])
    """
    wide = image.double()
    flat = wide.reshape(*wide.shape[:2], -1)
    var, mean = torch.var_mean(flat, dim=-1, correction=0, keepdim=True)
    std = var.sqrt()
    std = torch.where(std < eps, torch.ones_like(std), std)
    return ((flat - mean) / std).reshape(image.shape).float()


def decode_batch(
    batch: Any, *, device: Any = None, non_blocking: bool = False, standardize: bool = False, replicate3: bool = False
) -> Any:
    """A batch on ``device`` with images as float32 item values and masks as int64.

    Parameters
    ----------
    batch : dict or tuple
        From :meth:`SliceDataset.loader`. A compact batch (``scale`` and ``offset`` present)
        is decoded; a float batch (or an ``(image, label)`` tuple) is only moved.
    device : torch.device or str, optional
        Where to put it (``"cuda"``; default: where it is).
    non_blocking : bool
        Asynchronous copies (pays off from pinned memory, ``pin_memory=True``).
    standardize, replicate3 : bool
        The dataset's ``standardize`` and ``channels="replicate3"``, done here for compact
        batches (:meth:`SliceLoader.decode` passes the dataset's own settings).

    Examples
    --------
    >>> batch = {"image": torch.tensor([[[[0, 255]]]], dtype=torch.uint8),
    ...          "scale": torch.tensor([0.5]), "offset": torch.tensor([-1.0]), "key": ["a"]}
    >>> decode_batch(batch, replicate3=True)["image"]
    tensor([[[[ -1.0000, 126.5000]],
    <BLANKLINE>
             [[ -1.0000, 126.5000]],
    <BLANKLINE>
             [[ -1.0000, 126.5000]]]])
    """

    def move(value: Any) -> Any:
        return value.to(device, non_blocking=non_blocking) if isinstance(value, torch.Tensor) else value

    if not isinstance(batch, dict):
        return type(batch)(move(v) for v in batch)
    out = {name: move(value) for name, value in batch.items() if name not in ("scale", "offset")}
    if "scale" not in batch:
        return out
    image = out["image"]
    stored = image.dtype
    if stored != torch.float32:
        image = image.float()  # exact for uint8, int16 and float16
        if not stored.is_floating_point:
            # Two separate float32 operations, as the store decodes (a fused multiply-add
            # would round once and could differ in the last bit).
            shape = (-1,) + (1,) * (image.dim() - 1)
            image.mul_(move(batch["scale"]).view(shape))
            image.add_(move(batch["offset"]).view(shape))
    if standardize:
        image = standardize_batch(image)
    if replicate3:
        image = image.repeat(1, 3, 1, 1)
    out["image"] = image
    if "mask" in out:
        out["mask"] = out["mask"].long()
    return out
