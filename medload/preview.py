"""A montage of stored slices as a PNG, optionally beside the source slices.

``medload preview OUT --out montage.png`` draws one tile per slice, picked evenly across the
store's volumes and shown in order (volume by volume, slices in stored order). Each tile is the
slice as stored (what a model sees), its edges lettered from the stored affine
(:func:`medload.qc.views.slice_labels`), pixels square in mm, the mask blended in colour
(:func:`medload.qc.views.overlay`), an RGB image (channels ``R, G, B``) in colour, values mapped through ``window`` (stored values) or the
slice's 0.5-99.5 percentiles. ``--before-after`` pairs each stored slice with the same
slice read again from the source (found through the ``report.json`` the converter wrote beside
the store, or ``sources=``), so the effect of the preprocessing can be seen. Tiles are square,
``tile`` pixels wide; the PNG is exactly ``columns * tile`` by ``rows * tile`` pixels.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medload.errors import ConfigError, StoreError
from medload.qc import views

if TYPE_CHECKING:
    from PIL import ImageFont

__all__ = ["montage", "pick_slices"]


def pick_slices(n_slices: list[int], n: int) -> list[tuple[int, int]]:
    """Choose ``n`` (volume, slice) pairs spread over volumes (middle slices first), in store order.

    Examples
    --------
    >>> pick_slices([10, 4], 4)
    [(0, 3), (0, 5), (1, 1), (1, 2)]
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
    return sorted(picked)


def _display(image: np.ndarray, channels: Any = None) -> np.ndarray:
    """A float image for display, NaN-free: an RGB slice ``(3, H, W)`` (channels ``R, G, B``) as
    colour ``(H, W, 3)``, channel 0 of any other multi-channel slice, a 2D slice as it is.

    Examples
    --------
    >>> _display(np.zeros((3, 2, 4)), ("R", "G", "B")).shape, _display(np.zeros((2, 2, 4)), ("T2", "ADC")).shape
    ((2, 4, 3), (2, 4))
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        image = np.moveaxis(image, 0, -1) if tuple(channels or ()) == ("R", "G", "B") else image[0]
    return np.nan_to_num(image)


def _channel_title(record: Any) -> str:
    """What a tile's title adds for a multi-channel volume: the channel drawn (channel 0), unless RGB."""
    if len(record.shape) != 4 or tuple(record.channels or ()) == ("R", "G", "B"):
        return ""
    return f" {record.channels[0]}" if record.channels else " ch0"


def _sources_from_report(store: Path) -> list[str]:
    candidates = [store / "report.json"] if store.is_dir() else [store.with_name(store.stem + ".report.json")]
    for path in candidates:
        if path.is_file():
            return list(json.loads(path.read_text(encoding="utf-8")).get("sources", []))
    return []


def _source_slice(
    source_affine: np.ndarray, n_source: int, stored_affine: np.ndarray, stored_shape: tuple[int, ...], z: int
) -> int | None:
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


def _raw_slices(
    sources: list[str], wanted: dict[str, list[tuple[int, Any]]], phi_key: Any, affines: dict[str, np.ndarray] | None = None
) -> dict[tuple[str, int], np.ndarray]:
    """Re-read the source slices of the picked stored slices, matched by series key and position.

    ``affines``, when given, receives each matched series' source affine (for its edge letters).
    """
    from medload.io import load, scan
    from medload.io.sources import source_names, source_root

    raw: dict[tuple[str, int], np.ndarray] = {}
    done: set[str] = set()
    names = source_names(sources)  # as convert named them, so the keys match
    for src in sources:
        for series in scan(src, phi_key=phi_key, source_name=names[source_root(src)]):
            if series.series_key not in wanted or series.series_key in done:
                continue
            done.add(series.series_key)
            volume = load(series)
            # (C, Z, Y, X) -> slices (C, Y, X), drawn as the stored ones are (colour for R, G, B)
            array = np.moveaxis(volume.array, 0, 1) if volume.array.ndim == 4 else volume.array
            if affines is not None:
                affines[series.series_key] = volume.affine
            for z, record in wanted[series.series_key]:
                index = _source_slice(volume.affine, len(array), record.affine, record.shape, z)
                if index is not None:
                    raw[(series.series_key, z)] = _display(array[index], volume.meta.get("channels"))
    return raw


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _draw_tile(
    canvas: Any,
    x0: int,
    y0: int,
    tile: int,
    image: np.ndarray | None,
    mask: np.ndarray | None,
    affine: np.ndarray | None,
    pixel_mm: tuple[float, float],
    title: str,
    window: tuple[float, float] | None,
) -> None:
    """One tile: the slice fitted inside a margin that holds the edge letters, the title over it."""
    from PIL import Image, ImageDraw

    draw = ImageDraw.Draw(canvas)
    margin = max(8, tile // 10)
    band = max(7, tile // 14) + 3  # the title's line, above the top letter
    letter = _font(max(8, margin - 2))
    draw.text((x0 + 2, y0 + 1), title, fill=(120, 220, 255), font=_font(band - 3))
    if image is None:
        draw.text(
            (x0 + tile // 2, y0 + tile // 2),
            "no matching\nsource slice",
            fill=(255, 255, 255),
            font=_font(max(8, tile // 12)),
            anchor="mm",
            align="center",
        )
        return
    rgb = views.overlay(views.to_uint8(image, *views.display_range(image, window)), mask)
    rgb = views.fit(rgb, pixel_mm, tile - 2 * margin - band)
    middle_y = y0 + band + (tile - band) // 2
    left, top = x0 + (tile - rgb.shape[1]) // 2, middle_y - rgb.shape[0] // 2
    canvas.paste(Image.fromarray(rgb), (left, top))
    if affine is not None:
        edges = views.slice_labels(affine)
        yellow = (255, 230, 60)
        draw.text((x0 + tile // 2, top - 1), edges["top"], fill=yellow, font=letter, anchor="mb")
        draw.text((x0 + tile // 2, top + rgb.shape[0] + 1), edges["bottom"], fill=yellow, font=letter, anchor="mt")
        draw.text((left - 2, middle_y), edges["left"], fill=yellow, font=letter, anchor="rm")
        draw.text((left + rgb.shape[1] + 2, middle_y), edges["right"], fill=yellow, font=letter, anchor="lm")


def montage(
    store: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    n: int = 16,
    columns: int | None = None,
    tile: int = 128,
    window: tuple[float, float] | None = None,
    masks: bool = True,
    before_after: bool = False,
    sources: list[str] | None = None,
    phi_key: Any = None,
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
    window : (float, float), optional
        Stored values drawn black and white (e.g. ``(0, 1)``); default each slice's 0.5 and
        99.5 percentiles. Source tiles (``before_after``) always use their own percentiles.
    masks : bool
        Blend each volume's mask in colour (label ``k`` in ``medload.qc.views.LABEL_COLOURS``).
    before_after : bool
        Put each slice as read from the source (left) beside the stored one (right).
    sources : list of str, optional
        Where the sources are; default: the ``sources`` of the store's ``report.json`` (written
        there only with ``keep_phi``: a de-identified report names no path).
    phi_key : str, bytes or medload.deid.PhiKey, optional
        The pseudonym key used at conversion (to match series keys); default as
        :func:`medload.deid.resolve_key`.

    Returns
    -------
    dict
        ``path``, ``width``, ``height``, ``tiles``, the ``(key, slice)`` of each stored slice
        shown and its edge ``letters`` (top, bottom, left, right).

    Examples
    --------
    >>> import tempfile, numpy as np, medload
    >>> folder = tempfile.mkdtemp()
    >>> with medload.Store.create(folder + "/s.h5") as st:
    ...     _ = st.add(medload.Volume(np.random.default_rng(0).random((6, 32, 32)), np.eye(4)))
    >>> info = montage(folder + "/s.h5", folder + "/m.png", n=4, tile=64, window=(0, 1))
    >>> info["width"], info["height"], info["slices"][:2], info["letters"][0]
    (128, 128, [('volume', 1), ('volume', 2)], {'top': 'P', 'bottom': 'A', 'left': 'I', 'right': 'S'})
    """
    from PIL import Image

    from medload.store import open as open_store

    if n < 1 or tile < 16 or (columns is not None and columns < 1):
        raise ConfigError(
            f"preview needs n >= 1, tile >= 16 pixels and columns >= 1 (or none: about square), "
            f"found n={n}, tile={tile}, columns={columns}"
        )
    if window is not None and not (len(window) == 2 and float(window[1]) > float(window[0])):
        raise ConfigError(f"preview window must be (low, high) with high > low, found {window}")
    store_path = Path(store)
    with open_store(store_path) as reader:  # closed on an error too
        records = reader.volumes
        if not records:
            raise StoreError(f"{store_path} holds no complete volume; nothing to preview")
        picked = pick_slices([r.n_slices for r in records], n)
        stored = [_display(reader.read_slices(v, z, z + 1)[0], records[v].channels) for v, z in picked]
        stored_masks = [reader.read_mask(v, z, z + 1)[0] if masks and records[v].has_mask else None for v, z in picked]
        shown = [(records[v].key, z) for v, z in picked]
        titles = [f"{records[v].key[:12]} z{z}{_channel_title(records[v])}" for v, z in picked]
        # (image, mask, affine, pixel mm, title, window) per tile
        tiles: list[tuple[Any, ...]] = []
        for (v, _z), image, mask, title in zip(picked, stored, stored_masks, titles):
            tiles.append((image, mask, records[v].affine, records[v].spacing[1:], title, window))
        if before_after:
            srcs = sources or _sources_from_report(store_path)
            if not srcs:
                raise ConfigError(
                    f"--before-after needs the sources: no report.json beside {store_path} names them; pass --source DIR"
                )
            tiles = _beside_sources(tiles, picked, records, srcs, phi_key)

    count = len(tiles)
    if columns is None:
        columns = max(1, int(np.ceil(np.sqrt(count))))
        if before_after and columns % 2:
            columns += 1
    columns = min(columns, count)
    rows = int(np.ceil(count / columns))
    canvas = Image.new("RGB", (columns * tile, rows * tile), (0, 0, 0))
    for i, (image, mask, affine, pixel_mm, title, tile_window) in enumerate(tiles):
        r, c = divmod(i, columns)
        _draw_tile(canvas, c * tile, r * tile, tile, image, mask, affine, pixel_mm, title, tile_window)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, format="PNG")
    return {
        "path": str(out),
        "width": columns * tile,
        "height": rows * tile,
        "tiles": count,
        "slices": shown,
        "letters": [views.slice_labels(records[v].affine) for v, _ in picked],
    }


def _beside_sources(
    tiles: list[tuple[Any, ...]], picked: list[tuple[int, int]], records: Any, srcs: list[str], phi_key: Any
) -> list[tuple[Any, ...]]:
    """Each stored tile preceded by the same slice read from its source (``None`` where not found)."""
    wanted: dict[str, list[tuple[int, Any]]] = {}
    for v, z in picked:
        wanted.setdefault(records[v].series_key, []).append((z, records[v]))
    source_affines: dict[str, np.ndarray] = {}
    raw = _raw_slices(srcs, wanted, phi_key, source_affines)
    paired: list[tuple[Any, ...]] = []
    for (v, z), stored_tile in zip(picked, tiles):
        key = records[v].series_key
        before = raw.get((key, z))
        affine = source_affines.get(key)
        pixel_mm = tuple(np.linalg.norm(affine[:3, 1:3], axis=0)) if affine is not None else (1.0, 1.0)
        paired.append((before, None, affine, pixel_mm, "source " + stored_tile[4], None))
        paired.append(stored_tile[:4] + ("stored " + stored_tile[4],) + stored_tile[5:])
    return paired
