"""Modules pass facts, not sentences: no decision depends on the wording of a message."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest

import medload
from fixtures.synthetic import write_dicom_series
from medload.problems import ProblemKind


def _dx_monochrome1(folder, description: str) -> None:
    """One 12-bit MONOCHROME1 DX radiograph whose header window is for the stored values."""
    truth = write_dicom_series(folder, modality="MR", shape=(1, 2, 2), bits_stored=12, seed=3, series_description=description)
    ds = pydicom.dcmread(truth["files"][0])
    ds.Modality = "DX"
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.BitsStored, ds.HighBit = 12, 11
    ds.PixelData = np.array([[0, 1000], [3000, 4095]], np.uint16).tobytes()
    ds.WindowCenter, ds.WindowWidth = 1000, 2000
    ds.save_as(truth["files"][0])


def test_dx_whose_description_says_inverted_gives_the_same_image(tmp_path):
    # De-identification hides the description wherever it appears in messages; a description
    # "inverted" once turned the reader's MONOCHROME1 note into "MONOCHROME1 image [description]
    # ...", and RadiographWindow, which searched that note, inverted again with centre 1000.
    stored = {}
    for name, description in (("plain", "chest pa"), ("inverted", "inverted")):
        _dx_monochrome1(tmp_path / name, description)
        report = medload.convert(tmp_path / name, tmp_path / f"{name}.h5", workers=0, progress=False)
        assert report.ok, report.failed
        store = medload.open(tmp_path / f"{name}.h5")
        rec = store.volumes[0]
        stored[name] = (store.read_slices(0, 0, rec.n_slices), rec.history)
        store.close()
    image, history = stored["inverted"]
    np.testing.assert_array_equal(image, stored["plain"][0])
    window = dict(history)["radiograph_window"]
    assert window["center"] == pytest.approx(3095.0) and window["invert"] is False
    # stored 0 is dense (white) in MONOCHROME1: brightest after windowing, stored 4095 darkest
    assert image[0, 0, 0] == image.max() and image[0, 1, 1] == image.min()


def test_on_gap_waives_spacing_errors_by_kind_not_by_wording(tmp_path):
    truth = write_dicom_series(tmp_path, shape=(5, 4, 4), seed=1)
    (tmp_path / truth["files"][2]).unlink()  # the middle slice
    series = medload.scan(tmp_path)[0]
    with pytest.raises(medload.GeometryError, match="missing slices"):
        medload.load(series)
    vol = medload.load(series, on_gap="interpolate")
    assert vol.shape[0] == 5 and ProblemKind.SLICES_INTERPOLATED in {p.kind for p in vol.problems}


# --------------------------------------------------------------------------- problems as records
# Each kind of problem is asserted where the case that causes it is built: here for the kinds no
# reader test builds, in the reader tests for the others (test_every_kind_is_produced_by_a_test
# checks that none is left out).


def _kinds(problems) -> list[str]:
    return [p.kind.value for p in problems]


def test_a_series_without_pixel_spacing_loads_at_1_mm_and_says_so_by_kind(tmp_path):
    truth = write_dicom_series(tmp_path, shape=(3, 4, 5), spacing=(2.0, 0.7, 0.7), seed=4)
    for name in truth["files"]:
        ds = pydicom.dcmread(name)
        del ds.PixelSpacing
        ds.save_as(name)
    (series,) = medload.scan(tmp_path)
    assert _kinds(series.problems) == ["pixel_spacing_assumed"]
    vol = medload.load(series)
    assert vol.spacing == pytest.approx((2.0, 1.0, 1.0))
    assert _kinds(vol.problems) == ["pixel_spacing_assumed"]


def test_images_of_two_orientations_in_one_volume_are_an_orientation_error():
    from medload.io.frame import Frame
    from medload.io.sorting import arrange

    axial, tilted = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0), (1.0, 0.0, 0.0, 0.0, 0.8, 0.6)
    frames = [
        Frame(f"f{z}", -1, -1, (0.0, 0.0, 2.0 * z), axial if z < 2 else tilted, (1.0, 1.0), 1.0, 0.0, (0.0,), (), str(z))
        for z in range(3)
    ]
    layout = arrange(frames, label="series x")
    assert _kinds(layout.errors) == ["orientation_mixed"] and layout.problems == []
    assert "f2" in layout.errors[0].message


def test_identical_colour_copies_are_dropped_by_kind(tmp_path):
    from fixtures.special import write_image

    rgb = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    for copy in range(2):
        for z in range(2):
            tags = {
                "InstanceNumber": copy * 2 + z + 1,
                "ImagePositionPatient": [0, 0, 3.0 * z],
                "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
                "PixelSpacing": [1, 1],
            }
            write_image(tmp_path / f"c{copy}_{z}.dcm", rgb[z], tags, rgb=True)
    vol = medload.load(medload.scan(tmp_path)[0])
    assert vol.shape == (3, 2, 4, 4)
    np.testing.assert_array_equal(np.moveaxis(vol.array, 0, -1), rgb)
    assert _kinds(vol.problems) == ["identical_frames_dropped"]


def test_a_cmyk_jpeg_is_converted_to_rgb_by_kind(tmp_path):
    from PIL import Image

    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (6, 4), (0, 255, 255, 0)).save(path)  # pure red in CMYK
    vol = medload.load(path)
    assert vol.shape == (3, 1, 4, 6) and int(vol.array[0].min()) > 200 and int(vol.array[1].max()) < 60
    assert sorted(_kinds(vol.problems)) == ["colour_converted", "patient_unknown", "pixel_spacing_assumed"]


def test_a_mask_paired_by_shape_alone_that_lies_elsewhere_is_a_problem_of_the_volume(tmp_path):
    # Before, the converter wrote a plain sentence into the report entry's "notes" (no kind, not
    # stored, not on the QC page); now the volume has a problem of kind mask_not_used.
    from fixtures.phi import search_output

    write_dicom_series(tmp_path / "src", shape=(4, 12, 10), seed=5)
    (series,) = medload.scan(tmp_path / "src")
    ct = medload.load(series)
    moved = ct.affine.copy()
    moved[:3, 3] += 80.0  # same shape, 80 mm away along every axis
    mask = ct.with_array(np.ones(ct.shape, np.uint8), affine=moved)
    (tmp_path / "masks").mkdir()
    mask.to_nifti().to_filename(str(tmp_path / "masks" / "Wigglesworth_seg.nii.gz"))
    report = medload.convert(tmp_path / "src", tmp_path / "out", workers=0, progress=False, masks=tmp_path / "masks")
    assert report.ok, report.failed
    (entry,) = report.series
    assert entry["mask"] is None and "notes" not in entry
    assert [p["kind"] for p in entry["problems"]] == ["mask_not_used"]
    (rec,) = medload.open(tmp_path / "out").volumes
    assert not rec.has_mask and [p.kind for p in rec.problems] == [ProblemKind.MASK_NOT_USED]
    assert "not used" in rec.problems[0].message and "file-" in rec.problems[0].message
    assert search_output(tmp_path / "out", ["Wigglesworth"]) == {}


def test_a_file_scan_cannot_use_carries_the_class_of_its_error(tmp_path, monkeypatch, capsys):
    # Scan errors were a path and a sentence; report.json's unreadable files a file key and a
    # reason. The class of the error (and whether it was medload's own refusal) is the fact.
    from medload.cli import main
    from medload.io import collect

    truth = write_dicom_series(tmp_path / "src", shape=(3, 6, 5), seed=2)
    broken = truth["files"][-1]
    data = open(broken, "rb").read()
    open(broken, "wb").write(data[: len(data) - 20])  # pixels cut short
    (tmp_path / "src" / "b.nii").write_bytes(b"")  # scan_nifti is made to fail below

    def library_error(*args, **kwargs):
        raise ValueError("a library's own words")

    monkeypatch.setattr(collect, "scan_nifti", library_error)
    found = medload.scan(tmp_path / "src", workers=0)
    by_name = {e.path.rsplit("/", 1)[-1]: e for e in found.errors}
    assert (by_name[broken.rsplit("/", 1)[-1]].error, by_name[broken.rsplit("/", 1)[-1]].internal) == ("ReadError", False)
    assert (by_name["b.nii"].error, by_name["b.nii"].internal) == ("ValueError", True)

    report = medload.convert(tmp_path / "src", tmp_path / "out", workers=0, progress=False)
    files = sorted((f["error"], f.get("internal", False)) for f in report["files"])
    assert files == [("ReadError", False), ("ValueError", True)]
    capsys.readouterr()
    assert main(["scan", str(tmp_path / "src"), "--json", "--workers", "0"]) == 0
    unreadable = json.loads(capsys.readouterr().out)["unreadable"]
    assert sorted((e["error"], e.get("internal", False)) for e in unreadable) == files


def test_the_qc_page_names_its_own_findings_by_kind(tmp_path):
    import re

    from medload.qc.report import write_qc

    affine = np.eye(4)
    noisy = np.random.default_rng(0).random((3, 8, 8)).astype(np.float32)
    with_nan = noisy.copy()
    with_nan[0, 0, :2] = np.nan
    with medload.Store.create(tmp_path / "s.h5", dtype="float32") as store:
        store.add(medload.Volume(with_nan, affine, meta={"series_key": "nan"}))
        store.add(medload.Volume(np.full((3, 8, 8), 7.0, np.float32), affine, meta={"series_key": "flat"}))
        store.add(medload.Volume(noisy, affine, meta={"series_key": "unmasked"}), mask=np.zeros((3, 8, 8), np.uint8))
    info = write_qc(tmp_path / "s.h5", workers=0)
    page = open(info["path"]).read()
    cards = dict(re.findall(r"data-key='(\w+)'>(.*?)</article>", page, re.DOTALL))
    assert re.findall(r"data-problem='(\w+)'", cards["nan"]) == ["nonfinite_values"]
    assert "2 stored values are NaN" in cards["nan"]
    assert re.findall(r"data-problem='(\w+)'", cards["flat"]) == ["constant_image"]
    assert re.findall(r"data-problem='(\w+)'", cards["unmasked"]) == ["empty_mask"]
    assert info["problems"] == 3


def _store_as_an_older_medload_wrote_it(path, problems: list[str]) -> None:
    """A one-volume store whose ``meta`` holds problems as plain sentences, as stores written
    before problems had kinds hold them (in the group's attribute and in /catalog)."""
    import json

    import h5py

    vol = medload.Volume(np.zeros((2, 4, 4), np.float32), np.eye(4), modality="CT", meta={"series_key": "old"})
    with medload.Store.create(path, dtype="float32") as store:
        store.add(vol)
    with h5py.File(path, "r+") as f:
        (group,) = f["volumes"].values()
        meta = json.loads(group.attrs["meta"])
        meta["problems"] = problems
        group.attrs["meta"] = json.dumps(meta)
        catalog = json.loads(f["catalog"][()])
        catalog[0]["attrs"]["meta"] = json.dumps(meta)
        text = json.dumps(catalog)
        del f["catalog"]
        f.create_dataset("catalog", data=text, dtype=h5py.string_dtype())


def test_a_store_of_the_previous_version_reads_its_sentences_as_unclassified(tmp_path, capsys):
    from medload.cli import main
    from medload.problems import Problem

    old = ["gantry tilt of 14.00 degrees: slices are stacked obliquely to their plane."]
    _store_as_an_older_medload_wrote_it(tmp_path / "old.h5", old)
    store = medload.open(tmp_path / "old.h5")
    (rec,) = store.volumes
    assert rec.problems == (Problem(ProblemKind.UNCLASSIFIED, old[0]),)
    assert rec.meta["problems"] == [{"kind": "unclassified", "message": old[0]}]
    vol = store.read_volume(0)
    assert vol.problems == rec.problems
    store.close()
    # Written again (a re-conversion of the volume read back, its meta as read: keep_phi), it is a record.
    with medload.Store.create(tmp_path / "new.h5", dtype="float32", keep_phi=True) as new:
        new.add(vol)
    (again,) = medload.open(tmp_path / "new.h5").volumes
    assert again.meta["problems"] == [{"kind": "unclassified", "message": old[0]}]
    assert main(["info", str(tmp_path / "old.h5"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["problems"] == {"unclassified": 1}


def test_stored_problems_are_records_with_their_kind(tmp_path):
    truth = write_dicom_series(tmp_path / "src", shape=(5, 4, 4), seed=1)
    (tmp_path / "src" / truth["files"][2]).unlink()
    report = medload.convert(tmp_path / "src", tmp_path / "out.h5", on_gap="interpolate", workers=0, progress=False)
    assert report.ok, report.failed
    (entry,) = report.series
    assert [p["kind"] for p in entry["problems"]] == ["slices_interpolated"]
    (rec,) = medload.open(tmp_path / "out.h5").volumes
    assert rec.meta["problems"] == entry["problems"]
    assert "1 slice(s) interpolated" in rec.problems[0].message


def test_deidentification_scrubs_a_problem_message_and_never_its_kind():
    from medload.deid import SourceNames, hide, scrub

    problem = {"kind": "gantry_tilt", "message": "tilt of 14 degrees in /exp/tilt/a.dcm"}
    names = SourceNames.of(["/exp/tilt/a.dcm"], roots=["/exp"], key="k", hidden=["tilt"])
    (scrubbed,) = scrub([problem], names)
    assert scrubbed["kind"] == "gantry_tilt" and "tilt" not in scrubbed["message"]
    assert scrubbed["message"].startswith("[description] of 14 degrees in ")
    assert hide({"problems": [problem]}, ["tilt"])["problems"][0]["kind"] == "gantry_tilt"
    # a dict that is not a problem record has every value scrubbed, "kind" included
    assert hide({"kind": "tilt", "n": 1}, ["tilt"]) == {"kind": "[description]", "n": 1}


def test_a_problem_kind_is_from_the_closed_vocabulary():
    from medload.errors import ConfigError
    from medload.problems import KIND_MEANINGS, Problem

    assert set(KIND_MEANINGS) == set(ProblemKind)
    with pytest.raises(ConfigError, match="slice_gaps"):
        Problem("slice_gaps", "a typo of a kind is refused, not stored")
    assert (
        medload.Volume(np.zeros((1, 2, 2)), np.eye(4), meta={"problems": ["a note"]}).problems[0].kind is ProblemKind.UNCLASSIFIED
    )
    with pytest.raises(ConfigError, match="list of problems"):
        medload.Volume(np.zeros((1, 2, 2)), np.eye(4), meta={"problems": "one sentence"})


def _words(text: str) -> set[str]:
    import re

    return set(re.findall(r"ProblemKind\.\w+|\"\w+\"|'\w+'", text))


def test_every_kind_is_produced_by_a_test():
    # Each kind is asserted by name in a test that builds the case causing it.
    from pathlib import Path

    tests = Path(__file__).parent
    text = "".join(p.read_text() for p in sorted(tests.glob("test_*.py")))
    missing = [k for k in ProblemKind if not {f"ProblemKind.{k.name}", f'"{k.value}"', f"'{k.value}'"} & _words(text)]
    assert missing == []


def test_every_kind_is_documented():
    from pathlib import Path

    doc = (Path(__file__).parents[1] / "docs" / "problems.md").read_text()
    assert [k.value for k in ProblemKind if f"`{k.value}`" not in doc] == []


# --------------------------------------------------------------------------- no decision by wording
_SEARCHES = {"startswith", "endswith", "find", "rfind", "index", "rindex", "count", "search", "match", "fullmatch", "findall"}
#: Taking a message apart to get a fact out of it is a search too: `(outcome.error or "").split(":")[0]`.
_PARSES = {"split", "rsplit", "partition", "rpartition"}
#: Names, attributes and keys that hold a problem's or an error's text (besides ``problem*``).
_TEXT_NAMES = {"message", "msg", "reason", "error", "error_message", "detail", "why", "strerror"}
#: The functions allowed to read an error's text, each with the reason in its docstring.
_ALLOWED = {
    # h5py gives no typed fact for a truncated file: HDF5's words are all there is, and only
    # the message shown depends on them.
    ("store/layout.py", "hdf5_says_truncated"),
}


def _text_name(name: str) -> bool:
    return name in _TEXT_NAMES or "problem" in name


def _message_like(node, caught: set[str], items: set[str] = frozenset()) -> bool:
    """Whether ``node`` is a problem's or an exception's text: ``x.message``, ``x["reason"]``,
    a name or attribute called ``message``/``reason``/``error``/``problem(s)``/... (see
    ``_TEXT_NAMES``), a name that holds such a text (``items``: loop variables over them and
    names assigned from them, as in ``text = str(exc)``), or ``str(exc)`` of an exception."""
    import ast

    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and _text_name(sub.attr):
            return True
        if isinstance(sub, ast.Name) and (_text_name(sub.id) or sub.id in items):
            return True
        if (
            isinstance(sub, ast.Subscript)
            and isinstance(sub.slice, ast.Constant)
            and isinstance(sub.slice.value, str)
            and _text_name(sub.slice.value)
        ):
            return True
        if (
            isinstance(sub, ast.Call)
            and isinstance(sub.func, ast.Name)
            and sub.func.id in ("str", "repr", "format")
            and any(isinstance(a, ast.Name) and a.id in caught for a in sub.args)
        ):
            return True
        if isinstance(sub, ast.Attribute) and sub.attr == "args" and isinstance(sub.value, ast.Name) and sub.value.id in caught:
            return True  # exc.args[0]: the exception's text by another way
    return False


def _exception_names(tree) -> set[str]:
    """Names that hold an exception: ``except ... as exc``, and parameters annotated with an
    exception class (``exc: OSError``, ``error: BaseException``)."""
    import ast

    names = {h.name for h in ast.walk(tree) if isinstance(h, ast.ExceptHandler) and h.name}
    for node in ast.walk(tree):
        if isinstance(node, ast.arg) and node.annotation is not None:
            annotation = ast.unparse(node.annotation)
            if any(word in annotation for word in ("Error", "Exception")):
                names.add(node.arg)
    return names


def _text_value(node, caught: set[str], items: set[str]) -> bool:
    """Whether the value of ``node`` is itself an error's or a problem's text (what an
    assignment passes on: ``text = str(exc)``, ``why = entry["reason"] or ""``,
    ``low = message.lower()``), not merely an expression that mentions one."""
    import ast

    if isinstance(node, ast.Name):
        return _text_name(node.id) or node.id in items
    if isinstance(node, ast.Attribute):
        return _text_name(node.attr)
    if isinstance(node, ast.Subscript):
        key = node.slice
        return isinstance(key, ast.Constant) and isinstance(key.value, str) and _text_name(key.value)
    if isinstance(node, ast.BoolOp):
        return any(_text_value(v, caught, items) for v in node.values)
    if isinstance(node, ast.IfExp):
        return _text_value(node.body, caught, items) or _text_value(node.orelse, caught, items)
    if isinstance(node, ast.Call):
        if _str_of(node, caught):
            return True
        return isinstance(node.func, ast.Attribute) and _text_value(node.func.value, caught, items)
    return False


def _scopes(tree):
    """The module and each function, each with the nodes it holds itself (not its inner functions')."""
    import ast

    functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    for scope in [tree, *(n for n in ast.walk(tree) if isinstance(n, functions))]:
        own, todo = [], list(ast.iter_child_nodes(scope))
        while todo:
            node = todo.pop()
            own.append(node)
            if not isinstance(node, functions):
                todo.extend(ast.iter_child_nodes(node))
        yield own


def _text_searches(tree) -> list[int]:
    """Lines where a text is searched inside a message-like value (see :func:`_message_like`)."""
    import ast

    caught = _exception_names(tree)
    lines = []
    for nodes in _scopes(tree):
        items: set[str] = set()  # `for p in problems`, `... for p in s.problems`, `text = str(exc)`
        for _ in range(3):  # names assigned from names assigned from a message
            for node in nodes:
                if isinstance(node, ast.comprehension | ast.For) and _message_like(node.iter, caught, items):
                    items |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
                elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                    if _text_value(node.value, caught, items):
                        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                        items |= {t.id for t in targets if isinstance(t, ast.Name)}
        for node in nodes:
            lines += _searches_in(node, caught, items)
    return sorted(set(lines))


def _searches_in(node, caught: set[str], items: set[str]) -> list[int]:
    import ast

    if isinstance(node, ast.Compare):
        found = []
        sides = [node.left, *node.comparators]
        for left, op, right in zip(sides, node.ops, node.comparators):
            textual = isinstance(left, ast.Constant | ast.JoinedStr) and isinstance(getattr(left, "value", ""), str)
            if isinstance(op, ast.In | ast.NotIn) and textual and _message_like(right, caught, items):
                found.append(node.lineno)
            elif isinstance(op, ast.Eq | ast.NotEq):  # str(exc) == "No space left", problem.message == "..."
                pair = ((left, right), (right, left))
                if any(_text_constant(a) and _text_value(b, caught, items) for a, b in pair):
                    found.append(node.lineno)
            elif isinstance(op, ast.In | ast.NotIn) and _text_value(left, caught, set()) and _constant_texts(right):
                # message in ("...", "..."): a lookup by wording. Only a text itself (not a name
                # taken from a loop over problems, which may hold their kinds) on the left.
                found.append(node.lineno)
        return found
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _SEARCHES | _PARSES:
        if node.func.attr in ("search", "match", "fullmatch", "findall"):
            # re.search(pattern, text), and a compiled pattern's PATTERN.search(text)
            haystacks = node.args[:2]
        else:  # text.startswith(...), text.split(":")
            haystacks = [node.func.value]
        if any(_message_like(h, caught, items) for h in haystacks):
            return [node.lineno]
    return []


def _text_constant(node) -> bool:
    import ast

    return isinstance(node, ast.Constant | ast.JoinedStr) and isinstance(getattr(node, "value", ""), str)


def _constant_texts(node) -> bool:
    """Whether ``node`` is a literal collection of texts (``{"a", "b"}``, ``("a",)``)."""
    import ast

    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return bool(node.elts) and all(_text_constant(e) for e in node.elts)
    return False


def _str_of(node, caught: set[str]) -> bool:
    """Whether ``node`` is ``str(exc)`` (or ``repr``) of an exception."""
    import ast

    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("str", "repr")
        and any(isinstance(a, ast.Name) and a.id in caught for a in node.args)
    )


def _functions_at(tree, lines: list[int]) -> list[str]:
    """The innermost function (or ``<module>``) holding each line."""
    import ast

    spans = [(n.lineno, n.end_lineno, n.name) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    names = []
    for line in lines:
        holding = [(end - start, name) for start, end, name in spans if start <= line <= end]
        names.append(min(holding)[1] if holding else "<module>")
    return names


def test_no_module_decides_by_searching_a_message():
    # Problems carry a kind and errors a class (and an errno): a decision that searches their
    # text (the sentence "missing slices", "another pipeline" in str(exc), "MONOCHROME1" in a
    # problem, "No space left" in an OSError, the class before ":" in "ReadError: ...") breaks
    # when a message is reworded, translated or de-identified.
    import ast
    from pathlib import Path

    package = Path(medload.__file__).parent
    found = set()
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        lines = _text_searches(tree)
        for line, function in zip(lines, _functions_at(tree, lines)):
            found.add((str(path.relative_to(package)), function, line))
    assert {(path, function) for path, function, _ in found} - _ALLOWED == set(), sorted(found)


def test_the_allowed_text_checks_are_still_there():
    # An entry of _ALLOWED whose function no longer reads text is a stale exception: remove it.
    import ast
    from pathlib import Path

    package = Path(medload.__file__).parent
    for module, function in _ALLOWED:
        tree = ast.parse((package / module).read_text())
        assert function in _functions_at(tree, _text_searches(tree)), (module, function)


def test_the_message_search_check_finds_what_it_forbids():
    import ast

    bad = """
if "missing slices" in error.message: pass
waive = [p for p in problems if "patient of its own" not in p]
try:
    pass
except Exception as exc:
    if "another pipeline" in str(exc): pass
ok = any(p["message"].startswith("MONOCHROME1") for p in meta)
kind = (outcome.error or "").split(":")[0]
shown = reason if str(reason).startswith(entry["error"]) else entry["error"] + reason
def disk_full(exc: OSError) -> bool:
    text = str(exc)
    return "No space left" in text
def same(exc: BaseException) -> bool:
    return str(exc) == "No space left on device"
_GAP = re.compile("missing slices")
gap = [p for p in problems if _GAP.search(p.message)]
if problem.message == "mask not used": pass
try:
    pass
except OSError as exc:
    if "truncated" in exc.args[0]: pass
if reason in ("no mask", "mask not used"): pass
"""
    good = """
if problem.kind is ProblemKind.SLICE_GAP: pass
waive = [p for p in problems if p.kind in SPACING_KINDS]
if "problems" in meta: pass
kind = outcome.error_type
def disk_full(exc: OSError) -> bool:
    return exc.errno == errno.ENOSPC
if name.startswith("shard-"): pass
low, high = text.split(",")
if _SHARD.fullmatch(path.name): pass
if problem.kind in (ProblemKind.SLICE_GAP,): pass
if mode in ("L", "RGB"): pass
"""
    assert _text_searches(ast.parse(bad)) == [2, 3, 7, 8, 9, 10, 13, 15, 17, 18, 22, 23]
    assert _text_searches(ast.parse(good)) == []
