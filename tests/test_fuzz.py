"""A bounded, seeded slice of the fuzzing campaign (``tools/fuzz.py``; long runs there).

1,500 mutated DICOM/NIfTI files (seed 2024), each scanned and loaded in a worker process
under a 2 GiB address-space cap and a 20 s alarm: every outcome must be a return or a
MedloadError, and the fast header walker must agree with pydicom wherever it read a header.
"""

from __future__ import annotations

import pytest

from tools import fuzz

SEED, CASES = 2024, 1500


def test_seeded_fuzz_slice_gives_only_medload_errors_and_no_disagreement():
    result = fuzz.campaign(SEED, CASES, workers=1, timeout=20, memory=2 * 1024**3)
    counts = result["counts"]
    assert sum(counts.get(k, 0) for k in ("ok", "medload_error")) == CASES, result["findings"][:10]
    assert counts.get("disagree", 0) == 0, result["disagreements"][:10]
    # the mutators reach every class of outcome a user meets: files that load, files refused
    assert counts.get("ok", 0) > 100 and counts.get("medload_error", 0) > 0
    assert len(result["by_mutator"]) >= 15


def test_cases_are_reproducible_from_seed_and_index():
    bases = fuzz._bases()
    assert fuzz.make_case(5, 17, bases) == fuzz.make_case(5, 17, bases)
    assert fuzz.make_case(5, 17, bases)[2] != fuzz.make_case(5, 18, bases)[2]


@pytest.mark.parametrize("exc, outcome", [(KeyError("x"), "other"), (MemoryError(), "memory")])
def test_harness_classifies_what_escapes(monkeypatch, tmp_path, exc, outcome):
    import medload

    def boom(*args, **kwargs):
        raise exc

    monkeypatch.setattr(medload, "scan", boom)
    path = tmp_path / "x.dcm"
    path.write_bytes(b"")
    assert fuzz.run_case(str(path))[0] == outcome
