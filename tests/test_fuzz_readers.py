"""A bounded, seeded slice of the reader campaign (``tools/fuzz_readers.py``; ``--long`` runs 5,000).

300 cases (seed 7): mutated DICOM, NIfTI and PNG/TIFF/JPEG files and real DICOM series with a
mutated file, from pydicom's and nibabel's test files, ../shared/data and images made in code.
Each goes through the reader's own entry point, ``medload.scan``, ``medload.load`` and
``medload.convert`` in a worker process under a 3 GiB address-space cap and a 30 s alarm:
every outcome must be a return or a MedloadError (in convert's report too). Before the fixes
of ``tests/test_hostile_readers.py`` this slice had 8 escapes: nibabel's HeaderDataError from
the NIfTI reader (7) and a PNG chunk length that allocated 2 GiB (1).
"""

from __future__ import annotations

from tools import fuzz_readers

SEED, CASES = 7, 300


def test_seeded_reader_campaign_gives_only_returns_and_medload_errors():
    # 120 s a case: a hang is still caught, and a sound case under load 12 does not run past it
    result = fuzz_readers.campaign(SEED, CASES, workers=1, timeout=120, memory=3 * 1024**3)
    counts = result["counts"]
    assert sum(counts.get(k, 0) for k in ("ok", "medload_error")) == CASES, result["findings"][:10]
    # every kind of base is reached, and each gives both outcomes a user meets
    for kind in ("dicom", "nifti", "image", "series"):
        by = result["by_kind"][kind]
        assert by.get("ok", 0) > 5 and by.get("medload_error", 0) > 5, (kind, by)


def test_cases_are_reproducible_from_seed_and_index():
    corpus = fuzz_readers.bases()
    assert fuzz_readers.make_case(5, 17, corpus) == fuzz_readers.make_case(5, 17, corpus)
    assert fuzz_readers.make_case(5, 17, corpus)[2] != fuzz_readers.make_case(5, 18, corpus)[2]


def test_the_harness_sees_an_escape_in_convert_s_report(monkeypatch, tmp_path):
    # convert never raises for one bad series: the harness must read its report's classes.
    import medload

    class Report:
        ok = False
        failed = [{"error": "KeyError", "internal": True, "reason": "unexpected KeyError", "traceback": "x"}]

    monkeypatch.setattr(medload, "convert", lambda *a, **k: Report())
    path = tmp_path / "x.dcm"
    path.write_bytes(b"")
    assert fuzz_readers.run_case(str(path), str(tmp_path))[0] == "other"


def test_the_pixel_oracle_sees_a_silently_wrong_volume():
    # A plain one-image file loaded with every voxel off by one: what the campaign calls "wrong".
    import pydicom

    import medload

    path = pydicom.data.get_testdata_file("MR_small.dcm")
    series = medload.scan(path)[0]
    volume = medload.load(series)
    assert fuzz_readers.pixel_oracle(series, volume) is None
    off = volume.with_array(volume.array + 1)
    assert fuzz_readers.pixel_oracle(series, off).startswith("load: voxel (0, 0) is")


STRUCTURE_SEED, STRUCTURE_CASES = 7, 40


def test_seeded_structure_cases_give_only_returns_and_medload_errors():
    # tools/fuzz_structures.py: enhanced functional groups that lie, codestreams against their
    # header, bit layouts, PNG/TIFF/GIF/gzip bombs. Before the fixes of tests/test_hostile_readers.py
    # (seeds 101 and 202, 150 cases each) they gave hangs (a TIFF of 5,000 one-page series, 16-bit
    # colour PNGs over the volume limit decoded whole) and an internal error (N4 on an image one
    # voxel wide, loaded from an RLE file whose Columns lied).
    import numpy as np

    from tools import fuzz_structures

    result = fuzz_readers.campaign(
        STRUCTURE_SEED, STRUCTURE_CASES, workers=1, timeout=60, memory=3 * 1024**3, only_structure=True
    )
    counts = result["counts"]
    assert sum(counts.get(k, 0) for k in ("ok", "medload_error")) == STRUCTURE_CASES, result["findings"][:10]
    assert counts.get("ok", 0) > 3 and counts.get("medload_error", 0) > 3, counts
    drawn = set()
    for index in range(STRUCTURE_CASES):
        rng = np.random.default_rng([STRUCTURE_SEED, index, 2])  # as make_case draws with only_structure
        drawn.add(str(rng.choice(sorted(fuzz_structures.STRUCTURE_MUTATORS))))
    assert drawn == set(fuzz_structures.STRUCTURE_MUTATORS)
