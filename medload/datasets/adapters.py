"""Hand dataset items to MONAI and TorchIO transforms with their geometry, and take them back.

A medload item holds plain tensors and, for :class:`~medload.VolumeDataset`, the item's
``affine`` (voxel ``(z, y, x)`` to RAS+ mm). MONAI's dictionary transforms read the geometry
from ``MetaTensor.affine`` and TorchIO's from ``ScalarImage``/``LabelMap``; given plain
tensors, MONAI assumes the identity (``Orientationd`` and ``Spacingd`` then do the wrong
thing, with only a warning) and TorchIO needs a ``Subject``. Both libraries also hand a
resampled mask back as float32 (``RandAffined``, ``Spacingd``, ``RandomAffine``,
``RandomElasticDeformation``), and TorchIO's ``ToCanonical`` refuses an int64 ``LabelMap``
(nibabel will not write int64 without a header). :class:`MonaiTransform` and
:class:`TorchIOTransform` wrap a transform so that it gets the affine, and the item that comes
back is a medload item again: ``image`` float32, ``mask`` int64 labels (refused if the transform
interpolated them), ``affine`` and ``spacing`` of the new grid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from medload._optional import require
from medload.errors import MedloadError

__all__ = ["MonaiTransform", "TorchIOTransform"]

# A resampled label is an exact integer in float32 when the mask was resampled with nearest
# neighbours; anything further off was interpolated.
_LABEL_TOLERANCE = 1e-3


def _labels(mask: Any, transform: Any) -> Any:
    """``mask`` as int64 labels; a mask whose values are not whole numbers is refused."""
    torch = require("torch", "medload.datasets adapters")
    mask = torch.as_tensor(mask)
    if hasattr(mask, "as_tensor"):  # a MONAI MetaTensor: its plain tensor
        mask = mask.as_tensor()
    if mask.dtype.is_floating_point:
        rounded = torch.round(mask)
        if mask.numel() and float((mask - rounded).abs().max()) > _LABEL_TOLERANCE:
            off = float((mask - rounded).abs().max())
            raise MedloadError(
                f"{_name(transform)} interpolated the mask: its values are {off:.3f} off whole labels. "
                "Resample masks with nearest neighbours (MONAI: mode=('bilinear', 'nearest') with "
                "keys=['image', 'mask']; TorchIO: a LabelMap, which TorchIO resamples with nearest)."
            )
        mask = rounded
    return mask.to(torch.int64)


def _name(transform: Any) -> str:
    return type(transform).__name__


def _spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each array axis: the lengths of the affine's columns."""
    return np.sqrt((np.asarray(affine, np.float64)[:3, :3] ** 2).sum(axis=0))


def _finish(item: dict[str, Any], out: dict[str, Any], affine: np.ndarray | None, transform: Any) -> dict[str, Any]:
    """The medload item after the transform: plain float32 image, int64 mask, the new grid's affine."""
    torch = require("torch", "medload.datasets adapters")
    result = dict(out)
    image = out["image"]
    if hasattr(image, "as_tensor"):
        image = image.as_tensor()
    result["image"] = torch.as_tensor(image).to(torch.float32)
    if "mask" in out:
        result["mask"] = _labels(out["mask"], transform)
        if tuple(result["mask"].shape[1:]) != tuple(result["image"].shape[1:]):
            raise MedloadError(
                f"{_name(transform)} left image {tuple(result['image'].shape)} and mask "
                f"{tuple(result['mask'].shape)} on different grids; apply it to both keys."
            )
    if affine is not None:
        result["affine"] = torch.from_numpy(np.array(affine, dtype=np.float64))
        if "spacing" in item:
            result["spacing"] = torch.from_numpy(_spacing(affine))
    return result


class MonaiTransform:
    """Apply a MONAI dictionary transform to medload items, with the item's affine.

    ``image`` and ``mask`` go in as ``monai.data.MetaTensor`` carrying the item's ``affine``
    (when the item has one: :class:`~medload.VolumeDataset` items do), so ``Orientationd``,
    ``Spacingd`` and the random spatial transforms know where each voxel is. What comes back
    is a medload item: ``image`` float32, ``mask`` int64 (MONAI returns resampled masks as
    float32; a mask resampled other than with nearest neighbours is refused), ``affine`` and
    ``spacing`` of the new grid. A slice item ``(C, H, W)`` goes in with its pixel size as the
    affine (so ``Spacingd(pixdim=(0.5, 0.5))`` resamples to 0.5 mm pixels, not from an assumed
    1 mm) and comes back with its new ``spacing``; its orientation is the stored display
    convention, which ``Orientationd`` cannot see. Use it as the dataset's ``transform``; it
    pickles when the MONAI transform does, so it works in DataLoader workers.

    Parameters
    ----------
    transform : callable
        A MONAI dictionary transform (or ``Compose``) over the keys ``"image"`` and ``"mask"``.
        A transform that returns several samples (``RandCropByPosNegLabeld(num_samples=4)``)
        gives a list of items.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from monai.transforms import Orientationd
    >>> item = {"image": torch.arange(8.0).reshape(1, 2, 2, 2), "mask": torch.ones(1, 2, 2, 2, dtype=torch.int64),
    ...         "affine": torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=torch.float64))}
    >>> out = MonaiTransform(Orientationd(keys=["image", "mask"], axcodes="RAS", labels=None))(item)
    >>> out["affine"].diagonal().tolist(), out["image"][0, :, 0, 0].tolist(), out["mask"].dtype
    ([1.0, 1.0, 1.0, 1.0], [4.0, 0.0], torch.int64)
    """

    def __init__(self, transform: Callable[[Any], Any]) -> None:
        self.transform = transform

    def __call__(self, item: dict[str, Any]) -> Any:
        torch = require("torch", "medload.datasets.MonaiTransform")
        data = dict(item)
        affine = _given_affine(item)
        if affine is not None:
            meta_tensor = require("monai.data", "medload.datasets.MonaiTransform").MetaTensor
            affine_t = torch.as_tensor(affine)
            for key in ("image", "mask"):
                if key in data:
                    data[key] = meta_tensor(torch.as_tensor(data[key]), affine=affine_t.clone())
        out = self.transform(data)
        if isinstance(out, (list, tuple)):
            return [self._back(item, o, affine) for o in out]
        return self._back(item, out, affine)

    def _back(self, item: dict[str, Any], out: dict[str, Any], given: np.ndarray | None) -> dict[str, Any]:
        image = out["image"]
        if given is None:
            return _finish(item, out, None, self.transform)
        affine = np.asarray(image.affine, dtype=np.float64) if hasattr(image, "affine") else given
        if item.get("affine") is None:  # a slice: only its new pixel size comes back
            out = dict(out)
            spacing = np.asarray(item["spacing"], dtype=np.float64).copy()
            spacing[1:] = _spacing(affine)[:2]
            out["spacing"] = require("torch", "medload.datasets.MonaiTransform").from_numpy(spacing)
            return _finish(item, out, None, self.transform)
        return _finish(item, out, affine, self.transform)

    def __repr__(self) -> str:
        return f"MonaiTransform({self.transform!r})"


def _given_affine(item: dict[str, Any]) -> np.ndarray | None:
    """The affine handed to MONAI: the item's; for a slice item ``(C, H, W)``, its pixel size.

    A slice has no world affine MONAI's 2D transforms could use (they read the affine's first
    two world rows, which a sagittal slice does not span), but ``Spacingd`` and zooms need the
    pixel size: without it MONAI assumes 1 mm pixels.
    """
    if item.get("affine") is not None:
        return np.asarray(item["affine"], dtype=np.float64)
    image = item.get("image")
    if image is not None and getattr(image, "ndim", 0) == 3 and item.get("spacing") is not None:
        spacing = np.asarray(item["spacing"], dtype=np.float64)
        return np.diag([spacing[1], spacing[2], spacing[0], 1.0])
    return None


class TorchIOTransform:
    """Apply a TorchIO transform to medload items, as a ``Subject`` with the item's affine.

    The item's ``image`` becomes a ``ScalarImage`` and its ``mask`` a ``LabelMap`` (int32:
    ``ToCanonical`` cannot take int64), both with the item's ``affine``; the array axes
    ``(z, y, x)`` stay as they are, since the affine says where they point. What comes back is
    a medload item: ``image`` float32, ``mask`` int64, ``affine`` and ``spacing`` of the new grid;
    other keys pass through. A 2D slice item ``(C, H, W)`` (no affine) goes in as
    ``(C, H, W, 1)`` with its in-plane spacing, so TorchIO's 2D use works; reorienting needs a
    :class:`~medload.VolumeDataset` item.

    Parameters
    ----------
    transform : callable
        A TorchIO transform (or ``tio.Compose``).

    Examples
    --------
    >>> import torch, torchio as tio
    >>> item = {"image": torch.arange(8.0).reshape(1, 2, 2, 2), "mask": torch.ones(1, 2, 2, 2, dtype=torch.int64),
    ...         "affine": torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=torch.float64))}
    >>> out = TorchIOTransform(tio.ToCanonical())(item)
    >>> out["affine"].diagonal().tolist(), out["image"][0, :, 0, 0].tolist(), out["mask"].dtype
    ([1.0, 1.0, 1.0, 1.0], [4.0, 0.0], torch.int64)
    """

    def __init__(self, transform: Callable[[Any], Any]) -> None:
        self.transform = transform

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        torch = require("torch", "medload.datasets.TorchIOTransform")
        tio = require("torchio", "medload.datasets.TorchIOTransform")
        image = torch.as_tensor(item["image"])
        flat = image.ndim == 3  # a slice (C, H, W): TorchIO wants (C, X, Y, Z)
        affine = self._affine(item, flat)
        images = {"image": tio.ScalarImage(tensor=image[..., None] if flat else image, affine=affine)}
        if "mask" in item:
            mask = torch.as_tensor(item["mask"])
            if mask.numel() and int(mask.abs().max()) > np.iinfo(np.int32).max:
                raise MedloadError(f"TorchIOTransform: mask labels up to {int(mask.max())} do not fit TorchIO's int32 LabelMap.")
            mask = mask.to(torch.int32)
            images["mask"] = tio.LabelMap(tensor=mask[..., None] if flat else mask, affine=affine)
        subject = self.transform(tio.Subject(**images))
        out = dict(item)
        out["image"] = subject["image"].data[..., 0] if flat else subject["image"].data
        if "mask" in item:
            out["mask"] = subject["mask"].data[..., 0] if flat else subject["mask"].data
        new_affine = np.asarray(subject["image"].affine, dtype=np.float64)
        if flat:  # the slice's own spacing along (slice, row, column); no world affine to hand back
            if "spacing" in item:
                spacing = np.asarray(item["spacing"], dtype=np.float64).copy()
                spacing[1:] = _spacing(new_affine)[:2]
                out["spacing"] = torch.from_numpy(spacing)
            return _finish(item, out, None, self.transform)
        return _finish(item, out, new_affine, self.transform)

    @staticmethod
    def _affine(item: dict[str, Any], flat: bool) -> np.ndarray:
        if not flat:
            if item.get("affine") is None:
                raise MedloadError(
                    "TorchIOTransform: a 3D item without 'affine'; VolumeDataset items carry it. Pass one "
                    "(voxel (z, y, x) to RAS+ mm), or medload would hand TorchIO a wrong geometry."
                )
            return np.asarray(item["affine"], dtype=np.float64)
        spacing = np.asarray(item.get("spacing", (1.0, 1.0, 1.0)), dtype=np.float64)
        return np.diag([spacing[1], spacing[2], spacing[0], 1.0])

    def __repr__(self) -> str:
        return f"TorchIOTransform({self.transform!r})"
