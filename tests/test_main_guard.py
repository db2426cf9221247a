"""Plain scripts just work: the README example saved as a file and run as ``python file.py`` ends.

Worker processes started with ``forkserver``/``spawn`` re-import the main script; a script
without ``if __name__ == "__main__":`` would start the conversion again in every worker, for
ever. medload sees the unguarded call and runs in its own process with a warning; and if a
worker still dies while starting, again and again, the pool stops instead of looping.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(script: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_readme_example_saved_as_a_script_finishes(tmp_path):
    example = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL).group(1)
    script = tmp_path / "ten.py"
    script.write_text(example.replace("/tmp/store", str(tmp_path / "store")))
    run = _run(script)  # before the guard check: looped until killed (subprocess.TimeoutExpired here)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.count("Volume(") == 1, "the script's top level ran more than once"
    assert "__name__" in run.stderr and "this process" in run.stderr  # the warning says why and how to fix
    train_line = run.stdout.strip().splitlines()[-1]
    assert int(train_line.split()[0]) > 0  # SliceDataset over the converted store has slices


def _guard_probe(body: str, tmp_path: Path, name: str) -> str:
    script = tmp_path / name
    script.write_text(textwrap.dedent(body))
    run = _run(script, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip()


def test_unguarded_call_is_told_apart_from_a_guarded_one(tmp_path):
    probe = "from medload.parallel import unguarded_main_script\n"
    unguarded = _guard_probe(probe + "print(unguarded_main_script())\n", tmp_path, "a.py")
    assert unguarded == str(tmp_path / "a.py")
    guarded = _guard_probe(probe + "if __name__ == '__main__':\n    print(unguarded_main_script())\n", tmp_path, "b.py")
    assert guarded == "None"
    # A function called from the unguarded top level is unguarded too; called under the guard, it is not.
    via_function = probe + "def main():\n    print(unguarded_main_script())\n"
    assert _guard_probe(via_function + "main()\n", tmp_path, "c.py") == str(tmp_path / "c.py")
    assert _guard_probe(via_function + "if '__main__' == __name__:\n    main()\n", tmp_path, "d.py") == "None"


def test_a_pool_whose_workers_die_while_starting_stops_instead_of_looping(tmp_path):
    # The detection switched off: workers re-run this unguarded script and die at start-up.
    script = tmp_path / "loop.py"
    script.write_text(
        textwrap.dedent("""
        import medload.parallel as parallel
        parallel.unguarded_main_script = lambda: None
        summary = parallel.run_tasks(parallel.Echo, [("a", 1), ("b", 2), ("c", 3)], workers=2)
        print("failed", sorted(o.task_id for o in summary.outcomes if not o.ok))
        print(summary.outcomes[0].error)
    """)
    )
    run = _run(script, timeout=180)
    lines = run.stdout.strip().splitlines()
    assert lines[-2] == "failed ['a', 'b', 'c']", run.stdout[-2000:] + run.stderr[-2000:]
    assert "end while starting" in lines[-1] and "__name__" in lines[-1]
