"""How fast medload's SliceDataset feeds slices, beside the ways people do it today.

Run: ``python bench/loader.py [--slices 2048] [--torch-files 1024] [--dicom-files 300]``

One table, one run, 256x256 float32 slices of real CT (``../shared/data/totalsegmentator_ct``,
windowed 40/400 to [0, 1], resized, repeated; a synthetic phantom when that folder is absent),
read in shuffled order, warm cache. The machine is shared, so every method is timed in turn,
round after round, and its best round is kept: the ratios compare like with like.

* numpy memmap of all slices, one slice copied per sample (the limit), also through a
  DataLoader (what batching and worker IPC cost by themselves on this machine);
* ``SliceDataset.__getitem__``, a per-item DataLoader (default collate) and the batch-native
  ``SliceDataset.loader`` (float32 and ``compact=True`` uint8 batches), batch 64, shuffled,
  0 and 2 persistent workers, on an uncompressed float32 store and on the default store
  (uint8 + LZ4, chosen by bench/store.py); for the default store also with the reader's
  direct chunk reads switched off ("via h5py") and, at 2 workers, with torch's transport
  (``ring_buffers=False``: a fresh shared-memory segment per tensor per batch) beside the
  ring of reused shared-memory slots that ``ds.loader`` uses by default;
* a DataLoader over a dataset that reads nothing, 0 and 2 workers (the machinery's ceiling), and
  the 0-worker ``ds.loader`` in two processes at once, each over half the slices (what two cores
  give at that moment: the most 2 workers can reach, on a shared machine often well under 2x);
* the default type stored without compression (``--compression none``), ``ds.loader`` float32 and
  compact, 0 workers: what LZ4 decoding costs, beside the 1.5x larger file;
* one ``torch.save`` file per slice read back with ``torch.load`` (MONAI PersistentDataset's way);
* one DICOM file per sample, decoded with pydicom, rescaled and windowed (int16 CT, uncompressed).

Goals (issue 5): uncompressed store >= 0.5x memmap, default store >= 15k slices/s per
worker, >= 2x torch.load, >= 30x DICOM decode. Issue 15: ``SliceDataset.loader`` of the
default store at batch 64 with 0 workers >= 1.5x the memmap + default-collate DataLoader and
>= 0.5x the bare memmap per-item rate; 2 workers no slower than 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import medload  # noqa: E402
from medload.datasets import SliceDataset  # noqa: E402
from medload.store import DEFAULT_COMPRESSION, DEFAULT_DTYPE  # noqa: E402

SIZE = 256
OLD = "torch's per-batch segments"  # ring_buffers=False: the transport before the ring
SIDE = "two processes side by side"  # the 0-worker loader in two processes at once: two cores' worth
PLAIN = f"store {DEFAULT_DTYPE} uncompressed"  # --compression none: what LZ4 decoding costs
CT_NIFTI = ROOT.parent / "shared" / "data" / "totalsegmentator_ct" / "example_ct.nii.gz"


def ct_slices(n: int, size: int = SIZE) -> tuple[np.ndarray, str]:
    """``n`` windowed ``size`` x ``size`` float32 slices in [0, 1] and where they came from."""
    if CT_NIFTI.exists():
        import nibabel as nib
        from skimage.transform import resize

        hu = np.asarray(nib.as_closest_canonical(nib.load(CT_NIFTI)).dataobj, dtype=np.float32)
        axial = np.moveaxis(hu, 2, 0)  # (slices, x, y)
        windowed = np.clip((axial - (40 - 200)) / 400, 0, 1)
        base = resize(windowed, (axial.shape[0], size, size), order=1, preserve_range=True, anti_aliasing=False)
        source = f"{CT_NIFTI.name} ({axial.shape[0]} slices, resized)"
    else:
        y, x = np.mgrid[:size, :size] / size
        base = np.stack([np.clip(np.sin(8 * x + k / 9) * np.cos(6 * y) * 0.5 + 0.5, 0, 1) for k in range(64)])
        source = "synthetic phantom (shared data absent)"
    # Repeating slices does not flatter compression: every chunk (one slice) is compressed alone.
    return np.ascontiguousarray(np.resize(base.astype(np.float32), (n, size, size))), source


def best_rates(runners: list[tuple[str, object, int]], *, rounds: int) -> dict[str, float]:
    """Items/s of each ``(name, run, count)``: one warm-up, then ``rounds`` rounds taking turns;
    the best round of each is kept (a shared machine only ever makes a run slower)."""
    best = {name: 0.0 for name, _, _ in runners}
    for _, run, _ in runners:
        run()
    for _ in range(rounds):
        for name, run, count in runners:
            t0 = time.perf_counter()
            run()
            best[name] = max(best[name], count / (time.perf_counter() - t0))
    return best


def build_store(
    path: Path, slices: np.ndarray, *, dtype: str | None, compression: str | None, per_volume: int = 128, prefix: str = ""
) -> None:
    """A store of ``slices`` cut into volumes of ``per_volume``, keyed ``pat-{prefix}NNN`` (a shard's prefix keeps keys apart)."""
    with medload.Store.create(path, dtype=dtype, compression=compression, overwrite=True) as store:
        for v, start in enumerate(range(0, len(slices), per_volume)):
            vol = medload.Volume(
                slices[start : start + per_volume],
                np.eye(4),
                modality="CT",
                meta={
                    "patient_key": f"pat-{prefix}{v:03d}",
                    "series_key": f"se-{prefix}{v:03d}",
                    "source_hash": f"bench-{prefix}{v}",
                    "intensity": "HU window 40/400 scaled to [0,1]",
                },
            )
            store.add(vol)


def loader_runners(label: str, path: Path, *, batch: int) -> list[tuple[str, object, int]]:
    """``ds.loader`` float32 and compact, 0 workers, of the store at ``path``."""
    import torch

    ds = SliceDataset(path, with_mask=False)
    runners = []
    for kind in ("float32", "compact"):
        loader = ds.loader(batch, shuffle=True, compact=kind == "compact", generator=torch.Generator().manual_seed(0))

        def epoch(loader=loader) -> None:
            for _ in loader:
                pass

        runners.append((f"{label}: ds.loader {kind}, 0 workers", epoch, len(ds)))
    return runners


def dataset_runners(label: str, path: Path, order: np.ndarray, *, batch: int, full: bool) -> list[tuple[str, object, int]]:
    """Rows of one store: the read alone, ``__getitem__``, the per-item DataLoader (default
    collate) and the batch-native ``SliceDataset.loader`` (float and compact), 0 and 2 workers;
    with ``full``, also the reader's direct chunk path switched off ("via h5py")."""
    import torch

    ds = SliceDataset(path, with_mask=False)
    n = len(ds)
    reader = ds.reader
    pairs = [(int(ds._vol[i]), int(ds._slice[i])) for i in order]

    def getitem(ds=ds):
        for i in order:
            ds[i]

    def read_only(reader=reader):
        for v, z in pairs:
            reader.read_slices(v, z, z + 1)

    # The store's own read, without the dataset: the difference is the dataset's overhead.
    runners = [(f"{label}: StoreReader.read_slices alone", read_only, n), (f"{label}: SliceDataset __getitem__", getitem, n)]
    plain = SliceDataset(path, with_mask=False)
    plain.reader._direct = False  # the same with the direct chunk reads (os.preadv + cramjam LZ4) off: h5py alone
    if full:
        runners += [
            (f"{label}: StoreReader.read_slices alone, via h5py", lambda: read_only(plain.reader), n),
            (f"{label}: SliceDataset __getitem__, via h5py", lambda: getitem(plain), n),
        ]

    def epochs(loader):
        def epoch():
            for _ in loader:
                pass

        return epoch

    for workers in (0, 2):
        per_item = torch.utils.data.DataLoader(
            ds,
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(0),
        )
        runners.append((f"{label}: DataLoader per item, {workers} workers", epochs(per_item), n))
        for compact in (False, True):
            if compact and not full:
                continue
            loader = ds.loader(
                batch, shuffle=True, num_workers=workers, compact=compact, generator=torch.Generator().manual_seed(0)
            )
            kind = "compact" if compact else "float32"
            runners.append((f"{label}: ds.loader {kind}, {workers} workers", epochs(loader), n))
            if workers and full:
                # The same with torch's transport (a fresh shared-memory segment per tensor per batch).
                loader = ds.loader(
                    batch,
                    shuffle=True,
                    num_workers=workers,
                    compact=compact,
                    ring_buffers=False,
                    generator=torch.Generator().manual_seed(0),
                )
                runners.append((f"{label}: ds.loader {kind}, {workers} workers, {OLD}", epochs(loader), n))
    if full:
        for compact in (False, True):
            # 0 workers: the dataset in this process keeps _direct=False (a worker's copy would reset it).
            loader = plain.loader(batch, shuffle=True, compact=compact, generator=torch.Generator().manual_seed(0))
            kind = "compact" if compact else "float32"
            runners.append((f"{label}: ds.loader {kind}, 0 workers, via h5py", epochs(loader), n))
    return runners


class NoBatches:
    """A dataset of whole batches that reads nothing: each batch is its size (what the DataLoader's
    own machinery, index queues, pickling and worker wake-ups, costs with no data to move)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, indices):
        return len(indices)


def ceiling_runners(n: int, *, batch: int) -> list[tuple[str, object, int]]:
    """The no-data DataLoader at 0 and 2 workers: the most any loader gets through here."""
    import torch

    runners = []
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(
            NoBatches(n),
            batch_size=None,
            sampler=torch.utils.data.BatchSampler(range(n), batch, False),
            num_workers=workers,
            persistent_workers=workers > 0,
        )

        def epoch(loader=loader):
            for _ in loader:
                pass

        runners.append((f"no data (batch sizes only), {workers} workers", epoch, n))
    return runners


def _half_epochs(conn, path: str, half: int, batch: int) -> None:
    """A process of :class:`SideBySide`: one epoch of its half of the slices per request."""
    import torch

    torch.set_num_threads(1)
    ds = SliceDataset(path, with_mask=False)
    mine = list(range(half, len(ds), 2))
    loaders = {
        compact: ds.loader(
            batch,
            sampler=torch.utils.data.SubsetRandomSampler(mine, generator=torch.Generator().manual_seed(half)),
            compact=compact,
        )
        for compact in (False, True)
    }
    while (compact := conn.recv()) is not None:
        for _ in loaders[compact]:
            pass
        conn.send(True)


class SideBySide:
    """Two processes, each running the 0-worker ``ds.loader`` over half the slices at the same time:
    what two cores give this moment, the most 2 workers could reach (their main process aside)."""

    def __init__(self, path: Path, *, batch: int):
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        self._conns, self._procs = [], []
        for half in (0, 1):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_half_epochs, args=(theirs, str(path), half, batch), daemon=True)
            proc.start()
            self._conns.append(mine)
            self._procs.append(proc)

    def run(self, compact: bool) -> None:
        for conn in self._conns:
            conn.send(compact)
        for conn in self._conns:
            conn.recv()

    def close(self) -> None:
        for conn, proc in zip(self._conns, self._procs):
            conn.send(None)
            proc.join()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_batch(path: Path, *, batch: int, epochs: int) -> dict[str, tuple[float, float]]:
    """CPU milliseconds per batch of ``ds.loader`` on the store at ``path``, ``(main, workers)``:
    the work each transport costs, whatever share of the cores a shared machine grants."""
    import torch

    ds = SliceDataset(path, with_mask=False)
    out = {}
    for kind in ("compact", "float32"):
        for workers, ring in ((0, True), (2, True), (2, False)):
            loader = ds.loader(
                batch,
                shuffle=True,
                num_workers=workers,
                compact=kind == "compact",
                ring_buffers=ring,
                generator=torch.Generator().manual_seed(0),
            )
            for _ in loader:  # warm: workers started, slots made
                pass
            # torch keeps a persistent iterator's worker processes in _workers (no public handle).
            pids = [os.getpid()] + [w.pid for w in (loader._iterator._workers if workers else [])]
            before = [_cpu_seconds(pid) for pid in pids]
            for _ in range(epochs):
                for _ in loader:
                    pass
            spent = [(_cpu_seconds(pid) - b) * 1e3 / (epochs * len(loader)) for pid, b in zip(pids, before)]
            name = f"ds.loader {kind}, {workers} workers" + ("" if ring or not workers else f", {OLD}")
            out[name] = (spent[0], sum(spent[1:]))
            del loader
    return out


class MemmapSlices:
    """The limit as a torch Dataset: one memmap slice per item, nothing else (reopens per process)."""

    def __init__(self, path: Path):
        self.path = path
        self.n = len(np.load(path, mmap_mode="r"))
        self._mm = None

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if self._mm is None:
            self._mm = np.load(self.path, mmap_mode="r")
        import torch

        return {"image": torch.from_numpy(np.array(self._mm[i]))[None]}


def memmap_runners(folder: Path, slices: np.ndarray, order: np.ndarray, *, batch: int) -> list[tuple[str, object, int]]:
    import torch

    path = folder / "slices.npy"
    np.save(path, slices)
    mm = np.load(path, mmap_mode="r")

    def run():
        for i in order:
            np.array(mm[i])

    runners = [("numpy memmap (the limit)", run, len(order))]
    # The same limit through torch's DataLoader: what per-item tensors, default collate and worker IPC cost.
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(
            MemmapSlices(path),
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(0),
        )

        def epoch(loader=loader):
            for _ in loader:
                pass

        runners.append((f"numpy memmap: DataLoader per item, {workers} workers", epoch, len(order)))
    return runners


def torch_load_runner(folder: Path, slices: np.ndarray, count: int) -> tuple[str, object, int]:
    import torch

    files = []
    for i in range(count):
        f = folder / f"slice_{i:05d}.pt"
        torch.save(torch.from_numpy(slices[i].copy()), f)
        files.append(f)
    order = np.random.default_rng(1).permutation(count)

    def run():
        for i in order:
            torch.load(files[i], weights_only=True)

    return ("torch.load, one file per slice", run, count)


def write_dicom_slices(folder: Path, slices: np.ndarray, count: int, size: int = SIZE) -> list[Path]:
    """``count`` uncompressed int16 CT DICOM files, one per slice, whose HU windowed 40/400 give ``slices``."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    files = []
    for i in range(count):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        f = folder / f"slice_{i:05d}.dcm"
        ds = FileDataset(str(f), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        hu = slices[i] * 400 + (40 - 200)
        ds.PixelData = np.round(hu + 1024).astype(np.int16).tobytes()
        ds.save_as(f, enforce_file_format=True)
        files.append(f)
    return files


def dicom_runner(folder: Path, slices: np.ndarray, count: int) -> tuple[str, object, int]:
    import pydicom

    files = write_dicom_slices(folder, slices, count)
    order = np.random.default_rng(2).permutation(count)

    def run():
        for i in order:
            d = pydicom.dcmread(files[i])
            hu = d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
            np.clip((hu - (40 - 200)) / 400, 0, 1)

    return ("pydicom decode, one file per slice", run, count)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=2048, help="slices in the stores and the memmap")
    parser.add_argument("--torch-files", type=int, default=1024, help="torch.save files written")
    parser.add_argument("--dicom-files", type=int, default=300, help="DICOM files written")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per method (best kept)")
    parser.add_argument("--batch", type=int, default=64, help="DataLoader batch size")
    parser.add_argument("--cpu-epochs", type=int, default=5, help="epochs timed for CPU time per batch")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads of the main process (default 1: on a shared machine more "
        "threads make the 0-worker collate wait for busy cores; workers always use 1)",
    )
    parser.add_argument("--workdir", default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)

    slices, source = ct_slices(args.slices)
    order = np.random.default_rng(0).permutation(len(slices))
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        tmp = Path(tmp)
        runners = memmap_runners(tmp, slices, order, batch=args.batch) + ceiling_runners(len(slices), batch=args.batch)
        sizes = {}
        for label, dtype, compression in (
            ("store float32 uncompressed", "float32", "none"),
            (f"store default ({DEFAULT_DTYPE}+{DEFAULT_COMPRESSION})", None, None),
        ):
            path = tmp / f"{dtype or 'default'}.h5"
            build_store(path, slices, dtype=dtype, compression=compression)
            sizes[label] = path.stat().st_size
            runners += dataset_runners(label, path, order, batch=args.batch, full=dtype is None)
            if dtype is None:
                side = SideBySide(path, batch=args.batch)
                for compact in (False, True):
                    kind = "compact" if compact else "float32"
                    name = f"{label}: ds.loader {kind}, 0 workers, {SIDE}"
                    runners.append((name, lambda compact=compact, side=side: side.run(compact), len(slices)))
        # The default type without compression (``--compression none``): what LZ4 decoding costs.
        plain_path = tmp / "uint8-none.h5"
        build_store(plain_path, slices, dtype=None, compression="none")
        sizes[PLAIN] = plain_path.stat().st_size
        runners += loader_runners(PLAIN, plain_path, batch=args.batch)
        runners.append(torch_load_runner(tmp, slices, min(args.torch_files, len(slices))))
        runners.append(dicom_runner(tmp, slices, min(args.dicom_files, len(slices))))
        best = best_rates(runners, rounds=args.rounds)
        side.close()
        cpu = (
            cpu_per_batch(tmp / "default.h5", batch=args.batch, epochs=args.cpu_epochs)
            if Path("/proc/self/stat").exists()
            else {}
        )
    rows = list(best.items())
    limit = best["numpy memmap (the limit)"]
    tl = best["torch.load, one file per slice"]
    dcm = best["pydicom decode, one file per slice"]

    print(
        f"\nSliceDataset read speed: {len(slices)} slices 256x256 float32 from {source}; shuffled; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op thread(s); DataLoader batch {args.batch}; best of {args.rounds} rounds"
    )
    for name, size in sizes.items():
        print(f"  {name}: {size / 2**20:.0f} MiB ({size / (len(slices) * SIZE * SIZE * 4):.2f}x float32)")
    width = max(len(r[0]) for r in rows)
    print(f"\n{'method':<{width}}  {'slices/s':>9}  {'x memmap':>8}  {'x torch.load':>12}  {'x DICOM':>8}")
    for name, r in rows:
        print(f"{name:<{width}}  {r:>9.0f}  {r / limit:>8.2f}  {r / tl:>12.2f}  {r / dcm:>8.1f}")
    unc = best["store float32 uncompressed: SliceDataset __getitem__"]
    default = f"store default ({DEFAULT_DTYPE}+{DEFAULT_COMPRESSION})"
    dft = best[f"{default}: SliceDataset __getitem__"]
    collate = best["numpy memmap: DataLoader per item, 0 workers"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    if cpu:
        print(
            f"\nCPU time per batch of {args.batch} (ms, user + system, {args.cpu_epochs} epochs): the work each "
            "transport costs, whatever share of the cores the machine grants"
        )
        for name, (main_ms, workers_ms) in cpu.items():
            print(f"  {name:<{width}}  main {main_ms:6.2f}  workers {workers_ms:6.2f}  total {main_ms + workers_ms:6.2f}")
    print("\ngoals:")
    print(f"  uncompressed __getitem__ >= 0.5x memmap: {unc / limit:.2f}x {verdict(unc >= 0.5 * limit)}")
    print(f"  default store >= 15k slices/s per worker (__getitem__, one process): {dft:.0f} {verdict(dft >= 15000)}")
    print(f"  default store >= 2x torch.load: {dft / tl:.1f}x {verdict(dft >= 2 * tl)}")
    print(f"  default store >= 30x DICOM decode: {dft / dcm:.0f}x {verdict(dft >= 30 * dcm)}")
    for kind in ("float32", "compact"):
        zero = best[f"{default}: ds.loader {kind}, 0 workers"]
        two = best[f"{default}: ds.loader {kind}, 2 workers"]
        via_h5py = best[f"{default}: ds.loader {kind}, 0 workers, via h5py"]
        print(
            f"  ds.loader {kind}, batch {args.batch}, 0 workers >= 1.5x memmap + default collate DataLoader: "
            f"{zero / collate:.2f}x {verdict(zero >= 1.5 * collate)}"
        )
        print(f"  ds.loader {kind}, 0 workers >= 0.5x bare memmap per item: {zero / limit:.2f}x {verdict(zero >= 0.5 * limit)}")
        old = best[f"{default}: ds.loader {kind}, 2 workers, {OLD}"]
        side = best[f"{default}: ds.loader {kind}, 0 workers, {SIDE}"]
        print(
            f"  ds.loader {kind}, 2 workers no slower than 0 workers: {two / zero:.2f}x {verdict(two >= zero)} "
            f"(with {OLD}: {old / zero:.2f}x; ring / {OLD}: {two / old:.1f}x; "
            f"ceiling, {SIDE}: {side / zero:.2f}x)"
        )
        if cpu:
            alone = sum(cpu[f"ds.loader {kind}, 0 workers"])
            ring_ms = cpu[f"ds.loader {kind}, 2 workers"]
            print(
                f"  (CPU per batch: 0 workers {alone:.2f} ms, 2 workers {sum(ring_ms):.2f} ms: on two cores of its own "
                f"2 workers reach at most {2 * alone / sum(ring_ms):.2f}x of 0 workers, on one core's share "
                f"{alone / sum(ring_ms):.2f}x)"
            )
        print(f"  (direct chunk reads / h5py reads, ds.loader {kind}, 0 workers: {zero / via_h5py:.2f}x)")
        plain = best[f"{PLAIN}: ds.loader {kind}, 0 workers"]
        print(
            f"  ({PLAIN}, --compression none, ds.loader {kind}, 0 workers: {plain / collate:.2f}x memmap + default "
            f"collate, {plain / limit:.2f}x bare memmap; {sizes[PLAIN] / sizes[default]:.2f}x the default store's size)"
        )


if __name__ == "__main__":
    main()
