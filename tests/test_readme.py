"""The README is true: its first command and its Python example work in a new virtual environment.

The venv sees this interpreter's site-packages (``--system-site-packages``) so the test does not
download the scientific stack again; what it checks is the README's own steps: ``pip install .``
into a fresh environment, the ``medload`` command that installs, and the example run against it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DEMO_DIR = "/tmp/medload-demo"


def _first_bash_block() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block, "README.md must start with a ```bash block holding the two commands"
    commands = [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2, f"README's first block must hold exactly two commands, found {commands}"
    return commands


def _python_example() -> str:
    block = re.search(r"```python\n(.*?)```", README, re.S)
    assert block, "README.md must hold a ```python example"
    return block.group(1)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test_command = _first_bash_block()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    # .ci/system-packages: what pip cannot install (chromium for the QC browser test, which skips
    # without it); it never fails, so the run is still the README's command.
    assert ".ci/system-packages || true" in ci
    steps = [
        line.strip()
        for line in ci.splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd ", ".ci/system-packages"))
    ]
    assert " && ".join(steps) == test_command, f".ci/run runs {steps}, README says {test_command!r}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_main_command_and_example_in_a_new_venv(tmp_path: Path) -> None:
    source = tmp_path / "clone"
    if (ROOT / ".git").exists() and shutil.which("git"):
        # What a user gets: the committed tree plus this checkout's uncommitted edits to tracked files.
        subprocess.run(["git", "clone", "-q", str(ROOT), str(source)], check=True)
        diff = subprocess.run(["git", "diff", "HEAD"], cwd=ROOT, capture_output=True, check=True).stdout
        if diff.strip():
            subprocess.run(["git", "apply", "--allow-empty", "-"], cwd=source, input=diff, check=True)
    else:
        shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", "*.egg-info", "build", "__pycache__"))
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(env_dir)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "VIRTUAL_ENV": str(env_dir)}
    env.pop("PYTHONPATH", None)
    out_dir = tmp_path / "demo"

    main_command = _first_bash_block()[0].replace(DEMO_DIR, str(out_dir))
    assert DEMO_DIR not in main_command
    run = subprocess.run(["bash", "-c", main_command], cwd=source, env=env, capture_output=True, text=True)
    assert run.returncode == 0, f"README's first command failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    medload_bin = bin_dir / "medload"
    assert medload_bin.exists(), "pip install . did not install the medload command into the venv"
    png = out_dir.parent / (out_dir.name + ".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "volumes" in run.stdout and "slices" in run.stdout  # medload info's table

    # The installed copy, not the checkout, is what the example imports.
    where = subprocess.run(
        [str(bin_dir / "python"), "-c", "import medload; print(medload.__file__)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(env_dir) in where, f"the venv imports medload from {where.strip()}, not its own install"

    example = _python_example().replace("/tmp/store", str(tmp_path / "store"))
    run = subprocess.run([str(bin_dir / "python"), "-c", example], cwd=source, env=env, capture_output=True, text=True)
    assert run.returncode == 0, f"README's Python example failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    assert "Volume(" in run.stdout
