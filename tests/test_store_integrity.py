"""A store never hands a silently wrong volume to training, nor allocates what its file declares.

Stores are copied across disks and sit on network shares for years: a flipped bit inside
stored pixel bytes must be caught (each volume's checksum), and a catalog that declares a
volume beyond the per-volume limit (``MEDLOAD_MAX_VOLUME_BYTES``, the readers' limit) must be
refused before anything is allocated.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

import medload
from fixtures.stores import build_store
from medload.errors import ChecksumError, StoreError

ROOT = Path(__file__).resolve().parents[1]


def _declare_huge_volume(path: Path, shape: tuple[int, int, int]) -> None:
    """Replace volume ser-0000's image by one of ``shape`` whose every chunk is stored (zeros, deflated)."""
    with h5py.File(path, "r+") as f:
        group = f["volumes"]["ser-0000"]
        attrs = dict(group["image"].attrs)
        del group["image"]
        ds = group.create_dataset("image", shape=shape, dtype=np.uint8, chunks=(1, *shape[1:]), compression="gzip")
        for name, value in attrs.items():
            ds.attrs[name] = value
        zeros = zlib.compress(bytes(shape[1] * shape[2]), 9)  # what HDF5's deflate filter stores
        for z in range(shape[0]):
            ds.id.write_direct_chunk((z, 0, 0), zeros)
        if "mask" in group:
            del group["mask"]
        entries = json.loads(f["catalog"][()])
        entries[0].update(shape=list(shape), has_mask=False)
        del f["catalog"]
        f.create_dataset("catalog", data=json.dumps(entries), dtype=h5py.string_dtype())


def test_a_volume_declared_over_the_limit_is_refused_at_read_before_any_allocation(tmp_path):
    # 512 slices of 4096 x 4096: 8 GiB stored, 32 GiB decoded to float32 (over the 16 GiB
    # default), in a file of ~9 MB. Before: read_volume allocated what the catalog declared.
    path = tmp_path / "s.h5"
    build_store(path, seeds=[0, 1])
    _declare_huge_volume(path, (512, 4096, 4096))
    assert path.stat().st_size < 64 * 1024**2
    script = textwrap.dedent(
        f"""
        import resource, sys
        sys.path.insert(0, {str(ROOT)!r})
        import numpy as np, medload
        from medload.errors import StoreError
        reader = medload.open({str(path)!r})
        resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))  # an 8 GiB array cannot be made
        for read in (lambda: reader.read_volume(0), lambda: reader.read_slices(0, 0, 1),
                     lambda: reader.read_batch([0], [0], np.empty((1, 4096, 4096), np.uint8), raw=True)):
            try:
                read()
                print("READ")
            except StoreError as exc:
                print("REFUSED", exc)
            except MemoryError:
                print("MEMORY")
        print("OTHER", reader.read_volume(1).shape)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(lines) == 4, done.stdout
    for line in lines[:3]:
        assert line.startswith("REFUSED"), line
        assert "s.h5: volume ser-0000: its catalog claims a volume of shape (512, 4096, 4096) x 4 bytes = 32.0 GiB" in line
        assert "above the per-volume limit of 16.0 GiB" in line and "MEDLOAD_MAX_VOLUME_BYTES=33G" in line
    assert lines[3] == "OTHER (6, 16, 16)"  # the store's other volume still reads


def test_the_limit_is_the_environment_s_and_a_volume_under_it_reads(tmp_path, monkeypatch):
    path = tmp_path / "s.h5"
    build_store(path, seeds=[0])
    monkeypatch.setenv("MEDLOAD_MAX_VOLUME_BYTES", "4K")  # 6 x 16 x 16 float32 = 6 KiB
    with pytest.raises(
        StoreError, match=r"volume ser-0000: its catalog claims .* = 6.0 KiB, above the per-volume limit of 4.0 KiB"
    ):
        medload.open(path).read_volume(0)
    with pytest.raises(StoreError, match=r"volume ser-0000's mask: its catalog claims a volume of shape \(6, 16, 16\) x 1 bytes"):
        monkeypatch.setenv("MEDLOAD_MAX_VOLUME_BYTES", "1K")
        medload.open(path).read_mask(0, 0, 1)
    monkeypatch.setenv("MEDLOAD_MAX_VOLUME_BYTES", "6K")
    assert medload.open(path).read_volume(0).shape == (6, 16, 16)


# --- bit flips inside stored pixel bytes -------------------------------------------------------


def _flip_last_byte(path: Path, key: str, name: str, z: int) -> None:
    """Flip the low bit of the last stored byte of slice ``z``'s chunk, as a failing disk would.

    The last bytes of an LZ4 block are always literals (the LZ4 block format), so the chunk
    still decodes, to one changed value: the silently wrong slice a checksum must catch.
    """
    with h5py.File(path, "r+") as f:
        ds = f["volumes"][key][name]
        filter_mask, chunk = ds.id.read_direct_chunk((z,) + (0,) * (ds.ndim - 1))
        chunk = bytearray(chunk)
        chunk[-1] ^= 1
        ds.id.write_direct_chunk((z,) + (0,) * (ds.ndim - 1), bytes(chunk), filter_mask)


@pytest.fixture(params=["lz4", "none"])
def store(request, tmp_path):
    path = tmp_path / "s.h5"
    build_store(path, seeds=[0, 1, 2], compression=request.param)
    return path


def test_a_flipped_bit_in_an_image_slice_is_caught_by_read_volume_and_verify(store):
    with medload.open(store) as reader:
        before = reader.read_slices(1, 3, 4, raw=True)
    _flip_last_byte(store, "ser-0001", "image", 3)
    reader = medload.open(store)
    # Without the check the damaged slice decodes, one value off: what training would have got.
    after = reader.read_slices(1, 3, 4, raw=True)
    assert int(np.count_nonzero(after != before)) == 1
    with pytest.raises(ChecksumError) as caught:
        reader.read_volume(1)
    message = str(caught.value)
    assert message.startswith(f"{store}: volume ser-0001: the stored bytes of its image slice 3 (1 of 6) do not match")
    assert "Copy the store again from a good copy or convert the sources again" in message
    assert f"`medload verify {store}` lists every damaged volume" in message
    assert caught.value.key == "ser-0001" and caught.value.slices == (3,)
    assert reader.read_volume(0).shape == (6, 16, 16) and reader.read_volume(2).shape == (6, 16, 16)
    report = reader.verify()
    assert not report.ok and report.volumes == 3 and report.by_slice == 3
    assert [(d.key, d.slices) for d in report.damaged] == [("ser-0001", (3,))]


def test_verify_slices_catches_the_damaged_slice_on_every_slice_read(store):
    _flip_last_byte(store, "ser-0002", "image", 5)
    reader = medload.open(store, verify_slices=True)
    np.testing.assert_array_equal(reader.read_slices(2, 0, 5, raw=True), medload.open(store).read_slices(2, 0, 5, raw=True))
    for read in (
        lambda r: r.read_slices(2, 5, 6),
        lambda r: r.read_slices(2, 4, 6, raw=True),
        lambda r: r.read_batch([0, 2], [1, 5], np.empty((2, 16, 16), np.uint8), raw=True),
        lambda r: r.read_batch([2, 2], [4, 5], np.empty((2, 16, 16), np.uint8), raw=True),
        lambda r: r.read_batch([2], [5], np.empty((1, 16, 16), np.float32)),
    ):
        for direct in (True, False):  # the direct chunk reads and h5py's
            reader._direct = direct
            reader.close()
            with pytest.raises(ChecksumError, match=r"s.h5: volume ser-0002: the stored bytes of its image slice 5 \(1 of 6\)"):
                read(reader)
    # The flag travels with the reader to DataLoader workers (pickled).
    import pickle

    with pytest.raises(ChecksumError, match="slice 5"):
        pickle.loads(pickle.dumps(reader)).read_slices(2, 5, 6)


def test_a_flipped_mask_byte_is_caught_when_the_mask_is_read(store):
    _flip_last_byte(store, "ser-0000", "mask", 2)
    reader = medload.open(store)
    assert reader.read_volume(0).shape == (6, 16, 16)  # the image is whole
    with pytest.raises(ChecksumError, match=r"volume ser-0000: the stored bytes of its mask slice 2 \(1 of 6\)"):
        reader.read_volume(0, mask=True)
    with pytest.raises(ChecksumError, match="mask slice 2"):
        medload.open(store, verify_slices=True).read_mask(0, 0, 6)
    for direct in (True, False):  # a batch's masks: decoded from the mapped file (LZ4), or h5py's
        checked = medload.open(store, verify_slices=True)
        checked._direct = direct
        with pytest.raises(ChecksumError, match="mask slice 2"):
            checked.read_mask_batch([0, 0], [5, 2], np.empty((2, 16, 16), np.uint8))
        checked.read_mask_batch([0, 0], [5, 1], np.empty((2, 16, 16), np.uint8))  # the others read
    assert [(d.key, d.slices) for d in reader.verify().damaged] == [("ser-0000", (2,))]


def test_chunks_swapped_between_slices_are_caught(store):
    # Each chunk decodes perfectly; the slices are in the wrong places.
    with h5py.File(store, "r+") as f:
        ds = f["volumes"]["ser-0001"]["image"]
        first, second = ds.id.read_direct_chunk((1, 0, 0)), ds.id.read_direct_chunk((4, 0, 0))
        ds.id.write_direct_chunk((1, 0, 0), second[1], second[0])
        ds.id.write_direct_chunk((4, 0, 0), first[1], first[0])
    with pytest.raises(ChecksumError, match=r"image slices 1, 4 \(2 of 6\)"):
        medload.open(store).read_volume(1)


def test_an_intact_store_verifies_clean_and_reads_as_before(store, capsys):
    from medload.cli import main

    reader = medload.open(store)
    report = reader.verify()
    assert report.ok and (report.volumes, report.by_slice, report.by_volume, report.unchecked) == (3, 3, 0, ())
    np.testing.assert_array_equal(medload.open(store, verify_slices=True).read_slices(0, 0, 6), reader.read_slices(0, 0, 6))
    assert main(["verify", str(store)]) == 0
    assert capsys.readouterr().out.strip() == f"{store}: 3 volumes read, 3 checked slice by slice; none damaged."


def test_medload_verify_lists_every_damaged_volume_and_exits_1(store, capsys):
    from medload.cli import main

    _flip_last_byte(store, "ser-0000", "image", 0)
    _flip_last_byte(store, "ser-0002", "mask", 5)
    assert main(["verify", str(store)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"damaged: ser-0000: {store}: volume ser-0000: the stored bytes of its image slice 0 (1 of 6)")
    assert lines[1].startswith(f"damaged: ser-0002: {store}: volume ser-0002: the stored bytes of its mask slice 5 (1 of 6)")
    assert lines[2] == f"{store}: 3 volumes read, 3 checked slice by slice; 2 damaged."
    assert main(["verify", str(store), "--json"]) == 1
    found = json.loads(capsys.readouterr().out)
    assert found["ok"] is False and [(d["key"], d["slices"]) for d in found["damaged"]] == [("ser-0000", [0]), ("ser-0002", [5])]


def _as_older_store(path: Path) -> None:
    """What medload wrote before slice checksums: the same file without the *_crc32 datasets."""
    with h5py.File(path, "r+") as f:
        for key in f["volumes"]:
            for name in ("image_crc32", "mask_crc32"):
                if name in f["volumes"][key]:
                    del f["volumes"][key][name]


def test_a_store_written_before_slice_checksums_reads_and_is_checked_by_its_volume_checksum(store, capsys):
    from medload.cli import main

    with medload.open(store) as reader:
        expected = reader.read_volume(1, mask=True)
    _as_older_store(store)
    reader = medload.open(store, verify_slices=True)  # nothing to check per slice: reads as before
    image, mask = reader.read_volume(1, mask=True)
    np.testing.assert_array_equal(image.array, expected[0].array)
    np.testing.assert_array_equal(mask.array, expected[1].array)
    report = reader.verify()
    assert report.ok and (report.by_slice, report.by_volume) == (0, 3)
    reader.close()
    _flip_last_byte(store, "ser-0001", "image", 3)
    with medload.open(store) as reader, pytest.raises(ChecksumError, match=r"ser-0001: its stored image and mask bytes do not"):
        reader.read_volume(1)  # the mask is read too: the one checksum covers both
    _flip_last_byte(store, "ser-0002", "mask", 0)
    with medload.open(store) as reader:
        damaged = reader.verify().damaged
    assert [(d.key, d.slices) for d in damaged] == [("ser-0001", ()), ("ser-0002", ())]
    assert main(["verify", str(store)]) == 1
    assert (
        "0 checked slice by slice, 3 by their one volume checksum (written before slice checksums); 2 damaged."
        in capsys.readouterr().out
    )


def test_a_checksum_dataset_of_the_wrong_shape_is_a_store_error(store):
    with h5py.File(store, "r+") as f:
        del f["volumes"]["ser-0000"]["image_crc32"]
        f["volumes"]["ser-0000"]["image_crc32"] = np.zeros(5, np.uint32)
    with pytest.raises(StoreError, match=r"volume ser-0000's image_crc32 is uint32 \(5,\), expected uint32 \(6,\)"):
        medload.open(store).read_volume(0)


def test_volumes_added_to_an_older_store_get_slice_checksums_and_the_old_ones_keep_theirs(tmp_path):
    from fixtures.stores import synthetic_mask, synthetic_volume

    path = tmp_path / "s.h5"
    build_store(path, seeds=[0, 1])
    _as_older_store(path)
    with medload.Store.create(path) as store:  # resuming onto the store, as convert does
        volume = synthetic_volume(2)
        store.add(volume, mask=synthetic_mask(volume))
    with medload.open(path) as reader:
        report = reader.verify()
        assert report.ok and (report.volumes, report.by_slice, report.by_volume) == (3, 1, 2)
        np.testing.assert_allclose(
            reader.read_volume(2).array, synthetic_volume(2).array, atol=reader.volumes[2].scale / 2 + 1e-6
        )
    _flip_last_byte(path, "ser-0002", "image", 4)
    _flip_last_byte(path, "ser-0000", "image", 1)
    with medload.open(path) as reader:
        damaged = {d.key: d.slices for d in reader.verify().damaged}
    assert damaged == {"ser-0000": (), "ser-0002": (4,)}


def test_volume_dataset_items_are_checked_without_verify_slices(store):
    # A VolumeDataset item is a whole volume (or a block of its slices), as read_volume reads:
    # checked always, whatever verify_slices says (a tenth of the read's cost, bench/checksums.py).
    pytest.importorskip("torch")
    from medload.datasets import VolumeDataset

    whole = VolumeDataset(store, with_mask=True)
    intact = whole[whole.volume_keys.index("ser-0002")]["image"].clone()
    whole.reader.close()
    _flip_last_byte(store, "ser-0001", "image", 3)
    _flip_last_byte(store, "ser-0000", "mask", 2)
    for ds in (VolumeDataset(store, with_mask=False), VolumeDataset(medload.open(store), with_mask=False)):
        with pytest.raises(ChecksumError, match=r"volume ser-0001: the stored bytes of its image slice 3"):
            ds[ds.volume_keys.index("ser-0001")]
    patches = VolumeDataset(store, with_mask=False, patch_size=(6, 8, 8), samples_per_volume=2)
    with pytest.raises(ChecksumError, match="image slice 3"):
        patches[2 * patches.volume_keys.index("ser-0001")]
    masked = VolumeDataset(store, with_mask=True)
    with pytest.raises(ChecksumError, match="mask slice 2"):
        masked[masked.volume_keys.index("ser-0000")]
    with pytest.raises(ChecksumError, match="mask slice 2"):  # foreground sampling reads the whole mask
        VolumeDataset(store, with_mask=True, patch_size=(2, 8, 8), foreground_ratio=1.0)[masked.volume_keys.index("ser-0000")]
    # The intact volume reads as before.
    np.testing.assert_array_equal(masked[masked.volume_keys.index("ser-0002")]["image"].numpy(), intact.numpy())
