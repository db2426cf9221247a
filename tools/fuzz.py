"""Fuzz medload's readers with seeded mutations of real DICOM and synthetic NIfTI files.

Run: ``python tools/fuzz.py --seed 1 --cases 20000 [--workers 2] [--json out.json]``
(one case again, its file kept: ``python tools/fuzz.py --seed 1 --only 1234 --keep /tmp/case``).

Each case ``i`` draws from ``numpy.random.default_rng([seed, i])`` a base file (pydicom's
bundled test files, a few real scanner files from ``../shared/data`` when present, a
synthetic NIfTI) and a mutator from ``fixtures/hostile.py`` (bit flips, truncation at
element boundaries, length fields, VR swaps, element reordering, a private element before a
wanted one, nested sequences, header values set to lies, NIfTI size claims ...), writes the
mutated bytes to a file, then runs ``medload.scan`` on it and ``medload.load`` on every
series found. Each outcome is classified:

* ``ok``: scan and every load returned;
* ``medload_error``: a ``MedloadError`` subclass (what bad input must give);
* ``other``: any other exception (a bug: type, message and the innermost frames kept);
* ``hang``: the case ran past ``--timeout`` seconds (SIGALRM in the worker);
* ``memory``: ``MemoryError`` under the worker's address-space cap (``--memory``), i.e. an
  allocation the header size checks should have refused;
* ``crash``: the worker process died (segfault, killed); the case is recorded and a fresh
  worker goes on with the next one.

The differential check runs on every mutated DICOM file: where the fast header walker
(``medload.io.fastheader``) read the header itself, the header pydicom's reader gives must
be the same in every field medload uses (``FileHeader`` and its frames), or both refuse the
file. Disagreements are listed (``disagree``).

Plain seeded random, not hypothesis or atheris: cases must be reproducible from
``(seed, index)`` alone across machines and versions (hypothesis' database and shrinking
depend on history; atheris needs a libFuzzer build), must run in worker processes under a
memory cap and an alarm, and the mutators are structure-aware already (they know DICOM
elements and NIfTI fields), which is what coverage guidance would otherwise have to find.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path

try:
    from tools import sandbox
except ImportError:  # run as a script: python tools/fuzz.py
    import sandbox  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

PYDICOM_BASES = [
    "CT_small.dcm",
    "MR_small.dcm",
    "MR_small_implicit.dcm",
    "MR_small_RLE.dcm",
    "SC_rgb_small_odd.dcm",
    "JPEG2000.dcm",
    "rtplan.dcm",
    "MR_small_padded.dcm",
]
SHARED_BASES = [
    "dcm_qa_nih/In/20180918GE/mr_0004/axial_epi_fmri_interleaved_i_to_s-00003.dcm",
    "dcm_qa_nih/In/20180918Si/mr_0003/epi_pe_ap-00001.dcm",
    "dcm_qa_enh/In/Siemens/XA10/6_1.dcm",
]
NIFTI_SHARE = 0.15  # fraction of cases on NIfTI


def _bases() -> list[tuple[str, bytes]]:
    sys.path.insert(0, str(ROOT))
    from fixtures.hostile import pydicom_file

    out = []
    for name in PYDICOM_BASES:
        try:
            out.append((name, pydicom_file(name)))
        except (FileNotFoundError, OSError):
            pass
    for rel in SHARED_BASES:
        path = SHARED / rel
        if path.exists():
            out.append((rel.rsplit("/", 1)[-1], path.read_bytes()))
    ct = sorted((SHARED / "totalsegmentator_ct" / "example_ct_dicom").glob("*"))
    if ct:
        out.append(("totalseg_ct_j2k", ct[0].read_bytes()))
    return out


def make_case(seed: int, index: int, bases: list[tuple[str, bytes]]) -> tuple[str, str, bytes]:
    """(base name, mutator name, bytes) of case ``index`` of campaign ``seed`` (deterministic)."""
    import numpy as np

    from fixtures.hostile import MUTATORS, NIFTI_MUTATORS, nifti_bytes

    rng = np.random.default_rng([seed, index])
    if rng.random() < NIFTI_SHARE:
        compress = bool(rng.random() < 0.3)
        base = nifti_bytes((6, 5, 4), seed=int(rng.integers(0, 100)), compress=False)
        name = str(rng.choice(sorted(NIFTI_MUTATORS)))
        data = NIFTI_MUTATORS[name](base, rng)
        if compress:
            import gzip

            data = gzip.compress(data, compresslevel=1)
        return ("nifti.gz" if compress else "nifti"), name, data
    base_name, base = bases[int(rng.integers(0, len(bases)))]
    name = str(rng.choice(sorted(MUTATORS)))
    data = base
    for _ in range(int(rng.choice([1, 1, 1, 2]))):  # sometimes two mutations stacked
        try:
            data = MUTATORS[name](data, rng)
        except Exception:  # noqa: BLE001 - a mutator that cannot apply to this base: bit flip
            if len(data) > 140:
                data = MUTATORS["bit_flip"](data, rng)
    return base_name, name, data


def _header_fields(h) -> object:
    if h is None:
        return None
    from dataclasses import asdict

    d = asdict(h)
    for k in ("fallback", "pixel_bytes", "mtime_ns"):
        d.pop(k, None)
    return json.loads(json.dumps(d, default=str))


def differential(path: str) -> str | None:
    """None if the fast walker and pydicom agree on ``path`` (or the fast walker did not read
    it); else a one-line description of the difference."""
    from medload.errors import MedloadError
    from medload.io import headers

    try:
        fast_raw = headers.read_fast(path, headers._wanted())
    except Exception:  # noqa: BLE001 - damaged: both refuse (read_header raises for both)
        return None
    if isinstance(fast_raw, str):
        return None  # pydicom read it anyway: nothing to compare
    try:
        fast = _header_fields(headers.header_from_dataset(fast_raw, path))
    except MedloadError as exc:
        fast = f"refused: {type(exc).__name__}"
    try:
        slow = _header_fields(headers._read_with_pydicom(path, True))
    except MedloadError as exc:
        slow = f"refused: {type(exc).__name__}"
    if fast == slow:
        return None
    if isinstance(fast, str) or isinstance(slow, str):
        return f"fast {fast if isinstance(fast, str) else 'read'} / pydicom {slow if isinstance(slow, str) else 'read'}"
    diff = sorted(k for k in fast if fast.get(k) != slow.get(k))
    return "fields differ: " + ", ".join(diff)


def run_case(path: str) -> tuple[str, str]:
    """(outcome, detail) of scanning and loading ``path``."""
    import medload
    from medload.errors import MedloadError

    try:
        found = medload.scan(path)
        for series in found:
            medload.load(series)
    except MedloadError as exc:
        return "medload_error", type(exc).__name__
    except MemoryError:
        return "memory", "MemoryError"
    except sandbox.Alarm:
        return "hang", "timeout"
    except RecursionError as exc:
        return "other", f"RecursionError: {str(exc)[:200]}"
    except Exception as exc:  # noqa: BLE001 - what the fuzzer looks for
        frames = traceback.extract_tb(exc.__traceback__)[-3:]
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames))
        return "other", f"{type(exc).__name__}: {str(exc)[:200]} at {where}"
    return "ok", f"{len(found)} series, {len(found.errors)} unreadable"


def _worker(conn, indices: list[int], seed: int, timeout: int, memory: int, diff: bool) -> None:
    sandbox.confine(memory, memory // 4)
    bases = _bases()
    work = tempfile.mkdtemp(prefix="medload-fuzz-")

    def one(index: int) -> tuple:
        try:
            base, mutator, data = make_case(seed, index, bases)
        except Exception as exc:  # noqa: BLE001 - a harness bug is reported, not a crash
            return "?", "?", "harness", f"{type(exc).__name__}: {exc}", None
        suffix = ".nii.gz" if base == "nifti.gz" else ".nii" if base == "nifti" else ".dcm"
        path = os.path.join(work, f"case{suffix}")
        with open(path, "wb") as fh:
            fh.write(data)

        def case() -> tuple:
            outcome, detail = run_case(path)
            return outcome, detail, differential(path) if (diff and suffix == ".dcm" and outcome != "hang") else None

        outcome, detail, disagreement = sandbox.guarded(timeout, case, None)
        os.remove(path)
        return base, mutator, outcome, detail, disagreement

    sandbox.serve(conn, indices, one)


def campaign(
    seed: int,
    cases: int,
    *,
    start: int = 0,
    workers: int = 1,
    timeout: int = 20,
    memory: int = 2 * 1024**3,
    diff: bool = True,
    progress: bool = False,
) -> dict:
    """Run cases ``start .. start + cases - 1`` of campaign ``seed``; return counts and findings."""
    todo = list(range(start, start + cases))
    tally = sandbox.Tally(cases, 500 if progress else 0)
    by_mutator: dict[str, Counter] = {}
    disagreements: list[dict] = []

    def on_done(fields: tuple) -> None:
        index, base, mutator, outcome, detail, disagreement = fields
        by_mutator.setdefault(mutator, Counter())[outcome] += 1
        if disagreement:
            tally.counts["disagree"] += 1
            disagreements.append({"index": index, "base": base, "mutator": mutator, "detail": disagreement})
        bad = outcome in ("other", "hang", "memory", "harness")
        tally.add(
            outcome, {"index": index, "base": base, "mutator": mutator, "outcome": outcome, "detail": detail} if bad else None
        )

    chunks = [todo[k::workers] for k in range(workers)]
    sandbox.supervise(_worker, chunks, (seed, timeout, memory, diff), on_done=on_done, on_crash=tally.crash)
    return {
        "seed": seed,
        "start": start,
        "cases": cases,
        "seconds": tally.seconds(),
        "counts": dict(tally.counts),
        "by_mutator": {k: dict(v) for k, v in sorted(by_mutator.items())},
        "findings": tally.findings,
        "disagreements": disagreements,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=20, help="seconds per case before it counts as a hang")
    parser.add_argument("--memory", type=float, default=2.0, help="address-space cap of a worker in GiB")
    parser.add_argument("--no-diff", action="store_true", help="skip the fast-path/pydicom differential check")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--only", type=int, help="run this one case in this process and keep its file")
    parser.add_argument("--keep", default=".", help="folder for --only's file")
    args = parser.parse_args(argv)
    if args.only is not None:
        sys.path.insert(0, str(ROOT))
        base, mutator, data = make_case(args.seed, args.only, _bases())
        suffix = ".nii.gz" if base == "nifti.gz" else ".nii" if base == "nifti" else ".dcm"
        path = os.path.join(args.keep, f"fuzz-{args.seed}-{args.only}{suffix}")
        Path(path).write_bytes(data)
        print(base, mutator, path, *run_case(path), differential(path) if suffix == ".dcm" else "")
        return 0
    result = campaign(
        args.seed,
        args.cases,
        start=args.start,
        workers=args.workers,
        timeout=args.timeout,
        memory=int(args.memory * 1024**3),
        diff=not args.no_diff,
        progress=True,
    )
    findings = result["findings"][:20] + result["disagreements"][:20]
    bad = ("other", "hang", "memory", "crash", "harness", "disagree")
    return sandbox.report(result, args.json, ("seed", "cases", "seconds", "counts"), findings, bad)


if __name__ == "__main__":
    sys.exit(main())
