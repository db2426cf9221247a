"""What the store writer checks and computes beside writing: a volume's inputs, CRCs, the index.

:class:`medload.store.Store` refuses a mask off the image grid, a label that is not a class
number and channel names that do not fit, before anything is written; :func:`verify_group`
re-checks a written volume's CRC-32 when a crashed file is salvaged; :func:`write_index` writes
the ``/index`` table and ``/catalog`` on close.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from typing import Any

import numpy as np

from medload.deid import DESCRIPTOR_KEYS, deidentified_meta
from medload.errors import StoreError
from medload.problems import KIND_MEANINGS, read_problems
from medload.store import _format as fmt
from medload.volume import Volume

__all__ = [
    "content_hash",
    "checked_mask",
    "checked_label",
    "checked_channels",
    "check_value_range",
    "verify_group",
    "write_index",
    "stored_config",
    "stored_meta",
    "MetaNotStoredWarning",
]

#: Slices read per call when verifying: bounds the extra memory to a few slices.
VERIFY_SLICES = 32


def checked_mask(mask: Volume | np.ndarray | None, volume: Volume, what: str) -> np.ndarray | None:
    """The mask's array, refused unless it lies on ``volume``'s grid."""
    if mask is None:
        return None
    mask_array = mask.array if isinstance(mask, Volume) else np.asarray(mask)
    if mask_array.shape != volume.spatial_shape:
        raise StoreError(
            f"{what}: mask shape {mask_array.shape} differs from the image grid {volume.spatial_shape}; resample it onto the image first."
        )
    if isinstance(mask, Volume) and not np.allclose(mask.affine, volume.affine, atol=1e-3):
        raise StoreError(f"{what}: the mask's affine differs from the image's; resample the mask onto the image grid first.")
    return mask_array


def checked_label(label: Any, what: str) -> int | None:
    """A class number 0..2**63-1, or None (the index stores -1 for "no label")."""
    if label is None:
        return None
    try:
        label = int(label)
    except (TypeError, ValueError, OverflowError):
        raise StoreError(f"{what}: label must be an integer class, found {label!r}.") from None
    if not 0 <= label < 2**63:
        raise StoreError(
            f"{what}: label must be a class number from 0 to 2**63 - 1, found {label} (the index "
            "uses -1 for 'no label'); pass label=None for a volume without one."
        )
    return label


def checked_channels(channels: Any, array: np.ndarray, what: str) -> Any:
    """``meta['channels']``, refused unless it names every stored channel."""
    four_d = array.ndim == 4
    n_channels = array.shape[0] if four_d else 1
    if channels is not None and len(channels) != n_channels:
        # Names recorded for channels that are not stored would make datasets select by them.
        raise StoreError(
            f"{what}: meta['channels'] names {len(channels)} channels, the array {array.shape} has {n_channels}"
            f"{' (a 3D volume is one channel)' if not four_d else ''}; fix or drop meta['channels']."
        )
    return channels


def check_value_range(value_range: Any) -> tuple[float, float]:
    # Checked on create, before any file is touched, not at the first add.
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise StoreError(f"value_range must be two numbers (low, high), e.g. (0, 1), found {value_range!r}.") from None
    if not high > low:
        raise StoreError(f"value_range must be (low, high) with high > low, found {value_range!r}.")
    return low, high


def verify_group(group: Any) -> bool:
    """Whether a volume group's image and mask still match the CRC-32 written with them."""
    crc = 0
    image = group["image"]
    for z0 in range(0, image.shape[0], VERIFY_SLICES):
        crc = fmt.crc32(image[z0 : z0 + VERIFY_SLICES], crc)
    if "mask" in group:
        mask = group["mask"]
        for z0 in range(0, mask.shape[0], VERIFY_SLICES):
            crc = fmt.crc32(mask[z0 : z0 + VERIFY_SLICES], crc)
    return int(group.attrs.get("crc32", -1)) == crc


def write_index(f: Any, catalog: dict[str, dict[str, Any]]) -> None:
    """``/index`` (one row per slice), ``/volume_keys``, ``/patient_keys`` and ``/catalog``."""
    volumes = f["volumes"]
    keys = [key for key in volumes.keys() if key in catalog]  # HDF5's name order
    patients: dict[str, int] = {}
    rows = []
    for v, key in enumerate(keys):
        attrs = catalog[key]["attrs"]
        n = catalog[key]["shape"][0]
        p = patients.setdefault(str(attrs.get("patient_key", "none")), len(patients))
        block = np.zeros(n, dtype=fmt.INDEX_DTYPE)
        block["volume"], block["slice"], block["patient"] = v, np.arange(n), p
        block["label"] = int(attrs["label"]) if "label" in attrs else -1
        rows.append(block)
    for name in ("index", "volume_keys", "patient_keys", "catalog"):
        if name in f:
            del f[name]
    index = np.concatenate(rows) if rows else np.zeros(0, dtype=fmt.INDEX_DTYPE)
    f.create_dataset("index", data=index)
    string = fmt.load_h5py().string_dtype()
    f.create_dataset("volume_keys", data=np.array(keys, dtype=object), dtype=string)
    f.create_dataset("patient_keys", data=np.array(list(patients), dtype=object), dtype=string)
    f.create_dataset("catalog", data=fmt.canonical_json([catalog[key] for key in keys]), dtype=string)
    f.attrs["n_volumes"] = len(keys)
    f.attrs["n_slices"] = len(index)


def stored_config(attrs: Any) -> Any:
    """The pipeline configuration in a store's root attributes; None when it does not parse."""
    try:
        return json.loads(attrs.get("pipeline", "null"))
    except (TypeError, ValueError):
        return None


class MetaNotStoredWarning(UserWarning):
    """``Store.add`` left out meta keys that are not on the allow-list (named, never their values)."""


def stored_meta(meta: dict[str, Any], *, keep: bool, warned: set[str]) -> dict[str, Any]:
    """``meta`` as a store that leaves the hospital may hold it: :func:`medload.deid.deidentified_meta`,
    the allow-list ``medload.convert`` applies (no identifying fields, no description unless
    ``keep`` (``keep_descriptions``), header values only of their kind). Each problem keeps its kind with
    the kind's meaning (:data:`~medload.problems.KIND_MEANINGS`) for its message: a reader's
    message names files and folders, which only ``medload.convert`` knows how to replace.

    Keys dropped that no medload reader makes (a caller's own: ``meta["diagnosis"]``) are named in
    a :class:`MetaNotStoredWarning`, once per key in ``warned``: a description or ``phi``, which
    :func:`medload.load` gives for reading, is dropped without one.

    Examples
    --------
    >>> stored_meta({"kvp": 120, "description": "SMITH^JOHN head", "phi": {"PatientName": "SMITH^JOHN"}},
    ...             keep=False, warned=set())
    {'kvp': 120}
    >>> stored_meta({"problems": [{"kind": "gantry_tilt", "message": "/exp/SMITH^JOHN/ct: tilt of 14 degrees"}]},
    ...             keep=False, warned=set())["problems"][0]["message"]
    'slices stacked obliquely to their plane; the affine keeps the true shear'
    """
    kept = deidentified_meta(meta, [], False, keep)
    if "problems" in kept:
        kept["problems"] = [{"kind": p.kind.value, "message": KIND_MEANINGS[p.kind]} for p in read_problems(kept["problems"])]
    own = sorted(k for k in meta if k not in kept and k != "phi" and k.lower() not in DESCRIPTOR_KEYS and k not in warned)
    if own:
        warned.update(own)
        warnings.warn(
            f"Store.add did not store meta keys {own}: a store holds only the keys of medload.deid.META_KEYS, "
            "which may leave the hospital (docs/deidentification.md). To store meta as given, pass keep_phi=True "
            "to medload.Store.create.",
            MetaNotStoredWarning,
            stacklevel=3,
        )
    return kept


def content_hash(volume: Volume) -> str:
    """A hash of a Volume's voxels and affine, used when ``meta['source_hash']`` is absent.

    Examples
    --------
    >>> v = Volume(np.zeros((1, 2, 2), np.float32), np.eye(4))
    >>> content_hash(v)[:8]
    'content-'
    """
    digest = hashlib.sha256()
    digest.update(str((volume.array.dtype.str, volume.shape)).encode())
    digest.update(np.ascontiguousarray(volume.array).data)
    digest.update(np.ascontiguousarray(volume.affine).data)
    return "content-" + digest.hexdigest()[:32]
