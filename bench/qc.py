"""Seconds per volume to build the QC page (``medload qc``) of a large store, beside matplotlib.

Run: ``python bench/qc.py [--volumes 500] [--shape 32x128x128] [--anchor-volumes 50]``

One run, one table. It writes a store of ``--volumes`` synthetic volumes (an ellipse phantom
with noise, default uint8 + LZ4 store, every fifth volume with a 3-label mask, CT and MR
alternating, default 32 slices of 128x128) into a temporary folder, then times:

* ``medload.qc.report.write_qc`` with the thumbnails drawn in this process (``workers=0``) and
  with all cores (the default for a store this size): the whole page, read of every stored
  slice, three planes, mask blend, PNG files, HTML;
* the anchor: what a notebook would do per volume with matplotlib, the same three planes from
  the same reads (``medload.qc.views.orthogonal_views``) drawn with ``imshow`` and saved as one
  PNG (``Figure.savefig``), on ``--anchor-volumes`` volumes (it is slow), per volume.

Wall seconds and CPU seconds are both shown: wall times move with other users' load on a shared
machine, CPU seconds much less. medload's CPU column is the reading and drawing of thumbnails as
``write_qc`` reports it (summed over its worker processes); the anchor's is this process's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import medload
from medload.qc import views
from medload.qc.report import write_qc


def make_store(path: Path, n: int, shape: tuple[int, int, int]) -> None:
    z, h, w = shape
    zz, yy, xx = np.meshgrid(np.linspace(-1, 1, z), np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    body = (yy / 0.8) ** 2 + (xx / 0.6) ** 2 < 1
    organ = ((yy - 0.2) / 0.25) ** 2 + ((xx + 0.2) / 0.2) ** 2 + (zz / 0.7) ** 2 < 1
    rng = np.random.default_rng(0)
    affine = np.diag([3.0, 0.8, 0.8, 1.0])[[2, 1, 0, 3]]  # z -> S, y -> A, x -> R
    affine[:3, 3] = [-50, -50, -40]
    with medload.Store.create(path) as store:
        for i in range(n):
            array = (0.3 * body + 0.4 * organ + 0.05 * rng.standard_normal(shape)).astype(np.float32)
            mask = (body.astype(np.uint8) + organ + (organ & (xx < -0.25))).astype(np.uint8) if i % 5 == 0 else None
            store.add(
                medload.Volume(array, affine, modality="CT" if i % 2 else "MR", meta={"source_key": f"bench-{i:05d}"}), mask=mask
            )


def matplotlib_anchor(store: Path, n: int, out: Path, size: int = 160) -> float:
    """Seconds per volume: read, three planes, imshow x3, savefig (what a notebook does)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    reader = medload.open(store)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for v in range(n):
        record = reader.volumes[v]
        image = reader.read_slices(v, 0, record.n_slices)
        mask = reader.read_mask(v, 0, record.n_slices) if record.has_mask else None
        fig = Figure(figsize=(3 * size / 100, size / 100), dpi=100)
        FigureCanvasAgg(fig)
        lo, hi = views.display_range(image)
        for k, view in enumerate(views.orthogonal_views(image, record.affine, mask)):
            ax = fig.add_axes((k / 3, 0, 1 / 3, 1))
            ax.set_axis_off()
            ax.imshow(view.image, cmap="gray", vmin=lo, vmax=hi, aspect=view.pixel_mm[0] / view.pixel_mm[1])
            if view.mask is not None:
                ax.imshow(
                    np.ma.masked_equal(view.mask, 0),
                    cmap="tab10",
                    alpha=0.35,
                    vmin=0,
                    vmax=9,
                    aspect=view.pixel_mm[0] / view.pixel_mm[1],
                )
            for where, (x, y) in {"top": (0.5, 0.97), "bottom": (0.5, 0.03), "left": (0.03, 0.5), "right": (0.97, 0.5)}.items():
                ax.text(x, y, view.labels[where], color="yellow", transform=ax.transAxes, ha="center", va="center")
        fig.savefig(out / f"{v:06d}.png", dpi=100)
    return (time.perf_counter() - started) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=500)
    parser.add_argument("--shape", default="32x128x128", help="ZxHxW of each volume")
    parser.add_argument("--anchor-volumes", type=int, default=50)
    args = parser.parse_args()
    shape = tuple(int(s) for s in args.shape.lower().split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="medload-bench-qc-"))
    try:
        store = tmp / "store.h5"
        started = time.perf_counter()
        make_store(store, args.volumes, shape)  # type: ignore[arg-type]
        made = time.perf_counter() - started
        cores = os.cpu_count() or 1
        print(
            f"store: {args.volumes} volumes of {shape[0]} slices {shape[1]}x{shape[2]} (uint8 + LZ4, every fifth "
            f"with a 3-label mask), {store.stat().st_size / 1e6:.1f} MB, made in {made:.1f} s; {cores} cores; "
            f"python {sys.version.split()[0]}\n"
        )
        rows = []
        for label, workers in (("medload qc, 1 process", 0), (f"medload qc, {cores} workers (default)", None)):
            t0 = time.perf_counter()
            info = write_qc(store, tmp / f"qc-{workers}", workers=workers)
            wall, cpu = time.perf_counter() - t0, info["thumbnail_cpu_seconds"]
            rows.append((label, wall / args.volumes, cpu / args.volumes))
        thumbs = sum(p.stat().st_size for p in (tmp / "qc-0" / "thumbs").iterdir())
        kinds = sorted({p.suffix for p in (tmp / "qc-0" / "thumbs").iterdir()})
        page = (tmp / "qc-0" / "index.html").stat().st_size
        cpu0 = time.process_time()
        anchor = matplotlib_anchor(store, args.anchor_volumes, tmp / "mpl")
        anchor_cpu = (time.process_time() - cpu0) / args.anchor_volumes
        rows.append((f"matplotlib imshow+savefig ({args.anchor_volumes} vol)", anchor, anchor_cpu))
        print(f"{'what':44s} {'ms/volume':>10s} {'cpu ms/vol':>11s} {'matplotlib / this':>18s} {'(cpu)':>6s}")
        for label, wall, cpu in rows:
            print(f"{label:44s} {wall * 1e3:10.1f} {cpu * 1e3:11.1f} {anchor / wall:17.1f}x {anchor_cpu / cpu:5.1f}x")
        print(
            f"\npage: {info['thumbnails']} thumbnails ({', '.join(kinds)}), {thumbs / 1e6:.1f} MB "
            f"({thumbs / info['thumbnails'] / 1e3:.1f} kB each), index.html {page / 1e6:.2f} MB"
        )
        print(
            f"{args.volumes} volumes: {rows[1][1] * args.volumes:.1f} s with the default workers, "
            f"{rows[0][1] * args.volumes:.1f} s in one process"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
