"""A bounded, seeded slice of the store campaign (``tools/fuzz_stores.py``).

120 cases (seed 7): valid stores (convert's uint8 + LZ4 and float32, a folder store, stores
with masks, labels, class names, a 4D volume, int16 + gzip) with their attributes, catalog,
datasets, LZ4 chunks or bytes changed or the file truncated; label CSVs; BIDS sidecars and
nnU-Net dataset.json files. Each goes through open, every read, the datasets, ``medload
info/preview/qc`` and convert resuming onto the store, in a worker under a 3 GiB
address-space cap and an alarm. Every outcome must be a return or a MedloadError, and every
pixel read must be what plain h5py reads from the same dataset, and a BIDS sidecar must never
cost its image. Before the fixes of ``tests/test_hostile_stores.py`` these 120 cases gave 10
other exceptions and 4 wrong reads (the first 300: 31 and 15).
"""

from __future__ import annotations

import numpy as np
import pytest

from tools import fuzz_stores

SEED, CASES = 7, 120


def test_seeded_store_campaign_gives_only_returns_and_medload_errors():
    result = fuzz_stores.campaign(SEED, CASES, workers=1, timeout=60, memory=3 * 1024**3)
    counts = result["counts"]
    assert sum(counts.get(k, 0) for k in ("ok", "medload_error")) == CASES, result["findings"][:10]
    # every kind is reached, and stores give both outcomes a user meets
    assert set(result["by_kind"]) == {"store", "labels", "sidecar"}, result["by_kind"]
    by = result["by_kind"]["store"]
    assert by.get("ok", 0) > 10 and by.get("medload_error", 0) > 10, by


def test_cases_are_reproducible_from_seed_and_index(tmp_path):
    corpus = fuzz_stores.bases(tmp_path / "bases")
    made = [fuzz_stores.make_case(5, 17, corpus, tmp_path / f"c{i}") for i in range(2)]
    assert made[0][:2] == made[1][:2]
    other = fuzz_stores.make_case(5, 18, corpus, tmp_path / "c3")
    assert other[:2] != made[0][:2]


def test_the_oracle_sees_pixels_that_are_not_the_stored_ones(tmp_path):
    # A reader whose slices differ from h5py's reading of the same dataset: the campaign's "wrong".
    import h5py

    import medload

    corpus = fuzz_stores.bases(tmp_path / "bases")
    path = corpus["stores"]["conv"][0]
    reader = medload.open(path)
    real = reader.read_slices

    def off_by_one(volume, start, stop, **kwargs):
        out = real(volume, start, stop, **kwargs)
        return out + np.ones((), out.dtype) if kwargs.get("raw") else out

    reader.read_slices = off_by_one
    with h5py.File(path, "r") as plain, pytest.raises(fuzz_stores._Wrong, match="raw slices differ from h5py's reading"):
        fuzz_stores._check_read(reader, plain)


def test_a_chunk_index_damaged_by_flipped_bytes_is_a_store_error(tmp_path):
    # Seed 7 case 1519 (case 99 before the stores carried slice checksums, which moved the
    # bytes it flips into the root metadata): bytes flipped in the chunk index of a float32
    # store; HDF5 raised RuntimeError ("Can't get number of chunks") from the dataset check on
    # first read.
    import medload
    from medload.errors import StoreError

    corpus = fuzz_stores.bases(tmp_path / "bases")
    kind, base, job = fuzz_stores.make_case(7, 1519, corpus, tmp_path / "case")
    assert (kind, base.split(":")[:2]) == ("store", ["f32", "flip"])
    reader = medload.open(job["store"])
    with pytest.raises(
        StoreError, match=r"f32.h5: volume .*'s image could not be read \(RuntimeError: .*\); the file is damaged"
    ):
        for v, rec in enumerate(reader.volumes):
            reader.read_slices(v, 0, rec.n_slices)
