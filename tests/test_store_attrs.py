"""Attributes written by ``write_new_attrs`` (the writer's fast path) are stored as h5py's ``attrs[...] =`` stores them.

The writer creates each volume's ~18 attributes through the low-level API for speed; a reader
(medload's, plain h5py's, another HDF5 library's) must find the same names, HDF5 types, shapes
and values as before. Checked attribute by attribute, then on whole stores converted from an
image folder with the fast path and with h5py's ``attrs.update``.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest

import medload
from fixtures.images import write_image_folder
from medload.store import _format as fmt

VALUES = {
    "modality": "OT",
    "unicode": "Zürich \u00b5m \u4e2d",
    "empty": "",
    "history": '[["resize",{"size":[224,224]}]]',
    "scale": 0.00392156862745098,
    "offset": 0.0,
    "n": 7,
    "crc32": np.uint32(4_000_000_000),
    "label": np.int64(-3),
    "complete": True,
    "flag": np.bool_(False),
    "affine": np.arange(16, dtype=np.float64).reshape(4, 4),
    "spacing": np.array([1.0, 0.5, 0.25]),
    "counts": np.array([1, 2, 3], dtype=np.int32),
    "transposed": np.arange(12.0).reshape(3, 4).T,  # not C-contiguous: a NIfTI affine can come so
}


def _same_attrs(a: h5py.AttributeManager, b: h5py.AttributeManager, skip: tuple[str, ...] = ()) -> None:
    assert sorted(a.keys()) == sorted(b.keys())
    for name in a:
        if name in skip:
            continue
        ta, tb = a.get_id(name).get_type(), b.get_id(name).get_type()
        assert ta.equal(tb), (name, ta, tb)
        if isinstance(ta, h5py.h5t.TypeStringID):  # H5Tequal does not compare the character set
            assert (ta.get_cset(), ta.is_variable_str()) == (tb.get_cset(), tb.is_variable_str()), name
        assert a.get_id(name).shape == b.get_id(name).shape, name
        va, vb = a[name], b[name]
        assert type(va) is type(vb), (name, type(va), type(vb))
        assert np.array_equal(va, vb), (name, va, vb)


def test_each_type_is_stored_as_h5py_stores_it(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        slow, fast = f.create_group("slow"), f.create_group("fast")
        slow.attrs.update(VALUES)
        fmt.write_new_attrs(fast, VALUES)
        _same_attrs(slow.attrs, fast.attrs)
        assert fast.attrs["unicode"] == VALUES["unicode"] and int(fast.attrs["crc32"]) == 4_000_000_000


def _walk(path):
    """{name: (kind, dataset array or None)} and the File, for comparing two stores."""
    f = h5py.File(path, "r")
    items = {}
    f.visititems(lambda name, obj: items.__setitem__(name, obj))
    return f, items


@pytest.mark.parametrize("grayscale", [True, False])
def test_a_converted_store_is_the_same_with_either_attribute_path(tmp_path, monkeypatch, grayscale):
    write_image_folder(tmp_path / "images", n_per_class=3, size=(20, 28))
    opts = dict(size=16, grayscale=grayscale, workers=0, progress=False, phi_key="k" * 40)
    medload.convert(tmp_path / "images", tmp_path / "fast.h5", **opts)
    monkeypatch.setattr(fmt, "write_new_attrs", lambda obj, attrs: obj.attrs.update(attrs))
    medload.convert(tmp_path / "images", tmp_path / "slow.h5", **opts)
    fa, fast = _walk(tmp_path / "fast.h5")
    fb, slow = _walk(tmp_path / "slow.h5")
    with fa, fb:
        assert sorted(fast) == sorted(slow)
        assert sum(1 for name in fast if name.endswith("/image")) == 9
        _same_attrs(fa.attrs, fb.attrs, skip=("created",))
        for name, obj in fast.items():
            other = slow[name]
            _same_attrs(obj.attrs, other.attrs)
            if isinstance(obj, h5py.Dataset):
                assert obj.dtype == other.dtype and obj.shape == other.shape and obj.chunks == other.chunks
                assert np.array_equal(obj[()], other[()]), name
    a, b = medload.open(tmp_path / "fast.h5"), medload.open(tmp_path / "slow.h5")
    assert [v.label for v in a.volumes] == [v.label for v in b.volumes]
