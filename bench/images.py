"""2D image datasets: the usual PyTorch and TensorFlow pipelines against medload's store, in one run.

Run: ``python bench/images.py [--n 5000] [--workers 0 2] [--workdir /tmp/medload-bench-images]``;
converting only: ``python bench/images.py --convert-only [--convert-n 1000] [--before TREE ...]``

The images are made from real slices (``../shared/data``: the TotalSegmentator CT, its DICOM
series, the NIH MR series), windowed, resized to 256x256, flipped and re-windowed into
variants until there are ``--n`` of them, and written in class folders (``ct/``, ``mr/``) as a
third each of 8-bit JPEG (quality 90), 8-bit PNG and 16-bit PNG, file names
``<volume>_<n>.<ext>`` (the volume is the patient). Every pipeline serves the same thing: a
grey ``(1, 224, 224)`` float32 image scaled to [0, 1] then standardized with one mean/std, and
its class label, in batches of 32, in shuffled order.

(a) PyTorch: an ImageFolder-style dataset that opens, decodes, converts, resizes (PIL
    bilinear) and normalizes each file per item, through a DataLoader, against medload's store
    (``convert --size 224 --grayscale``, the default uint8 + LZ4) served by ``SliceDataset``
    through the same DataLoader (normalized per batch), by ``SliceDataset.loader`` (whole
    batches per worker), and by ``SliceDataset.loader(compact=True)`` (uint8 batches through
    the worker pipes, decoded to float32 in the main process). Goal: >= 3x images/s at equal
    workers.
(b) TensorFlow: the same images as TFRecords of encoded JPEG (8 files), read by
    ``TFRecordDataset(num_parallel_reads=AUTOTUNE)`` + shuffle + ``parse_single_example`` +
    ``decode_jpeg`` + ``resize`` + standardization (``num_parallel_calls=AUTOTUNE``) + batch +
    prefetch, against ``medload.datasets.tf_dataset`` (shuffle, parallel batch reads,
    normalization, prefetch). Goal: >= 1.5x.
(c) Bytes on disk: the store against the PNG originals and against the TFRecords.
(d) Converting (``--convert-only``): images/s of ``medload convert FOLDER -o OUT --size 224
    --grayscale --workers W`` (a new process each time, as a user runs it: start-up, scan,
    plan, convert, report) on ``--convert-n`` of the images, beside a plain loop in one
    process (PIL open + decode + grey + resize, one h5py uint8 LZ4 dataset per image), as a
    ratio; ``--before TREE ...`` times other medload checkouts in the same run (e.g.
    ``git archive <commit> | tar -x -C /tmp/before``) for before/after numbers.

The machine may be shared: each method is timed in turn for ``--rounds`` rounds (one full
epoch each, after a warm-up epoch) and its best round is kept.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import medload

SHARED = ROOT.parent / "shared" / "data"
SIZE, OUT = 256, 224
MEAN, STD = 0.25, 0.3  # one grey channel's statistics, the same for every pipeline
BATCH = 32


# --------------------------------------------------------------------------- the images
def real_slices() -> dict[str, list[tuple[str, np.ndarray]]]:
    """Windowed real slices in [0, 1] by class: ``{"ct": [(volume, slice)], "mr": [...]}``."""
    from skimage.transform import resize

    out: dict[str, list[tuple[str, np.ndarray]]] = {"ct": [], "mr": []}

    def add(cls: str, volume: str, array: np.ndarray, lo: float, hi: float) -> None:
        for sl in array:
            if sl.std() == 0:
                continue
            img = np.clip((sl.astype(np.float32) - lo) / (hi - lo), 0, 1)
            out[cls].append((f"{volume}", resize(img, (SIZE, SIZE), order=1, anti_aliasing=True).astype(np.float32)))

    ts = SHARED / "totalsegmentator_ct"
    if (ts / "example_ct_dicom").exists():
        vol = medload.load(ts / "example_ct_dicom")
        add("ct", "10001", vol.array, -160, 240)
    if (ts / "example_ct.nii.gz").exists():
        vol = medload.load(ts / "example_ct.nii.gz")
        add("ct", "10002", vol.array, -160, 240)
    nih = SHARED / "dcm_qa_nih" / "In"
    if nih.exists():
        for i, series in enumerate(s for s in medload.scan(nih) if s.kind == "dicom"):
            vol = medload.load(series)
            arr = vol.array.reshape(-1, *vol.array.shape[-2:])  # fMRI frames x slices: each a real slice
            hi = float(np.percentile(arr, 99.5)) or 1.0
            add("mr", f"{20000 + i}", arr, 0.0, hi)
    if (ts / "example_mr_sm.nii.gz").exists():
        vol = medload.load(ts / "example_mr_sm.nii.gz")
        add("mr", "20100", vol.array, 0.0, float(np.percentile(vol.array, 99.5)) or 1.0)
    if not out["ct"] or not out["mr"]:
        raise SystemExit(f"bench/images.py needs real slices in {SHARED} (totalsegmentator_ct, dcm_qa_nih)")
    return out


def write_images(root: Path, n: int) -> list[tuple[Path, int]]:
    """``n`` images in ``root/<class>/``: JPEG, 8-bit PNG and 16-bit PNG in turn. Returns (path, label)."""
    from PIL import Image

    done = root / ".complete"
    classes = ["ct", "mr"]
    if done.exists() and int(done.read_text()) == n:
        return [(p, classes.index(p.parent.name)) for c in classes for p in sorted((root / c).iterdir())]
    shutil.rmtree(root, ignore_errors=True)
    slices = real_slices()
    files: list[tuple[Path, int]] = []
    per_class = -(-n // 2)
    for label, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        pool = slices[cls]
        for i in range(per_class):
            volume, img = pool[i % len(pool)]
            variant = i // len(pool)
            # Variants of a real slice: flips and a gamma, so no two files are the same.
            if variant & 1:
                img = img[:, ::-1]
            if variant & 2:
                img = img[::-1]
            img = img ** (1.0 + 0.15 * (variant // 4))
            stem = f"{volume}_{i:05d}"
            kind = i % 3
            if kind == 0:
                path = root / cls / f"{stem}.jpg"
                Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(path, quality=90)
            elif kind == 1:
                path = root / cls / f"{stem}.png"
                Image.fromarray((img * 255 + 0.5).astype(np.uint8)).save(path)
            else:
                path = root / cls / f"{stem}.png"
                Image.fromarray((img * 65535 + 0.5).astype(np.uint16)).save(path)
            files.append((path, label))
    done.write_text(str(n))
    return files


# --------------------------------------------------------------------------- (a) PyTorch
class ImageFolderPIL:
    """What torchvision's ImageFolder + Resize + ToTensor + Normalize do, for grey 8/16-bit files.

    torchvision itself is not used (not installed here, and its default loader turns 16-bit
    PNGs into 8-bit RGB); this is the same per-item work: open, decode, convert, resize,
    scale, normalize.
    """

    def __init__(self, files: list[tuple[Path, int]]) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image

        path, label = self.files[i]
        with Image.open(path) as im:
            if im.mode.startswith("I;16") or im.mode == "I":
                x = np.asarray(im.convert("F").resize((OUT, OUT), Image.BILINEAR), np.float32) / 65535.0
            else:
                x = np.asarray(im.convert("L").resize((OUT, OUT), Image.BILINEAR), np.float32) / 255.0
        x = (x - MEAN) / STD
        return torch.from_numpy(x[None]), label


def epoch_torch(loader, normalize: bool, decode: bool = False) -> int:
    n = 0
    for batch in loader:
        if decode:  # a compact batch (stored uint8 + scale/offset) to float32 in the main process
            batch = loader.decode(batch)
        x = batch[0] if isinstance(batch, (list, tuple)) else batch["image"]
        if normalize:
            x = (x - MEAN) / STD
        n += int(x.shape[0])
    return n


# --------------------------------------------------------------------------- (b) TensorFlow
def write_tfrecords(folder: Path, files: list[tuple[Path, int]], shards: int = 8) -> list[str]:
    import io

    import tensorflow as tf
    from PIL import Image

    done = folder / ".complete"
    paths = [str(folder / f"images-{k:02d}.tfrecord") for k in range(shards)]
    if done.exists() and int(done.read_text()) == len(files):
        return paths
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    writers = [tf.io.TFRecordWriter(p) for p in paths]
    for i, (path, label) in enumerate(files):
        with Image.open(path) as im:
            if im.mode.startswith("I;16") or im.mode == "I":
                arr = (np.asarray(im, np.float32) / 257.0 + 0.5).astype(np.uint8)
            else:
                arr = np.asarray(im.convert("L"))
        if path.suffix == ".jpg":
            data = path.read_bytes()
        else:
            buf = io.BytesIO()
            Image.fromarray(arr).save(buf, format="JPEG", quality=90)
            data = buf.getvalue()
        example = tf.train.Example(
            features=tf.train.Features(
                feature={
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                }
            )
        )
        writers[i % shards].write(example.SerializeToString())
    for w in writers:
        w.close()
    done.write_text(str(len(files)))
    return paths


def tfrecord_dataset(paths: list[str]):
    import tensorflow as tf

    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}

    @tf.autograph.experimental.do_not_convert  # plain tf ops: nothing for autograph to convert
    def parse(record):
        ex = tf.io.parse_single_example(record, spec)
        img = tf.io.decode_jpeg(ex["image"], channels=1)
        img = tf.image.resize(img, (OUT, OUT), method="bilinear")
        img = (img / 255.0 - MEAN) / STD
        return img, ex["label"]

    autotune = tf.data.AUTOTUNE
    ds = tf.data.TFRecordDataset(paths, num_parallel_reads=autotune)
    ds = ds.shuffle(1024, seed=0).map(parse, num_parallel_calls=autotune).batch(BATCH)
    return ds.prefetch(autotune)


def epoch_tf(ds) -> int:
    n = 0
    for x, _ in ds:
        n += int(x.shape[0])
    return n


# --------------------------------------------------------------------------- (d) converting
def subset_folder(work: Path, files: list[tuple[Path, int]], n: int) -> Path:
    """The first ``n`` images of each class hard-linked into ``work/convert-<n>/<class>/``."""
    root = work / f"convert-{n}"
    done = root / ".complete"
    if done.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    per_class: dict[str, int] = {}
    for path, _ in files:
        cls = path.parent.name
        if per_class.get(cls, 0) >= -(-n // 2):
            continue
        per_class[cls] = per_class.get(cls, 0) + 1
        (root / cls).mkdir(parents=True, exist_ok=True)
        os.link(path, root / cls / path.name)
    done.write_text("")
    return root


def convert_anchor(folder: Path, out: Path) -> int:
    """The plain loop: PIL open + decode + grey + resize, one h5py dataset per image (uint8, LZ4)."""
    import h5py
    import hdf5plugin
    from PIL import Image

    paths = sorted(p for p in folder.rglob("*") if p.suffix in (".png", ".jpg"))
    with h5py.File(out, "w") as f:
        for i, path in enumerate(paths):
            with Image.open(path) as im:
                if im.mode.startswith("I;16") or im.mode == "I":
                    x = np.asarray(im.convert("F").resize((OUT, OUT), Image.BILINEAR), np.float32) / 65535.0
                else:
                    x = np.asarray(im.convert("L").resize((OUT, OUT), Image.BILINEAR), np.float32) / 255.0
            f.create_dataset(f"{i:06d}", data=(x * 255 + 0.5).astype(np.uint8)[None], chunks=(1, OUT, OUT), **hdf5plugin.LZ4())
    return len(paths)


def convert_medload(tree: Path, folder: Path, out: Path, workers: int) -> float:
    """Seconds for ``medload convert FOLDER -o OUT --size 224 --grayscale`` run from ``tree`` (a new process)."""
    import subprocess

    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "MEDLOAD_PHI_KEY": "bench-images-" + "0" * 40}
    cmd = [sys.executable, "-m", "medload.cli", "convert", str(folder), "-o", str(out), "--size", str(OUT)]
    cmd += ["--grayscale", "--workers", str(workers), "--quiet", "--patient-pattern", r"(?P<patient>\d+)_"]
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, cwd=tree)
    return time.perf_counter() - t


def convert_rows(work: Path, files: list[tuple[Path, int]], args: argparse.Namespace) -> list[tuple[str, float, float]]:
    """(d) images/s converting: the plain loop, then medload from this tree and each ``--before`` tree."""
    folder = subset_folder(work, files, args.convert_n)
    n = sum(1 for p in folder.rglob("*") if p.suffix in (".png", ".jpg"))
    anchor = 0.0
    for _ in range(args.rounds):
        t = time.perf_counter()
        convert_anchor(folder, work / "anchor.h5")
        anchor = max(anchor, n / (time.perf_counter() - t))
    rows = [(f"(d) {n} images: plain loop, PIL decode + resize + one h5py dataset each", anchor, 1.0)]
    trees = [("this tree", ROOT)] + [(f"--before {b}", Path(b).resolve()) for b in args.before]
    for w in args.convert_workers:
        for name, tree in trees:
            best = min(convert_medload(tree, folder, work / "convert-out", w) for _ in range(args.rounds))
            rows.append((f"(d) medload convert --workers {w} ({name})", n / best, n / best / anchor))
    return rows


# --------------------------------------------------------------------------- running
def best_rate(fn, rounds: int) -> float:
    fn()  # warm-up: worker start, file cache, tf.data graph
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        n = fn()
        best = max(best, n / (time.perf_counter() - t))
    return best


def folder_bytes(path: Path, suffixes: tuple[str, ...] | None = None) -> int:
    return sum(
        p.stat().st_size
        for p in path.rglob("*")
        if p.is_file() and not p.name.startswith(".") and (suffixes is None or p.suffix in suffixes) and p.name != "report.json"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="images (default 5000)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to compare at")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workdir", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "medload-bench-images"))
    ap.add_argument("--no-tf", action="store_true", help="skip the TensorFlow part")
    ap.add_argument("--convert-only", action="store_true", help="only (d): images/s converting")
    ap.add_argument("--convert-n", type=int, default=1000, help="images converted in (d) (default 1000)")
    ap.add_argument("--convert-workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--before", nargs="*", default=[], help="other medload trees to time in (d), e.g. an older commit")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    files = write_images(work / "images", args.n)
    print(f"images: {len(files)} in {work / 'images'} ({time.perf_counter() - t:.1f} s to make or find)")
    if args.convert_only:
        print(f"\n{'converting (one run; best of --rounds)':62s} {'images/s':>10s} {'ratio':>7s}")
        for name, rate, ratio in convert_rows(work, files, args):
            print(f"{name:62s} {rate:10.1f} {ratio:6.2f}x")
        return
    store = work / "store"
    if not (store / "report.json").exists():
        t = time.perf_counter()
        report = medload.convert(
            work / "images",
            store,
            size=OUT,
            grayscale=True,
            workers=2,
            progress=False,
            patient_pattern=r"(?P<patient>\d+)_",
            overwrite=True,
        )
        assert report.ok, report.failed[:3]
        print(f"medload convert --size {OUT} --grayscale: {len(files) / (time.perf_counter() - t):.0f} images/s (2 workers)")
    reader = medload.open(store)
    assert len(reader) == len(files), (len(reader), len(files))

    import torch
    from torch.utils.data import DataLoader

    from medload.datasets import SliceDataset

    torch.set_num_threads(1)
    rows = []
    baseline = ImageFolderPIL(files)
    sliceds = SliceDataset(store, return_tuple=True)
    x_ref, _ = baseline[0]
    x_ml, _ = sliceds[0]
    assert tuple(x_ref.shape) == tuple(x_ml.shape) == (1, OUT, OUT)
    for w in args.workers:
        g = torch.Generator().manual_seed(0)
        pil = DataLoader(baseline, batch_size=BATCH, shuffle=True, num_workers=w, generator=g, persistent_workers=w > 0)
        ml = DataLoader(sliceds, batch_size=BATCH, shuffle=True, num_workers=w, generator=g, persistent_workers=w > 0)
        ml_batches = sliceds.loader(BATCH, shuffle=True, num_workers=w, generator=g)
        r_pil = best_rate(lambda loader=pil: epoch_torch(loader, False), args.rounds)
        r_ml = best_rate(lambda loader=ml: epoch_torch(loader, True), args.rounds)
        r_mlb = best_rate(lambda loader=ml_batches: epoch_torch(loader, True), args.rounds)
        ml_compact = sliceds.loader(BATCH, shuffle=True, num_workers=w, generator=g, compact=True)
        r_mlc = best_rate(lambda loader=ml_compact: epoch_torch(loader, True, decode=True), args.rounds)
        rows.append((f"(a) workers={w}: PIL ImageFolder-style per item", r_pil, 1.0))
        rows.append((f"(a) workers={w}: medload SliceDataset + DataLoader", r_ml, r_ml / r_pil))
        rows.append((f"(a) workers={w}: medload SliceDataset.loader", r_mlb, r_mlb / r_pil))
        rows.append((f"(a) workers={w}: medload SliceDataset.loader(compact=True)", r_mlc, r_mlc / r_pil))

    sizes = [
        ("PNG originals (8- and 16-bit PNG files)", folder_bytes(work / "images", (".png",))),
        ("all originals (PNG + JPEG)", folder_bytes(work / "images")),
        (f"medload store ({OUT}x{OUT} grey, uint8 + LZ4)", folder_bytes(store, (".h5",))),
    ]
    if not args.no_tf:
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(2)
        paths = write_tfrecords(work / "tfrecords", files)
        from medload.datasets import tf_dataset

        tfr = tfrecord_dataset(paths)
        mlt = tf_dataset(store, batch_size=BATCH, shuffle=True, normalize=([MEAN], [STD]))
        r_tfr = best_rate(lambda: epoch_tf(tfr), args.rounds)
        r_mlt = best_rate(lambda: epoch_tf(mlt), args.rounds)
        rows.append(("(b) TFRecord JPEG + decode/resize/standardize (AUTOTUNE)", r_tfr, 1.0))
        rows.append(("(b) medload tf_dataset (AUTOTUNE)", r_mlt, r_mlt / r_tfr))
        sizes.append(("TFRecords of JPEG (256x256, 8 files)", folder_bytes(work / "tfrecords")))

    print(f"\n{len(files)} images, batches of {BATCH}, {OUT}x{OUT} grey float32 out, cores: {os.cpu_count()}")
    print(f"{'pipeline':62s} {'images/s':>10s} {'ratio':>7s}")
    for name, rate, ratio in rows:
        print(f"{name:62s} {rate:10.0f} {ratio:6.2f}x")
    store_bytes = sizes[2][1]
    print(f"\n{'bytes on disk':62s} {'MB':>10s} {'store/x':>7s}")
    for name, size in sizes:
        print(f"{name:62s} {size / 1e6:10.1f} {store_bytes / size:6.2f}x")


if __name__ == "__main__":
    main()
