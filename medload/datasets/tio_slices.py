"""A slice item through a TorchIO transform: in its world place, and in its own plane where TorchIO needs that.

TorchIO takes a slice as a grid ``(C, H, W, 1)``. Given the slice's world affine, its anatomical
axis names (``Flip(axes=("LR",))``), ``ToCanonical`` and ``Resample`` in millimetres act on the
patient's axes. Its 2D augmentations, though, take a 2D image to lie in the world's axial plane
(``RandomAffine`` turns it about the world's S axis, ``RandomElasticDeformation`` displaces it
along world axes): a sagittal slice would be turned out of its plane and come back mostly empty.
Those run in the slice's pixel frame (:func:`medload.datasets.world.pixel_frame`) and what they did
is carried back into the world affine. A ``tio.Compose`` is taken one step at a time, each step in
its frame, and after each step the slice axis is put last again (``ToCanonical`` may move it); a
``tio.OneOf`` draws its choice first (from torch's generator, as TorchIO does), which then runs in
its own frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medload._optional import require
from medload.datasets.world import back_to_world, pixel_frame
from medload.errors import MedloadError

__all__ = ["int32_labels", "transform_slice"]

#: TorchIO transforms that take a 2D image to lie in the world's axial plane.
IN_PLANE: tuple[str, ...] = ("Affine", "RandomAffine", "ElasticDeformation", "RandomElasticDeformation")
IN_PLANE += ("AffineElasticDeformation", "RandomAffineElasticDeformation", "Motion", "RandomMotion")

# The slice's thickness in its pixel frame (mm) for TorchIO's RandomAffine, which draws a translation along
# a 2D image's third axis too, which would move a slice one step thick out of itself.
_FRAME_THICKNESS = 1e4

# A slice axis is "the same" after a step when its direction turned by less than this (cosine).
_SAME_DIRECTION = 0.99


def transform_slice(transform: Any, item: dict[str, Any], world: np.ndarray) -> tuple[Any, Any, np.ndarray]:
    """``item``'s image and mask (``None`` without one) after ``transform``, ``(C, H', W')``, and the new world affine.

    ``world`` is the slice's affine (columns: row, column, slice step), or its pixel frame for an
    item that carries no affine.
    """
    torch = require("torch", "medload.datasets.TorchIOTransform")
    image = torch.as_tensor(item["image"])[..., None]
    mask = int32_labels(item["mask"])[..., None] if "mask" in item else None
    world = np.asarray(world, np.float64)
    pending = _steps(transform)
    while pending:
        step = pending.pop(0)
        chosen = _drawn(step)
        if chosen is not None:  # a OneOf (or a Compose that may not run): its draw's steps, each in its frame
            pending[:0] = chosen
            continue
        frame = _pixel_frame(world, step) if _in_plane(step) else world
        step = _flip_in_plane(step, frame)
        if step is None:  # a flip along the slice's normal only: the slice stays as it is
            continue
        image, mask, moved = _apply(step, image, mask, frame)
        moved = moved if frame is world else back_to_world(world, frame, moved)
        image, mask, world = _slice_axis_last(step, image, mask, moved, world[:3, 2])
    return image[..., 0], (None if mask is None else mask[..., 0]), world


def int32_labels(mask: Any) -> Any:
    """``mask`` as int32 for a TorchIO ``LabelMap`` (``ToCanonical`` refuses int64); labels beyond int32 refused."""
    torch = require("torch", "medload.datasets.TorchIOTransform")
    mask = torch.as_tensor(mask)
    if mask.numel() and int(mask.abs().max()) > np.iinfo(np.int32).max:
        raise MedloadError(f"TorchIOTransform: mask labels up to {int(mask.max())} do not fit TorchIO's int32 LabelMap.")
    return mask.to(torch.int32)


def _apply(step: Any, image: Any, mask: Any, affine: np.ndarray) -> tuple[Any, Any, np.ndarray]:
    tio = require("torchio", "medload.datasets.TorchIOTransform")
    images = {"image": tio.ScalarImage(tensor=image, affine=affine)}
    if mask is not None:
        images["mask"] = tio.LabelMap(tensor=mask, affine=affine)
    subject = step(tio.Subject(**images))
    out_mask = subject["mask"].data if mask is not None else None
    return subject["image"].data, out_mask, np.asarray(subject["image"].affine, np.float64)


def _pixel_frame(world: np.ndarray, step: Any) -> np.ndarray:
    """The slice's pixel frame; for TorchIO's affine transforms thick enough that no translation along its normal leaves it."""
    tio = require("torchio", "medload.datasets.TorchIOTransform")
    frame = pixel_frame(world)
    if isinstance(step, (tio.Affine, tio.RandomAffine, tio.Motion, tio.RandomMotion)):
        frame[2, 2] = _FRAME_THICKNESS
    return frame


def _flip_in_plane(step: Any, affine: np.ndarray) -> Any:
    """``step``, or for a flip the flip of its in-plane axes only (``None`` when it has none).

    Flipping the one-voxel slice axis changes nothing, and TorchIO (1.2) fails on it (numpy's
    flip of a length-1 axis keeps a negative stride, which torch refuses); a sagittal slice's
    ``"LR"`` is that axis.
    """
    tio = require("torchio", "medload.datasets.TorchIOTransform")
    if not isinstance(step, (tio.Flip, tio.RandomFlip)):
        return step
    probe = tio.ScalarImage(tensor=np.zeros((1, 1, 1, 1), np.float32), affine=affine)
    axes = sorted({int(a) % 3 if not isinstance(a, str) else 3 + probe.axis_name_to_index(a) for a in step.axes} - {2})
    if not axes:
        return None
    if isinstance(step, tio.Flip):
        return tio.Flip(axes=axes)
    return tio.RandomFlip(axes=axes, flip_probability=step.flip_probability)


def _steps(transform: Any) -> list[Any]:
    """The steps of a ``tio.Compose`` that always runs (nested ones flattened); else the transform itself."""
    tio = require("torchio", "medload.datasets.TorchIOTransform")
    if isinstance(transform, tio.Compose) and float(getattr(transform, "probability", 1)) >= 1:
        return [s for t in transform.transforms for s in _steps(t)]
    return [transform]


def _drawn(step: Any) -> list[Any] | None:
    """For a ``OneOf``, or a ``Compose`` that runs with a probability below one: the steps this call draws.

    Drawn from torch's generator in TorchIO's own order (the transform's probability, then
    ``OneOf``'s choice), so that each choice then runs in its own frame: a ``OneOf`` that mixes
    ``RandomAffine`` (pixel frame) with ``Flip(axes=("LR",))`` (world frame) ran wholly in the
    pixel frame, where ``"LR"`` names the rows. ``None`` for any other transform.
    """
    tio = require("torchio", "medload.datasets.TorchIOTransform")
    if not isinstance(step, (tio.OneOf, tio.Compose)):
        return None
    torch = require("torch", "medload.datasets.TorchIOTransform")
    if torch.rand(1).item() > float(step.probability):
        return []
    if isinstance(step, tio.Compose):
        return [s for t in step.transforms for s in _steps(t)]
    choices = list(step.transforms_dict)
    index = int(torch.multinomial(torch.Tensor(list(step.transforms_dict.values())), 1))
    return _steps(choices[index])


def _in_plane(transform: Any) -> bool:
    """Whether ``transform`` is one of TorchIO's axial-plane augmentations."""
    tio = require("torchio", "medload.datasets.TorchIOTransform")
    kinds = tuple(k for k in (getattr(tio, name, None) for name in IN_PLANE) if isinstance(k, type))
    return isinstance(transform, kinds)


def _slice_axis_last(step: Any, image: Any, mask: Any, world: np.ndarray, normal: np.ndarray) -> tuple[Any, Any, np.ndarray]:
    """The grid with its one-voxel-thick axis (the one along the slice's normal) last again."""
    columns = world[:3, :3]
    cosine = np.abs(normal @ columns) / (np.linalg.norm(normal) * np.linalg.norm(columns, axis=0))
    axis = int(np.argmax(cosine))
    shape = tuple(int(n) for n in image.shape[1:])
    if shape[axis] != 1 or cosine[axis] < _SAME_DIRECTION:
        raise MedloadError(
            f"TorchIOTransform: {type(step).__name__} made the slice a {shape} grid, no longer one voxel thick "
            "along the slice's normal, so it is no slice item. Resample in plane only "
            "(tio.Resample((row_mm, column_mm, slice_mm)), the slice spacing third: item['spacing'][0]), "
            "or transform VolumeDataset items."
        )
    # The slice axis's column stays the step to the stored neighbours (TorchIO's Resample of a 2D
    # image sets it to the new spacing), pointing the way the transform turned it.
    world = world.copy()
    world[:3, axis] = normal * np.sign(normal @ world[:3, axis])
    if axis == 2:
        return image, mask, world
    order = [a for a in range(3) if a != axis] + [axis]
    dims = (0, *(a + 1 for a in order))
    world = world[:, [*order, 3]]
    return image.permute(dims), (None if mask is None else mask.permute(dims)), world
