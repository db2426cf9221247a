"""Issue 17: the QC page (``medload qc``) and the preview, checked as a user would check them.

- the page opens in a real browser (headless Chromium, started here; skipped with a reason
  where it is not installed): every thumbnail is drawn (the page's own DOM says so, from each
  image's ``naturalWidth``), the series that failed in the conversion are listed with their
  reason, and a screenshot is taken;
- the letters at a thumbnail's edges agree with its pixels and the stored affine, for axial,
  sagittal, coronal and double-oblique DICOM series: each volume's voxels hold their own world
  coordinate, so the side a letter names must be where that coordinate is largest;
- the PHI audit of the store (fixtures/phi.py) passes over the whole page folder;
- the preview draws slices in order, with the mask in colour and the window asked for.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import medload
from fixtures.synthetic import write_dicom_series
from medload.cli import main
from medload.qc import views
from medload.qc.report import write_qc

ROOT = Path(__file__).resolve().parent.parent
EXPORT = ROOT / "fixtures" / "export"
CHEAP = ["--size", "48", "--preset", "MR=none", "--preset", "CT=ct-abdomen"]

#: Edge letter -> (world axis, sign) in RAS+ (nibabel's convention: x grows towards the patient's
#: Right, y towards Anterior, z towards Superior): a letter names the side where its coordinate grows.
_RAS = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _browser(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    exe = _chromium()
    if exe is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium); .ci/run installs it")
    base = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--hide-scrollbars",
        "--virtual-time-budget=15000",
    ]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=180, check=False)


def _export_with_broken_series(src: Path) -> str:
    """The sample export, a sagittal MR, and a CT series with a missing slice; returns the broken series' key."""
    shutil.copytree(EXPORT, src)
    write_dicom_series(src / "sag", orientation="sagittal", modality="MR", shape=(8, 20, 18), seed=4, return_array=False)
    truth = write_dicom_series(src / "broken", shape=(6, 16, 16), seed=7, return_array=False, series_description="gap")
    os.remove(truth["files"][3])
    return str(truth["files"][0])


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("qc")
    _export_with_broken_series(base / "src")
    out = base / "out"
    code = main(
        [
            "convert",
            str(base / "src"),
            "-o",
            str(out),
            "--workers",
            "0",
            "--quiet",
            "--qc",
            "--masks",
            str(base / "src" / "labels"),
            *CHEAP,
        ]
    )
    assert code == 1  # one series failed
    return out


def _dump_dom(page: Path, tmp_path: Path) -> str:
    # '#all' makes the page load every (lazy) thumbnail at once; the DOM is read after the load.
    done = _browser(["--dump-dom", page.as_uri() + "#all"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_page_opens_in_chromium_with_every_thumbnail_and_the_failed_series(converted, tmp_path, capsys):
    # `convert --qc` wrote the page (the fixture); `medload qc` writes it again, whole.
    page = converted / "qc" / "index.html"
    assert page.is_file()
    assert main(["qc", str(converted)]) == 0
    assert "wrote" in capsys.readouterr().out
    report = json.loads((converted / "report.json").read_text())
    failed = [e for e in report["series"] if e["status"] == "failed"]
    assert len(failed) == 1
    n_volumes = len(medload.open(converted).volumes)
    assert n_volumes == report["counts"]["converted"] == 4

    dom = _dump_dom(page, tmp_path)
    images = re.findall(r"<img [^>]*>", dom)
    thumbs = [i for i in images if "thumbs/" in i]
    assert len(thumbs) == 3 * n_volumes
    states = [re.search(r'data-state="(\w+)"', i) for i in thumbs]
    assert all(s is not None and s.group(1) == "loaded" for s in states), thumbs
    state = re.search(r'<span id="thumb-state"[^>]*>', dom).group(0)
    assert f'data-loaded="{3 * n_volumes}"' in state and 'data-broken="0"' in state
    # The failed series: its pseudonymous key, status and the reader's reason, in the page's table.
    table = dom[dom.index('id="failed"') :]
    row = re.search(r'<tr class="failed"[^>]*>.*?</tr>', table, re.DOTALL).group(0)
    assert failed[0]["series_key"] in row and "missing slices" in row and "failed" in row

    shot = tmp_path / "qc.png"
    done = _browser([f"--screenshot={shot}", "--window-size=1280,1800", page.as_uri() + "#all"], tmp_path)
    assert done.returncode == 0 and shot.stat().st_size > 20_000, done.stderr[-2000:]
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 1800)
        pixels = np.asarray(im.convert("RGB"))
    assert (pixels.std(axis=(0, 1)) > 10).all()  # a drawn page, not a blank one
    if os.environ.get("MEDLOAD_QC_SCREENSHOT"):  # keep it to look at
        shutil.copy(shot, os.environ["MEDLOAD_QC_SCREENSHOT"])


def test_the_page_reports_a_missing_thumbnail(converted, tmp_path):
    # The check above can fail: a thumbnail removed from disk is counted as missing by the page.
    out = tmp_path / "qc"
    write_qc(converted, out)
    next((out / "thumbs").glob("000001_coronal.*")).unlink()
    dom = _dump_dom(out / "index.html", tmp_path)
    state = re.search(r'<span id="thumb-state"[^>]*>', dom).group(0)
    assert 'data-broken="1"' in state and "MISSING" in dom


def test_filters_and_sorting_are_in_the_page(converted, tmp_path):
    out = tmp_path / "qc"
    info = write_qc(converted, out)
    text = (out / "index.html").read_text()
    assert info["failed"] == 1 and info["volumes"] == 4
    for control in ("f-modality", "f-problems", "f-failed", "f-sort"):
        assert f"id='{control}'" in text
    # the modality filter offers exactly the modalities of the store and the report
    options = re.findall(r"<option>(\w+)</option>", text)
    assert sorted(options) == ["CT", "MR"]
    cards = re.findall(r"<article class='card[^']*' data-kind='volume' data-modality='(\w+)'", text)
    assert sorted(cards) == sorted(r.modality for r in medload.open(converted).volumes)
    # no network: nothing is fetched from anywhere but the page's folder
    assert not re.search(r"(src|href)=['\"](https?:|//)", text)


# --------------------------------------------------------------------------- orientation
def _world_coordinates(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """(3, Z, Y, X): the RAS+ millimetre coordinates of every voxel."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float64)
    return np.moveaxis(index @ affine[:3, :3].T + affine[:3, 3], -1, 0)


@pytest.mark.parametrize("orientation", ["axial", "sagittal", "coronal", "oblique"])
def test_thumbnail_letters_name_the_side_where_that_world_coordinate_grows(orientation, tmp_path):
    # The affine is the DICOM reader's (ImageOrientation/PositionPatient of a synthetic series);
    # each of three stored volumes holds one world coordinate (x, y or z in RAS+ mm) per voxel.
    # In every thumbnail the edge lettered R must be the brighter one of the x volume, A of the
    # y volume, S of the z volume (and L, P, I the darker one).
    write_dicom_series(
        tmp_path / "src", orientation=orientation, shape=(12, 20, 16), spacing=(2.0, 1.0, 1.2), seed=1, return_array=False
    )
    source = medload.load(medload.scan(tmp_path / "src")[0])
    affine = source.affine
    coords = _world_coordinates(source.shape, affine)
    with medload.Store.create(tmp_path / "s.h5", dtype="float32") as store:
        for axis in range(3):
            store.add(medload.Volume(coords[axis].astype(np.float32), affine, meta={"source_key": f"c{axis}"}))
    out = tmp_path / "qc"
    write_qc(tmp_path / "s.h5", out)
    page = (out / "index.html").read_text()
    records = medload.open(tmp_path / "s.h5").volumes
    from PIL import Image

    checked = 0
    for match in re.finditer(r"<img src='thumbs/((\d+)_(\w+)\.(png|jpg))'[^>]*data-labels='([^']+)'", page):
        volume, plane, letters = int(match.group(2)), match.group(3), json.loads(html.unescape(match.group(5)))
        world_axis = int(records[volume].source_key[1])
        with Image.open(out / "thumbs" / match.group(1)) as im:
            gray = np.asarray(im.convert("L"), np.float64)
        for first, last, profile in (("left", "right", gray.mean(axis=0)), ("top", "bottom", gray.mean(axis=1))):
            code = letters[last]
            axis, sign = _RAS[code]
            if axis != world_axis:
                continue
            # the coordinate grows towards the side named by +sign: compare the two edges' brightness
            towards_last = profile[-3:].mean() - profile[:3].mean()
            assert towards_last * sign > 20, (orientation, plane, letters, first, last, towards_last)
            checked += 1
    # every plane shows two world axes: 3 planes x 2 directions, each matched to one coordinate volume
    assert checked == 6


# --------------------------------------------------------------------------- privacy
def test_phi_audit_over_the_page_folder(tmp_path):
    """No planted identifying value, description or source folder name anywhere in the page folder
    (HTML and every PNG's bytes), unless the store was written with --keep-phi."""
    from fixtures.phi import find_values, write_phi_export

    # The export's folder is named after a patient, as hospital exports often are.
    src = tmp_path / "Quartermain_Zebulon_export"
    planted = write_phi_export(src)
    broken = write_dicom_series(
        src / "broken",
        shape=(6, 16, 16),
        seed=7,
        return_array=False,
        patient_name="Zebulon^Quartermain",
        series_description="gap Larkspur",
    )
    os.remove(broken["files"][3])
    out = tmp_path / "out"
    assert main(["convert", str(src), "-o", str(out), "--workers", "0", "--quiet", *CHEAP]) == 1
    assert main(["qc", str(out)]) == 0
    files = sorted(p for p in (out / "qc").rglob("*") if p.is_file())
    assert len(files) == 1 + 3 * 2  # the page and three thumbnails per converted series
    descriptors = [d for group in planted["descriptors"].values() for d in group]
    secrets = planted["values"] + descriptors + [src.name, str(src), "gap Larkspur"]
    assert find_values(files, secrets) == {}
    page = (out / "qc" / "index.html").read_text()
    assert "missing slices" in page  # the failure is listed, its reason kept

    # Positive control: the same audit finds the folder and the descriptions in a --keep-phi page.
    kept = tmp_path / "kept"
    assert main(["convert", str(src), "-o", str(kept), "--workers", "0", "--quiet", "--keep-phi", *CHEAP]) == 1
    assert main(["qc", str(kept)]) == 0
    hits = find_values([kept / "qc" / "index.html"], [str(src), planted["descriptors"]["series_descriptions"][0]])
    assert set(hits) == {str(src), planted["descriptors"]["series_descriptions"][0]}


def test_the_store_phi_audit_passes_over_the_qc_folder(tmp_path):
    """fixtures/phi.py's audit (79 planted values: names in folders, files, tags, descriptions,
    a mask and an unreadable file named after the patient) finds nothing in OUT/qc/, and the
    page still says why the burned-in series and the unreadable file were not converted."""
    from fixtures.phi import convert_audit_export, search_output, write_audit_export

    info = write_audit_export(tmp_path / "audit")
    out = tmp_path / "out"
    assert convert_audit_export(info, out, "--qc") == 1
    page = (out / "qc" / "index.html").read_text()
    assert "BurnedInAnnotation is YES" in page and "unreadable file" in page
    assert len(list((out / "qc" / "thumbs").iterdir())) == 3 * len(medload.open(out).volumes)
    hits = search_output(out / "qc", info["needles"])
    assert hits == {}, hits
    # The audit sees the page: with --keep-phi it finds the patient's folder name there.
    kept = tmp_path / "kept"
    assert convert_audit_export(info, kept, "--keep-phi", "--qc", masks=False) == 1
    assert "SMITHSON_JOHNATHAN_MRN12345678" in search_output(kept / "qc", info["needles"])


# --------------------------------------------------------------------------- preview
def test_preview_draws_slices_in_order_with_letters_mask_and_window(tmp_path):
    from PIL import Image

    from medload.preview import montage

    array = np.full((5, 32, 32), 0.5, np.float32)
    mask = np.zeros((5, 32, 32), np.uint8)
    mask[:, 4:12, 20:28] = 2  # label 2, towards the last columns
    affine = np.array([[0, 0, -0.8, 0], [0, -0.8, 0, 0], [3.0, 0, 0, 0], [0, 0, 0, 1]])  # z -> S, y -> P, x -> L
    with medload.Store.create(tmp_path / "s.h5", dtype="float32") as store:
        store.add(medload.Volume(array, affine, meta={"source_key": "a"}), mask=mask)
        store.add(medload.Volume(array * 0, affine, meta={"source_key": "b"}))
    info = montage(tmp_path / "s.h5", tmp_path / "m.png", n=6, tile=96, window=(0.0, 1.0))
    assert [z for _, z in info["slices"]] == sorted(z for _, z in info["slices"][:3]) + sorted(z for _, z in info["slices"][3:])
    assert [k for k, _ in info["slices"]] == sorted(k for k, _ in info["slices"])  # volume by volume
    assert info["letters"][0] == views.slice_labels(affine) == {"top": "A", "bottom": "P", "left": "R", "right": "L"}
    rgb = np.asarray(Image.open(tmp_path / "m.png").convert("RGB")).astype(int)
    first = rgb[:96, :96]
    # window (0, 1): 0.5 is mid-grey where there is no mask
    margin = 96 // 10 + 96 // 14 + 3
    assert np.any(np.all(np.abs(first[margin:-margin, margin:-margin] - 128) <= 1, axis=-1))
    # label 2's colour blended into the grey, in the right part of the tile (where the mask's columns are)
    green = (first[..., 1] - first[..., 0] > 30) & (first[..., 1] - first[..., 2] > 30)
    assert green.sum() > 50 and np.nonzero(green)[1].mean() > 96 / 2
    plain = montage(tmp_path / "s.h5", tmp_path / "n.png", n=6, tile=96, window=(0.0, 1.0), masks=False)
    rgb = np.asarray(Image.open(plain["path"]).convert("RGB")).astype(int)[:96, :96]
    assert not ((rgb[..., 1] - rgb[..., 0] > 30) & (rgb[..., 1] - rgb[..., 2] > 30)).any()


def test_single_slice_images_and_a_store_whose_series_all_failed(tmp_path):
    # A radiograph-like volume (one slice) is drawn as one plane, not as three one-pixel lines.
    with medload.Store.create(tmp_path / "x.h5") as store:
        store.add(medload.Volume(np.random.default_rng(0).random((1, 40, 30)), np.diag([1.0, 0.2, 0.2, 1.0]), modality="DX"))
    info = write_qc(tmp_path / "x.h5")
    page = Path(info["path"]).read_text()
    planes = re.findall(r"data-plane='(\w+)'", page)
    assert len(planes) == 1
    thumb = next((tmp_path / "x.qc" / "thumbs").iterdir())
    from PIL import Image

    with Image.open(thumb) as im:
        assert min(im.size) > 100  # 40 x 30 pixels of 0.2 mm, fitted to 160: 160 x 120
    # Every series failed: no shard was written, but the page lists why.
    src = tmp_path / "src"
    truth = write_dicom_series(src / "b", shape=(6, 16, 16), seed=7, return_array=False)
    os.remove(truth["files"][3])
    out = tmp_path / "out"
    assert main(["convert", str(src), "-o", str(out), "--workers", "0", "--quiet", *CHEAP]) == 1
    info = write_qc(out)
    assert info["volumes"] == 0 and info["failed"] == 1
    assert "missing slices" in Path(info["path"]).read_text()


def test_filters_and_sorting_work_in_the_browser(converted, tmp_path):
    # The filters, set from the address as a user's link would, run in Chromium: the DOM then
    # hides exactly the cards of other modalities, and sorting by slices reorders the cards.
    out = tmp_path / "qc"
    write_qc(converted, out)
    records = medload.open(converted).volumes
    page = (out / "index.html").as_uri()
    done = _browser(["--dump-dom", page + "#modality=MR&nofailed&sort=slices"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    cards = re.findall(
        r'<article class="card([^"]*)" data-kind="volume" data-modality="(\w+)"[^>]*'
        r'data-slices="(\d+)"',
        done.stdout,
    )
    shown = [(m, int(n)) for cls, m, n in cards if "hidden" not in cls]
    assert sorted(m for m, _ in shown) == sorted(r.modality for r in records if r.modality == "MR")
    assert all("hidden" in cls for cls, m, _ in cards if m != "MR")
    slices = [n for _, n in shown]
    assert slices == sorted(slices, reverse=True) and len(set(slices)) > 1
    assert re.search(r'<section id="failed-section" class="hidden"', done.stdout)
    assert f"{len(shown)} of {len(records)} volumes shown" in done.stdout


def test_a_volume_that_cannot_be_read_is_a_problem_on_its_card(converted, tmp_path, monkeypatch):
    from medload.qc import report as qc_report

    real = qc_report._volume_facts

    def damaged(store, volume, thumbs, size):
        if volume == 1:
            raise OSError("Can't synchronously read data (filter returned failure)")
        return real(store, volume, thumbs, size)

    monkeypatch.setattr(qc_report, "_volume_facts", damaged)
    info = write_qc(converted, tmp_path / "qc", workers=0)
    page = (tmp_path / "qc" / "index.html").read_text()
    card = re.search(r"<article[^>]*data-order='1'.*?</article>", page, re.DOTALL).group(0)
    assert "no thumbnails: reading it from the store failed (OSError: Can&#x27;t synchronously read" in card
    assert "<li data-problem='no_thumbnails'>" in card
    assert "<img" not in card and info["problems"] >= 1
    assert len(re.findall(r"<img ", page)) == 3 * (info["volumes"] - 1)


def test_python_m_medload_uses_its_workers(tmp_path):
    # `python -m medload` imports medload/__main__.py again in each worker process: guarded,
    # so the runner does not fall back to one process with a warning.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "medload",
            "convert",
            str(EXPORT),
            "-o",
            str(tmp_path / "out"),
            "--workers",
            "2",
            "--quiet",
            *CHEAP,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "if __name__" not in done.stderr and "RuntimeWarning" not in done.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["options"]["backend"] == "local pool (2 processes)"
    assert report["counts"]["converted"] == report["counts"]["series"] >= 3


def test_failed_rows_show_each_error_class_once_for_old_and_new_reports(tmp_path):
    # Version 1 wrote a failed worker's reason as "Class: message" and every other reason
    # without its class; version 2 never repeats the class. The page decides by the version and
    # the stage, not by whether the reason's text begins with the class.
    with medload.Store.create(tmp_path / "s.h5") as store:
        store.add(medload.Volume(np.zeros((2, 8, 8)), np.eye(4), meta={"series_key": "ok"}))
    rows = {
        1: [
            {"status": "failed", "stage": "worker", "error": "WorkerDied", "reason": "WorkerDied: exit code 9"},
            {"status": "failed", "stage": "read", "error": "GeometryError", "reason": "GeometryError: quoted: 2 gaps"},
        ],
        2: [
            {"status": "failed", "stage": "worker", "error": "WorkerDied", "reason": "exit code 9"},
            {"status": "failed", "stage": "read", "error": "GeometryError", "reason": "GeometryError: quoted: 2 gaps"},
        ],
    }
    for version, series in rows.items():
        (tmp_path / "s.report.json").write_text(json.dumps({"medload_report": version, "series": series}))
        page = Path(write_qc(tmp_path / "s.h5", workers=0)["path"]).read_text()
        reasons = re.findall(r"<td class='reason'>(.*?)</td>", page)
        # a reason that merely begins with a class name (a quoted message) keeps its own class in front
        assert reasons == ["WorkerDied: exit code 9", "GeometryError: GeometryError: quoted: 2 gaps"], version


def _thumb_pixels(folder: Path, name: str) -> np.ndarray:
    from PIL import Image

    with Image.open(folder / name) as im:
        return np.asarray(im.convert("RGB"), np.float64)


def test_every_channel_is_checked_and_drawn(tmp_path):
    # A two-sequence MR (T2, ADC) and an RGB image. Before, the page read channel 0 alone: a
    # NaN or a blank second channel passed unseen, and an RGB image was drawn as its red plane.
    rng = np.random.default_rng(3)
    mr = rng.random((2, 6, 24, 24)).astype(np.float32)  # (C, Z, Y, X)
    mr[1] = 0.5  # the ADC channel is blank
    mr[1, 2, 3, 4] = np.nan  # and holds one NaN
    rgb = np.zeros((3, 1, 32, 32), np.float32)
    rgb[0, :, :, :16] = 1.0  # left half red, right half blue
    rgb[2, :, :, 16:] = 1.0
    with medload.Store.create(tmp_path / "x.h5", dtype="float32") as store:
        store.add(medload.Volume(mr, np.eye(4), modality="MR", meta={"channels": ["T2", "ADC"]}))
        store.add(medload.Volume(rgb, np.eye(4), modality="XC", meta={"channels": ["R", "G", "B"]}))
    info = write_qc(tmp_path / "x.h5")
    page = Path(info["path"]).read_text()
    cards = page.split("<article")[1:]
    mr_card = next(c for c in cards if "data-modality='MR'" in c)
    assert "1 stored values are NaN or infinite" in mr_card
    assert "channel ADC is constant: every stored value is 0.5" in mr_card
    # Three planes per channel, each captioned with its channel.
    assert len(re.findall(r"data-plane='\w+'", mr_card)) == 6
    assert mr_card.count(" T2</figcaption>") == 3 and mr_card.count(" ADC</figcaption>") == 3
    thumbs = tmp_path / "x.qc" / "thumbs"
    t2 = _thumb_pixels(thumbs, "000000_axial_c0.jpg")
    adc = _thumb_pixels(thumbs, "000000_axial_c1.jpg")
    assert t2.std() > 30  # random T2 values stretched over the window: texture
    assert adc.std() < t2.std() / 3  # the blank channel is drawn blank, not as a copy of T2
    # The RGB image: one colour picture, red where the red channel is, blue where the blue is.
    rgb_card = next(c for c in cards if "data-modality='XC'" in c)
    assert len(re.findall(r"data-plane='\w+'", rgb_card)) == 1
    (drawn,) = thumbs.glob("000001_*")  # one slice: the plane its affine makes it (sagittal for np.eye(4))
    picture = _thumb_pixels(thumbs, drawn.name)
    red = (picture[..., 0] > 200) & (picture[..., 1] < 60) & (picture[..., 2] < 60)
    blue = (picture[..., 2] > 200) & (picture[..., 0] < 60) & (picture[..., 1] < 60)
    assert 0.4 < red.mean() < 0.6 and 0.4 < blue.mean() < 0.6  # half red, half blue (edges blur a little)


def test_preview_draws_an_rgb_image_in_colour_before_and_after(tmp_path):
    # A colour photograph converted without --grayscale is stored as channels R, G, B; the
    # preview drew its red plane in grey. Now both the stored and the source tile are in colour.
    from PIL import Image

    from medload.preview import montage

    picture = np.zeros((40, 40, 3), np.uint8)
    picture[:, :20, 0] = 255  # left half red
    picture[:, 20:, 2] = 255  # right half blue
    (tmp_path / "src").mkdir()
    Image.fromarray(picture).save(tmp_path / "src" / "photo.png")
    assert medload.convert(tmp_path / "src", tmp_path / "out", workers=0, progress=False).ok
    assert medload.open(tmp_path / "out").volumes[0].channels == ("R", "G", "B")
    info = montage(tmp_path / "out", tmp_path / "m.png", n=1, tile=128, before_after=True, sources=[str(tmp_path / "src")])
    with Image.open(info["path"]) as im:
        canvas = np.asarray(im.convert("RGB"))
    for column in range(2):  # the source tile, then the stored tile
        tile = canvas[:, column * 128 : (column + 1) * 128].astype(int)
        red = (tile[..., 0] > 200) & (tile[..., 1] < 60) & (tile[..., 2] < 60)
        blue = (tile[..., 2] > 200) & (tile[..., 0] < 60) & (tile[..., 1] < 60)
        assert red.sum() > 1500 and blue.sum() > 1500, f"tile {column}: {red.sum()} red, {blue.sum()} blue pixels"


def test_out_folder_holding_other_files_is_refused_not_deleted(tmp_path, monkeypatch):
    # `medload qc out/ --out ~/reports`: the page replaces an older page there, never a folder of the user's.
    with medload.Store.create(tmp_path / "x.h5") as store:
        store.add(medload.Volume(np.random.default_rng(0).random((3, 20, 20)), np.eye(4), modality="MR"))
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "notes.txt").write_text("mine")
    with pytest.raises(medload.MedloadError, match="not a medload QC page"):
        write_qc(tmp_path / "x.h5", reports)
    assert (reports / "notes.txt").read_text() == "mine"
    assert main(["qc", str(tmp_path / "x.h5"), "--out", str(reports)]) != 0
    assert sorted(p.name for p in reports.iterdir()) == ["notes.txt"]
    # An older page there (or an empty folder) is replaced; "." is the current folder.
    first = write_qc(tmp_path / "x.h5", tmp_path / "page")
    again = write_qc(tmp_path / "x.h5", tmp_path / "page")
    assert again["path"] == first["path"] and sorted(p.name for p in (tmp_path / "page").iterdir()) == ["index.html", "thumbs"]
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path / "empty")
    assert Path(write_qc(tmp_path / "x.h5", ".")["path"]) == tmp_path / "empty" / "index.html"


def test_out_folder_with_a_web_page_of_the_users_is_refused_not_deleted(tmp_path):
    # `medload qc out/ --out ~/www`: a folder holding the user's own index.html (and thumbs/ of
    # photos) has the names of a page folder; it was deleted whole and replaced by the page.
    with medload.Store.create(tmp_path / "x.h5") as store:
        store.add(medload.Volume(np.random.default_rng(0).random((3, 20, 20)), np.eye(4), modality="MR"))
    www = tmp_path / "www"
    (www / "thumbs").mkdir(parents=True)
    (www / "index.html").write_text("<!DOCTYPE html><html><head><title>My lab</title></head></html>")
    (www / "thumbs" / "holiday.jpg").write_bytes(b"\xff\xd8 a photo")
    with pytest.raises(medload.MedloadError, match="not a medload QC page"):
        write_qc(tmp_path / "x.h5", www)
    assert "My lab" in (www / "index.html").read_text() and (www / "thumbs" / "holiday.jpg").exists()
    photos = tmp_path / "photos"  # only a thumbs/ of the user's
    (photos / "thumbs").mkdir(parents=True)
    (photos / "thumbs" / "cat.png").write_bytes(b"png")
    with pytest.raises(medload.MedloadError, match="thumbs/cat.png"):
        write_qc(tmp_path / "x.h5", photos)
    assert (photos / "thumbs" / "cat.png").exists()
    # A page medload wrote there is still replaced.
    write_qc(tmp_path / "x.h5", tmp_path / "page")
    again = write_qc(tmp_path / "x.h5", tmp_path / "page")
    assert Path(again["path"]).read_text().count("<title>medload QC") == 1
