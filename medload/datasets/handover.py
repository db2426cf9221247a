"""What a dataset does with the ``transform`` a user passes, so that an item's ``affine`` is never stale.

An item's ``affine`` says where its pixels lie in the world. A transform that moves pixels
without saying where (a bare MONAI dictionary transform on plain tensors, a torchvision v2
transform, a user's crop or resize) would leave it describing the pixels as they were: a wrong
answer, with no error. So:

* a MONAI transform passed as ``transform=`` (what a user copying a MONAI tutorial writes) is run
  through :class:`~medload.datasets.MonaiTransform` (:func:`item_transform`): MONAI gets
  ``MetaTensor`` s carrying the item's affine, so its spatial transforms update it, and the item
  comes back with ``affine`` and ``spacing`` of the new grid and an int64 mask; a TorchIO
  transform likewise through :class:`~medload.datasets.TorchIOTransform` (TorchIO refuses a
  plain dictionary without ``include=``, and given one, takes the mask for an intensity image
  on a 1 mm identity grid);
* a torchvision v2 transform gets ``image`` and ``mask`` as ``tv_tensors.Image`` and ``Mask``
  (as with ``tv_tensors=True``): given plain tensors, v2 moves only the first (the image) and
  leaves the mask where it was;
* after any other transform, an ``affine`` that did not change although the pixels moved is
  replaced by NaN (unknown, not stale) with a :class:`StaleAffineWarning` (:func:`checked_geometry`):
  when the image's grid changed shape, when MONAI ran on the plain tensors inside the user's own
  function (the image came back a ``MetaTensor`` whose affine moved), or when a torchvision v2
  transform that moves pixels ran (v2 reports no geometry: a flip that keeps the shape would
  otherwise go unnoticed).

Examples
--------
>>> import torch
>>> before = {"image": torch.zeros(1, 4, 4), "affine": torch.eye(4, dtype=torch.float64)}
>>> out = checked_geometry(before, dict(before, image=torch.zeros(1, 2, 2)), unreported=False)
>>> bool(out["affine"].isnan().all())
True
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from medload._optional import require

__all__ = ["StaleAffineWarning", "checked_geometry", "holds_torchvision_v2", "item_transform", "moves_pixels_unreported", "walk"]


class StaleAffineWarning(UserWarning):
    """A transform moved an item's pixels but left its ``affine`` as it was; the dataset set it to NaN."""


def item_transform(transform: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """``transform`` as a dataset runs it: a MONAI transform wrapped in :class:`~medload.datasets.MonaiTransform`,
    a TorchIO one in :class:`~medload.datasets.TorchIOTransform`.

    Examples
    --------
    >>> from monai.transforms import RandFlipd
    >>> import torchio as tio
    >>> item_transform(RandFlipd(keys=["image", "mask"], prob=0.5)).__class__.__name__
    'MonaiTransform'
    >>> item_transform(tio.RandomFlip()).__class__.__name__
    'TorchIOTransform'
    >>> item_transform(None) is None
    True
    """
    module = type(transform).__module__
    if module.startswith("monai."):
        from medload.datasets.adapters import MonaiTransform

        return MonaiTransform(transform)  # type: ignore[arg-type]
    if module.startswith("torchio."):
        from medload.datasets.adapters import TorchIOTransform

        return TorchIOTransform(transform)  # type: ignore[arg-type]
    return transform


def walk(transform: Any) -> list[Any]:
    """``transform`` and every transform inside it (the ``.transforms`` of compositions, nested).

    Examples
    --------
    >>> from monai.transforms import Compose, RandFlipd, ScaleIntensityd
    >>> [type(t).__name__ for t in walk(Compose([RandFlipd(keys=["image"]), ScaleIntensityd(keys=["image"])]))]
    ['Compose', 'ScaleIntensityd', 'RandFlipd']
    """
    found, pending = [], [transform]
    while pending:
        t = pending.pop()
        found.append(t)
        inner = getattr(t, "transforms", None)
        if inner is not None and hasattr(inner, "__iter__") and not isinstance(inner, (str, bytes, dict)):
            pending.extend(inner)  # a list, or torch's ModuleList (torchvision v2's RandomApply)
    return found


# torchvision v2 transforms that move pixels but keep their size: the pixel size stays known.
_V2_GEOMETRY = "torchvision.transforms.v2._geometry"
_V2_KEEP_PIXEL_SIZE = ("RandomHorizontalFlip", "RandomVerticalFlip", "RandomCrop", "CenterCrop", "Pad")


def _from_module(transform: Any, prefix: str) -> list[Any]:
    """The transforms within ``transform`` whose class is defined under the module ``prefix``."""
    return [t for t in walk(transform) if type(t).__module__.startswith(prefix)]


def moves_pixels_unreported(transform: Any) -> bool:
    """Whether ``transform`` holds a torchvision v2 transform that moves pixels (v2 says nowhere where they went).

    Examples
    --------
    >>> moves_pixels_unreported(lambda item: item)
    False
    """
    return bool(_from_module(transform, _V2_GEOMETRY))


def holds_torchvision_v2(transform: Any) -> bool:
    """Whether ``transform`` holds a torchvision v2 transform (which then needs ``tv_tensors`` to move the mask too).

    Examples
    --------
    >>> holds_torchvision_v2(lambda item: item)
    False
    """
    return bool(_from_module(transform, "torchvision.transforms.v2"))


def _v2_keeps_pixel_size(transform: Any) -> bool:
    return all(type(t).__name__ in _V2_KEEP_PIXEL_SIZE for t in _from_module(transform, _V2_GEOMETRY))


def _spatial_shape(image: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in getattr(image, "shape", ())[1:])


def checked_geometry(before: dict[str, Any], out: Any, *, unreported: bool, transform: Any = None) -> Any:
    """``out`` (a transform's result for the item ``before``) with an ``affine`` left stale replaced by NaN.

    ``unreported``: the transform moves pixels without saying where (:func:`moves_pixels_unreported`).
    An affine the transform changed, or one that still holds (the pixels kept their places), is left as it is.
    """
    if not isinstance(out, dict) or "affine" not in before or out.get("affine") is not before["affine"]:
        return out
    image: Any = out.get("image")
    why = None
    by_monai = hasattr(image, "affine") and type(image).__module__.startswith("monai.")
    if _spatial_shape(image) != _spatial_shape(before.get("image")):
        why = f"the image's grid changed from {_spatial_shape(before.get('image'))} to {_spatial_shape(image)}"
    elif by_monai:
        torch = require("torch", "medload datasets")
        if not torch.equal(torch.as_tensor(image.affine, dtype=torch.float64), torch.eye(4, dtype=torch.float64)):
            why = "MONAI moved the pixels of plain tensors (it took their affine for the identity)"
    elif unreported:
        why = "a torchvision v2 transform moved pixels (v2 reports no geometry)"
    if why is None:
        return out
    torch = require("torch", "medload datasets")
    warnings.warn(
        f"{why}, but the item's 'affine' was left as it was; it is NaN now (unknown, not stale). Pass a MONAI "
        "transform to the dataset itself (or wrap it in medload.datasets.MonaiTransform), or a TorchIO one, "
        "which carry the affine along.",
        StaleAffineWarning,
        stacklevel=2,
    )
    out = dict(out)
    out["affine"] = torch.full((4, 4), float("nan"), dtype=torch.float64)
    keeps_size = unreported and not by_monai and _v2_keeps_pixel_size(transform)
    if "spacing" in out and out["spacing"] is before.get("spacing") and not keeps_size:
        spacing = torch.as_tensor(out["spacing"], dtype=torch.float64).clone()
        # A slice's spacing runs (slice, row, column): the step to its neighbours stays known.
        spacing[1 if getattr(image, "ndim", 0) == 3 else 0 :] = float("nan")
        out["spacing"] = spacing
    return out
