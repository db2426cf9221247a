"""Matplotlib plots for notebooks: slices shown the way a radiologist reads them, labelled from the affine.

Thin drawing over :mod:`medload.qc.views` (the same reorientation and edge letters as ``medload
preview`` and the QC page). Views follow the radiological convention (axial and coronal:
patient's right on the image's left; axial: anterior at the top; coronal and sagittal: superior
at the top; sagittal: anterior on the left). matplotlib is imported when a function draws.

Examples
--------
>>> import numpy as np, medload
>>> vol = medload.Volume(np.zeros((4, 6, 8)), np.diag([-1.0, 2.0, 3.0, 1.0]))
>>> display_grid(vol)[0].shape, edge_labels(vol, "axial")
((8, 6, 4), {'top': 'A', 'bottom': 'P', 'left': 'R', 'right': 'L'})
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from nibabel.orientations import aff2axcodes

from medload.errors import ConfigError
from medload.qc import views
from medload.qc.views import DISPLAY_AXCODES, PLANES

__all__ = [
    "DISPLAY_AXCODES",
    "PLANES",
    "display_grid",
    "edge_labels",
    "orthogonal_views",
    "show_plane",
    "show_stored_slice",
]


def display_grid(volume: Any) -> tuple[np.ndarray, np.ndarray]:
    """The volume's array on the display grid ``(I, P, L[, C])`` and that grid's affine.

    Each spatial axis is flipped or swapped to the world axis it is closest to
    (``nibabel.orientations.io_orientation``); nothing is resampled. Channels of a 4D
    ``(C, Z, Y, X)`` volume move last, ready for ``imshow`` as RGB.

    Examples
    --------
    >>> import numpy as np, medload
    >>> from nibabel.orientations import aff2axcodes
    >>> vol = medload.Volume(np.zeros((4, 6, 8)), np.diag([1.0, 2.0, 3.0, 1.0]))  # axes R, A, S
    >>> array, affine = display_grid(vol)
    >>> array.shape, aff2axcodes(affine)
    ((8, 6, 4), ('I', 'P', 'L'))
    """
    return views.display_grid(volume.array, volume.affine)


def edge_labels(volume: Any, plane: str) -> dict[str, str]:
    """Anatomical direction at each edge of ``plane`` as :func:`show_plane` draws it, read from the affine.

    Examples
    --------
    >>> import numpy as np, medload
    >>> vol = medload.Volume(np.zeros((4, 6, 8)), np.eye(4))
    >>> edge_labels(vol, "sagittal")
    {'top': 'S', 'bottom': 'I', 'left': 'A', 'right': 'P'}
    """
    return views.edge_labels(volume.affine, plane)


def _slice(shown: np.ndarray, plane: str, index: int | None) -> tuple[np.ndarray, int]:
    axis = PLANES[plane]
    n = shown.shape[axis]
    index = n // 2 if index is None else int(index)
    if not 0 <= index < n:
        raise IndexError(f"{plane} slice {index} is outside the volume's {n} {plane} slices")
    return np.take(shown, index, axis=axis), index


def show_plane(
    volume: Any,
    plane: str = "axial",
    index: int | None = None,
    *,
    ax: Any = None,
    labels: bool = True,
    title: str | None = None,
    **imshow: Any,
) -> Any:
    """Draw one slice of ``plane`` (axial, coronal, sagittal) with its edges labelled; returns the image.

    ``index`` counts along the display grid (axial from superior to inferior); default the
    middle. The pixel aspect ratio comes from the spacing, so anisotropic voxels look right.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np, medload
    >>> vol = medload.Volume(np.random.default_rng(0).random((4, 6, 8)), np.eye(4))
    >>> show_plane(vol, "coronal").get_array().shape
    (8, 4)
    """
    import matplotlib.pyplot as plt

    if plane not in PLANES:
        raise ConfigError(f"plane must be one of {', '.join(PLANES)}, found {plane!r}")
    ax = plt.gca() if ax is None else ax
    shown, affine = display_grid(volume)
    image, index = _slice(shown, plane, index)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    rows, cols = [a for a in range(3) if a != PLANES[plane]]
    imshow.setdefault("cmap", "gray")
    art = ax.imshow(image, aspect=spacing[rows] / spacing[cols], interpolation="nearest", **imshow)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title if title is not None else f"{plane} {index + 1}/{shown.shape[PLANES[plane]]}", fontsize=10, pad=16)
    if labels:
        _label(ax, edge_labels(volume, plane))
    return art


def _label(ax: Any, edges: dict[str, str]) -> None:
    # Outside the image, so thin views (few slices) keep their letters readable.
    style = {"fontsize": 11, "fontweight": "bold", "color": "tab:red", "transform": ax.transAxes}
    ax.text(0.5, 1.01, edges["top"], ha="center", va="bottom", **style)
    ax.text(0.5, -0.01, edges["bottom"], ha="center", va="top", **style)
    ax.text(-0.01, 0.5, edges["left"], ha="right", va="center", **style)
    ax.text(1.01, 0.5, edges["right"], ha="left", va="center", **style)


def show_stored_slice(volume: Any, index: int | None = None, *, ax: Any = None, **imshow: Any) -> Any:
    """Draw ``volume.array[index]`` as stored (no flips), its edges labelled from ``volume.affine``.

    What a naive ``imshow(vol.array[k])`` shows: compare with :func:`show_plane` to see why the
    labels matter (a sagittal series stored with rows running to I and columns to P, say).

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np, medload
    >>> vol = medload.Volume(np.zeros((4, 6, 8)), np.diag([1.0, -1.0, 1.0, 1.0]))  # axes R, P, S
    >>> import matplotlib.pyplot as plt
    >>> ax = plt.figure().gca()
    >>> show_stored_slice(vol, ax=ax).axes.texts[0].get_text()   # top edge: rows run to P, so A is up
    'A'
    """
    import matplotlib.pyplot as plt

    ax = plt.gca() if ax is None else ax
    array = np.asarray(volume.array)
    n = array.shape[-3]
    index = n // 2 if index is None else int(index)
    image = array[..., index, :, :]
    if image.ndim == 3:
        image = np.moveaxis(image, 0, -1)
    codes = "".join(aff2axcodes(volume.affine))
    spacing = np.linalg.norm(volume.affine[:3, :3], axis=0)
    imshow.setdefault("cmap", "gray")
    art = ax.imshow(image, aspect=spacing[1] / spacing[2], interpolation="nearest", **imshow)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"array[{index}] as stored, axes {codes}", fontsize=10, pad=16)
    _label(ax, views.slice_labels(volume.affine))
    return art


def orthogonal_views(
    volume: Any,
    *,
    indices: Sequence[int | None] = (None, None, None),
    title: str | None = None,
    figsize: tuple[float, float] = (12, 4),
    **imshow: Any,
) -> Any:
    """Axial, coronal and sagittal slices side by side, each with L/R, A/P, S/I edge labels.

    Examples
    --------
    >>> import matplotlib; matplotlib.use("Agg")
    >>> import numpy as np, medload
    >>> vol = medload.Volume(np.random.default_rng(0).random((4, 6, 8)), np.eye(4))
    >>> len(orthogonal_views(vol).axes)
    3
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=figsize)
    if np.asarray(volume.array).ndim == 3:
        lo, hi = np.percentile(volume.array, [0.5, 99.5])
        imshow.setdefault("vmin", float(lo))
        imshow.setdefault("vmax", float(hi))
    for ax, plane, index in zip(axes, PLANES, indices):
        show_plane(volume, plane, index, ax=ax, **imshow)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
