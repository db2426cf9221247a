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
from medload.errors import StoreError

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
