"""The flow of DESIGN.md stays one-directional, and ``import medload`` stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "medload"

# Each layer may import only what stands to its left in DESIGN.md's flow.
FORBIDDEN = {
    "medload.io": ("medload.transforms", "medload.store", "medload.datasets", "medload.batch", "medload.cli", "medload.parallel"),
    "medload.transforms": ("medload.io", "medload.store", "medload.datasets", "medload.batch", "medload.cli", "medload.parallel"),
    "medload.store": ("medload.io", "medload.transforms", "medload.datasets", "medload.batch", "medload.cli", "medload.parallel"),
    "medload.datasets": ("medload.io", "medload.transforms", "medload.batch", "medload.cli", "medload.parallel"),
    "medload.volume": ("medload.io", "medload.transforms", "medload.store", "medload.datasets", "medload.batch", "medload.cli"),
    "medload.problems": (
        "medload.io",
        "medload.transforms",
        "medload.store",
        "medload.datasets",
        "medload.batch",
        "medload.cli",
        "medload.volume",
        "medload.deid",
    ),
    # the local process pool under the batch runner and scan: generic, left of every layer
    "medload.pool": (
        "medload.io",
        "medload.transforms",
        "medload.store",
        "medload.datasets",
        "medload.batch",
        "medload.cli",
        "medload.parallel",
    ),
    "medload.geometry": ("medload.io", "medload.transforms", "medload.store", "medload.datasets", "medload.batch", "medload.cli"),
    # the per-volume size limit, shared by the readers (io) and the store: left of both
    "medload.limits": (
        "medload.io",
        "medload.transforms",
        "medload.store",
        "medload.datasets",
        "medload.batch",
        "medload.cli",
        "medload.parallel",
        "medload.volume",
    ),
}

# Heavy third-party packages and the one module allowed to import each.
HEAVY_OWNER = {
    "h5py": "medload.store",
    "torch": "medload.datasets",
    "dask": "medload.parallel",
    "distributed": "medload.parallel",
    "tensorflow": "medload.datasets",
    "keras": "medload.datasets",
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_module_imports_only_what_stands_to_its_left(path: Path) -> None:
    module = _module_name(path)
    imported = _imports(path)
    for layer, forbidden in FORBIDDEN.items():
        if module == layer or module.startswith(layer + "."):
            bad = sorted(i for i in imported if i.startswith(forbidden))
            assert not bad, f"{module} imports {bad}, which stand to its right in DESIGN.md's flow"
    for heavy, owner in HEAVY_OWNER.items():
        uses = [i for i in imported if i == heavy or i.startswith(heavy + ".")]
        if uses:
            assert module == owner or module.startswith(owner + "."), f"{module} imports {uses}; only {owner} may import {heavy}"


def test_import_medload_is_light() -> None:
    code = (
        "import sys, medload\n"
        "heavy = [m for m in ('h5py', 'torch', 'dask', 'distributed', 'SimpleITK', 'skimage', 'matplotlib', 'tensorflow', 'keras', 'PIL', 'tifffile') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"`import medload` pulled in heavy packages: {out.stdout.strip()}"


def test_public_api_names_resolve() -> None:
    import medload

    for name in (
        "Volume",
        "MedloadError",
        "Problem",
        "ProblemKind",
        "scan",
        "load",
        "Pipeline",
        "preset",
        "Store",
        "open",
        "convert",
    ):
        assert getattr(medload, name) is not None, name


def _private_imports(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """``from medload.x import _name`` of a name private to another module, or an import of a
    private module (``_format``, ``_base``) from outside the package that holds it."""
    package = module if is_package else module.rpartition(".")[0]
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("medload"):
            targets = [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [tuple(a.name.rsplit(".", 1)) for a in node.names if a.name.startswith("medload.")]
        else:
            continue
        for owner_module, name in targets:
            full = f"{owner_module}.{name}"
            is_module = full in _MODULES
            if name.startswith("_") and not name.startswith("__") and not is_module:
                bad.append(f"{full} (a private name of {owner_module})")
            parts = full.split(".")
            for i, part in enumerate(parts if is_module else parts[:-1]):
                if part.startswith("_") and not part.startswith("__"):
                    owner = ".".join(parts[:i])  # the package that holds the private module
                    if not (package == owner or package.startswith(owner + ".")):
                        bad.append(f"{full} (private to {owner})")
    return bad


_MODULES = {_module_name(p) for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: _module_name(p))
def test_no_module_imports_another_modules_private_names(path: Path) -> None:
    bad = _private_imports(path.read_text(), _module_name(path), is_package=path.name == "__init__.py")
    assert not bad, f"{_module_name(path)} imports {bad}; give what other modules use a public name"


def test_the_private_import_check_catches_both_kinds() -> None:
    source = "from medload.transforms.intensity import _reader_inverted\nfrom medload.store._format import encode\n"
    bad = _private_imports(source, "medload.transforms.equalize")
    assert len(bad) == 2 and "_reader_inverted" in bad[0] and "private to medload.store" in bad[1], bad
    assert _private_imports("from medload.store._format import encode\n", "medload.store.reader") == []
