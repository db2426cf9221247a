"""Hand dataset items to MONAI, TorchIO and albumentations transforms with their geometry, and take them back.

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
from medload.datasets.tio_slices import int32_labels, transform_slice
from medload.datasets.world import back_to_world, pixel_frame
from medload.datasets.handover import walk
from medload.errors import ConfigError, MedloadError

__all__ = ["AlbumentationsTransform", "MonaiTransform", "TorchIOTransform"]

# MONAI's modules of spatial dictionary transforms (flips, turns, resampling, crops).
_MONAI_SPATIAL = ("monai.transforms.spatial.dictionary", "monai.transforms.croppad.dictionary")

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
            sizes = _spacing(affine)
            # A slice's affine has columns (row, column, slice); its spacing runs (slice, row, column).
            result["spacing"] = torch.from_numpy(sizes[[2, 0, 1]] if result["image"].ndim == 3 else sizes)
    return result


def _is_slice(item: dict[str, Any]) -> bool:
    """Whether ``item`` is a 2D slice item ``(C, H, W)`` (else a volume ``(C, Z, H, W)``)."""
    return int(getattr(item.get("image"), "ndim", 0)) == 3


def _world(item: dict[str, Any]) -> np.ndarray | None:
    """The item's world affine, if it has one."""
    return None if item.get("affine") is None else np.asarray(item["affine"], dtype=np.float64)


def _slice_pixels(item: dict[str, Any]) -> np.ndarray:
    """A slice's pixel frame: from its affine, or from ``spacing`` for an item made without one."""
    world = _world(item)
    if world is not None:
        return pixel_frame(world)
    spacing = np.asarray(item.get("spacing", (1.0, 1.0, 1.0)), dtype=np.float64)
    return np.diag([spacing[1], spacing[2], spacing[0], 1.0])


class MonaiTransform:
    """Apply a MONAI dictionary transform to medload items, with the item's affine.

    ``image`` and ``mask`` go in as ``monai.data.MetaTensor`` carrying the item's ``affine``
    (:class:`~medload.VolumeDataset` items), so ``Orientationd``, ``Spacingd`` and the random
    spatial transforms know where each voxel is. What comes back is a medload item: ``image``
    float32, ``mask`` int64 (MONAI returns resampled masks as float32; a mask resampled other
    than with nearest neighbours is refused), ``affine`` and ``spacing`` of the new grid.

    A slice item ``(C, H, W)`` goes in with its pixel frame (its pixel sizes on the diagonal):
    MONAI's 2D transforms read the affine's top-left block as the slice's plane, which holds
    for an axial slice only, so ``Spacingd(pixdim=(0.5, 0.5))`` resamples from the true pixel
    size (not an assumed 1 mm) and ``RandAffined`` turns the slice in its own plane. What MONAI
    did to that frame is carried into the slice's world ``affine`` (see
    :mod:`medload.datasets.world`), so the item that comes back says where its pixels lie.
    ``Orientationd`` cannot reorient a slice in its pixel frame (use :class:`TorchIOTransform`
    with ``tio.ToCanonical()`` or a :class:`~medload.VolumeDataset`). Use it as the dataset's
    ``transform``; it pickles when the MONAI transform does, so it works in DataLoader workers.
    A MONAI transform passed to a dataset as ``transform=`` is wrapped in it for you (see
    :mod:`medload.datasets.handover`). A spatial transform whose ``keys`` name ``"label"`` (as
    MONAI's tutorials name the segmentation) is refused on an item whose ``label`` is its class
    number: the segmentation is ``"mask"``.

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
        # MONAI's tutorials call the segmentation "label"; in a medload item that is the class number.
        self._moves_label = tuple(
            type(t).__name__
            for t in walk(transform)
            if type(t).__module__ in _MONAI_SPATIAL
            and ("label" in tuple(getattr(t, "keys", ()) or ()) or getattr(t, "label_key", None) == "label")
        )

    def __call__(self, item: dict[str, Any]) -> Any:
        torch = require("torch", "medload.datasets.MonaiTransform")
        if self._moves_label and getattr(item.get("label"), "ndim", None) == 0:
            raise ConfigError(
                f"{self._moves_label[0]} moves or reads the key 'label', but in a medload item 'label' is the class "
                "number (a scalar) and the segmentation is 'mask'; pass keys=['image', 'mask'] (and label_key='mask'; "
                "MONAI's tutorials name the segmentation 'label')."
            )
        data = dict(item)
        frame = _slice_pixels(item) if _is_slice(item) else _world(item)
        if frame is not None:
            meta_tensor = require("monai.data", "medload.datasets.MonaiTransform").MetaTensor
            for key in ("image", "mask"):
                if key in data:
                    data[key] = meta_tensor(torch.as_tensor(data[key]), affine=torch.from_numpy(frame.copy()))
        out = self.transform(data)
        if isinstance(out, (list, tuple)):
            return [self._back(item, o, frame) for o in out]
        return self._back(item, out, frame)

    def _back(self, item: dict[str, Any], out: dict[str, Any], frame: np.ndarray | None) -> dict[str, Any]:
        if frame is None:
            return _finish(item, out, None, self.transform)
        image = out["image"]
        moved = np.asarray(image.affine, dtype=np.float64) if hasattr(image, "affine") else frame
        if not _is_slice(item):
            return _finish(item, out, moved, self.transform)
        world = _world(item)
        if world is not None:
            return _finish(item, out, back_to_world(world, frame, moved), self.transform)
        out = dict(out)  # a slice made without an affine: only its new pixel size comes back
        spacing = np.asarray(item["spacing"], dtype=np.float64).copy()
        spacing[1:] = _spacing(moved)[:2]
        out["spacing"] = require("torch", "medload.datasets.MonaiTransform").from_numpy(spacing)
        return _finish(item, out, None, self.transform)

    def __repr__(self) -> str:
        return f"MonaiTransform({self.transform!r})"


class TorchIOTransform:
    """Apply a TorchIO transform to medload items, as a ``Subject`` with the item's affine.

    The item's ``image`` becomes a ``ScalarImage`` and its ``mask`` a ``LabelMap`` (int32:
    ``ToCanonical`` cannot take int64), both with the item's ``affine``; the array axes
    ``(z, y, x)`` stay as they are, since the affine says where they point. What comes back is
    a medload item: ``image`` float32, ``mask`` int64, ``affine`` and ``spacing`` of the new grid;
    other keys pass through.

    A slice item ``(C, H, W)`` goes in as ``(C, H, W, 1)`` with its world affine, so TorchIO's
    anatomical axis names mean the patient's axes: ``Flip(axes=("LR",))`` mirrors an axial
    slice left to right (and leaves a sagittal slice, which has no left-right extent, as it
    is); ``ToCanonical`` orders the slice's axes as RAS does. TorchIO treats a 2D image as
    lying in the world's axial plane for ``RandomAffine``, ``RandomElasticDeformation`` and
    ``RandomMotion`` (it would turn a sagittal slice out of its plane), so those run in the
    slice's pixel frame, their result carried back into the world affine. The slice comes back
    ``(C, H', W')`` with the slice axis last again; a transform that makes it more than one
    voxel thick (``Resample`` across the slices) is refused, with the way out. A TorchIO
    transform passed to a dataset as ``transform=`` is wrapped in it for you.

    Parameters
    ----------
    transform : callable
        A TorchIO transform (or ``tio.Compose``, whose steps a slice takes one at a time).

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
        if _is_slice(item):
            given = _world(item)
            image, mask, world = transform_slice(self.transform, item, _slice_pixels(item) if given is None else given)
            out = dict(item, image=image)
            if mask is not None:
                out["mask"] = mask
            if given is not None:
                return _finish(item, out, world, self.transform)
            if "spacing" in item:  # a slice made without an affine: only its new pixel size comes back
                out["spacing"] = torch.from_numpy(_spacing(world)[[2, 0, 1]].copy())
            return _finish(item, out, None, self.transform)
        tio = require("torchio", "medload.datasets.TorchIOTransform")
        affine = _world(item)
        if affine is None:
            raise MedloadError(
                "TorchIOTransform: a 3D item without 'affine'; VolumeDataset items carry it. Pass one "
                "(voxel (z, y, x) to RAS+ mm), or medload would hand TorchIO a wrong geometry."
            )
        images = {"image": tio.ScalarImage(tensor=torch.as_tensor(item["image"]), affine=affine)}
        if "mask" in item:
            images["mask"] = tio.LabelMap(tensor=int32_labels(item["mask"]), affine=affine)
        subject = self.transform(tio.Subject(**images))
        out = dict(item, image=subject["image"].data)
        if "mask" in item:
            out["mask"] = subject["mask"].data
        return _finish(item, out, np.asarray(subject["image"].affine, dtype=np.float64), self.transform)

    def __repr__(self) -> str:
        return f"TorchIOTransform({self.transform!r})"


# albumentations transforms that move pixels but keep their size (flips, crops, pads), and those
# that keep it where pixels are square (quarter turns, transposes). Any other spatial transform
# (resize, scale, rotate, elastic...) leaves the item's in-plane pixel size unknown.
_KEEP_PIXEL_SIZE = ("HorizontalFlip", "VerticalFlip", "RandomCrop", "CenterCrop", "Crop", "PadIfNeeded", "Pad")
_KEEP_SQUARE_PIXELS = ("RandomRotate90", "Transpose", "D4", "SquareSymmetry")


class AlbumentationsTransform:
    """Apply an albumentations transform to medload slice items, channels last as it expects.

    albumentations takes numpy ``(H, W, C)`` images and ``(H, W)`` masks as keyword arguments;
    a medload slice item holds ``(C, H, W)`` tensors. Handed over as they are, the channels are
    read as rows: ``HorizontalFlip`` turns a ``(3, 64, 64)`` RGB slice upside down and
    ``Rotate`` turns a ``(1, 256, 256)`` slice in the wrong plane, without an error (or OpenCV
    fails deep inside, as ``HorizontalFlip`` does on 256 "channels"). This wrapper hands the image over as float32
    ``(H, W, C)`` and the mask as ``(H, W, K)`` in the smallest type OpenCV warps that holds its
    labels (OpenCV warps no int64), and gives back a medload item: ``image`` float32 ``(C, H,
    W)``, ``mask`` int64 ``(K, H, W)``; other keys pass through. A transform that would
    interpolate masks (``mask_interpolation`` other than nearest, which makes labels that lie
    between two others out of their border) is refused when the wrapper is made.
    albumentations reports no geometry: after a spatial transform other than flips,
    crops and pads (and quarter turns of square pixels), ``spacing[1:]`` is NaN, since the
    pixel size is no longer known, and after any spatial transform (a flip too: whether it
    happened is not reported) the item's ``affine`` is NaN rather than stale; use
    :class:`MonaiTransform` or :class:`TorchIOTransform` where it matters.

    albumentations' pixel-level transforms (brightness, contrast, gamma, noise) read float
    images as lying in ``[0, 1]``: the range of the default store's CT windows and 2D images,
    not of z-scored MR. Each DataLoader worker draws its own random stream (see
    :mod:`medload.datasets.seeding`). 3D items (:class:`~medload.VolumeDataset`) are refused.

    Parameters
    ----------
    transform : callable
        An albumentations transform or ``Compose``, called as ``transform(image=..., mask=...)``.

    Examples
    --------
    >>> import torch, albumentations as A
    >>> item = {"image": torch.arange(6.0).reshape(1, 2, 3), "mask": torch.tensor([[[0, 0, 1], [0, 2, 2]]]),
    ...         "spacing": torch.tensor([2.0, 0.5, 0.5], dtype=torch.float64)}
    >>> out = AlbumentationsTransform(A.HorizontalFlip(p=1.0))(item)
    >>> out["image"][0].tolist(), out["mask"][0].tolist(), out["spacing"].tolist()
    ([[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]], [[1, 0, 0], [2, 2, 0]], [2.0, 0.5, 0.5])
    """

    def __init__(self, transform: Callable[..., Any]) -> None:
        cv2 = require("cv2", "medload.datasets.AlbumentationsTransform")
        for t in _spatial_transforms(transform):
            mode = getattr(t, "mask_interpolation", cv2.INTER_NEAREST)
            if mode not in (cv2.INTER_NEAREST, cv2.INTER_NEAREST_EXACT):
                raise MedloadError(
                    f"AlbumentationsTransform: {_name(t)} resamples masks with mask_interpolation={mode}, which "
                    "makes labels no voxel had; keep albumentations' default (cv2.INTER_NEAREST)."
                )
        self.transform = transform

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        torch = require("torch", "medload.datasets.AlbumentationsTransform")
        image = torch.as_tensor(item["image"])
        if image.ndim != 3:
            raise MedloadError(
                f"AlbumentationsTransform: an item with image {tuple(image.shape)}; albumentations transforms 2D "
                "slices (C, H, W) from SliceDataset. For volumes use MonaiTransform or TorchIOTransform."
            )
        data: dict[str, Any] = {"image": np.ascontiguousarray(image.numpy().transpose(1, 2, 0), dtype=np.float32)}
        if "mask" in item:
            mask = torch.as_tensor(item["mask"]).numpy()
            data["mask"] = np.ascontiguousarray(mask.transpose(1, 2, 0).astype(_warpable(mask)))
        out = self.transform(**data)
        result = dict(item)
        result["image"] = torch.from_numpy(np.ascontiguousarray(np.asarray(out["image"], np.float32).transpose(2, 0, 1)))
        if "mask" in item:
            back = np.asarray(out["mask"])
            back = back[..., None] if back.ndim == 2 else back
            result["mask"] = torch.from_numpy(np.ascontiguousarray(back.transpose(2, 0, 1)).astype(np.int64))
        if item.get("affine") is not None and _spatial_transforms(self.transform):
            # Where the pixels went is not reported (nor whether a random flip happened): unknown, not stale.
            result["affine"] = torch.full((4, 4), float("nan"), dtype=torch.float64)
        if "spacing" in item:
            spacing = torch.as_tensor(item["spacing"], dtype=torch.float64).numpy().copy()
            if not _keeps_pixel_size(self.transform, square=bool(spacing[1] == spacing[2])):
                spacing[1:] = np.nan
            result["spacing"] = torch.from_numpy(spacing)
        return result

    def __repr__(self) -> str:
        return f"AlbumentationsTransform({self.transform!r})"


def _warpable(mask: np.ndarray) -> np.dtype:
    """The smallest integer type OpenCV warps that holds every label of ``mask``."""
    low, high = (int(mask.min()), int(mask.max())) if mask.size else (0, 0)
    for kind in (np.uint8, np.uint16, np.int16):
        info = np.iinfo(kind)
        if info.min <= low and high <= info.max:
            return np.dtype(kind)
    raise MedloadError(
        f"AlbumentationsTransform: mask labels {low}..{high} do not fit the 16-bit types OpenCV warps; renumber the labels."
    )


def _spatial_transforms(transform: Any) -> list[Any]:
    """The albumentations transforms in ``transform`` (walked through compositions) that move pixels."""
    albumentations = require("albumentations", "medload.datasets.AlbumentationsTransform")
    found, pending = [], [transform]
    while pending:
        t = pending.pop()
        if isinstance(t, albumentations.BaseCompose):
            pending.extend(t.transforms)
        elif isinstance(t, albumentations.DualTransform):
            found.append(t)
    return found


def _keeps_pixel_size(transform: Any, *, square: bool) -> bool:
    """Whether every spatial transform in ``transform`` leaves the pixel size known."""
    albumentations = require("albumentations", "medload.datasets.AlbumentationsTransform")
    keep = tuple(getattr(albumentations, name) for name in _KEEP_PIXEL_SIZE + (_KEEP_SQUARE_PIXELS if square else ()))
    return all(isinstance(t, keep) for t in _spatial_transforms(transform))
