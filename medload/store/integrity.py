"""Checksums of the stored pixels: written with each volume, checked when a whole volume is read and by ``verify``.

A store copied across disks or kept for years on a network share can rot: a flipped bit inside
a stored chunk decodes to other pixels (an unfiltered or LZ4 chunk usually still decodes), and
nothing in HDF5's LZ4 framing would notice. Every volume therefore carries CRC-32 checksums of
its stored values (the bytes of the stored dtype, C order, little-endian as written):

* ``/volumes/<key>/image_crc32`` and ``mask_crc32``: one ``uint32`` per slice (written since
  this module; ``z`` covers slice ``z``'s ``(H, W)`` or ``(C, H, W)`` values);
* the group's ``crc32`` attribute: one CRC-32 of the image's bytes then the mask's (every store
  medload ever wrote has it; the writer checks it when it salvages a crashed write).

:meth:`StoreReader.read_volume <medload.store.StoreReader.read_volume>` checks the whole volume it
read, always (per slice where the store has slice checksums, else the volume's ``crc32``, which
needs the mask read too); :meth:`StoreReader.verify <medload.store.StoreReader.verify>` (``medload
verify STORE``) checks every volume and reports each damaged one; ``medload.open(path,
verify_slices=True)`` checks every slice read (``read_slices``, ``read_batch``, ``read_mask``,
the slice datasets' items and batches): off by default, for its cost on the slice loader
(docs/benchmarks.md); ``VolumeDataset`` checks its items always (``read_slices(verify=True)``),
as ``read_volume`` does. A store written before slice checksums reads as before; its slices are
never checked one by one, its whole volumes are (by ``crc32``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from medload.errors import ChecksumError, StoreError

if TYPE_CHECKING:
    from medload.store.records import VolumeRecord

__all__ = ["CRC_SUFFIX", "Checksums", "Damage", "VerifyReport", "slice_crc32s", "read_slice_crcs", "mismatched", "damage_error"]

#: The slice checksum dataset of ``image`` is ``image_crc32``; of ``mask``, ``mask_crc32``.
CRC_SUFFIX = "_crc32"


def slice_crc32s(block: np.ndarray) -> np.ndarray:
    """CRC-32 of each slice of ``block`` (axis 0), of its values' bytes in C order.

    Examples
    --------
    >>> slice_crc32s(np.zeros((2, 2, 2), np.uint8)).tolist()
    [558161692, 558161692]
    >>> int(slice_crc32s(np.arange(8, dtype=np.uint8).reshape(1, 2, 4))[0]) == zlib.crc32(bytes(range(8)))
    True
    """
    out = np.empty(len(block), np.uint32)
    for i in range(len(block)):
        out[i] = zlib.crc32(np.ascontiguousarray(block[i]).data)
    return out


def read_slice_crcs(group: Any, name: str, n_slices: int, rec: VolumeRecord) -> np.ndarray | None:
    """The slice checksums of dataset ``name`` of a volume group, or ``None`` when it was written without them.

    Raises
    ------
    StoreError
        The checksum dataset is there but not one ``uint32`` per slice: the file is damaged.
    """
    try:
        ds = group.get(name + CRC_SUFFIX)
        if ds is None:
            return None
        if tuple(ds.shape) != (n_slices,) or ds.dtype != np.uint32:
            raise StoreError(
                f"{rec.shard}: volume {rec.key}'s {name}{CRC_SUFFIX} is {ds.dtype} {tuple(ds.shape)}, expected uint32 "
                f"({n_slices},): one checksum per slice; the file is damaged, write it again."
            )
        return np.asarray(ds[()], dtype=np.uint32)
    except (OSError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise StoreError(
            f"{rec.shard}: volume {rec.key}'s slice checksums could not be read ({type(exc).__name__}: {exc}); "
            "the file is damaged, write it again."
        ) from exc


def mismatched(stored: np.ndarray, expected: np.ndarray, start: int = 0) -> list[int]:
    """Slice numbers (from ``start``) of ``stored``'s slices whose CRC-32 is not ``expected``'s.

    Examples
    --------
    >>> block = np.zeros((3, 2, 2), np.uint8)
    >>> sums = slice_crc32s(block)
    >>> block[1, 0, 0] = 1
    >>> mismatched(block, sums), mismatched(block[1:], sums, start=1)
    ([1], [1])
    """
    return [start + i for i in range(len(stored)) if zlib.crc32(np.ascontiguousarray(stored[i]).data) != expected[start + i]]


def damage_error(rec: VolumeRecord, what: str, slices: list[int] | None, path: str) -> ChecksumError:
    """The error of a volume whose stored ``what`` ("image", "mask", "image and mask") does not match its checksums.

    ``slices``: the damaged slices, or ``None`` when only the volume's checksum was there to compare.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> rec = SimpleNamespace(shard="s.h5", key="ser-1", n_slices=40)
    >>> print(damage_error(rec, "image", [3, 17], "s.h5"))  # doctest: +ELLIPSIS
    s.h5: volume ser-1: the stored bytes of its image slices 3, 17 (2 of 40) do not match the checksums ...
    """
    if slices is None:
        where = f"its stored {what} bytes do not match the checksum (CRC-32) written with them"
    else:
        shown = ", ".join(map(str, slices[:10])) + (", ..." if len(slices) > 10 else "")
        plural = "s" if len(slices) > 1 else ""
        where = (
            f"the stored bytes of its {what} slice{plural} {shown} ({len(slices)} of {rec.n_slices}) do not match "
            "the checksums (CRC-32) written with them"
        )
    return ChecksumError(
        f"{rec.shard}: volume {rec.key}: {where}; the file was changed or damaged after it was written (a failing "
        f"disk, an interrupted copy). Copy the store again from a good copy or convert the sources again; "
        f"`medload verify {path}` lists every damaged volume.",
        path=rec.shard,
        key=rec.key,
        slices=tuple(slices or ()),
    )


class Checksums:
    """The checksums a reader compares, read once per volume and process from the volume's group.

    ``group_of`` gives a record's h5py group (the reader's open file); ``path`` names the store
    in the messages (``medload verify PATH``).
    """

    def __init__(self, group_of: Callable[[VolumeRecord], Any], path: str) -> None:
        self._group_of = group_of
        self.path = path
        self._slices: dict[tuple[str, str, str], np.ndarray | None] = {}
        self._volumes: dict[tuple[str, str], int | None] = {}

    def of_slices(self, rec: VolumeRecord, name: str) -> np.ndarray | None:
        """Dataset ``name``'s checksum per slice, or ``None`` (a store written before slice checksums)."""
        key = (rec.shard, rec.key, name)
        if key not in self._slices:
            self._slices[key] = read_slice_crcs(self._group_of(rec), name, rec.n_slices, rec)
        return self._slices[key]

    def of_volume(self, rec: VolumeRecord) -> int | None:
        """The volume's ``crc32`` attribute (image bytes then mask bytes), or ``None`` when absent."""
        key = (rec.shard, rec.key)
        if key not in self._volumes:
            value = self._group_of(rec).attrs.get("crc32")
            try:
                self._volumes[key] = None if value is None else int(value)
            except (TypeError, ValueError):
                raise StoreError(
                    f"{rec.shard}: volume {rec.key}'s crc32 attribute is {value!r:.40}, expected a number; "
                    "the file is damaged, write it again."
                ) from None
        return self._volumes[key]

    def kind(self, rec: VolumeRecord) -> Literal["slice", "volume", "none"]:
        """How the volume can be checked: per slice, by its one volume checksum, or not at all."""
        if self.of_slices(rec, "image") is not None:
            return "slice"
        return "none" if self.of_volume(rec) is None else "volume"

    def check_slices(self, rec: VolumeRecord, name: str, start: int, stored: np.ndarray) -> None:
        """Raise :func:`damage_error` when a slice of ``stored`` (slices ``start``.. of ``name``) differs from its checksum."""
        expected = self.of_slices(rec, name)
        if expected is not None:
            bad = mismatched(stored, expected, start)
            if bad:
                raise damage_error(rec, name, bad, self.path)

    def check_volume(self, rec: VolumeRecord, image: np.ndarray, mask: np.ndarray | None) -> None:
        """Raise :func:`damage_error` when the whole ``image`` then ``mask`` differ from the volume's ``crc32``."""
        crc = zlib.crc32(np.ascontiguousarray(image).data)
        if mask is not None:
            crc = zlib.crc32(np.ascontiguousarray(mask).data, crc)
        self.compare_volume(rec, crc)

    def compare_volume(self, rec: VolumeRecord, crc: int) -> None:
        """Raise :func:`damage_error` when ``crc`` (of the image's bytes, then the mask's) is not the volume's ``crc32``."""
        expected = self.of_volume(rec)
        if expected is not None and crc != expected:
            raise damage_error(rec, "image and mask" if rec.has_mask else "image", None, self.path)


@dataclass(frozen=True)
class Damage:
    """One volume :meth:`~medload.store.StoreReader.verify` found damaged.

    ``slices``: the image or mask slices whose checksum differs (empty when the volume has only
    its whole-volume checksum, or could not be read at all); ``message``: the StoreError's text.
    """

    key: str
    shard: str
    slices: tuple[int, ...]
    message: str


@dataclass(frozen=True)
class VerifyReport:
    """What :meth:`~medload.store.StoreReader.verify` found: every volume read and its checksums compared.

    ``by_slice`` volumes were compared slice by slice, ``by_volume`` by their one whole-volume
    checksum (stores written before slice checksums), damaged or not; ``unchecked`` had no
    checksum at all (their keys: only read); ``damaged`` lists each damaged volume (a checksum
    that differs, or a volume that could not be read). ``ok``: nothing damaged.
    """

    path: str
    volumes: int
    by_slice: int
    by_volume: int
    unchecked: tuple[str, ...] = ()
    damaged: tuple[Damage, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when no volume is damaged."""
        return not self.damaged
