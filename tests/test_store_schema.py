"""A file written by medload reads with plain h5py + hdf5plugin, following docs/hdf5-schema.md
(issue 3, point 6). Nothing from medload is used on the reading side."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import medload
from fixtures.stores import synthetic_mask, synthetic_volume

DOC = Path(__file__).resolve().parents[1] / "docs" / "hdf5-schema.md"


@pytest.mark.parametrize("dtype,compression", [("uint8", None), ("float16", "blosc2"), ("int16", "gzip")])
def test_plain_h5py_reads_what_the_schema_doc_describes(tmp_path, dtype, compression):
    volumes = [synthetic_volume(s, dtype="int16" if dtype == "int16" else "float32", shape=(4 + s, 12, 10)) for s in range(2)]
    multi = synthetic_volume(5, channels=("brain", "subdural", "bone"), shape=(3, 8, 8))
    path = tmp_path / "plain.h5"
    pipeline = {"steps": [["window", {"center": 40, "width": 400}]]}
    with medload.Store.create(path, dtype=dtype, compression=compression, pipeline=pipeline) as store:
        store.add(volumes[0], mask=synthetic_mask(volumes[0]), label=3)
        store.add(volumes[1])
        if dtype != "int16":
            store.add(multi, label=0)
    # A separate interpreter that never imports medload reads it the documented way.
    script = textwrap.dedent(
        f"""
        import hdf5plugin, h5py, json, sys, numpy as np
        out = {{}}
        with h5py.File({str(path)!r}, "r") as f:
            assert f.attrs["medload_schema"] == 1
            out["pipeline"] = json.loads(f.attrs["pipeline"])
            out["dtype"] = f.attrs["dtype"]
            for key, group in f["volumes"].items():
                assert group.attrs["complete"]
                image = group["image"]
                values = image[()] * image.attrs["scale"] + image.attrs["offset"]
                np.save({str(tmp_path)!r} + "/" + key + ".npy", values)
                out[key] = dict(
                    chunks=list(image.chunks), shape=list(image.shape), layout=group.attrs["layout"],
                    affine=group.attrs["affine"].tolist(), spacing=group.attrs["spacing"].tolist(),
                    history=json.loads(group.attrs["history"]), meta=json.loads(group.attrs["meta"]),
                    label=int(group.attrs["label"]) if "label" in group.attrs else None,
                    mask=group["mask"][()].tolist() if "mask" in group else None,
                    channels=json.loads(group.attrs["channels"]) if "channels" in group.attrs else None,
                    patient_key=group.attrs["patient_key"], intensity=group.attrs["intensity"])
            index = f["index"][()]
            keys = [k.decode() for k in f["volume_keys"][()]]
            out["index"] = [[keys[r["volume"]], int(r["slice"]), int(r["label"])] for r in index]
        assert "medload" not in sys.modules
        print(json.dumps(out))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["pipeline"] == pipeline and out["dtype"] == dtype
    tolerance = {"uint8": 0.5 / 255 + 1e-6, "float16": 2.0**-11, "int16": 0.0}[dtype]
    for vol in volumes:
        key = vol.meta["series_key"]
        entry = out[key]
        assert entry["layout"] == "ZYX" and entry["chunks"] == [1, 12, 10] and entry["shape"] == list(vol.shape)
        assert np.abs(np.load(tmp_path / f"{key}.npy") - vol.array).max() <= tolerance
        np.testing.assert_array_equal(entry["affine"], vol.affine)
        assert entry["spacing"] == list(vol.spacing)
        assert [tuple(step) for step in entry["history"]] == [(n, p) for n, p in vol.history]
        assert entry["meta"]["kvp"] == 120.0 and entry["patient_key"] == vol.meta["patient_key"]
        assert entry["intensity"] == vol.meta["intensity"]
    assert out["ser-0000"]["label"] == 3 and out["ser-0001"]["label"] is None
    np.testing.assert_array_equal(out["ser-0000"]["mask"], synthetic_mask(volumes[0]))
    if dtype != "int16":
        entry = out["ser-0005"]
        assert (
            entry["layout"] == "ZCYX" and entry["chunks"] == [1, 3, 8, 8] and entry["channels"] == ["brain", "subdural", "bone"]
        )
        assert np.abs(np.load(tmp_path / "ser-0005.npy") - multi.array.transpose(1, 0, 2, 3)).max() <= tolerance
    rows = out["index"]
    assert len(rows) == 4 + 5 + (3 if dtype != "int16" else 0)
    assert rows[0] == ["ser-0000", 0, 3] and rows[4] == ["ser-0001", 0, -1]


def test_schema_doc_names_every_attribute_written(tmp_path):
    import h5py

    path = tmp_path / "s.h5"
    vol = synthetic_volume(0, channels=("a", "b"))
    with medload.Store.create(path) as store:
        store.add(vol, mask=synthetic_mask(vol), label=1)
    doc = DOC.read_text()
    with h5py.File(path) as f:
        names = set(f.attrs) | set(f["volumes/ser-0000"].attrs) | set(f["volumes/ser-0000/image"].attrs) | set(f)
        names |= set(f["volumes/ser-0000"])
    missing = sorted(n for n in names if n not in doc)
    assert not missing, f"docs/hdf5-schema.md does not describe {missing}"
    assert "import hdf5plugin" in doc and "h5dump" in doc
    assert json.loads(json.dumps(sorted(names)))  # plain names only
