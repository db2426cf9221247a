"""``pad_collate``: batch items whose images differ in size by zero padding (a collate_fn)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from medload._optional import require

__all__ = ["pad_collate"]

#: Item keys padded to the batch's largest spatial size (the rest go to torch's default_collate).
PADDED = ("image", "mask")


def pad_collate(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate dataset items of different spatial sizes: ``image`` and ``mask`` zero-padded
    at their end (bottom, right; and back for volumes) to the largest size in the batch.

    ``size`` (int64 ``(B, ndim)``) gives each item's spatial size before padding, so a loss
    can ignore the padding; everything else is collated by ``torch.utils.data.default_collate``.

    Examples
    --------
    >>> import torch
    >>> a = {"image": torch.ones(1, 2, 3), "mask": torch.ones(1, 2, 3, dtype=torch.int64), "slice": 0}
    >>> b = {"image": torch.ones(1, 4, 2), "mask": torch.ones(1, 4, 2, dtype=torch.int64), "slice": 1}
    >>> batch = pad_collate([a, b])
    >>> tuple(batch["image"].shape), batch["size"].tolist(), int(batch["mask"][0].sum())
    ((2, 1, 4, 3), [[2, 3], [4, 2]], 6)
    """
    torch = require("torch", "medload.datasets.pad_collate")
    if not items:
        return {}
    out: dict[str, Any] = {}
    first = items[0]
    for key in PADDED:
        if key not in first:
            continue
        tensors = [torch.as_tensor(item[key]) for item in items]
        ndim = tensors[0].ndim
        if any(t.ndim != ndim or t.shape[0] != tensors[0].shape[0] for t in tensors):
            shapes = [tuple(t.shape) for t in tensors]
            raise ValueError(f"pad_collate: {key!r} tensors differ in channels or dimensions: {shapes}")
        largest = [max(int(t.shape[d]) for t in tensors) for d in range(1, ndim)]
        batch = tensors[0].new_zeros((len(tensors), tensors[0].shape[0], *largest))
        for i, t in enumerate(tensors):
            batch[(i, slice(None), *(slice(0, int(n)) for n in t.shape[1:]))] = t
        out[key] = batch
        if key == "image":
            out["size"] = torch.tensor([list(t.shape[1:]) for t in tensors], dtype=torch.int64)
    rest = [{k: v for k, v in item.items() if k not in PADDED} for item in items]
    out.update(torch.utils.data.default_collate(rest))
    return out
