"""Direct chunk reads (os.preadv + cramjam's LZ4) return exactly what the h5py path returns, or step aside.

The reader counts its read calls per path in ``reader._read_paths`` (``"direct"`` or
``"h5py"``); ``reader._direct = False`` forces the h5py path, the reference here.
"""

from __future__ import annotations

import multiprocessing
import pickle

import h5py
import hdf5plugin
import cramjam
import numpy as np
import pytest

import medload
import medload.store._format as fmt
import medload.store.lz4frame as lz4frame
from medload.errors import StoreError
import medload.store.chunks as reader_module  # the direct chunk reader (moved out of reader.py)
from fixtures.stores import synthetic_mask, synthetic_volume

CHANNELS = ("brain", "subdural", "bone")


def assert_bit_equal(got: np.ndarray, want: np.ndarray) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes()


def write_store(path, dtype: str, compression: str) -> None:
    """Three volumes: 3D with a mask, 3D without, and a 4D (Z, C, H, W) one with a mask."""
    data = "int16" if dtype == "int16" else "float32"
    volumes = [
        synthetic_volume(0, dtype=data, shape=(7, 24, 20)),
        synthetic_volume(1, dtype=data, shape=(5, 16, 16)),
        synthetic_volume(2, dtype=data, shape=(6, 12, 18), channels=CHANNELS),
    ]
    with medload.Store.create(path, dtype=dtype, compression=compression) as store:
        for i, volume in enumerate(volumes):
            store.add(volume, mask=None if i == 1 else synthetic_mask(volume))


def reference(path) -> medload.store.StoreReader:
    ref = medload.open(path)
    ref._direct = False
    return ref


def compare_everything(fast, ref, rng: np.random.Generator) -> None:
    """Single slices, every run, random orders and whole volumes, images (raw and decoded) and masks."""
    for v, record in enumerate(fast.volumes):
        n = record.n_slices
        for raw in (False, True):
            assert_bit_equal(fast.read_slices(v, 0, n, raw=raw), ref.read_slices(v, 0, n, raw=raw))
        for start in range(n):
            for stop in range(start + 1, n + 1):
                assert_bit_equal(fast.read_slices(v, start, stop), ref.read_slices(v, start, stop))
                if record.has_mask:
                    assert_bit_equal(fast.read_mask(v, start, stop), ref.read_mask(v, start, stop))
        assert fast.read_slices(v, 2, 2).shape == (0, *record.slice_shape)
    index = fast.index
    for i in rng.permutation(len(index)):
        v, z = int(index["volume"][i]), int(index["slice"][i])
        for raw in (True, False):
            got = fast.read_slices(v, z, z + 1, raw=raw)
            assert_bit_equal(got, ref.read_slices(v, z, z + 1, raw=raw))
            assert got.flags.writeable  # as from h5py: callers may change what they get
        if fast.volumes[v].has_mask:
            assert fast.read_mask(v, z, z + 1).flags.writeable
    for v, _record in enumerate(fast.volumes):
        image, mask = fast.read_volume(v, mask=True)
        ref_image, ref_mask = ref.read_volume(v, mask=True)
        assert_bit_equal(image.array, ref_image.array)
        assert (mask is None) == (ref_mask is None)
        if mask is not None:
            assert_bit_equal(mask.array, ref_mask.array)


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd:1"])
@pytest.mark.parametrize("dtype", ["uint8", "float16", "int16", "float32"])
def test_direct_reads_equal_h5py_reads(tmp_path, dtype, compression):
    path = tmp_path / "s.h5"
    write_store(path, dtype, compression)
    fast, ref = medload.open(path), reference(path)
    compare_everything(fast, ref, np.random.default_rng(0))
    # The data are what was written (within the documented quantization), not just self-consistent.
    expected = synthetic_volume(1, dtype="int16" if dtype == "int16" else "float32", shape=(5, 16, 16)).array
    tolerance = {"float32": 0, "int16": 0, "float16": 2.0**-11, "uint8": fast.volumes[1].scale / 2 + 1e-6}[dtype]
    assert np.abs(fast.read_slices(1, 0, 5) - expected).max() <= tolerance
    assert ref._read_paths["direct"] == 0 and ref._read_paths["h5py"] > 100
    if compression == "zstd:1":  # not a filter the direct path decodes: every read went through h5py
        assert fast._read_paths["direct"] == 0 and fast._read_paths["h5py"] > 100
    else:
        assert fast._read_paths["h5py"] == 0 and fast._read_paths["direct"] > 100


def test_multi_block_lz4_chunks_decode_exactly(tmp_path, monkeypatch):
    # hdf5plugin.LZ4(nbytes=...) sets the filter's block size; medload never does, but other
    # writers may. 1000 bytes does not divide a slice, so the last block of each chunk is short.
    original = fmt.parse_compression

    def small_blocks(spec, *, itemsize=2):
        canonical, kwargs = original(spec, itemsize=itemsize)
        return canonical, (dict(hdf5plugin.LZ4(nbytes=1000)) if canonical == "lz4" else kwargs)

    monkeypatch.setattr(fmt, "parse_compression", small_blocks)
    rng = np.random.default_rng(7)
    slices = np.zeros((4, 40, 50), np.float32)
    slices[:, :20] = rng.random((4, 20, 50))  # noise (blocks LZ4 cannot shrink: stored raw) then zeros
    path = tmp_path / "blocks.h5"
    with medload.Store.create(path, dtype="float32", compression="lz4") as store:
        store.add(medload.Volume(slices, np.eye(4)), mask=(slices > 0.5).astype(np.uint8))
    with h5py.File(path) as f:
        image = f["volumes"][medload.open(path).volumes[0].key]["image"]
        assert image.id.get_create_plist().get_filter(0)[2] == (1000,)
        _, chunk = image.id.read_direct_chunk((0, 0, 0))
    header = np.frombuffer(chunk[:12], ">u8", count=1)[0], np.frombuffer(chunk[8:12], ">u4")[0]
    assert header == (8000, 1000)
    kinds, pos = [], 12
    for done in range(0, 8000, 1000):
        stored = int.from_bytes(chunk[pos : pos + 4], "big")
        kinds.append("raw" if stored == min(1000, 8000 - done) else "lz4")
        pos += 4 + stored
    assert pos == len(chunk) and kinds == ["raw"] * 4 + ["lz4"] * 4

    fast = medload.open(path)
    for z in range(4):
        assert_bit_equal(fast.read_slices(0, z, z + 1)[0], slices[z])
    assert_bit_equal(fast.read_slices(0, 0, 4), slices)
    assert_bit_equal(fast.read_mask(0, 1, 3), (slices[1:3] > 0.5).astype(np.uint8))
    assert fast._read_paths == {"direct": 6, "h5py": 0}


def test_a_2048_square_slice_decodes_exactly(tmp_path):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:2048, 0:2048]
    image = np.clip(0.5 + 0.4 * np.sin(xx / 50.0) * np.cos(yy / 70.0) + 0.05 * rng.random((2048, 2048)), 0, 1)
    path = tmp_path / "big.h5"
    with medload.Store.create(path, dtype="uint8", compression="lz4", value_range=(0, 1)) as store:
        store.add(medload.Volume(image[None].astype(np.float32), np.eye(4)))
    fast, ref = medload.open(path), reference(path)
    assert_bit_equal(fast.read_slices(0, 0, 1, raw=True), ref.read_slices(0, 0, 1, raw=True))
    assert np.abs(fast.read_slices(0, 0, 1)[0] - image).max() <= fast.volumes[0].scale / 2 + 1e-6
    assert fast._read_paths == {"direct": 2, "h5py": 0}


def test_two_filters_fall_back(tmp_path):
    path = tmp_path / "shuffled.h5"
    write_store(path, "float16", "lz4+shuffle")
    fast, ref = medload.open(path), reference(path)
    compare_everything(fast, ref, np.random.default_rng(1))
    assert fast._read_paths["direct"] == 0 and fast._read_paths["h5py"] > 100


def _rewrite_image(path, key: str, *, chunks, written=None, **filters) -> np.ndarray:
    """Replace a volume's image dataset in place (same shape and dtype) and return its values."""
    with h5py.File(path, "r+") as f:
        group = f["volumes"][key]
        values = group["image"][()]
        attrs = dict(group["image"].attrs)
        del group["image"]
        ds = group.create_dataset("image", shape=values.shape, dtype=values.dtype, chunks=chunks, **filters)
        ds.attrs.update(attrs)
        for z in range(len(values)) if written is None else written:
            ds[z] = values[z]
    return values


def test_chunks_of_several_slices_fall_back(tmp_path):
    path = tmp_path / "s.h5"
    write_store(path, "uint8", "lz4")
    key = medload.open(path).volumes[0].key
    values = _rewrite_image(path, key, chunks=(2, 24, 20), **hdf5plugin.LZ4())
    fast = medload.open(path)
    assert_bit_equal(fast.read_slices(0, 0, 7, raw=True), values)
    assert_bit_equal(fast.read_slices(0, 3, 4, raw=True), values[3:4])
    assert fast._read_paths == {"direct": 0, "h5py": 2}
    fast.read_slices(1, 0, 1)  # the other volumes still qualify
    assert fast._read_paths == {"direct": 1, "h5py": 2}


@pytest.mark.parametrize("compression", ["none", "lz4"])
def test_unwritten_chunks_are_refused_not_read_as_zeros(tmp_path, compression):
    # Every chunk of a complete volume is written; HDF5 reads one that was not as its fill
    # value (zeros), which the reader returned before (a silently wrong slice).
    path = tmp_path / "s.h5"
    write_store(path, "uint8", compression)
    key = medload.open(path).volumes[0].key
    filters = dict(hdf5plugin.LZ4()) if compression == "lz4" else {}
    _rewrite_image(path, key, chunks=(1, 24, 20), written=[0, 1, 2, 5, 6], **filters)
    fast = medload.open(path)
    with pytest.raises(StoreError, match=rf"volume {key}'s image has 5 of its 7 chunks stored \(the rest would read as zeros\)"):
        fast.read_slices(0, 0, 3, raw=True)
    fast.read_slices(1, 0, 1)  # the other volumes still read


def test_a_chunk_stored_without_its_filter_falls_back(tmp_path):
    # HDF5 may store a chunk with the filter skipped (filter mask bit set); its bytes are raw.
    path = tmp_path / "s.h5"
    write_store(path, "uint8", "lz4")
    key = medload.open(path).volumes[0].key
    replacement = np.arange(24 * 20, dtype=np.uint8).reshape(24, 20)
    with h5py.File(path, "r+") as f:
        f["volumes"][key]["image"].id.write_direct_chunk((3, 0, 0), replacement.tobytes(), filter_mask=1)
    fast, ref = medload.open(path), reference(path)
    assert_bit_equal(fast.read_slices(0, 3, 4, raw=True)[0], replacement)
    assert_bit_equal(fast.read_slices(0, 0, 7), ref.read_slices(0, 0, 7))
    assert_bit_equal(fast.read_slices(0, 4, 7), ref.read_slices(0, 4, 7))
    assert fast._read_paths == {"direct": 1, "h5py": 2}


def test_without_cramjam_installed_lz4_stores_read_through_h5py(tmp_path, monkeypatch):
    monkeypatch.setattr(reader_module, "_lz4_block_into", None)
    for compression in ("lz4", "none"):
        path = tmp_path / f"{compression}.h5"
        write_store(path, "uint8", compression)
        fast, ref = medload.open(path), reference(path)
        assert_bit_equal(fast.read_slices(0, 0, 7), ref.read_slices(0, 0, 7))
        assert_bit_equal(fast.read_slices(2, 1, 2), ref.read_slices(2, 1, 2))
        # Uncompressed chunks need no LZ4 decoder: those are still read directly.
        assert fast._read_paths == ({"direct": 0, "h5py": 2} if compression == "lz4" else {"direct": 2, "h5py": 0})


def _decoded(chunk: bytes, nbytes: int) -> bytes | None:
    """decode_lz4_chunk_into's result for ``chunk`` into a row of ``nbytes`` (None when it refuses)."""
    out = np.full(nbytes, 0xAB, np.uint8)
    return out.tobytes() if lz4frame.decode_lz4_chunk_into(chunk, out, cramjam.lz4.decompress_block_into) else None


def lz4_block(raw: bytes) -> bytes:
    return bytes(cramjam.lz4.compress_block(raw, store_size=False))


def test_lz4_framing_that_disagrees_is_refused():
    raw = (np.arange(3000) % 7).astype(np.uint8).tobytes()
    block = lz4_block(raw)
    good = (3000).to_bytes(8, "big") + (4096).to_bytes(4, "big") + len(block).to_bytes(4, "big") + block
    assert _decoded(good, 3000) == raw  # block size above the original size: capped
    with pytest.raises(lz4frame.LZ4SizeError):  # another original size than the slice's: refused, not left to HDF5
        _decoded(good, 3001)
    assert _decoded(good[:-1], 3000) is None  # truncated
    assert _decoded(good + b"\0", 3000) is None  # trailing bytes
    assert _decoded(good[:12], 3000) is None  # no block at all
    broken = bytearray(good)
    broken[16:24] = b"\xff" * 8  # corrupt LZ4 tokens
    assert _decoded(bytes(broken), 3000) is None
    zero_block = (3000).to_bytes(8, "big") + (0).to_bytes(4, "big") + good[12:]
    assert _decoded(zero_block, 3000) is None
    # Two blocks, the first raw, the second compressed and short, as the filter writes them.
    second = lz4_block(raw[2000:])
    two = (
        (3000).to_bytes(8, "big")
        + (2000).to_bytes(4, "big")
        + (2000).to_bytes(4, "big")
        + raw[:2000]
        + len(second).to_bytes(4, "big")
        + second
    )
    assert _decoded(two, 3000) == raw
    assert _decoded(two[:-3], 3000) is None


def test_a_block_that_reads_as_size_prefixed_is_left_to_hdf5():
    # cramjam retries a block it cannot decode as one led by a 4-byte little-endian size. A
    # corrupt block whose first 4 bytes say the slice's size could then decode to the right
    # length from the wrong bytes; such blocks are refused (HDF5 decodes or rejects them).
    raw = bytes(range(256)) * 16
    prefixed = bytes(cramjam.lz4.compress_block(raw, store_size=True))
    assert int.from_bytes(prefixed[:4], "little") == len(raw)
    chunk = len(raw).to_bytes(8, "big") + len(raw).to_bytes(4, "big") + len(prefixed).to_bytes(4, "big") + prefixed
    out = np.zeros(len(raw), np.uint8)
    assert cramjam.lz4.decompress_block_into(prefixed, out, output_len=len(raw)) == len(raw)  # cramjam's retry
    assert _decoded(chunk, len(raw)) is None


def _read_in_child(reader, queue) -> None:
    queue.put(
        (
            reader.read_slices(0, 0, 7, raw=True).tobytes(),
            reader.read_mask(2, 1, 4).tobytes(),
            dict(reader._read_paths),
            len(reader._chunk_tables),
        )
    )


def test_chunk_tables_are_per_process(tmp_path):
    path = tmp_path / "s.h5"
    write_store(path, "uint8", "lz4")
    parent = medload.open(path)
    image, mask = parent.read_slices(0, 0, 7, raw=True), parent.read_mask(2, 1, 4)
    assert len(parent._chunk_tables) == 2
    # fork: the child must not use the parent's handles, descriptors or tables; it builds its own.
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(parent, queue))
    child.start()
    got_image, got_mask, paths, tables = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert got_image == image.tobytes() and got_mask == mask.tobytes()
    assert paths == {"direct": 2, "h5py": 0} and tables == 2
    # spawn pickles the reader: no tables travel, they are rebuilt on first read.
    clone = pickle.loads(pickle.dumps(parent))
    assert clone._chunk_tables == {} and clone._direct
    assert_bit_equal(clone.read_slices(0, 0, 7, raw=True), image)
    # close() drops the tables with the files; reading again reopens both.
    parent.close()
    assert parent._chunk_tables == {}
    assert_bit_equal(parent.read_mask(2, 1, 4), mask)
    assert parent._read_paths == {"direct": 1, "h5py": 0}


def test_without_preadv_uncompressed_chunks_are_read_with_pread(tmp_path, monkeypatch):
    path = tmp_path / "s.h5"
    write_store(path, "int16", "none")
    ref = reference(path)
    monkeypatch.delattr(reader_module.os, "preadv")
    fast = medload.open(path)
    assert_bit_equal(fast.read_slices(0, 0, 7), ref.read_slices(0, 0, 7))
    assert_bit_equal(fast.read_slices(2, 3, 4, raw=True), ref.read_slices(2, 3, 4, raw=True))
    assert_bit_equal(fast.read_mask(2, 0, 6), ref.read_mask(2, 0, 6))
    assert fast._read_paths == {"direct": 3, "h5py": 0}


# ---------------------------------------------------------------- whole batches (read_batch)


def write_batch_store(path, dtype: str, compression: str) -> None:
    """Two 3D volumes and a (Z, C, H, W) one, all with 16x16 slices, each with its own scale."""
    data = "int16" if dtype == "int16" else "float32"
    with medload.Store.create(path, dtype=dtype, compression=compression) as store:
        store.add(synthetic_volume(4, dtype=data, shape=(7, 16, 16)))
        store.add(synthetic_volume(5, dtype=data, shape=(5, 16, 16)))
        store.add(synthetic_volume(6, dtype=data, shape=(4, 16, 16), channels=CHANNELS))


def h5py_rows(path, reader, volumes, slices, *, raw: bool) -> np.ndarray:
    """What h5py itself reads for each (volume, slice), decoded as the reader documents (stored * scale + offset in float32)."""
    rows = []
    with h5py.File(path, "r") as f:
        for v, z in zip(volumes, slices):
            record = reader.volumes[v]
            stored = f["volumes"][record.key]["image"][z]
            if not raw and stored.dtype != np.float32:
                stored = stored.astype(np.float32)
                if np.issubdtype(record.dtype, np.integer):
                    stored = stored * np.float32(record.scale) + np.float32(record.offset)
            rows.append(stored)
    return np.stack(rows)


@pytest.mark.parametrize("compression", ["none", "lz4", "zstd:1", "lz4+shuffle"])
@pytest.mark.parametrize("dtype", ["uint8", "float16", "int16", "float32"])
def test_read_batch_rows_equal_h5pys_own_reads(tmp_path, dtype, compression):
    path = tmp_path / "s.h5"
    write_batch_store(path, dtype, compression)
    fast, ref = medload.open(path), reference(path)
    assert fast.volumes[0].scale != fast.volumes[1].scale or dtype in ("float32", "float16", "int16")
    rng = np.random.default_rng(5)
    pairs = [(v, z) for v in (0, 1) for z in range(fast.volumes[v].n_slices)]
    batches = [
        [pairs[i] for i in rng.permutation(len(pairs))],  # shuffled over both volumes
        [(0, 2), (0, 3), (0, 4), (1, 0), (1, 1), (0, 0), (0, 0)],  # runs, a volume change, a repeat
        [(1, 4)],
        [(2, 3), (2, 0), (2, 1)],  # (C, H, W) rows of the channel volume
    ]
    for batch in batches:
        volumes, slices = [v for v, _ in batch], [z for _, z in batch]
        row = fast.volumes[volumes[0]].slice_shape
        for raw in (False, True):
            want = h5py_rows(path, fast, volumes, slices, raw=raw)
            for reader in (fast, ref):
                out = np.full((len(batch), *row), 7, want.dtype)
                assert reader.read_batch(volumes, slices, out, raw=raw) is out
                assert_bit_equal(out, want)
                for i, (v, z) in enumerate(batch):  # the same rows as read_slices, one by one
                    assert_bit_equal(out[i], reader.read_slices(v, z, z + 1, raw=raw)[0])
    direct = fast._read_paths["direct"] > 0
    assert direct == (compression in ("none", "lz4")) and ref._read_paths["direct"] == 0
    if direct:
        assert fast._read_paths["h5py"] == 0


def test_read_batch_takes_channel_first_rows_of_3d_volumes_and_refuses_wrong_outs(tmp_path):
    path = tmp_path / "s.h5"
    write_batch_store(path, "uint8", "lz4")
    reader = medload.open(path)
    out = np.empty((2, 1, 16, 16), np.float32)  # (B, C, H, W): a batch of channel-first items
    reader.read_batch([1, 0], [2, 6], out)
    assert_bit_equal(out[:, 0], np.concatenate([reader.read_slices(1, 2, 3), reader.read_slices(0, 6, 7)]))
    with pytest.raises(medload.ConfigError, match="out must be uint8"):
        reader.read_batch([0], [0], np.empty((1, 16, 16), np.float32), raw=True)
    with pytest.raises(medload.ConfigError, match="one row of a C-contiguous out per slice"):
        reader.read_batch([0, 0], [0, 1], np.empty((3, 16, 16), np.float32))
    with pytest.raises(medload.ConfigError, match="slices of one size"):
        reader.read_batch([0, 2], [0, 0], np.empty((2, 16, 16), np.float32))
    with pytest.raises(medload.StoreError, match=r"slices 5:7 are outside volume"):
        reader.read_batch([1, 1], [5, 6], np.empty((2, 16, 16), np.float32))
    assert reader.read_batch([], [], np.empty((0, 16, 16), np.float32)).shape == (0, 16, 16)


def write_compressible_store(path) -> None:
    """Like write_batch_store (uint8, LZ4), with smooth slices LZ4 shrinks (each chunk one LZ4 block)."""
    ramp = np.add.outer(np.arange(16), np.arange(16)) // 8 / 4.0
    with medload.Store.create(path, dtype="uint8", compression="lz4", value_range=(0, 10)) as store:
        for i, (depth, channels) in enumerate(((7, None), (5, None), (4, CHANNELS))):
            shape = (depth, 16, 16) if channels is None else (len(channels), depth, 16, 16)
            array = ramp + np.arange(depth).reshape((depth, 1, 1) if channels is None else (1, depth, 1, 1))
            meta = {"series_key": f"s{i}", "source_hash": f"h{i}"} | ({"channels": list(channels)} if channels else {})
            store.add(medload.Volume(np.broadcast_to(array, shape).astype(np.float32), np.eye(4), meta=meta))


def _chunk_place(path, key: str, z: int) -> tuple[int, int]:
    with h5py.File(path, "r") as f:
        image = f["volumes"][key]["image"]
        info = image.id.get_chunk_info_by_coord((z,) + (0,) * (image.ndim - 1))
    return info.byte_offset, info.size


def test_a_corrupt_lz4_chunk_is_a_store_error_naming_the_file(tmp_path):
    torch = pytest.importorskip("torch")
    from medload.datasets import SliceDataset

    path = tmp_path / "corrupt.h5"
    write_compressible_store(path)
    reader = medload.open(path)
    good = reader.read_slices(0, 0, 7, raw=True)
    offset, size = _chunk_place(path, reader.volumes[0].key, 3)
    assert size < 16 + 256 // 2  # an LZ4 block, not a raw one (raw bytes have no check to fail)
    with open(path, "r+b") as f:  # LZ4 tokens asking for more literals than the block holds
        f.seek(offset + 16)
        f.write(b"\xff" * min(64, size - 16))
    for fresh in (medload.open(path), reader):  # a new reader, and one that had read the file before
        with pytest.raises(medload.StoreError, match=rf"{path.name}.*slices 3:4 of volume .*failed"):
            fresh.read_slices(0, 3, 4)
        with pytest.raises(medload.StoreError, match=path.name):
            fresh.read_batch([1, 0], [0, 3], np.empty((2, 16, 16), np.uint8), raw=True)
        # The other slices still read, and equal what was written.
        assert_bit_equal(fresh.read_slices(0, 4, 7, raw=True), good[4:])
    for compact in (True, False):
        loader = SliceDataset(path, select={"channels": 1}).loader(4, compact=compact)
        with pytest.raises(medload.StoreError, match=path.name):
            for _ in loader:
                pass
    # Volumes without the corrupt chunk load as before.
    batch = next(iter(SliceDataset(path, select=lambda r: r.n_slices == 5).loader(5)))
    assert torch.equal(batch["image"][:, 0], torch.from_numpy(reader.read_slices(1, 0, 5)))


def test_a_store_truncated_while_open_is_a_store_error_naming_the_file(tmp_path):
    path = tmp_path / "cut.h5"
    write_compressible_store(path)
    reader = medload.open(path)
    reader.read_slices(2, 0, 1)  # the file is open and its chunk tables built
    offset, _ = _chunk_place(path, reader.volumes[2].key, 3)
    with open(path, "r+b") as f:
        f.truncate(offset + 20)  # in the middle of the last volume's slice 3
    with pytest.raises(medload.StoreError, match=rf"{path.name}.*slices 3:4 of volume"):
        reader.read_slices(2, 3, 4)
    with pytest.raises(medload.StoreError, match=path.name):
        reader.read_batch([2], [3], np.empty((1, 3, 16, 16), np.float32))


def test_threads_reading_at_once_get_the_rows_one_thread_gets(tmp_path):
    # tf.data's parallel map reads batches from several threads; os.preadv and cramjam run
    # outside the GIL, so the reused read buffers must be per thread.
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "s.h5"
    with medload.Store.create(path, dtype="uint8", compression="lz4") as store:
        for seed in range(4):
            store.add(synthetic_volume(seed, shape=(12, 48, 48)))
    reader = medload.open(path)
    pairs = np.array([(v, z) for v in range(4) for z in range(12)])
    batches = [pairs[np.random.default_rng(i).permutation(len(pairs))[:16]] for i in range(48)]
    # float32 rows (chunks read with os.preadv into per-thread buffers) and stored rows (decoded
    # from the mapped file, as compact batches are)
    for dtype, raw in ((np.float32, False), (np.uint8, True)):
        want = [reader.read_batch(b[:, 0], b[:, 1], np.empty((16, 48, 48), dtype), raw=raw) for b in batches]

        def read(i: int, dtype=dtype, raw=raw, want=want) -> bool:
            got = reader.read_batch(batches[i][:, 0], batches[i][:, 1], np.empty((16, 48, 48), dtype), raw=raw)
            return got.tobytes() == want[i].tobytes()

        with ThreadPoolExecutor(4) as pool:
            assert all(pool.map(read, [i for _ in range(5) for i in range(len(batches))]))
    assert reader._read_paths["h5py"] == 0 and len(reader._file_maps) == 1


# ---------------------------------------------------------------- batches decoded from the mapped file


class _Spy:
    """Counts the rows FileMap.decode_rows was given and left, and the slow path's one-slice reads."""

    def __init__(self, monkeypatch) -> None:
        self.given = self.left = self.one_by_one = 0
        decode_rows, read_one_into = reader_module.FileMap.decode_rows, reader_module.ChunkTable.read_one_into

        def counted_decode(fmap, offsets, sizes, rows, out):
            left = decode_rows(fmap, offsets, sizes, rows, out)
            self.given += len(rows)
            self.left += len(left)
            return left

        def counted_one(table, z, row):
            self.one_by_one += 1
            return read_one_into(table, z, row)

        monkeypatch.setattr(reader_module.FileMap, "decode_rows", counted_decode)
        monkeypatch.setattr(reader_module.ChunkTable, "read_one_into", counted_one)


def test_lz4_batches_decode_from_the_mapped_file_into_the_rows_h5py_reads(tmp_path, monkeypatch):
    # write_batch_store's noise: LZ4 keeps each block raw; write_compressible_store's ramps: LZ4 blocks.
    path, compressible = tmp_path / "s.h5", tmp_path / "c.h5"
    write_batch_store(path, "uint8", "lz4")
    write_compressible_store(compressible)
    spy = _Spy(monkeypatch)
    for where in (path, compressible):
        reader = medload.open(where)
        rng = np.random.default_rng(11)
        pairs = [(v, z) for v in (0, 1) for z in range(reader.volumes[v].n_slices)]
        for size in (1, 5, 12):
            batch = [pairs[i] for i in rng.permutation(len(pairs))[:size]] + [(0, 2), (0, 3)]  # a run at the end
            volumes, slices = [v for v, _ in batch], [z for _, z in batch]
            out = np.full((len(batch), 1, 16, 16), 7, np.uint8)
            reader.read_batch(volumes, slices, out, raw=True)
            assert_bit_equal(out[:, 0], h5py_rows(where, reader, volumes, slices, raw=True))
        assert reader._read_paths == {"direct": 24, "h5py": 0} and len(reader._file_maps) == 1
    assert spy.given == 2 * (1 + 5 + 12 + 6) and spy.left == 0 and spy.one_by_one == 0
    sizes = [_chunk_place(where, medload.open(where).volumes[0].key, 0)[1] for where in (path, compressible)]
    assert sizes[0] == 16 + 256 and sizes[1] < 16 + 128  # one block kept raw, one LZ4 block
    # Float rows of a uint8 store are decoded from stored values in a scratch array, not mapped.
    reader.read_batch([0, 1], [1, 1], np.empty((2, 16, 16), np.float32))
    assert spy.given == 48


def test_mapped_batches_leave_other_framings_to_the_chunk_reader(tmp_path, monkeypatch):
    # Multi-block chunks (another writer's block size) and a chunk stored with the filter
    # skipped are not one LZ4 block: their rows go the old way, and equal h5py's.
    original = fmt.parse_compression

    def small_blocks(spec, *, itemsize=2):
        canonical, kwargs = original(spec, itemsize=itemsize)
        return canonical, (dict(hdf5plugin.LZ4(nbytes=100)) if canonical == "lz4" else kwargs)

    path = tmp_path / "blocks.h5"
    monkeypatch.setattr(fmt, "parse_compression", small_blocks)
    with medload.Store.create(path, dtype="uint8", compression="lz4") as store:
        store.add(synthetic_volume(8, shape=(4, 16, 16)))
    monkeypatch.setattr(fmt, "parse_compression", original)
    with medload.Store.create(tmp_path / "one.h5", dtype="uint8", compression="lz4") as store:
        store.add(synthetic_volume(9, shape=(5, 16, 16)))
    replacement = np.arange(256, dtype=np.uint8).reshape(16, 16)
    with h5py.File(tmp_path / "one.h5", "r+") as f:
        f["volumes"][medload.open(tmp_path / "one.h5").volumes[0].key]["image"].id.write_direct_chunk(
            (2, 0, 0), replacement.tobytes(), filter_mask=1
        )
    spy = _Spy(monkeypatch)
    for name in ("blocks.h5", "one.h5"):
        reader = medload.open(tmp_path / name)
        n = reader.volumes[0].n_slices
        slices = list(range(n))[::-1]
        out = np.empty((n, 16, 16), np.uint8)
        reader.read_batch([0] * n, slices, out, raw=True)
        assert_bit_equal(out, h5py_rows(tmp_path / name, reader, [0] * n, slices, raw=True))
        assert reader._read_paths["h5py"] == (1 if name == "one.h5" else 0)
    assert_bit_equal(out[n - 1 - 2], replacement)
    # blocks.h5: 4 rows given, 4 left; one.h5: 5 given, the unfiltered chunk's left (h5py reads it).
    assert (spy.given, spy.left, spy.one_by_one) == (9, 5, 5)


def test_a_mapped_store_cut_short_after_opening_is_a_store_error_not_a_crash(tmp_path):
    path = tmp_path / "cut.h5"
    write_compressible_store(path)
    reader = medload.open(path)
    out = np.empty((2, 3, 16, 16), np.uint8)
    reader.read_batch([2, 2], [0, 2], out, raw=True)  # the file is mapped at its whole length
    assert len(reader._file_maps) == 1
    offset, _ = _chunk_place(path, reader.volumes[2].key, 3)
    with open(path, "r+b") as f:
        f.truncate(offset + 20)  # in the middle of slice 3; the mapping still spans the old length
    with pytest.raises(medload.StoreError, match=rf"{path.name}.*slices 3:4 of volume"):
        reader.read_batch([2, 2], [0, 3], out, raw=True)
    reader.read_batch([2], [1], out[:1], raw=True)  # the slices before the cut still read


@pytest.mark.parametrize("compression", ["lz4", "none", "zstd:1"])
def test_mask_batches_equal_h5pys_masks_in_any_integer_type(tmp_path, monkeypatch, compression):
    path = tmp_path / "s.h5"
    write_store(path, "uint8", compression)  # volumes 0 and 2 have masks, 1 has none
    spy = _Spy(monkeypatch)
    reader, ref = medload.open(path), reference(path)
    rng = np.random.default_rng(3)
    pairs = [(v, z) for v in (0, 2) for z in range(reader.volumes[v].n_slices)]
    with h5py.File(path, "r") as f:
        stored = {v: f["volumes"][reader.volumes[v].key]["mask"][()] for v in (0, 2)}
    for batch in ([pairs[i] for i in rng.permutation(len(pairs))], [(2, 1), (2, 2), (2, 3), (2, 0)]):
        volumes, slices = [v for v, _ in batch], [z for _, z in batch]
        want = np.stack([stored[v][z] for v, z in batch]) if len({v for v in volumes}) == 1 else None
        for dtype in (np.uint8, np.int64):
            for r in (reader, ref):
                if want is None:  # two slice sizes (24x20 and 12x18): one batch per volume
                    for v in (0, 2):
                        rows = [i for i, (w, _) in enumerate(batch) if w == v]
                        out = np.full((len(rows), 1, *stored[v].shape[1:]), 99, dtype)
                        r.read_mask_batch([v] * len(rows), [slices[i] for i in rows], out)
                        assert_bit_equal(out[:, 0], np.stack([stored[v][slices[i]] for i in rows]).astype(dtype))
                else:
                    out = np.full((len(batch), *want.shape[1:]), 99, dtype)
                    assert r.read_mask_batch(volumes, slices, out) is out
                    assert_bit_equal(out, want.astype(dtype))
    assert ref._read_paths["direct"] == 0
    assert spy.given > 0 if compression == "lz4" else spy.given == 0
    with pytest.raises(StoreError, match="volume .* has no mask"):
        reader.read_mask_batch([0, 1], [0, 0], np.empty((2, 24, 20), np.uint8))
