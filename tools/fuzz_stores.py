"""A hostile-input campaign against what medload reads from others: stores, label CSVs, sidecars.

Run: ``python tools/fuzz_stores.py [--seed 7] [--cases 300]``; ``--only N --keep DIR`` runs one
case in this process and keeps its files; ``--json out.json`` writes every finding.

Where ``tools/fuzz_readers.py`` attacks the scanner-file readers, this campaign attacks the
inputs a user receives from someone else (or from a damaged disk):

* ``store``: a medload HDF5 store (one ``.h5`` file or a folder of shards), made valid with
  ``medload.convert`` (uint8 + LZ4, float32 unfiltered, a folder store) and
  ``medload.Store.create`` (masks, labels, class names, a 4D channel volume, int16 + gzip),
  then mutated: root attributes, the ``/catalog`` JSON (shapes, dtypes, scale and offset,
  keys, labels, affines, history, meta, deep nesting), the volume groups' attributes (with
  the catalog removed so they are what is read), the image and mask datasets replaced by ones
  of another shape, dtype, chunking or kind, the stored LZ4 chunks' framing and bytes, the file
  truncated (with or without its end-of-file address patched so HDF5 still opens it), bytes
  flipped, stray and duplicate shards. Entry points: ``medload.open``, ``read_slices`` (raw
  and decoded, whole and per slice), ``read_batch``, ``read_mask``, ``read_volume``,
  ``classes``, ``SliceDataset`` items and ``ds.loader()``, ``VolumeDataset``, ``medload info``
  (and ``--json``), ``medload preview``, ``medload qc``, and ``medload.convert`` resuming onto
  the store;
* ``labels``: a label CSV (odd encodings, NUL bytes, huge fields and files, duplicate and
  conflicting keys, formulas and HTML in names) given to ``SliceDataset(labels=)`` and to
  ``medload.convert(labels=)``, whose QC page must not carry a name unescaped;
* ``sidecar``: BIDS ``.json`` sidecars beside a NIfTI and nnU-Net ``dataset.json`` files with
  huge numbers, wrong types, deep nesting, not JSON at all, through scan, load and convert.

Each case runs in a worker process under an ``RLIMIT_AS`` cap and a per-case alarm. Outcomes:

* ``ok`` / ``medload_error``: good;
* ``other``: another exception escaped (or ``medload`` exited 3, its internal error, or
  convert's report holds a failure that is not a MedloadError);
* ``wrong``: pixels came back that are not the stored ones: a read whose values differ from
  plain h5py's reading of the same dataset, from the same reader with its direct chunk reads
  off, or whose shape or dtype is not the record's; a record whose shape or dtype is not its
  dataset's; non-finite decoded values from finite stored ones; a label name reaching the QC
  page's HTML unescaped;
* ``hang``: past ``--timeout``; ``memory``: MemoryError under the cap; ``crash``: the worker died.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import struct
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

try:
    from tools import sandbox
except ImportError:  # run as a script: python tools/fuzz_stores.py
    import sandbox  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
BAD = ("other", "wrong", "hang", "memory", "crash", "harness")
KIND_SHARE = {"store": 0.7, "labels": 0.15, "sidecar": 0.15}


class _Wrong(Exception):
    """A read returned pixels that are not the stored ones (the campaign's 'wrong')."""


# --- the base stores ---------------------------------------------------------------------------


def _nifti_source(folder: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    from fixtures.hostile import nifti_bytes

    src = folder / "src"
    src.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        (src / f"sub-0{i + 1}_T1w.nii").write_bytes(nifti_bytes((12, 10, 4), seed=i + 1))
    return src


def bases(work: str | os.PathLike[str]) -> dict[str, Any]:
    """Valid stores to mutate, made once per process under ``work``: ``{name: (path, convert kwargs or None)}``."""
    import numpy as np

    import medload

    sys.path.insert(0, str(ROOT))
    from fixtures.stores import synthetic_mask, synthetic_volume

    work = Path(work)
    src = _nifti_source(work)
    out: dict[str, Any] = {"src": src}
    kw_lz4: dict[str, Any] = {"workers": 0, "progress": False}
    kw_f32: dict[str, Any] = {"workers": 0, "progress": False, "dtype": "float32", "compression": "none"}
    medload.convert(src, work / "conv.h5", **kw_lz4)
    medload.convert(src, work / "f32.h5", **kw_f32)
    medload.convert(src, work / "folder", **kw_lz4)
    made = work / "made.h5"
    with medload.Store.create(made) as store:
        for seed in range(2):
            volume = synthetic_volume(seed, shape=(4, 12, 10))
            volume = volume.with_array(volume.array, meta={**volume.meta, "class_name": ["normal", "tumor"][seed]})
            store.add(volume, mask=synthetic_mask(volume), label=seed)
        store.add(synthetic_volume(5, shape=(3, 8, 6), channels=("t1", "t2")))
    with medload.Store.create(work / "int16.h5", dtype="int16", compression="gzip:1") as store:
        store.add(synthetic_volume(7, shape=(3, 8, 6), dtype="int16"))
    out["stores"] = {
        "conv": (work / "conv.h5", kw_lz4),
        "f32": (work / "f32.h5", kw_f32),
        "folder": (work / "folder", kw_lz4),
        "made": (made, None),
        "int16": (work / "int16.h5", None),
    }
    del np
    return out


# --- store mutators ----------------------------------------------------------------------------
# Each takes (path of the store file to change, rng) and changes it in place.

_HUGE = [2**31, 2**40, 2**62]
_BAD_NUMBERS: list[Any] = [float("nan"), float("inf"), -1, 0, 1e308, "x", None, [1, 2], True]


def _h5(path: Path, mode: str = "r+") -> Any:
    import h5py

    return h5py.File(path, mode)


def _deep(depth: int, leaf: str = "1") -> str:
    return "[" * depth + leaf + "]" * depth


def _pick(rng: Any, values: list[Any]) -> Any:
    return values[int(rng.integers(0, len(values)))]


def _volume_keys(f: Any) -> list[str]:
    return sorted(f["volumes"].keys())


def _read_catalog(f: Any) -> list[dict[str, Any]]:
    return json.loads(f["catalog"][()])


def _write_catalog(f: Any, value: Any, *, raw: str | None = None) -> None:
    import h5py

    text = raw if raw is not None else json.dumps(value)
    del f["catalog"]
    f.create_dataset("catalog", data=text, dtype=h5py.string_dtype())


def _s_root_attr(path: Path, rng: Any) -> str:
    name = _pick(rng, ["medload_schema", "pipeline", "pipeline_hash", "n_volumes", "phi_key_fingerprint", "dtype"])
    values: dict[str, list[Any]] = {
        "medload_schema": [0, -1, 2, "x", 1.5, [1, 2], 2**62, "1"],
        "pipeline": ["{", _deep(100_000), '"x"', "5", "[]", b"\xff\xfe"],
        "pipeline_hash": ["", 5, "x" * 10_000],
        "n_volumes": [99, -1, "a", 2**62, 0],
        "phi_key_fingerprint": [5, "", "k" * 1000],
        "dtype": ["float64", 5, ""],
    }
    with _h5(path) as f:
        if rng.random() < 0.2:
            if name in f.attrs:
                del f.attrs[name]
            return f"del {name}"
        value = _pick(rng, values[name])
        f.attrs[name] = value
    return f"{name}={str(value)[:40]}"


_CATALOG_LIES: dict[str, list[Any]] = {
    "shape": [
        "more_slices",
        "fewer_slices",
        "other_hw",
        [2**31, 12, 10],
        [2**40, 2**20, 2**20],
        [0, 12, 10],
        [-1, 12, 10],
        [3, 12],
        [3],
        [],
        [3, 12, 10, 1, 1],
        ["a", 12, 10],
        [3.5, 12, 10],
        None,
        "x",
    ],
    "dtype": ["float64", "int64", "object", "|S4", "<u2", ">f4", "bool", "complex64", "nonsense", 5, None, "float32", "uint8"],
    "scale": [float("nan"), float("inf"), 0, -1, "x", None, 1e308, 1e-320, [1, 2]],
    "offset": [float("nan"), float("-inf"), "x", None, 1e308],
    "has_mask": [True, False, "yes", None],
    "key": ["../x", "nonexistent", "", "dup", None, 5, "a/b"],
}
_ATTR_LIES: dict[str, list[Any]] = {
    "affine": [[[1.0]], [[float("nan")] * 4] * 4, "x", [[0.0] * 4] * 4, None, [[1e308] * 4] * 4],
    "spacing": [[1.0], ["a", 1, 1], [0, 0, 0], None, [float("nan")] * 3],
    "label": [2**62, 2**63 - 1, -5, "x", 1.5, 10**30, None, 100_000_000],
    "history": ["{", "[1]", '[["a"]]', '[["a", 5]]', _deep(100_000), "null", 5],
    "meta": ["[]", "1", '{"problems": 5}', '{"problems": [{"kind": 5}]}', '{"x": ' + _deep(100_000) + "}", "{", 5],
    "channels": ["5", '["a","b","c"]', _deep(100_000), "[]", "[1, 2]", 5],
    "patient_key": [5, "", None, "x" * 100_000],
    "modality": [5, None, "CT" * 1000],
    "complete": [False, 0, "no"],
}


def _s_catalog_field(path: Path, rng: Any) -> str:
    with _h5(path) as f:
        entries = _read_catalog(f)
        i = int(rng.integers(0, len(entries)))
        entry = entries[i]
        if rng.random() < 0.5:
            field = _pick(rng, sorted(_CATALOG_LIES))
            value = _pick(rng, _CATALOG_LIES[field])
            if field == "shape" and isinstance(value, str) and value in ("more_slices", "fewer_slices", "other_hw"):
                shape = list(entry["shape"])
                if value == "more_slices":
                    shape[0] += int(rng.integers(1, 1000))
                elif value == "fewer_slices":
                    shape[0] = max(1, shape[0] - 1)
                else:
                    shape[-1] += 2
                value = shape
            if field == "key" and value == "dup":
                value = entries[(i + 1) % len(entries)]["key"]
            entry[field] = value
            where = field
        else:
            field = _pick(rng, sorted(_ATTR_LIES))
            value = _pick(rng, _ATTR_LIES[field])
            if value is None:
                entry["attrs"].pop(field, None)
            else:
                entry["attrs"][field] = value
            where = "attrs." + field
        _write_catalog(f, entries)
    return f"catalog[{i}].{where}={str(value)[:40]}"


def _s_catalog_whole(path: Path, rng: Any) -> str:
    what = _pick(rng, ["not_json", "object", "ints", "deep", "duplicate", "empty", "int_dataset", "huge_string", "drop_n"])
    with _h5(path) as f:
        entries = _read_catalog(f)
        if what == "not_json":
            _write_catalog(f, None, raw="{not json")
        elif what == "object":
            _write_catalog(f, {"a": 1})
        elif what == "ints":
            _write_catalog(f, [1] * len(entries))
        elif what == "deep":
            _write_catalog(f, None, raw=_deep(200_000))
        elif what == "duplicate":
            _write_catalog(f, entries + entries[:1])
            f.attrs["n_volumes"] = len(entries) + 1
        elif what == "empty":
            _write_catalog(f, [])
            f.attrs["n_volumes"] = 0
        elif what == "int_dataset":
            del f["catalog"]
            f.create_dataset("catalog", data=[1, 2, 3])
        elif what == "huge_string":
            _write_catalog(f, None, raw=" " * 50_000_000 + json.dumps(entries))
        else:
            f.attrs["n_volumes"] = len(entries) - 1
            _write_catalog(f, entries[:-1])
    return what


def _s_group_attr(path: Path, rng: Any) -> str:
    with _h5(path) as f:
        if "catalog" in f and rng.random() < 0.8:
            del f["catalog"]  # the group attributes are what is read
        keys = _volume_keys(f)
        key = _pick(rng, keys)
        group = f["volumes"][key]
        if rng.random() < 0.3:
            target, name = group["image"], _pick(rng, ["scale", "offset"])
            value = _pick(rng, _BAD_NUMBERS)
        else:
            target, name = group, _pick(rng, sorted(_ATTR_LIES))
            value = _pick(rng, _ATTR_LIES[name])
        if value is None:
            if name in target.attrs:
                del target.attrs[name]
        else:
            try:
                target.attrs[name] = value
            except TypeError:  # a list HDF5 cannot store as one type: as JSON text
                target.attrs[name] = json.dumps(value)
    return f"{key}.{name}={str(value)[:40]}"


def _s_dataset(path: Path, rng: Any) -> str:
    """Replace a volume's image or mask dataset; the catalog is left as it was, or made to agree."""
    import numpy as np

    with _h5(path) as f:
        key = _pick(rng, _volume_keys(f))
        group = f["volumes"][key]
        name = "mask" if "mask" in group and rng.random() < 0.3 else "image"
        old = group[name]
        shape, dtype = tuple(old.shape), old.dtype
        z, rest = shape[0], shape[1:]
        what = _pick(
            rng,
            [
                "more_slices",
                "fewer_slices",
                "other_hw",
                "float64",
                "big_endian",
                "int64",
                "strings",
                "compound",
                "bool",
                "two_slice_chunks",
                "half_slice_chunks",
                "contiguous",
                "scalar",
                "one_d",
                "lazy_huge",
                "group",
                "missing",
                "external",
                "unwritten",
                "external_link",
            ],
        )
        data = old[()]
        del group[name]
        kwargs: dict[str, Any] = {}
        if old.compression is not None:
            kwargs = {"compression": old.compression, "compression_opts": old.compression_opts}
        if what == "more_slices":
            group.create_dataset(name, data=np.concatenate([data, data[:1]]), chunks=(1, *rest))
        elif what == "fewer_slices":
            group.create_dataset(name, data=data[:-1] if z > 1 else data[:0], chunks=(1, *rest) if z > 1 else None)
        elif what == "other_hw":
            group.create_dataset(name, data=np.zeros((z, *rest[:-1], rest[-1] + 2), dtype), chunks=(1, *rest[:-1], rest[-1] + 2))
        elif what in ("float64", "int64", "bool"):
            group.create_dataset(name, data=data.astype(what), chunks=(1, *rest))
        elif what == "big_endian":
            group.create_dataset(name, data=data.astype(dtype.newbyteorder(">")), chunks=(1, *rest))
        elif what == "strings":
            group.create_dataset(name, data=np.full(shape, b"ab", "S2"), chunks=(1, *rest))
        elif what == "compound":
            group.create_dataset(name, data=np.zeros(shape, [("a", "u1"), ("b", "f4")]), chunks=(1, *rest))
        elif what == "two_slice_chunks":
            group.create_dataset(name, data=data, chunks=(min(2, z), *rest), **kwargs)
        elif what == "half_slice_chunks":
            group.create_dataset(name, data=data, chunks=(1, max(1, rest[0] // 2), *rest[1:]), **kwargs)
        elif what == "contiguous":
            group.create_dataset(name, data=data)
        elif what == "scalar":
            group.create_dataset(name, data=np.float32(1))
        elif what == "one_d":
            group.create_dataset(name, data=data.reshape(-1))
        elif what == "lazy_huge":  # declared, never written: HDF5 allocates nothing
            group.create_dataset(name, shape=(2**30, *rest), dtype=dtype, chunks=(1, *rest), **kwargs)
        elif what == "group":
            group.create_group(name)
        elif what == "external":  # raw data in another file, named by the store
            target = path.with_name("external.raw")
            target.write_bytes(data.tobytes())
            group.create_dataset(name, shape=shape, dtype=dtype, external=[(target.name, 0, data.nbytes)])
        elif what == "external_link":  # the dataset in another HDF5 file, named by the store
            import h5py

            with h5py.File(path.with_name("other.h5"), "w") as other:
                other.create_dataset("x", data=data, chunks=(1, *rest) if data.ndim > 1 else None)
            group[name] = h5py.ExternalLink("other.h5", "/x")
        elif what == "unwritten":  # the right shape, dtype and filter; some slices never written
            new = group.create_dataset(name, shape=shape, dtype=dtype, chunks=(1, *rest), **kwargs)
            for k in range(0, z, 2):
                new[k] = data[k]
        # "missing": deleted above
        if "catalog" in f and rng.random() < 0.5 and what not in ("missing", "group"):
            new = group[name]
            entries = _read_catalog(f)
            for entry in entries:
                if entry["key"] == key and name == "image":
                    entry["shape"] = [int(n) for n in new.shape]
                    entry["dtype"] = str(new.dtype.name) if new.dtype.names is None else "compound"
            _write_catalog(f, entries)
            what += "+catalog"
    return f"{key}/{name}:{what}"


def _chunk_spans(path: Path) -> list[tuple[int, int, bool]]:
    """(byte offset, size, lz4) of every stored chunk of every image and mask dataset."""
    spans = []
    with _h5(path, "r") as f:
        for key in _volume_keys(f):
            for name in ("image", "mask"):
                if name not in f["volumes"][key]:
                    continue
                ds = f["volumes"][key][name]
                if ds.chunks is None:
                    continue
                dcpl = ds.id.get_create_plist()
                lz4 = dcpl.get_nfilters() == 1 and dcpl.get_filter(0)[0] == 32004
                for i in range(ds.id.get_num_chunks()):
                    info = ds.id.get_chunk_info(i)
                    spans.append((int(info.byte_offset), int(info.size), lz4))
    return spans


def _s_chunk_bytes(path: Path, rng: Any) -> str:
    spans = _chunk_spans(path)
    if not spans:
        return "no chunks"
    offset, size, lz4 = _pick(rng, spans)
    data = bytearray(path.read_bytes())
    chunk = data[offset : offset + size]
    choices = ["flip", "zero", "swap_next"]
    if lz4 and size >= 16:
        choices += ["orig_size", "block_size", "stored_size", "stored_size_small", "raw_block", "cramjam_prefix", "orig_huge"]
    what = _pick(rng, choices)
    if what == "flip":
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(0, size))
            chunk[k] ^= 1 << int(rng.integers(0, 8))
    elif what == "zero":
        chunk[:] = bytes(size)
    elif what == "swap_next":
        later = [s for s in spans if s[0] > offset and s[1] == size]
        if later:
            o2 = later[0][0]
            chunk[:] = data[o2 : o2 + size]
    elif what == "orig_size":
        original = struct.unpack_from(">Q", chunk)[0]
        struct.pack_into(">Q", chunk, 0, original + _pick(rng, [-1, 1, 8, -8]))
    elif what == "orig_huge":
        struct.pack_into(">Q", chunk, 0, _pick(rng, _HUGE + [2**64 - 1]))
    elif what == "block_size":
        struct.pack_into(">I", chunk, 8, _pick(rng, [0, 1, 7, 2**32 - 1, 16]))
    elif what == "stored_size":
        struct.pack_into(">I", chunk, 12, _pick(rng, [2**32 - 1, size, size - 15, 0]))
    elif what == "stored_size_small":
        stored = struct.unpack_from(">I", chunk, 12)[0]
        struct.pack_into(">I", chunk, 12, max(0, stored - int(rng.integers(1, 5))))
    elif what == "raw_block":  # claims the block was kept raw (stored size == original size)
        original = struct.unpack_from(">Q", chunk)[0]
        struct.pack_into(">I", chunk, 12, original & 0xFFFFFFFF)
    elif what == "cramjam_prefix":  # a block that starts with its own little-endian size
        original = struct.unpack_from(">Q", chunk)[0]
        chunk[16:20] = (original & 0xFFFFFFFF).to_bytes(4, "little")
    data[offset : offset + size] = chunk
    path.write_bytes(bytes(data))
    return f"chunk@{offset}+{size}{' lz4' if lz4 else ''}:{what}"


def _superblock_eof(data: bytes) -> int | None:
    """Offset of the end-of-file address in a version 0/1 superblock (h5py's default), else None."""
    if data[:8] != b"\x89HDF\r\n\x1a\n":
        return None
    version = data[8]
    if version == 0:
        return 8 + 16 + 8 * 2  # signature, 16 bytes of versions and sizes, base and free-space addresses
    if version in (2, 3):
        return 8 + 4 + 8 * 2
    return None


def _s_truncate(path: Path, rng: Any) -> str:
    data = path.read_bytes()
    spans = _chunk_spans(path)
    if spans and rng.random() < 0.6:
        offset, size, _ = _pick(rng, spans)
        cut = offset + int(rng.integers(0, size))
    else:
        cut = int(rng.integers(0, len(data)))
    data = bytearray(data[:cut])
    patched = False
    where = _superblock_eof(bytes(data[:64])) if len(data) >= 64 else None
    if where is not None and rng.random() < 0.7:
        struct.pack_into("<Q", data, where, cut)  # HDF5 then opens it and meets the missing bytes later
        patched = True
    path.write_bytes(bytes(data))
    return f"cut at {cut}{' eof patched' if patched else ''}"


def _s_flip(path: Path, rng: Any) -> str:
    data = bytearray(path.read_bytes())
    n = int(rng.integers(1, 9))
    where = []
    for _ in range(n):
        k = int(rng.integers(0, len(data)))
        data[k] ^= 1 << int(rng.integers(0, 8))
        where.append(k)
    path.write_bytes(bytes(data))
    return f"flip {where}"


def _s_shards(path: Path, rng: Any) -> str:
    """Folder stores: stray, duplicate and foreign files beside the shards (``path``: the folder)."""
    what = _pick(rng, ["empty", "not_hdf5", "dir", "duplicate", "plain_hdf5", "foreign_pipeline", "sparse_huge", "partial"])
    shard = sorted(path.glob("*.h5"))[0]
    if what == "empty":
        (path / "shard-9999.h5").write_bytes(b"")
    elif what == "not_hdf5":
        (path / "shard-9999.h5").write_bytes(b"patient,label\n1,2\n")
    elif what == "dir":
        (path / "shard-9999.h5").mkdir()
    elif what == "duplicate":
        shutil.copyfile(shard, path / "shard-9999.h5")
    elif what == "plain_hdf5":
        with _h5(path / "shard-9999.h5", "w") as f:
            f["x"] = [1, 2, 3]
    elif what == "foreign_pipeline":
        shutil.copyfile(shard, path / "shard-9999.h5")
        with _h5(path / "shard-9999.h5") as f:
            f.attrs["pipeline_hash"] = "other"
    elif what == "sparse_huge":
        with open(path / "shard-9999.h5", "wb") as fh:
            fh.truncate(8 * 1024**3)
    elif what == "partial":
        shutil.copyfile(shard, path / "shard-9999.h5.partial")
        for p in path.glob("*.h5"):
            p.unlink()
    return what


STORE_MUTATORS = {
    "root_attr": _s_root_attr,
    "catalog_field": _s_catalog_field,
    "catalog_whole": _s_catalog_whole,
    "group_attr": _s_group_attr,
    "dataset": _s_dataset,
    "chunk_bytes": _s_chunk_bytes,
    "truncate": _s_truncate,
    "flip": _s_flip,
    "shards": _s_shards,
}
#: Relative weights: the mechanisms with the most ways to lie get the most cases.
STORE_WEIGHTS = {
    "root_attr": 1,
    "catalog_field": 4,
    "catalog_whole": 1,
    "group_attr": 3,
    "dataset": 3,
    "chunk_bytes": 3,
    "truncate": 2,
    "flip": 2,
    "shards": 1,
}


# --- label CSVs and JSON sidecars -----------------------------------------------------------

_EVIL_NAMES = [
    '=cmd|"/c calc"!A1',
    "+1+1",
    "-2+3",
    "@SUM(1)",
    "<script>alert(1)</script>",
    '"><img src=x>',
    "a\x00b",
    "\u202eevil",
]


def _labels_csv(rng: Any, keys: list[str]) -> bytes:
    what = _pick(
        rng,
        [
            "utf16",
            "latin1",
            "nul",
            "huge_field",
            "many_rows",
            "dup_conflict",
            "dup_same",
            "evil",
            "no_header",
            "bom",
            "cr",
            "wide",
        ],
    )
    rows = [(k, _pick(rng, ["normal", "tumor", "1", "0"])) for k in keys]
    text = "patient_key,label\n" + "".join(f"{k},{v}\n" for k, v in rows)
    if what == "utf16":
        return text.encode("utf-16")
    if what == "latin1":
        return text.replace("normal", "norm\xe4l").encode("latin-1")
    if what == "nul":
        return text.encode().replace(b",", b",\x00", 1)
    if what == "huge_field":
        return (text + f"{keys[0]},{'x' * int(rng.integers(100_000, 20_000_000))}\n").encode()
    if what == "many_rows":
        return (text + "".join(f"pat-{i:08d},1\n" for i in range(200_000))).encode()
    if what == "dup_conflict":
        return (text + f"{keys[0]},other\n").encode()
    if what == "dup_same":
        return (text + f"{keys[0]},{rows[0][1]}\n").encode()
    if what == "evil":
        return ("patient_key,label\n" + "".join(f'{k},"{_pick(rng, _EVIL_NAMES)}"\n' for k in keys)).encode()
    if what == "no_header":
        return "".join(f"{k},{v}\n" for k, v in rows).encode()
    if what == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if what == "cr":
        return text.replace("\n", "\r").encode()
    return ("patient_key,label," + ",".join(f"c{i}" for i in range(100_000)) + "\n" + text.split("\n", 1)[1]).encode()


def _json_value(rng: Any, depth: int = 0) -> Any:
    kinds = ["huge", "neg", "nan_text", "string", "list", "dict", "null", "bool", "float"]
    kind = _pick(rng, kinds)
    if kind == "huge":
        return _pick(rng, [10**400, 2**64, 1e308, -(10**30)])
    if kind == "neg":
        return -1
    if kind == "nan_text":
        return "NaN"
    if kind == "string":
        return _pick(rng, ["x", "", "1e999", "a" * 100_000])
    if kind == "list":
        return [1, "a", None]
    if kind == "dict":
        return {"a": 1}
    if kind == "null":
        return None
    if kind == "bool":
        return True
    return 0.5


_SIDECAR_KEYS = [
    "EchoTime",
    "RepetitionTime",
    "FlipAngle",
    "MagneticFieldStrength",
    "InversionTime",
    "ImageType",
    "Modality",
    "SliceThickness",
    "Manufacturer",
    "SeriesDescription",
    "PhaseEncodingDirection",
    "SliceTiming",
]
_NNUNET_KEYS = ["channel_names", "labels", "numTraining", "file_ending", "modality", "training", "name"]


def _sidecar_text(rng: Any) -> str:
    what = _pick(rng, ["fields", "deep", "not_json", "array", "huge_int", "nan", "bytes"])
    if what == "deep":
        return '{"EchoTime": ' + _deep(int(rng.integers(1000, 200_000))) + "}"
    if what == "not_json":
        return "{EchoTime: 3"
    if what == "array":
        return "[1, 2]"
    if what == "huge_int":
        return '{"EchoTime": 1' + "0" * 5000 + "}"
    if what == "nan":
        return '{"EchoTime": NaN, "RepetitionTime": Infinity, "FlipAngle": -Infinity}'
    if what == "bytes":
        return "\udcff"
    doc = {k: _json_value(rng) for k in _SIDECAR_KEYS if rng.random() < 0.5}
    return json.dumps(doc)


def _nnunet_text(rng: Any) -> str:
    doc: dict[str, Any] = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "organ": 1},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    what = _pick(rng, ["fields", "deep", "not_json", "huge_labels", "label_types"])
    if what == "deep":
        return '{"channel_names": ' + _deep(int(rng.integers(1000, 200_000))) + "}"
    if what == "not_json":
        return '{"channel_names": '
    if what == "huge_labels":
        doc["labels"] = {"background": 0, "organ": _pick(rng, [2**62, 10**30, -3, 1e308, 2**31])}
    elif what == "label_types":
        doc["labels"] = _pick(rng, [[0, 1], {"background": "zero"}, {"a": [1, 2]}, {"a": None}, "labels", {}])
    else:
        for k in _NNUNET_KEYS:
            if rng.random() < 0.4:
                doc[k] = _json_value(rng)
    return json.dumps(doc)


# --- the cases -----------------------------------------------------------------------------------


def make_case(seed: int, index: int, corpus: dict[str, Any], folder: Path) -> tuple[str, str, dict[str, Any]]:
    """Write case ``index`` of campaign ``seed`` into ``folder``: (kind, description, what to run)."""
    import numpy as np

    rng = np.random.default_rng([seed, index])
    kinds = sorted(KIND_SHARE)
    kind = str(rng.choice(kinds, p=[KIND_SHARE[k] for k in kinds]))
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "store":
        names = sorted(STORE_WEIGHTS)
        weights = np.array([STORE_WEIGHTS[n] for n in names], float)
        mutator = str(rng.choice(names, p=weights / weights.sum()))
        base_names = ["folder"] if mutator == "shards" else sorted(corpus["stores"])
        base = _pick(rng, base_names)
        src, convert_kwargs = corpus["stores"][base]
        target = folder / src.name
        if src.is_dir():
            shutil.copytree(src, target)
            store_file = sorted(target.glob("*.h5"))[0]
        else:
            shutil.copyfile(src, target)
            store_file = target
        detail = STORE_MUTATORS[mutator](target if mutator == "shards" else store_file, rng)
        return kind, f"{base}:{mutator}:{detail}", {"store": str(target), "convert": convert_kwargs, "src": str(corpus["src"])}
    if kind == "labels":
        base = _pick(rng, ["conv", "made"])
        src, _ = corpus["stores"][base]
        import medload

        keys = sorted({r.patient_key for r in medload.open(src).volumes})
        path = folder / "labels.csv"
        path.write_bytes(_labels_csv(rng, keys))
        return kind, f"{base}:labels", {"store": str(src), "labels": str(path), "src": str(corpus["src"])}
    # sidecar: a BIDS sidecar beside a NIfTI, or an nnU-Net dataset
    sys.path.insert(0, str(ROOT))
    from fixtures.hostile import nifti_bytes

    if rng.random() < 0.5:
        data = folder / "bids"
        data.mkdir()
        (data / "sub-01_T1w.nii").write_bytes(nifti_bytes((12, 10, 4), seed=1))
        (data / "sub-01_T1w.json").write_text(_sidecar_text(rng), encoding="utf-8", errors="surrogateescape")
        return kind, "bids sidecar", {"source": str(data), "bids": True}
    data = folder / "Dataset001_X"
    for sub in ("imagesTr", "labelsTr"):
        (data / sub).mkdir(parents=True)
    (data / "imagesTr" / "case_000_0000.nii").write_bytes(nifti_bytes((12, 10, 4), seed=2))
    (data / "labelsTr" / "case_000.nii").write_bytes(nifti_bytes((12, 10, 4), dtype=np.uint8, seed=2))
    text = _nnunet_text(rng)
    (data / "dataset.json").write_text(text.replace('".nii.gz"', '".nii"'), encoding="utf-8")
    return kind, "nnunet dataset.json", {"source": str(data)}


# --- what is run on a case ----------------------------------------------------------------


def _check_read(reader: Any, plain: Any) -> None:
    """Every read of every volume; raise _Wrong where pixels come back that are not the stored ones."""
    import numpy as np

    for v, rec in enumerate(reader.volumes):
        if not np.isfinite(rec.scale) or not np.isfinite(rec.offset):
            raise _Wrong(f"volume {rec.key}: scale {rec.scale}, offset {rec.offset} accepted")
        try:
            ds = plain["volumes"][rec.key]["image"]
            truth_shape, truth_dtype = tuple(ds.shape), ds.dtype
        except Exception:  # noqa: BLE001 - the reader must refuse to read it
            ds, truth_shape, truth_dtype = None, None, None
        raw = reader.read_slices(v, 0, rec.n_slices, raw=True)
        if ds is None:
            raise _Wrong(f"volume {rec.key}: no readable image dataset, yet read_slices returned {raw.shape}")
        if tuple(rec.shape) != truth_shape or np.dtype(rec.dtype) != truth_dtype:
            raise _Wrong(
                f"volume {rec.key}: record says {rec.shape} {rec.dtype}, dataset is {truth_shape} {truth_dtype}; read gave {raw.shape}"
            )
        if raw.shape != tuple(rec.shape) or raw.dtype != np.dtype(rec.dtype):
            raise _Wrong(f"volume {rec.key}: read_slices gave {raw.shape} {raw.dtype}, record {rec.shape} {rec.dtype}")
        try:
            truth = ds[()]
        except Exception as exc:  # noqa: BLE001 - HDF5 refuses it: so must the reader
            raise _Wrong(
                f"volume {rec.key}: h5py cannot read it ({type(exc).__name__}: {exc}), medload returned pixels"
            ) from None
        if not np.array_equal(raw, truth, equal_nan=raw.dtype.kind == "f"):
            raise _Wrong(f"volume {rec.key}: raw slices differ from h5py's reading")
        decoded = reader.read_slices(v, 0, rec.n_slices)
        if raw.dtype.kind in "iu" and not np.isfinite(decoded).all():
            raise _Wrong(f"volume {rec.key}: non-finite decoded values from integer stored values")
        for z in range(rec.n_slices):
            one = reader.read_slices(v, z, z + 1, raw=True)
            if not np.array_equal(one[0], truth[z], equal_nan=one.dtype.kind == "f"):
                raise _Wrong(f"volume {rec.key}: slice {z} read alone differs from h5py's reading")
        if rec.has_mask:
            mask = reader.read_mask(v, 0, rec.n_slices)
            mtruth = plain["volumes"][rec.key]["mask"][()]
            if mask.shape != mtruth.shape or not np.array_equal(mask, mtruth):
                raise _Wrong(f"volume {rec.key}: mask differs from h5py's reading")
            if mask.shape[0] != rec.n_slices or mask.shape[-2:] != tuple(rec.shape[-2:]):
                raise _Wrong(f"volume {rec.key}: mask {mask.shape} on image {rec.shape}")
        reader.read_volume(v, mask=True)
    # A whole shuffled batch of every slice of every volume of the first slice shape.
    first = reader.volumes[0] if reader.volumes else None
    if first is None:
        return
    rows = [(v, z) for v, rec in enumerate(reader.volumes) if rec.slice_shape == first.slice_shape for z in range(rec.n_slices)]
    order = np.random.default_rng(0).permutation(len(rows))
    vols = [rows[i][0] for i in order]
    slices = [rows[i][1] for i in order]
    out = np.empty((len(rows), *first.slice_shape), np.dtype(first.dtype))
    try:
        reader.read_batch(vols, slices, out, raw=True)
    except Exception as exc:
        if "ConfigError" in type(exc).__name__ and any(np.dtype(reader.volumes[v].dtype) != out.dtype for v in vols):
            return  # a batch of mixed dtypes: refused with a ConfigError, as documented
        raise
    for i, (v, z) in enumerate(zip(vols, slices)):
        want = plain["volumes"][reader.volumes[v].key]["image"][z]
        if not np.array_equal(out[i], want, equal_nan=out.dtype.kind == "f"):
            raise _Wrong(f"read_batch row {i} (volume {v}, slice {z}) differs from h5py's reading")
    floats = np.empty((len(rows), *first.slice_shape), np.float32)
    reader.read_batch(vols, slices, floats)


def _run_cli(argv: list[str]) -> tuple[int, str]:
    from medload.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else 2
    return int(rc or 0), err.getvalue()


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames))


def _convert_report(report: Any, medload_names: set[str]) -> str | None:
    for entry in report.failed:
        if entry.get("internal") or entry.get("error") not in medload_names:
            tb = str(entry.get("traceback", "")).strip().splitlines()[-3:]
            return f"convert report: {entry.get('error')}: {str(entry.get('reason'))[:200]} {' | '.join(tb)}"
    return None


def run_case(kind: str, job: dict[str, Any], work: Path) -> tuple[str, str]:
    """(outcome, detail) of running every entry point on a case."""
    import medload
    from medload import errors

    medload_names = {
        n for n in dir(errors) if isinstance(getattr(errors, n), type) and issubclass(getattr(errors, n), errors.MedloadError)
    }
    outcome = "ok"
    stage = "start"

    def refused() -> None:
        nonlocal outcome
        outcome = "medload_error"

    try:
        if kind == "store":
            import h5py

            path = job["store"]
            stage = "open"
            try:
                reader = medload.open(path)
            except errors.MedloadError:
                reader = None
                refused()
            if reader is not None:
                stage = "read"
                plain_path = reader.shards[0] if len(reader.shards) == 1 else None
                try:
                    if plain_path is not None:
                        with h5py.File(plain_path, "r") as plain:
                            _check_read(reader, plain)
                            reader._direct = False  # the same reads through h5py alone must agree
                            reader.close()
                            _check_read(reader, plain)
                    else:
                        for v in range(len(reader.volumes)):
                            reader.read_volume(v, mask=True)
                except errors.MedloadError:
                    refused()
                stage = "classes"
                try:
                    _ = reader.classes, reader.pipeline, reader.patient_keys
                except errors.MedloadError:
                    refused()
                reader.close()
                stage = "datasets"
                try:
                    ds = medload.SliceDataset(path, select={"channels": 1})
                    for i in range(min(len(ds), 8)):
                        ds[i]
                    for _ in ds.loader(batch_size=4, shuffle=True, num_workers=0):
                        pass
                except errors.MedloadError:
                    refused()
                try:
                    vds = medload.VolumeDataset(path, select={"channels": 1})
                    for i in range(len(vds)):
                        vds[i]
                except errors.MedloadError:
                    refused()
            for argv in (
                ["info", path],
                ["info", path, "--json"],
                ["preview", path, "--out", str(work / "p.png"), "--n", "4", "--tile", "32"],
                ["qc", path, "--out", str(work / "qc"), "--workers", "0", "--thumb", "32"],
            ):
                stage = "cli " + argv[0]
                rc, err = _run_cli(argv)
                if rc == 3 or "Traceback" in err:
                    return "other", f"{stage}: rc {rc}: {err.strip().splitlines()[-1][:300] if err.strip() else ''}"
                if rc != 0:
                    refused()
            if job.get("convert") is not None:
                stage = "resume"
                try:
                    report = medload.convert(job["src"], path, **job["convert"])
                except errors.MedloadError:
                    refused()
                else:
                    bad = _convert_report(report, medload_names)
                    if bad:
                        return "other", bad
                    if not report.ok:
                        refused()
        elif kind == "labels":
            stage = "dataset labels"
            try:
                ds = medload.SliceDataset(job["store"], labels=job["labels"], select={"channels": 1})
                ds[0]
            except errors.MedloadError:
                refused()
            stage = "convert labels"
            out = work / "out"
            try:
                report = medload.convert(job["src"], out, labels=job["labels"], workers=0, progress=False)
            except errors.MedloadError:
                refused()
            else:
                bad = _convert_report(report, medload_names)
                if bad:
                    return "other", bad
                stage = "qc labels"
                rc, err = _run_cli(["qc", str(out), "--out", str(work / "qc"), "--workers", "0", "--thumb", "32"])
                if rc == 3 or "Traceback" in err:
                    return "other", f"{stage}: rc {rc}: {err.strip().splitlines()[-1][:300] if err.strip() else ''}"
                page = work / "qc" / "index.html"
                if page.exists():
                    html = page.read_text(encoding="utf-8", errors="replace")
                    for evil in ("<script>alert(1)</script>", '"><img src=x>'):
                        if evil in html:
                            return "wrong", f"qc page holds {evil!r} unescaped"
        else:
            stage = "scan"
            found = medload.scan(job["source"])
            stage = "load"
            for series in found:
                try:
                    medload.load(series)
                except errors.MedloadError as exc:
                    if job.get("bids"):  # a sidecar is optional metadata: its quirks must not cost the image
                        return "other", f"load: the sidecar made the image unreadable: {type(exc).__name__}: {str(exc)[:200]}"
                    refused()
            if job.get("bids") and len(found) != 1:
                return "other", f"scan: the sidecar made the image unreadable: {[e.message[:200] for e in found.errors]}"
            stage = "convert"
            try:
                report = medload.convert(job["source"], work / "out.h5", workers=0, progress=False)
            except errors.MedloadError:
                refused()
            else:
                bad = _convert_report(report, medload_names)
                if bad:
                    return "other", bad
                if not report.ok:
                    refused()
    except errors.MedloadError:
        return "medload_error", stage
    except _Wrong as exc:
        return "wrong", f"{stage}: {exc}"
    except MemoryError:
        return "memory", stage
    except sandbox.Alarm:
        return "hang", stage
    except RecursionError as exc:
        return "other", f"{stage}: RecursionError: {str(exc)[:120]} at {_where(exc)}"
    except Exception as exc:  # noqa: BLE001 - what the campaign looks for
        return "other", f"{stage}: {type(exc).__name__}: {str(exc)[:200]} at {_where(exc)}"
    return outcome, ""


def _worker(conn: Any, indices: list[int], seed: int, timeout: int, memory: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="medload-fuzzs-"))

    def prepare() -> dict[str, Any]:
        corpus = bases(work / "bases")
        import h5py  # noqa: F401 - imported before the cap and the first alarm
        import torch  # noqa: F401

        import medload  # noqa: F401

        return corpus

    corpus = sandbox.confine(memory, memory // 8, prepare=prepare)

    def one(index: int) -> tuple[Any, ...]:
        case_dir = work / f"c{index}"
        run_dir = work / f"r{index}"
        run_dir.mkdir()
        try:
            with sandbox.alarm_after(timeout):
                kind, base, job = make_case(seed, index, corpus, case_dir)
        except sandbox.Alarm:
            return "?", "?", "harness", "making the case timed out"
        except Exception as exc:  # noqa: BLE001 - a harness bug is reported, not a crash
            return "?", "?", "harness", f"{type(exc).__name__}: {exc} at {_where(exc)}"
        outcome, detail = sandbox.guarded(timeout, lambda: run_case(kind, job, run_dir))
        shutil.rmtree(case_dir, ignore_errors=True)
        shutil.rmtree(run_dir, ignore_errors=True)
        return kind, base, outcome, detail

    sandbox.serve(conn, indices, one)
    shutil.rmtree(work, ignore_errors=True)


def _mutation(description: str) -> str:
    """A store case's mutator from its description (``base:mutator:detail``), with the chunk mutation's kind.

    Examples
    --------
    >>> _mutation("conv:chunk_bytes:chunk@4096+120 lz4:flip"), _mutation("made:flip:flip [12]")
    ('chunk_bytes:flip', 'flip')
    """
    parts = description.split(":")
    if len(parts) < 2:
        return "?"
    return f"{parts[1]}:{parts[-1]}" if parts[1] == "chunk_bytes" else parts[1]


def campaign(
    seed: int,
    cases: int,
    *,
    start: int = 0,
    workers: int = 1,
    timeout: int = 60,
    memory: int = 3 * 1024**3,
    progress: bool = False,
) -> dict[str, Any]:
    """Run cases ``start .. start + cases - 1`` of campaign ``seed``; return counts and findings."""
    todo = list(range(start, start + cases))
    tally = sandbox.Tally(cases, 25 if progress else 0)
    by_kind: dict[str, Counter] = {}
    by_mutator: dict[str, Counter] = {}

    def on_done(fields: tuple[Any, ...]) -> None:
        index, kind, base, outcome, detail = fields
        by_kind.setdefault(kind, Counter())[outcome] += 1
        if kind == "store":
            by_mutator.setdefault(_mutation(base), Counter())[outcome] += 1
        bad = outcome in BAD
        tally.add(outcome, {"index": index, "kind": kind, "base": base, "outcome": outcome, "detail": detail} if bad else None)

    chunks = [todo[k::workers] for k in range(workers)]
    sandbox.supervise(_worker, chunks, (seed, timeout, memory), on_done=on_done, on_crash=tally.crash)
    return {
        "seed": seed,
        "start": start,
        "cases": cases,
        "seconds": tally.seconds(),
        "counts": dict(tally.counts),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "by_mutator": {k: dict(v) for k, v in sorted(by_mutator.items())},
        "findings": sorted(tally.findings, key=lambda f: f["index"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=60, help="seconds per case before it counts as a hang")
    parser.add_argument("--memory", type=float, default=3.0, help="address-space cap of a worker in GiB")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--only", type=int, help="run this one case in this process and keep its files")
    parser.add_argument("--keep", default=".", help="folder for --only's files")
    args = parser.parse_args(argv)
    if args.only is not None:
        sys.path.insert(0, str(ROOT))
        keep = Path(args.keep).resolve() / f"fuzzs-{args.seed}-{args.only}"
        corpus = bases(keep / "bases")
        kind, base, job = make_case(args.seed, args.only, corpus, keep / "case")
        (keep / "run").mkdir(exist_ok=True)
        print(kind, base, job, *run_case(kind, job, keep / "run"))
        return 0
    result = campaign(
        args.seed,
        args.cases,
        start=args.start,
        workers=args.workers,
        timeout=args.timeout,
        memory=int(args.memory * 1024**3),
        progress=True,
    )
    return sandbox.report(
        result, args.json, ("seed", "cases", "seconds", "counts", "by_kind", "by_mutator"), result["findings"][:60], BAD
    )


if __name__ == "__main__":
    sys.exit(main())
