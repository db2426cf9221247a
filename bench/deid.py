"""What de-identifying the output costs: SourceNames + scrub per series, beside scanning them.

Run: ``python bench/deid.py [FOLDER]`` (default ../shared/data/dcm_qa_nih). Prints one table:
the scan of the folder (the anchor: work every conversion does anyway), then building every
series' SourceNames (all spellings of every file and folder path) and scrubbing a typical
message per series, and the ratio.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import medload
from medload.deid import SourceNames, resolve_key, scrub, source_roots


def main() -> None:
    folder = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dcm_qa_nih"
    )
    key = resolve_key("bench-key")
    t0 = time.perf_counter()
    found = medload.scan(folder, phi_key=key)
    t_scan = time.perf_counter() - t0
    roots = source_roots([folder])
    n_files = sum(len(s.files) for s in found)
    t0 = time.perf_counter()
    names = [SourceNames.of(s.files, roots=roots, key=key, hidden=[s.description]) for s in found]
    t_names = time.perf_counter() - t0
    messages = [
        f"series {s.series_key} ({len(s.files)} files in {Path(s.files[0]).parent}): "
        f"{Path(s.files[-1]).name} is truncated; {s.description}"
        for s in found
    ]
    t0 = time.perf_counter()
    out = [scrub(m, n) for m, n in zip(messages, names)]
    t_scrub = time.perf_counter() - t0
    assert not any(str(folder) in o for o in out)
    print(f"| step | {len(found)} series, {n_files} files | seconds | vs scan |")
    print("|---|---|---|---|")
    print(f"| scan (anchor) | | {t_scan:.3f} | 1.00 |")
    print(f"| SourceNames.of, every series | | {t_names:.3f} | {t_names / t_scan:.3f} |")
    print(f"| scrub one message per series | | {t_scrub:.4f} | {t_scrub / t_scan:.4f} |")


if __name__ == "__main__":
    main()
