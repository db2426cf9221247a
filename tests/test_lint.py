"""Lint and type check run with the tests (CI runs ``python -m pytest``); configured in pyproject.toml."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff not installed (pip install medload[test])")
def test_ruff_finds_nothing() -> None:
    run = _run("ruff", "check", "--no-cache", ".")  # the whole repository: medload, tests, tools, fixtures, bench, notebooks
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.skipif(importlib.util.find_spec("ruff") is None, reason="ruff not installed (pip install medload[test])")
def test_ruff_format_leaves_every_file_as_it_is() -> None:
    # one layout for the whole repository; packed tables of names sit between `# fmt: off` / `# fmt: on`
    run = _run("ruff", "format", "--check", "--no-cache", ".")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed (pip install medload[test])")
def test_mypy_finds_nothing() -> None:
    run = _run("mypy", "--no-incremental", "--cache-dir", "/dev/null")  # files and options: pyproject.toml
    assert run.returncode == 0, run.stdout + run.stderr


def test_size_rule_holds_for_every_module() -> None:
    # Issue 10: no module over 600 lines and no function over 80 in medload/, or a "# one
    # piece:" comment saying why (`python tools/check_sizes.py` lists them).
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        from check_sizes import check
    finally:
        sys.path.remove(str(ROOT / "tools"))
    over = [str(o) for o in check([ROOT / "medload"]) if not o.reason]
    assert not over, over
