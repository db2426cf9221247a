"""Every notebook in notebooks/ runs headless, top to bottom, without a failing cell; the
examples of docs/api.md run and print what the page says.

Executed with nbclient (the library nbconvert and nbmake use) on the ``python3`` kernel of this
interpreter, from the notebook's own folder, so ``python -m pytest`` runs them with no plugin
or extra flag. A failing cell fails the test with that cell's source and error. The notebooks
check their own results (``assert`` in their cells: a store converted, a loss that went down),
so a numeric regression fails here too. Outputs are never written back: git holds them stripped.
"""

from __future__ import annotations

import doctest
import json
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is in the test extras: pip install 'medload[test]'")
nbclient = pytest.importorskip("nbclient", reason="nbclient is in the test extras: pip install 'medload[test]'")
pytest.importorskip("ipykernel", reason="ipykernel is in the test extras: pip install 'medload[test]'")
pytest.importorskip("torch", reason="the notebooks use torch: pip install 'medload[test]'")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_notebooks_are_there_and_stripped():
    """Four notebooks, committed without outputs or execution counts (the repository stays small and diffable)."""
    names = [p.name for p in PATHS]
    assert names == ["01_quickstart.ipynb", "02_ct.ipynb", "03_mr.ipynb", "04_training.ipynb"]
    for path in PATHS:
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code, path.name
        dirty = [i for i, c in enumerate(code) if c.get("outputs") or c.get("execution_count") is not None]
        assert not dirty, f"{path.name}: code cells {dirty} have outputs; strip them before committing"


def _readable(error: Exception) -> str:
    """nbclient's message without terminal colours: the failing cell's source, then its traceback's end."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error))
    return text if len(text) < 5000 else text[:1500] + "\n...\n" + text[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    nb = nbformat.read(path, as_version=4)
    # The kernel inherits the environment: make sure plots come back as images even where
    # MPLBACKEND is set to something else (Agg in some CI images).
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    failure = None
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        failure = _readable(exc)
    if failure is not None:  # outside the except block: one report, not a chained traceback
        pytest.fail(f"{path.name}: a cell failed:\n{failure}", pytrace=False)
    # Keep the executed copy for a person to look at when a run is in doubt (never in the repo).
    nbformat.write(nb, tmp_path / path.name)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    images = sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert images >= 2, f"{path.name}: expected its plots, found {images} images in the outputs"


def test_api_doc_examples(monkeypatch: pytest.MonkeyPatch):
    """docs/api.md is a doctest: every example runs from the repository root and prints what the page shows."""
    monkeypatch.chdir(ROOT)
    result = doctest.testfile(
        str(ROOT / "docs" / "api.md"),
        module_relative=False,
        verbose=False,
        report=True,
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
    )
    assert result.attempted > 40
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in docs/api.md failed (printed above)"


def test_plot_helpers_label_edges_from_the_affine(monkeypatch: pytest.MonkeyPatch):
    """medload.qc.plots (the notebooks' helpers): its examples run, and the edge labels follow the affine, not the array."""
    import numpy as np

    import medload
    from medload.qc import plots

    monkeypatch.setenv("MPLBACKEND", "Agg")
    result = doctest.testmod(plots, verbose=False, report=True)
    assert result.attempted >= 10 and result.failed == 0
    # One volume in three stored layouts: the display grid and the labels are the same for all.
    array = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    sal = medload.Volume(array, np.diag([1.0, 2.0, -3.0, 1.0])[[2, 1, 0, 3]])  # axes (S, A, L), 1x2x3 mm
    layouts = [sal, medload.transforms.Reorient()(sal), medload.transforms.Reorient(("I", "P", "L"))(sal)]
    grids = [plots.display_grid(v) for v in layouts]
    for grid, affine in grids[1:]:
        np.testing.assert_array_equal(grid, grids[0][0])
        np.testing.assert_allclose(affine, grids[0][1])
    for v in layouts:
        assert plots.edge_labels(v, "coronal") == {"top": "S", "bottom": "I", "left": "R", "right": "L"}
        assert plots.edge_labels(v, "sagittal") == {"top": "S", "bottom": "I", "left": "A", "right": "P"}
