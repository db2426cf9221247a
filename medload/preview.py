"""A montage of stored slices as a PNG (matplotlib), optionally beside the source slices.

``medload preview OUT --out montage.png`` draws one tile per slice, picked evenly across the
store's volumes (middle slices first); ``--before-after`` pairs each stored slice with the same
slice read again from the source (found through the ``report.json`` the converter wrote beside
the store, or ``sources=``), so the effect of the preprocessing can be seen. Tiles are square,
``tile`` pixels wide; the PNG is exactly ``columns * tile`` by ``rows * tile`` pixels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from medload._optional import require
from medload.errors import MedloadError

__all__ = ["montage", "pick_slices"]


def pick_slices(n_slices: list[int], n: int) -> list[tuple[int, int]]:
    """Choose ``n`` (volume, slice) pairs spread over volumes: middle slices first, then more.

    Examples
    --------
    >>> pick_slices([10, 4], 4)
    [(0, 5), (1, 2), (0, 3), (1, 1)]
    """
    if n <= 0 or not n_slices:
        return []
    per_volume = max(1, -(-n // len(n_slices)))  # ceil
    choices: list[list[int]] = []
    for count in n_slices:
        k = min(per_volume, count)
        if k == 1:
            order = [count // 2]
        else:
            # the middle, then evenly spaced others (away from the edges, often empty)
            middle = count // 2
            evenly = {int(round(x)) for x in np.linspace(0, count - 1, k + 2)[1:-1]}
            evenly.discard(min(evenly, key=lambda z: abs(z - middle)))
            order = [middle] + sorted(evenly - {middle}, key=lambda z: abs(z - middle))
        choices.append(order)
    picked: list[tuple[int, int]] = []
    depth = 0
    while len(picked) < n and any(depth < len(c) for c in choices):
        for volume, order in enumerate(choices):
            if depth < len(order) and len(picked) < n:
                picked.append((volume, order[depth]))
        depth += 1
    return picked


def _display(image: np.ndarray) -> np.ndarray:
    """A 2D float image for display: channel 0 of a multi-channel slice, NaN-free."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = image[0]
    return np.nan_to_num(image)


def _sources_from_report(store: Path) -> list[str]:
    candidates = [store / "report.json"] if store.is_dir() else [store.with_name(store.stem + ".report.json")]
    for path in candidates:
        if path.is_file():
            return list(json.loads(path.read_text(encoding="utf-8")).get("sources", []))
    return []


def _source_slice(source_affine: np.ndarray, n_source: int, stored_affine: np.ndarray,
                  stored_shape: tuple[int, ...], z: int) -> int | None:
    """The source slice in the plane of stored slice ``z``, found through world coordinates.

    A pipeline can crop, resample or flip the slice axis, so stored slice ``z`` is not source
    slice ``z`` in general. ``None`` when the stored slice is not parallel to a source slice
    (reoriented) or lies outside the source.

    Examples
    --------
    >>> import numpy as np
    >>> cropped = np.eye(4); cropped[0, 3] = 3.0    # stored slice 0 is source slice 3
    >>> _source_slice(np.eye(4), 10, cropped, (4, 8, 8), 1)
    4
    >>> _source_slice(np.eye(4), 10, np.eye(4)[[1, 0, 2, 3]], (4, 8, 8), 1) is None   # another plane
    True
    """
    to_source = np.linalg.inv(source_affine) @ stored_affine  # stored index -> source index
    # the stored slice's in-plane axes must not move along the source's slice axis
    in_plane = to_source[0, 1:3] * (np.asarray(stored_shape[-2:], float) - 1)
    if np.abs(in_plane).max(initial=0.0) > 0.5:
        return None
    centre = to_source @ np.array([z, (stored_shape[-2] - 1) / 2, (stored_shape[-1] - 1) / 2, 1.0])
    index = int(np.rint(centre[0]))
    return index if abs(centre[0] - index) <= 0.5 and 0 <= index < n_source else None


def _raw_slices(sources: list[str], wanted: dict[str, list[tuple[int, Any]]],
                phi_key: str | None) -> dict[tuple[str, int], np.ndarray]:
    """Re-read the source slices of the picked stored slices, matched by series key and position."""
    from medload.io import load, scan

    raw: dict[tuple[str, int], np.ndarray] = {}
    done: set[str] = set()
    for src in sources:
        for series in scan(src, phi_key=phi_key):
            if series.series_key not in wanted or series.series_key in done:
                continue
            done.add(series.series_key)
            volume = load(series)
            array = volume.array[0] if volume.array.ndim == 4 else volume.array
            for z, record in wanted[series.series_key]:
                index = _source_slice(volume.affine, len(array), record.affine, record.shape, z)
                if index is not None:
                    raw[(series.series_key, z)] = array[index]
    return raw


def montage(
    store: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n: int = 16,
    columns: int | None = None,
    tile: int = 128,
    before_after: bool = False,
    sources: list[str] | None = None,
    phi_key: str | None = None,
) -> dict[str, Any]:
    """Write a PNG montage of ``n`` stored slices (``2n`` tiles with ``before_after``).

    Parameters
    ----------
    store : path
        A medload store (file or folder of shards).
    out : path
        The PNG to write.
    n : int
        Number of stored slices shown.
    columns : int, optional
        Tiles per row (default: about square; even with ``before_after`` so pairs stay together).
    tile : int
        Tile size in pixels.
    before_after : bool
        Put each slice as read from the source (left) beside the stored one (right).
    sources : list of str, optional
        Where the sources are; default: the ``sources`` of the store's ``report.json``.
    phi_key : str, optional
        The pseudonym secret used at conversion (to match series keys).

    Returns
    -------
    dict
        ``path``, ``width``, ``height``, ``tiles`` and the ``(key, slice)`` of each stored slice shown.

    Examples
    --------
    >>> import tempfile, numpy as np, medload
    >>> folder = tempfile.mkdtemp()
    >>> with medload.Store.create(folder + "/s.h5") as st:
    ...     _ = st.add(medload.Volume(np.random.default_rng(0).random((6, 32, 32)), np.eye(4)))
    >>> info = montage(folder + "/s.h5", folder + "/m.png", n=4, tile=64)
    >>> info["width"], info["height"]
    (128, 128)
    """
    from medload.store import open as open_store

    if n < 1 or tile < 16 or (columns is not None and columns < 1):
        raise MedloadError(f"preview needs n >= 1, tile >= 16 pixels and columns >= 1 (or none: about square), "
                           f"found n={n}, tile={tile}, columns={columns}")
    require("matplotlib", "medload preview")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    store_path = Path(store)
    reader = open_store(store_path)
    records = reader.volumes
    if not records:
        raise MedloadError(f"{store_path} holds no complete volume; nothing to preview")
    picked = pick_slices([r.n_slices for r in records], n)
    stored = [_display(reader.read_slices(v, z, z + 1)[0]) for v, z in picked]
    shown = [(records[v].key, z) for v, z in picked]
    titles = [f"{records[v].key[:14]} z{z}" for v, z in picked]
    tiles: list[tuple[np.ndarray | None, str]] = []
    if before_after:
        srcs = sources or _sources_from_report(store_path)
        if not srcs:
            raise MedloadError(
                f"--before-after needs the sources: no report.json beside {store_path} names them; pass --source DIR"
            )
        wanted: dict[str, list[tuple[int, Any]]] = {}
        for v, z in picked:
            wanted.setdefault(records[v].series_key, []).append((z, records[v]))
        raw = _raw_slices(srcs, wanted, phi_key)
        for (v, z), image, title in zip(picked, stored, titles):
            before = raw.get((records[v].series_key, z))
            tiles.append((None if before is None else _display(before), "source " + title))
            tiles.append((image, "stored " + title))
    else:
        tiles = list(zip(stored, titles))
    reader.close()

    count = len(tiles)
    if columns is None:
        columns = max(1, int(np.ceil(np.sqrt(count))))
        if before_after and columns % 2:
            columns += 1
    columns = min(columns, count)
    rows = int(np.ceil(count / columns))
    dpi = 100
    fig = Figure(figsize=(columns * tile / dpi, rows * tile / dpi), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    for i, (image, title) in enumerate(tiles):
        r, c = divmod(i, columns)
        ax = fig.add_axes((c / columns, 1 - (r + 1) / rows, 1 / columns, 1 / rows))
        ax.set_axis_off()
        ax.set_facecolor("black")
        if image is None:
            ax.text(0.5, 0.5, "no matching\nsource slice", color="white", ha="center", va="center", fontsize=7)
            continue
        lo, hi = np.percentile(image, [0.5, 99.5]) if image.size else (0, 1)
        ax.imshow(image, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
        ax.text(0.02, 0.98, title, color="yellow", fontsize=6, ha="left", va="top", transform=ax.transAxes)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, facecolor="black")
    return {"path": str(out), "width": columns * tile, "height": rows * tile, "tiles": count, "slices": shown}
