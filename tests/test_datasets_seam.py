"""The seam between medload's datasets and the training code people write, checked with numbers.

A synthetic DICOM series (sagittal, and a double oblique) holds an L-shaped phantom in one
corner of one side: its long arm at 60 HU (label 1), its foot at 200 HU (label 2), air
elsewhere; no flip, rotation or transpose maps the L onto itself. dcm2niix converts the series
(the reference for where each voxel is in the world), a segmentation is drawn on dcm2niix's
NIfTI as a user's tool would (labels 1 and 2 from the HU), and ``medload.convert`` stores both.
Then, as a user would:

- image and mask stay voxel-aligned through MONAI dictionary transforms and TorchIO
  transforms (the image inside each augmented label keeps that label's level), mask values stay
  the integer labels, int64, as the dataset served them;
- the affine medload hands to MONAI and TorchIO puts each label where dcm2niix puts it in the
  world, also after ``Orientationd("RAS")``, ``Spacingd``, ``ToCanonical`` and ``Resample``;
- a slice shows the label on the edge ``slice_labels`` names, after a flip-free pipeline;
- channels (CT windows) stay in order; masks with different label sets collate exactly.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

import medload
from fixtures.synthetic import write_dicom_series

torch = pytest.importorskip("torch")
mt = pytest.importorskip("monai.transforms")
tio = pytest.importorskip("torchio")
nib = pytest.importorskip("nibabel")

from medload.datasets import MonaiTransform, SliceDataset, TorchIOTransform, VolumeDataset  # noqa: E402
from medload.qc.views import slice_labels  # noqa: E402
from medload.transforms.ct import MultiWindow  # noqa: E402
from medload.transforms.pipeline import Pipeline  # noqa: E402

SHAPE = (16, 28, 24)  # DICOM slices, rows, columns
SPACING = (2.0, 1.0, 1.2)
HU = {1: 60.0, 2: 200.0}  # label -> phantom HU
AIR = -1000.0
# The default CT window (abdomen 40/400) maps the labels' HU to these stored values.
LEVEL = {k: (hu - (40 - 200)) / 400 for k, hu in HU.items()}
# Resampling blurs the lesion's rim; the median inside a label stays within this of its level
# when image and mask moved alike, and lands on another level (or air) when they did not.
LEVEL_TOL = 0.12

warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="monai")


def phantom_hu() -> np.ndarray:
    """HU in DICOM index order (slice, row, column): an L in the (slice, row) plane at low columns."""
    hu = np.full(SHAPE, AIR, np.float32)
    hu[3:13, 4:10, 3:9] = HU[1]  # the long arm, along the slices
    hu[9:13, 10:22, 3:9] = HU[2]  # the foot, along the rows
    return hu


def world_centroids(array: np.ndarray, affine: np.ndarray, labels: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """World (RAS mm) centroid of each label: of ``labels`` if given, else of the HU levels in ``array``."""
    out = {}
    for k, hu in HU.items():
        where = (labels == k) if labels is not None else (np.abs(array - hu) < 20)
        idx = np.argwhere(np.asarray(where))
        assert idx.size, f"label {k} is missing"
        out[k] = (np.asarray(affine, float) @ np.append(idx.mean(axis=0), 1.0))[:3]
    return out


class Case:
    """One converted series: its store, dcm2niix's NIfTI and the world centroids dcm2niix gives."""

    def __init__(self, root: Path, orientation: str, pipeline=None) -> None:
        self.orientation = orientation
        dicom = root / "dicom"
        write_dicom_series(
            dicom,
            orientation=orientation,
            shape=SHAPE,
            spacing=SPACING,
            pixel_array=(phantom_hu() + 1024).astype(np.int16),
            modality="CT",
            rescale=(1.0, -1024.0),
            series_description=f"phantom {orientation}",
        )
        dcm2niix = shutil.which("dcm2niix")
        if dcm2niix is None:
            pytest.skip("dcm2niix not on PATH (pip install dcm2niix)")
        nii_dir = root / "nii"
        nii_dir.mkdir()
        subprocess.run(
            [dcm2niix, "-z", "y", "-b", "n", "-f", "ct", "-o", str(nii_dir), str(dicom)], check=True, capture_output=True
        )
        (nifti,) = nii_dir.glob("ct*.nii.gz")
        image = nib.load(str(nifti))
        hu = np.asarray(image.dataobj, dtype=np.float32)
        self.reference = world_centroids(hu, image.affine)
        # The user's segmentation, drawn on dcm2niix's NIfTI (its grid and affine).
        labels = np.zeros(hu.shape, np.uint8)
        for k, v in HU.items():
            labels[np.abs(hu - v) < 20] = k
        masks = root / "labels"
        masks.mkdir()
        nib.save(nib.Nifti1Image(labels, image.affine), str(masks / "ct.nii.gz"))
        self.store = root / "store"
        report = medload.convert(dicom, self.store, masks=masks, pipeline=pipeline, workers=0, progress=False)
        assert report.ok and medload.open(self.store).volumes[0].has_mask, report
        self.record = medload.open(self.store).volumes[0]


@pytest.fixture(scope="module", params=["sagittal", "oblique"])
def case(request, tmp_path_factory) -> Case:
    return Case(tmp_path_factory.mktemp(f"seam-{request.param}"), request.param)


@pytest.fixture(scope="module")
def windows(tmp_path_factory) -> Case:
    return Case(tmp_path_factory.mktemp("seam-windows"), "oblique", pipeline=Pipeline([MultiWindow()]))


def levels_inside(image, mask) -> dict[int, float]:
    """Median image value (channel 0) inside each label of the mask."""
    image, mask = np.asarray(image), np.asarray(mask)
    out = {}
    for k in HU:
        inside = mask[0] == k
        assert inside.sum() >= 8, f"label {k} lost (only {int(inside.sum())} voxels left)"
        out[k] = float(np.median(image[0][inside]))
    return out


def assert_labels_intact(out, before) -> None:
    mask = out["mask"]
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.int64, mask.dtype
    assert set(torch.unique(mask).tolist()) <= {0, 1, 2}
    assert tuple(mask.shape[1:]) == tuple(out["image"].shape[1:])
    levels = levels_inside(out["image"], mask)
    for k, level in levels.items():
        assert abs(level - LEVEL[k]) < LEVEL_TOL, (k, level, LEVEL[k])
    moved = mask.shape != before["mask"].shape or not torch.equal(mask, before["mask"])
    assert moved, "the transform left the mask as it was: the check above proves nothing"


# --- what the dataset serves ----------------------------------------------------------------


def test_the_stored_mask_lies_on_the_stored_image(case):
    item = VolumeDataset(case.store)[0]
    assert item["mask"].dtype == torch.int64 and tuple(item["mask"].shape) == tuple(item["image"].shape)
    levels = levels_inside(item["image"], item["mask"])
    for k in HU:  # exact to the uint8 store's step
        assert abs(levels[k] - LEVEL[k]) <= 0.5 / 255 + 1e-6


def test_the_items_affine_puts_each_label_where_dcm2niix_does(case):
    item = VolumeDataset(case.store)[0]
    affine = item["affine"].numpy()
    assert affine.shape == (4, 4) and item["affine"].dtype == torch.float64
    np.testing.assert_allclose(item["spacing"].numpy(), np.sqrt((affine[:3, :3] ** 2).sum(0)), atol=1e-6)
    ours = world_centroids(None, affine, item["mask"][0].numpy())
    for k in HU:
        np.testing.assert_allclose(ours[k], case.reference[k], atol=0.01)


def test_a_patchs_affine_is_moved_to_its_corner(case):
    full = VolumeDataset(case.store)[0]
    patches = VolumeDataset(case.store, patch_size=(6, 10, 10), samples_per_volume=4, foreground_ratio=1.0, seed=2)
    inverse = np.linalg.inv(full["affine"].numpy())
    for i in range(len(patches)):
        patch = patches[i]
        assert patch["mask"].any()
        # Every patch voxel, sent to the world by the patch's affine and back to the volume's
        # grid by the volume's, lands on a voxel holding the same value.
        idx = np.argwhere(np.ones(patch["image"].shape[1:], bool))
        world = patch["affine"].numpy() @ np.c_[idx, np.ones(len(idx))].T
        back = np.rint(inverse @ world)[:3].astype(int).T
        np.testing.assert_array_equal(back - idx, np.broadcast_to(patch["origin"].numpy(), back.shape))
        values = full["image"][0].numpy()[tuple(back.T)]
        np.testing.assert_array_equal(values, patch["image"][0].numpy().reshape(-1))


# --- orientation: MONAI and TorchIO with the affine medload hands over ----------------------


def _reoriented_world(out) -> dict[int, np.ndarray]:
    return world_centroids(None, out["affine"].numpy(), out["mask"][0].numpy())


@pytest.mark.parametrize(
    "name",
    ["monai Orientationd RAS", "monai Spacingd 1mm", "torchio ToCanonical", "torchio Resample 1mm"],
)
def test_reorienting_keeps_each_label_where_dcm2niix_puts_it(case, name):
    keys = ["image", "mask"]
    transform = {
        "monai Orientationd RAS": MonaiTransform(mt.Orientationd(keys=keys, axcodes="RAS", labels=None)),
        "monai Spacingd 1mm": MonaiTransform(mt.Spacingd(keys=keys, pixdim=(1.0, 1.0, 1.0), mode=("bilinear", "nearest"))),
        "torchio ToCanonical": TorchIOTransform(tio.ToCanonical()),
        "torchio Resample 1mm": TorchIOTransform(tio.Resample(1.0)),
    }[name]
    item = VolumeDataset(case.store)[0]
    out = transform(item)
    assert_labels_intact(out, item)
    resampled = "Spacing" in name or "Resample" in name
    # Reorienting only permutes and flips axes (exact); resampling with nearest labels moves a
    # label's centroid by less than the voxel.
    tolerance = 0.6 if resampled else 0.01
    ours = _reoriented_world(out)
    for k in HU:
        np.testing.assert_allclose(ours[k], case.reference[k], atol=tolerance)
    if "RAS" in name or "Canonical" in name:
        codes = nib.aff2axcodes(out["affine"].numpy())
        assert codes == ("R", "A", "S"), codes
    if ("RAS" in name or "Canonical" in name) and case.orientation == "sagittal":
        # RAS: the array's first axis runs to the patient's right (for the sagittal series, along
        # the slices), so the label lying further right in the world (dcm2niix) has the larger
        # first index. (The oblique's labels share their first-axis range after reorienting.)
        first_index = {k: np.argwhere(out["mask"][0].numpy() == k)[:, 0].mean() for k in HU}
        assert (first_index[2] - first_index[1]) * (case.reference[2][0] - case.reference[1][0]) > 0
    if resampled:
        np.testing.assert_allclose(out["spacing"].numpy(), [1.0, 1.0, 1.0], atol=1e-4)


def test_plain_tensors_would_put_the_labels_elsewhere(case):
    # Why the adapters exist: MONAI given the plain tensors (no affine) assumes the identity,
    # and the world positions it implies are not dcm2niix's.
    item = VolumeDataset(case.store)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = mt.Orientationd(keys=["image", "mask"], axcodes="RAS", labels=None)({"image": item["image"], "mask": item["mask"]})
    implied = world_centroids(None, np.asarray(out["mask"].affine), np.asarray(out["mask"])[0])
    assert max(float(np.abs(implied[k] - case.reference[k]).max()) for k in HU) > 5.0


# --- alignment through common augmentations ---------------------------------------------------

KEYS = ["image", "mask"]


def _monai_3d() -> dict:
    return {
        "RandFlipd": mt.Compose([mt.RandFlipd(keys=KEYS, prob=1.0, spatial_axis=a) for a in (0, 2)]),
        "RandRotate90d": mt.RandRotate90d(keys=KEYS, prob=1.0, max_k=3, spatial_axes=(1, 2)),
        "RandAffined": mt.RandAffined(
            keys=KEYS,
            prob=1.0,
            rotate_range=(0.3, 0.3, 0.3),
            translate_range=(2, 3, 3),
            scale_range=(0.1, 0.1, 0.1),
            mode=("bilinear", "nearest"),
            padding_mode="zeros",
        ),
        "RandSpatialCropd": mt.RandSpatialCropd(keys=KEYS, roi_size=(14, 24, 20), random_size=False),
        "Spacingd": mt.Spacingd(keys=KEYS, pixdim=(1.5, 0.8, 0.8), mode=("bilinear", "nearest")),
        "Orientationd": mt.Orientationd(keys=KEYS, axcodes="LPI", labels=None),
    }


@pytest.mark.parametrize("name", list(_monai_3d()))
def test_monai_moves_mask_and_image_alike(case, name):
    transform = _monai_3d()[name]
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(seed=7)
    ds = VolumeDataset(case.store, transform=MonaiTransform(transform))
    out, before = ds[0], VolumeDataset(case.store)[0]
    assert_labels_intact(out, before)
    assert out["image"].dtype == torch.float32 and type(out["image"]) is torch.Tensor


def _torchio() -> dict:
    return {
        "RandomFlip": tio.RandomFlip(axes=(0, 1, 2), flip_probability=1.0),
        "RandomAffine": tio.RandomAffine(scales=0.1, degrees=15, translation=3, image_interpolation="linear"),
        "RandomElasticDeformation": tio.RandomElasticDeformation(num_control_points=5, max_displacement=4.0),
        "ToCanonical": tio.ToCanonical(),
        "Resample": tio.Resample((1.5, 0.8, 0.8)),
    }


@pytest.mark.parametrize("name", list(_torchio()))
def test_torchio_moves_mask_and_image_alike(case, name):
    torch.manual_seed(3)
    out = VolumeDataset(case.store, transform=TorchIOTransform(_torchio()[name]))[0]
    assert_labels_intact(out, VolumeDataset(case.store)[0])


def test_the_alignment_check_fails_when_only_the_image_moves(case):
    item = VolumeDataset(case.store)[0]
    moved = dict(item, image=torch.flip(item["image"], dims=(1, 2)))
    levels = levels_inside(moved["image"], moved["mask"])
    assert any(abs(levels[k] - LEVEL[k]) >= LEVEL_TOL for k in HU), levels


def test_an_interpolated_mask_is_refused(case):
    bilinear = mt.RandAffined(keys=KEYS, prob=1.0, rotate_range=(0.4, 0.4, 0.4), mode="bilinear")
    bilinear.set_random_state(seed=1)
    with pytest.raises(medload.MedloadError, match="nearest"):
        MonaiTransform(bilinear)(VolumeDataset(case.store)[0])


def test_torchvision_v2(case):
    try:
        import torchvision  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"torchvision does not import here ({exc}); tests/test_datasets_augment.py covers v2 where it does")
    from torchvision.transforms import v2

    ds = SliceDataset(case.store, tv_tensors=True, transform=v2.Compose([v2.RandomHorizontalFlip(p=1.0), v2.RandomRotation(20)]))
    plain = SliceDataset(case.store)
    for i in range(len(ds)):
        if {1, 2} <= set(plain[i]["mask"].unique().tolist()):
            torch.manual_seed(i)
            out = ds[i]
            assert out["mask"].dtype == torch.int64 and set(out["mask"].unique().tolist()) <= {0, 1, 2}
            for k, level in levels_inside(out["image"], out["mask"]).items():
                assert abs(level - LEVEL[k]) < LEVEL_TOL


# --- 2D slices ----------------------------------------------------------------------------

_DIRECTION = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}


def _towards(letter: str, vector: np.ndarray) -> float:
    axis, sign = _DIRECTION[letter]
    return sign * float(vector[axis])


def test_a_slice_shows_each_label_on_the_edge_slice_labels_names(case):
    # A flip-free pipeline, as a user writes one for 2D training; afterwards the foot of the L
    # must lie, relative to its arm, towards the edges slice_labels names (from dcm2niix's world).
    pipeline = MonaiTransform(
        mt.Compose(
            [
                mt.ScaleIntensityd(keys=["image"]),
                mt.RandAffined(keys=KEYS, prob=1.0, translate_range=(3, 3), mode=("bilinear", "nearest")),
                mt.RandSpatialCropd(keys=KEYS, roi_size=(24, 20), random_size=False),
                mt.Resized(keys=KEYS, spatial_size=(48, 40), mode=("bilinear", "nearest")),
            ]
        )
    )
    pipeline.transform.set_random_state(seed=5)
    ds = SliceDataset(case.store, transform=pipeline)
    plain = SliceDataset(case.store)
    edges = slice_labels(case.record.affine)
    delta = case.reference[2] - case.reference[1]  # world vector from the arm to the foot
    checked = 0
    for i in range(len(ds)):
        if not {1, 2} <= set(plain[i]["mask"].unique().tolist()):
            continue
        mask = ds[i]["mask"][0].numpy()
        assert mask.dtype == np.int64
        if not {1, 2} <= set(np.unique(mask).tolist()):
            continue  # the crop cut a label away
        (r1, c1), (r2, c2) = (np.argwhere(mask == k).mean(axis=0) for k in (1, 2))
        for shown, letter in ((r2 - r1, edges["bottom"]), (c2 - c1, edges["right"])):
            expected = _towards(letter, delta)
            if abs(expected) > 2.0:  # the L's parts differ by more than 2 mm along this edge's axis
                assert shown * expected > 0, (i, edges, shown, expected)
                checked += 1
    assert checked >= 2


def test_slice_items_keep_the_stored_slice_as_drawn(case):
    # The model sees array[k] exactly as stored: what slice_labels describes.
    reader = medload.open(case.store)
    ds = SliceDataset(case.store)
    for i in (0, len(ds) // 2, len(ds) - 1):
        item = ds[i]
        np.testing.assert_array_equal(item["image"][0].numpy(), reader.read_slices(0, item["slice"], item["slice"] + 1)[0])
        np.testing.assert_array_equal(item["mask"][0].numpy(), reader.read_mask(0, item["slice"], item["slice"] + 1)[0])


# --- channels and collation ---------------------------------------------------------------


def _window_levels() -> np.ndarray:
    """(channel, label) values MultiWindow gives the phantom's HU: brain, subdural, bone."""
    hu = np.array([[[HU[1], HU[2]]]], np.float32)
    return MultiWindow()(medload.Volume(hu, np.eye(4), modality="CT")).array[:, 0, 0, :]


@pytest.mark.parametrize(
    "transform",
    [
        MonaiTransform(mt.RandAffined(keys=KEYS, prob=1.0, rotate_range=(0.3, 0.3, 0.3), mode=("bilinear", "nearest"))),
        MonaiTransform(mt.Orientationd(keys=KEYS, axcodes="RAS", labels=None)),
        TorchIOTransform(tio.RandomAffine(degrees=15, image_interpolation="linear")),
        TorchIOTransform(tio.ToCanonical()),
    ],
    ids=["monai RandAffined", "monai Orientationd", "torchio RandomAffine", "torchio ToCanonical"],
)
def test_window_channels_stay_in_order(windows, transform):
    expected = _window_levels()
    assert medload.open(windows.store).volumes[0].channels == ("brain", "subdural", "bone")
    if hasattr(transform.transform, "set_random_state"):
        transform.transform.set_random_state(seed=11)
    torch.manual_seed(11)
    out = VolumeDataset(windows.store, transform=transform)[0]
    assert out["image"].shape[0] == 3 and out["mask"].dtype == torch.int64
    for c in range(3):
        for j, k in enumerate(HU):
            inside = out["image"][c][out["mask"][0] == k]
            assert abs(float(inside.median()) - expected[c, j]) < LEVEL_TOL, (c, k)


def test_masks_with_different_label_sets_collate_exactly(tmp_path):
    # One volume labelled {0, 1} (stored uint8), one {0, 2, 300} (stored int16): batches keep
    # every label as stored, through torch's collation and medload's own loader.
    shape = (4, 12, 10)
    a = np.zeros(shape, np.uint8)
    a[:, 2:5, 2:6] = 1
    b = np.zeros(shape, np.int16)
    b[:, 3:9, 1:4] = 2
    b[:, 6:10, 5:9] = 300
    path = tmp_path / "labels.h5"
    with medload.Store.create(path) as store:
        for n, mask in enumerate((a, b)):
            vol = medload.Volume(
                np.random.default_rng(n).random(shape, dtype=np.float32),
                np.eye(4),
                modality="CT",
                meta={"patient_key": f"p{n}", "series_key": f"s{n}", "source_hash": f"h{n}"},
            )
            store.add(vol, mask=mask)
    stored = np.concatenate([a, b]).astype(np.int64)[:, None]
    ds = SliceDataset(path)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert batch["mask"].dtype == torch.int64
    np.testing.assert_array_equal(batch["mask"].numpy(), stored)
    for compact in (False, True):
        loader = ds.loader(8, compact=compact)
        got = next(iter(loader))
        got = loader.decode(got, "cpu") if compact else got
        assert got["mask"].dtype == torch.int64
        np.testing.assert_array_equal(got["mask"].numpy(), stored)
    volumes = next(iter(torch.utils.data.DataLoader(VolumeDataset(path), batch_size=2)))
    assert tuple(volumes["affine"].shape) == (2, 4, 4)
    np.testing.assert_array_equal(volumes["mask"][:, 0].numpy(), np.stack([a, b]).astype(np.int64))


@pytest.fixture(scope="module")
def stacked_mr(tmp_path_factory) -> Path:
    """An nnU-Net folder, two MR channels on an oblique grid: the lesion bright in T2, dark in ADC."""
    import json

    root = tmp_path_factory.mktemp("seam-mr") / "Dataset002_Seam"
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    affine = np.eye(4)
    angle = np.deg2rad(25.0)
    affine[:3, :3] = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]) @ np.diag(
        [0.9, 0.9, 2.5]
    )
    affine[:3, 3] = [-20.0, 15.0, 30.0]
    shape = (24, 20, 10)  # NIfTI (i, j, k)
    label = np.zeros(shape, np.uint8)
    label[3:9, 4:16, 2:8] = 1  # arm
    label[9:18, 4:9, 2:8] = 2  # foot
    for ch, contrast in enumerate((+300.0, -300.0)):
        data = np.full(shape, 600.0, np.float32) + contrast * (label > 0) + (ch * 50.0) * (label == 2)
        nib.save(nib.Nifti1Image(data, affine), root / "imagesTr" / f"c000_{ch:04d}.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / "c000.nii.gz")
    spec = {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "arm": 1, "foot": 2}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(spec))
    out = root.parent / "store"
    # pipeline="none": the raw values (the MR preset's N4 and z-score are for real anatomy, not a phantom).
    assert medload.convert(root, out, workers=0, progress=False, pipeline="none").ok
    return out


def _contrast(image, mask) -> list[float]:
    """Per channel: median inside the lesion minus median outside (T2 > 0, ADC < 0)."""
    image, mask = np.asarray(image), np.asarray(mask)[0]
    return [float(np.median(image[c][mask > 0]) - np.median(image[c][mask == 0])) for c in range(image.shape[0])]


@pytest.mark.parametrize(
    "make",
    [
        lambda: MonaiTransform(mt.Orientationd(keys=KEYS, axcodes="RAS", labels=None)),
        lambda: MonaiTransform(mt.RandAffined(keys=KEYS, prob=1.0, rotate_range=(0.4, 0.2, 0.2), mode=("bilinear", "nearest"))),
        lambda: TorchIOTransform(tio.ToCanonical()),
        lambda: TorchIOTransform(tio.RandomElasticDeformation(num_control_points=5, max_displacement=4.0)),
    ],
    ids=["monai Orientationd", "monai RandAffined", "torchio ToCanonical", "torchio RandomElasticDeformation"],
)
def test_stacked_mr_channels_stay_in_order(stacked_mr, make):
    record = medload.open(stacked_mr).volumes[0]
    assert record.channels == ("T2", "ADC") and record.has_mask
    transform = make()
    if hasattr(transform.transform, "set_random_state"):
        transform.transform.set_random_state(seed=4)
    torch.manual_seed(4)
    before = VolumeDataset(stacked_mr)[0]
    out = VolumeDataset(stacked_mr, transform=transform)[0]
    t2, adc = _contrast(out["image"], out["mask"])
    assert t2 > 0 > adc, (t2, adc)
    assert out["mask"].dtype == torch.int64 and set(torch.unique(out["mask"]).tolist()) == {0, 1, 2}
    # The world centroid of each label stays put (through the reorientation or the warp's small motion).
    if "Orientationd" in str(transform) or "ToCanonical" in str(transform):
        a = world_centroids(None, before["affine"].numpy(), before["mask"][0].numpy())
        b = world_centroids(None, out["affine"].numpy(), out["mask"][0].numpy())
        for k in HU:
            np.testing.assert_allclose(a[k], b[k], atol=0.01)


def test_chosen_channels_come_in_the_order_asked_through_2d_transforms(stacked_mr):
    transform = MonaiTransform(mt.RandAffined(keys=KEYS, prob=1.0, rotate_range=(0.4,), mode=("bilinear", "nearest")))
    transform.transform.set_random_state(seed=9)
    ds = SliceDataset(stacked_mr, channels=["ADC", "T2"], transform=transform)
    plain = SliceDataset(stacked_mr)
    checked = 0
    for i in range(len(ds)):
        if plain[i]["mask"].sum() < 20:
            continue
        out = ds[i]
        if (out["mask"] > 0).sum() < 10:
            continue
        adc, t2 = _contrast(out["image"], out["mask"])
        assert t2 > 0 > adc, (i, adc, t2)
        checked += 1
    assert checked >= 3


def _richest_slice(store) -> dict:
    plain = SliceDataset(store)
    return plain[max(range(len(plain)), key=lambda i: (len(plain[i]["mask"].unique()), int((plain[i]["mask"] > 0).sum())))]


@pytest.mark.parametrize(
    "make",
    [
        lambda: tio.RandomFlip(axes=(0, 1), flip_probability=1.0),
        lambda: tio.RandomAffine(degrees=20, translation=2),
        lambda: tio.RandomElasticDeformation(num_control_points=5, max_displacement=(4, 4, 0)),
        lambda: tio.Resample((0.5, 0.5, 2.0)),
    ],
    ids=["RandomFlip", "RandomAffine", "RandomElasticDeformation", "Resample"],
)
def test_torchio_on_slices_moves_mask_and_image_alike(case, make):
    item = _richest_slice(case.store)
    assert set(item["mask"].unique().tolist()) == {0, 1, 2}
    torch.manual_seed(1)
    out = TorchIOTransform(make())(item)
    assert out["image"].ndim == 3  # (C, H, W) again
    assert_labels_intact(out, item)
    if out["image"].shape != item["image"].shape:  # Resample: the item says its new pixel size
        np.testing.assert_allclose(out["spacing"].numpy(), [item["spacing"][0], 0.5, 0.5])


@pytest.mark.parametrize("adapter", ["monai", "torchio"])
def test_adapters_work_in_dataloader_workers(case, adapter):
    transform = (
        MonaiTransform(mt.RandAffined(keys=KEYS, prob=1.0, rotate_range=(0.3, 0.3, 0.3), mode=("bilinear", "nearest")))
        if adapter == "monai"
        else TorchIOTransform(tio.RandomAffine(degrees=15, image_interpolation="linear"))
    )
    ds = VolumeDataset(case.store, patch_size=(12, 20, 20), samples_per_volume=4, foreground_ratio=1.0, transform=transform)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert len(batches) == 2
    for batch in batches:
        assert batch["mask"].dtype == torch.int64 and tuple(batch["affine"].shape) == (2, 4, 4)
        for b in range(2):
            labels = set(batch["mask"][b].unique().tolist())
            assert labels <= {0, 1, 2} and labels != {0}
            for k in labels - {0}:
                inside = batch["image"][b, 0][batch["mask"][b, 0] == k]
                if inside.numel() >= 8:
                    assert abs(float(inside.median()) - LEVEL[k]) < LEVEL_TOL


# --- real scanner series: the reoriented item equals dcm2niix's canonical NIfTI, voxel for voxel

REAL_SERIES = {
    "sagittal MR (dicom2nifti anatomical)": ("dicom2nifti", "anatomical", "001"),
    "oblique MR (Hitachi)": ("dicom2nifti", "hitachi", "anatomical", "001"),
    "sagittal enhanced MR (Philips)": ("dicom2nifti", "philips_enhanced", "anatomical", "001"),
}


@pytest.fixture(scope="module", params=list(REAL_SERIES))
def real_series(request, tmp_path_factory):
    from tests.conftest import shared_path

    dicom = shared_path(*REAL_SERIES[request.param])
    dcm2niix = shutil.which("dcm2niix")
    if dcm2niix is None:
        pytest.skip("dcm2niix not on PATH (pip install dcm2niix)")
    root = tmp_path_factory.mktemp("seam-real")
    subprocess.run([dcm2niix, "-z", "y", "-b", "n", "-f", "ref", "-o", str(root), str(dicom)], check=True, capture_output=True)
    (nifti,) = root.glob("ref*.nii.gz")
    store = root / "store"
    assert medload.convert(dicom, store, pipeline="none", dtype="float32", workers=0, progress=False).ok
    return store, nib.as_closest_canonical(nib.load(str(nifti)))


@pytest.mark.parametrize(
    "make",
    [
        lambda: MonaiTransform(mt.Orientationd(keys=["image"], axcodes="RAS", labels=None)),
        lambda: TorchIOTransform(tio.ToCanonical()),
    ],
    ids=["monai Orientationd RAS", "torchio ToCanonical"],
)
def test_real_series_reoriented_equals_dcm2niix_canonical(real_series, make):
    store, canonical = real_series
    out = VolumeDataset(store, transform=make())[0]
    np.testing.assert_allclose(out["affine"].numpy(), canonical.affine, atol=0.01)
    reference = np.asarray(canonical.dataobj, dtype=np.float32)
    assert tuple(out["image"].shape[1:]) == reference.shape
    # float32 rounding of the Philips rescale (values near 1e6) is the only difference
    np.testing.assert_allclose(out["image"][0].numpy(), reference, rtol=1e-6, atol=1e-3)


# --- NIfTI sources whose axes run any way: the item, reoriented, equals the source made canonical

NIFTI_AXES = {
    "LAS (radiological, det < 0)": np.diag([-0.9, 1.1, 2.0, 1.0]),
    "PIR (permuted)": np.array([[0, 0, 1.5, 0], [-0.8, 0, 0, 0], [0, -1.2, 0, 0], [0, 0, 0, 1.0]]),
    "oblique 30 degrees": None,
}


@pytest.fixture(scope="module", params=list(NIFTI_AXES))
def nifti_source(request, tmp_path_factory):
    affine = NIFTI_AXES[request.param]
    if affine is None:
        a = np.deg2rad(30.0)
        affine = np.eye(4)
        affine[:3, :3] = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]]) @ np.diag([1.0, 0.9, 2.2])
    affine = affine.copy()
    affine[:3, 3] = [12.0, -30.0, 7.5]
    root = tmp_path_factory.mktemp("seam-nifti")
    shape = (20, 18, 10)
    labels = np.zeros(shape, np.uint8)
    labels[2:9, 3:14, 2:6] = 1
    labels[9:17, 3:7, 2:6] = 2
    hu = np.where(labels == 1, HU[1], np.where(labels == 2, HU[2], AIR)).astype(np.int16)
    (root / "img").mkdir()
    (root / "labels").mkdir()
    nib.save(nib.Nifti1Image(hu, affine), str(root / "img" / "ct.nii.gz"))
    nib.save(nib.Nifti1Image(labels, affine), str(root / "labels" / "ct.nii.gz"))
    store = root / "store"
    report = medload.convert(
        root / "img", store, masks=root / "labels", modality="CT", dtype="float32", workers=0, progress=False
    )
    assert report.ok and medload.open(store).volumes[0].has_mask, report
    return store, nib.as_closest_canonical(nib.Nifti1Image(labels, affine))


@pytest.mark.parametrize(
    "make",
    [
        lambda: MonaiTransform(mt.Orientationd(keys=KEYS, axcodes="RAS", labels=None)),
        lambda: TorchIOTransform(tio.ToCanonical()),
    ],
    ids=["monai Orientationd RAS", "torchio ToCanonical"],
)
def test_nifti_source_reoriented_equals_the_source_made_canonical(nifti_source, make):
    store, canonical = nifti_source
    out = VolumeDataset(store, transform=make())[0]
    np.testing.assert_allclose(out["affine"].numpy(), canonical.affine, atol=0.01)
    np.testing.assert_array_equal(out["mask"][0].numpy(), np.asarray(canonical.dataobj))
    levels = levels_inside(out["image"], out["mask"])
    for k in HU:
        assert abs(levels[k] - LEVEL[k]) < 1e-5


def test_context_channels_are_the_neighbours_in_order_through_a_random_transform(case):
    # 2.5D: channel j of slice k is slice k - 1 + j. A random transform moves all three alike:
    # each channel equals the same transform (same random state) applied to that neighbour alone.
    def transform():
        t = mt.RandAffined(keys=["image"], prob=1.0, rotate_range=(0.5,), translate_range=(3, 3), mode="bilinear")
        t.set_random_state(seed=21)
        return MonaiTransform(t)

    plain = SliceDataset(case.store, with_mask=False)
    ds = SliceDataset(case.store, context=1, with_mask=False, transform=transform())
    k = len(plain) // 2
    out = ds[k]
    assert out["image"].shape[0] == 3
    for j, neighbour in enumerate((k - 1, k, k + 1)):
        alone = transform()(plain[neighbour])
        np.testing.assert_allclose(out["image"][j].numpy(), alone["image"][0].numpy(), atol=1e-5)
    assert not np.allclose(out["image"][0].numpy(), out["image"][2].numpy())  # the neighbours differ


def test_monai_multi_sample_crops_each_carry_their_own_affine(case):
    crop = mt.RandCropByPosNegLabeld(keys=KEYS, label_key="mask", spatial_size=(8, 12, 12), pos=1, neg=0, num_samples=3)
    crop.set_random_state(seed=6)
    full = VolumeDataset(case.store)[0]
    samples = VolumeDataset(case.store, transform=MonaiTransform(crop))[0]
    assert isinstance(samples, list) and len(samples) == 3
    inverse = np.linalg.inv(full["affine"].numpy())
    for sample in samples:
        assert sample["mask"].dtype == torch.int64 and (sample["mask"] > 0).any()
        # The crop's affine sends its voxel (0, 0, 0) to a voxel of the volume holding the same value.
        corner = np.rint(inverse @ sample["affine"].numpy() @ [0, 0, 0, 1])[:3].astype(int)
        z, y, x = corner
        np.testing.assert_array_equal(sample["image"][0].numpy(), full["image"][0, z : z + 8, y : y + 12, x : x + 12].numpy())
        np.testing.assert_array_equal(sample["mask"][0].numpy(), full["mask"][0, z : z + 8, y : y + 12, x : x + 12].numpy())


def test_monai_spacingd_on_a_slice_uses_its_pixel_size(case):
    # A slice item carries its pixel size (1.0 x 1.2 mm here); MONAI given the plain tensor
    # assumes 1 mm pixels and would make 55 x 47 pixels of "0.5 mm" instead of 55 x 56 (old code).
    item = _richest_slice(case.store)
    assert item["spacing"].tolist() == list(SPACING)
    out = MonaiTransform(mt.Spacingd(keys=KEYS, pixdim=(0.5, 0.5), mode=("bilinear", "nearest")))(item)
    # MONAI keeps the extent between the first and last pixel centres: (n - 1) * s / 0.5 + 1.
    h, w = ((n - 1) * s / 0.5 + 1 for n, s in zip(item["image"].shape[1:], SPACING[1:]))
    assert abs(out["image"].shape[1] - h) <= 1 and abs(out["image"].shape[2] - w) <= 1, tuple(out["image"].shape)
    np.testing.assert_allclose(out["spacing"].numpy(), [SPACING[0], 0.5, 0.5], atol=1e-6)
    # The slice's world affine comes back for the new grid: 0.5 mm pixels in the slice's plane.
    np.testing.assert_allclose(np.linalg.norm(out["affine"].numpy()[:3, :3], axis=0), [0.5, 0.5, SPACING[0]], atol=1e-6)
    np.testing.assert_allclose(out["affine"].numpy()[:3, 2], item["affine"].numpy()[:3, 2], atol=1e-9)
    assert_labels_intact(out, item)
    # Each label keeps its physical area (mm^2) within a pixel row's worth.
    for k in HU:
        before = float((item["mask"] == k).sum()) * SPACING[1] * SPACING[2]
        after = float((out["mask"] == k).sum()) * 0.25
        assert abs(after - before) / before < 0.15, (k, before, after)
