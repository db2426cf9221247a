"""Does the loader keep the accelerator busy? Train a 2D ResNet for a fixed number of steps per feed.

Run: ``python bench/gpu_feed.py [--steps 200] [--batch 64] [--workers 2]``

One run, the same slices for every feed: ``--slices`` windowed CT slices (``../shared/data``'s
CT, as bench/loader.py makes them; a phantom when absent), stored once as a medload store
(the default uint8 + LZ4) and once as one uncompressed int16 DICOM file per slice. Feeds:

* medload ``SliceDataset`` through torch's DataLoader (per item, default collate);
* medload ``SliceDataset.loader`` (batch-native, float32 batches);
* medload ``SliceDataset.loader(compact=True)`` (uint8 batches decoded on the device);
* MONAI ``CacheDataset`` (DICOM read with ``PydicomReader``, windowed, every item cached in RAM);
* MONAI ``PersistentDataset`` (the same transforms, cached as one ``torch.save`` file per item);
* decode per item: pydicom read, rescale and window in ``__getitem__`` (no cache).

Each trains a fresh ResNet-18-sized network (plain torch, no torchvision) with SGD for
``--steps`` steps after ``--warmup`` steps, shuffled, ``--workers`` workers, pinned memory on
CUDA, and reports images/s and the fraction of step time spent waiting for the next batch
(``next(iterator)`` plus host-side preparation; on CUDA each step is synchronized, so the
rest is the device's work). Without CUDA it runs on the CPU with a tiny network (a smoke
test; the fractions then say little about a GPU). Goal (issue 15, on a GPU): medload's
waiting fraction at most half of ``CacheDataset``'s at the same batch size and workers.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import medload  # noqa: E402
from bench.loader import ct_slices, write_dicom_slices  # noqa: E402
from medload.datasets import SliceDataset  # noqa: E402

PER_VOLUME = 64  # slices per stored volume; volume v has label v % 2 in every feed


# --- the network: ResNet-18's layout in plain torch --------------------------------------------
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.skip(x))


def resnet(
    widths: tuple[int, ...] = (64, 128, 256, 512), blocks: tuple[int, ...] = (2, 2, 2, 2), in_channels: int = 1, classes: int = 2
) -> nn.Module:
    """ResNet-18 with the defaults (11.2 M parameters for 1 input channel and 2 classes)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, 1),
    ]
    cin = widths[0]
    for i, (width, n) in enumerate(zip(widths, blocks)):
        for j in range(n):
            layers.append(BasicBlock(cin, width, 2 if (j == 0 and i > 0) else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes)]
    return nn.Sequential(*layers)


MODELS = {"resnet18": {}, "tiny": {"widths": (8, 16, 32, 64), "blocks": (1, 1, 1, 1)}}


# --- the feeds --------------------------------------------------------------------------------
class DicomSlices(torch.utils.data.Dataset):
    """Decode per item: read the DICOM file, rescale to HU, window 40/400 to [0, 1]."""

    def __init__(self, files: list[Path], labels: np.ndarray) -> None:
        self.files, self.labels = files, labels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict[str, Any]:
        import pydicom

        d = pydicom.dcmread(self.files[i])
        hu = d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept)
        image = np.clip((hu - (40 - 200)) / 400, 0, 1, dtype=np.float32)
        return {"image": torch.from_numpy(image)[None], "label": torch.tensor(int(self.labels[i]))}


def monai_transforms() -> Any:
    from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, LoadImaged, ScaleIntensityRanged

    return Compose(
        [
            LoadImaged(keys="image", reader="PydicomReader", image_only=True),
            EnsureChannelFirstd(keys="image", channel_dim="no_channel"),
            ScaleIntensityRanged(keys="image", a_min=40 - 200, a_max=40 + 200, b_min=0.0, b_max=1.0, clip=True),
            EnsureTyped(keys=("image", "label"), track_meta=False),
        ]
    )


Feed = tuple[Any, Callable[[Any, Any], tuple[torch.Tensor, torch.Tensor]]]


def to_device(batch: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    non_blocking = device.type == "cuda"
    return (
        batch["image"].to(device, non_blocking=non_blocking).float(),
        batch["label"].to(device, non_blocking=non_blocking).long(),
    )


def make_feeds(work: Path, slices: np.ndarray, args: argparse.Namespace, device: torch.device) -> dict[str, Callable[[], Feed]]:
    """Name -> a function building (DataLoader, batch -> (images, labels) on the device)."""
    labels = (np.arange(len(slices)) // PER_VOLUME) % 2
    store = work / "store.h5"
    with medload.Store.create(store, overwrite=True) as st:
        for v, start in enumerate(range(0, len(slices), PER_VOLUME)):
            meta = {"patient_key": f"pat-{v:03d}", "series_key": f"se-{v:03d}", "source_hash": f"feed-{v}"}
            st.add(medload.Volume(slices[start : start + PER_VOLUME], np.eye(4), modality="CT", meta=meta), label=v % 2)
    files = write_dicom_slices(work, slices, len(slices), size=slices.shape[-1])
    records = [{"image": str(f), "label": int(lab)} for f, lab in zip(files, labels)]
    pin = device.type == "cuda"
    common = {
        "batch_size": args.batch,
        "shuffle": True,
        "num_workers": args.workers,
        "pin_memory": pin,
        "persistent_workers": args.workers > 0,
        "drop_last": True,
    }

    def per_item() -> Feed:
        ds = SliceDataset(store, with_mask=False)
        return torch.utils.data.DataLoader(ds, **common), lambda b, d: to_device(b, d)

    def batch_native(compact: bool) -> Callable[[], Feed]:
        def build() -> Feed:
            loader = SliceDataset(store, with_mask=False).loader(
                args.batch, shuffle=True, num_workers=args.workers, pin_memory=pin, drop_last=True, compact=compact
            )

            def prepare(b: Any, d: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
                out = loader.decode(b, d)
                return out["image"], out["label"]

            return loader, prepare

        return build

    def monai_cache() -> Feed:
        from monai.data import CacheDataset, DataLoader

        ds = CacheDataset(records, monai_transforms(), cache_rate=1.0, num_workers=max(args.workers, 1), progress=False)
        return DataLoader(ds, **common), lambda b, d: to_device(b, d)

    def monai_persistent() -> Feed:
        from monai.data import DataLoader, PersistentDataset

        ds = PersistentDataset(records, monai_transforms(), cache_dir=work / "persistent")
        for i in range(len(ds)):  # fill the disk cache first: the timed steps read it
            ds[i]
        return DataLoader(ds, **common), lambda b, d: to_device(b, d)

    def dicom() -> Feed:
        return torch.utils.data.DataLoader(DicomSlices(files, labels), **common), lambda b, d: to_device(b, d)

    feeds = {
        "medload SliceDataset, per item + collate": per_item,
        "medload ds.loader, float32 batches": batch_native(False),
        "medload ds.loader, compact uint8 + device decode": batch_native(True),
        "MONAI CacheDataset (DICOM, cached in RAM)": monai_cache,
        "MONAI PersistentDataset (DICOM, cached on disk)": monai_persistent,
        "DICOM decode per item": dicom,
    }
    return feeds


# --- training loop ----------------------------------------------------------------------------
def batches(loader: Any) -> Iterator[Any]:
    while True:  # epoch after epoch; starting a new epoch counts as waiting
        yield from loader


def train(feed: Feed, args: argparse.Namespace, device: torch.device) -> dict[str, float]:
    loader, prepare = feed
    torch.manual_seed(0)
    model = resnet(**MODELS[args.model]).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    stream = batches(loader)
    wait = total = 0.0
    images = 0
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        x, y = prepare(next(stream), device)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        sync()
        t2 = time.perf_counter()
        if step >= args.warmup:
            wait += t1 - t0
            total += t2 - t0
            images += int(x.shape[0])
    del stream  # shuts the workers down
    return {"images_s": images / total, "wait": wait / total, "loss": float(loss.detach())}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200 if cuda else 20, help="timed training steps per feed")
    parser.add_argument("--warmup", type=int, default=10 if cuda else 3, help="untimed steps first (workers start)")
    parser.add_argument("--batch", type=int, default=64 if cuda else 16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--slices", type=int, default=1024 if cuda else 256, help="slices in the data (cycled)")
    parser.add_argument("--size", type=int, default=256 if cuda else 128, help="slice height and width")
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet18" if cuda else "tiny")
    parser.add_argument("--only", nargs="*", default=None, help="feeds whose name contains one of these words")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    device = torch.device("cuda" if cuda else "cpu")
    # MONAI warns per file that these single slices carry no orientation tags (irrelevant here).
    warnings.filterwarnings("ignore", module=r"monai\.")
    try:
        import monai  # noqa: F401

        has_monai = True
    except ImportError:
        has_monai = False
    slices, source = ct_slices(args.slices, size=args.size)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        feeds = make_feeds(Path(tmp), slices, args, device)
        for name, build in feeds.items():
            if args.only and not any(word.lower() in name.lower() for word in args.only):
                continue
            if "MONAI" in name and not has_monai:
                print(f"{name}: skipped (monai is not installed)")
                continue
            results[name] = train(build(), args, device)
    where = torch.cuda.get_device_name() if cuda else f"CPU ({os.cpu_count()} cores; no CUDA device: a smoke run)"
    print(
        f"\nGPU feed: {args.model} on {where}; {len(slices)} slices {args.size}x{args.size} from {source}; "
        f"batch {args.batch}, {args.workers} workers, {args.steps} timed steps after {args.warmup}; "
        f"load average {os.getloadavg()[0]:.1f}; torch {torch.__version__}"
    )
    width = max(len(n) for n in results) if results else 10
    cache = results.get("MONAI CacheDataset (DICOM, cached in RAM)")
    print(f"{'feed':<{width}}  {'images/s':>9}  {'waiting':>8}  {'wait / CacheDataset':>19}")
    for name, r in results.items():
        ratio = f"{r['wait'] / cache['wait']:.2f}" if cache and cache["wait"] > 0 else "-"
        print(f"{name:<{width}}  {r['images_s']:>9.1f}  {r['wait']:>7.1%}  {ratio:>19}")
    best = (
        min((r["wait"], n) for n, r in results.items() if n.startswith("medload ds.loader"))
        if any(n.startswith("medload ds.loader") for n in results)
        else None
    )
    if cache and best:
        met = best[0] <= 0.5 * cache["wait"]
        print(
            f"\ngoal (on a GPU): medload's waiting fraction <= 0.5x CacheDataset's: {best[0]:.1%} vs "
            f"{cache['wait']:.1%} -> {'met' if met else 'NOT met'}{'' if cuda else ' (CPU run: not the goal setting)'}"
        )
    return results


if __name__ == "__main__":
    main()
