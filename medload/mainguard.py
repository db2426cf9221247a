"""Whether this call runs in the main script's top level outside ``if __name__ == "__main__":``.

Worker processes started with ``spawn`` or ``forkserver`` (and Dask's local nannies) re-import
the main script; the parallel runner asks this module before starting any, and runs in its own
process instead when that re-import would start the run again in every worker.
"""

from __future__ import annotations

import ast
import multiprocessing as mp
import sys
import tokenize
from types import FrameType

__all__ = ["unguarded_main_script"]


def unguarded_main_script() -> str | None:
    """The main script's path when this call runs in its unguarded top level, else ``None``.

    A process started with ``spawn`` or ``forkserver`` imports the main script again (as
    ``__mp_main__``) to find what it runs; code at the script's top level that is not under
    ``if __name__ == "__main__":`` runs again in every such process. ``None`` when there is no
    script to re-import (``python -c``, a REPL, a notebook), when this process is itself a
    worker, or when the call comes from inside the guard.

    Examples
    --------
    >>> unguarded_main_script() is None   # doctests run under pytest, whose main is guarded
    True
    """
    if mp.parent_process() is not None:
        return None
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path or not str(path).endswith(".py"):
        return None
    frame: FrameType | None = sys._getframe(1)
    while frame is not None and not (frame.f_globals is vars(main) and frame.f_code.co_name == "<module>"):
        frame = frame.f_back
    if frame is None:  # not called from the script's top level (a thread, a callback)
        return None
    try:
        with tokenize.open(path) as f:
            tree = ast.parse(f.read(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    line = frame.f_lineno
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.If)
            and _is_main_guard(node.test)
            and node.body
            and node.body[0].lineno <= line <= (node.body[-1].end_lineno or node.body[-1].lineno)
        ):
            return None
    return str(path)


def _is_main_guard(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either way round)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(mains) == 1
