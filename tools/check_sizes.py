"""Report modules over 600 lines and functions over 80 lines in medload/ (issue 10's size rule).

A function's length is counted from its ``def`` to its last line, without its docstring.

A module or function may be longer when a comment says why it is one piece: a line starting
with ``# one piece:`` among a module's first 40 lines, or directly above a function's ``def``
(decorators aside) or as the first line of its body.

Usage::

    python tools/check_sizes.py            # list every module and function over the limits
    python tools/check_sizes.py --strict   # exit 1 if one of them has no "one piece" comment
    python tools/check_sizes.py medload/batch medload/cli.py   # only these paths
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

MODULE_LIMIT = 600
FUNCTION_LIMIT = 80
MARK = "# one piece:"
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Oversize:
    """One module or function over its limit."""

    path: str
    name: str  # "" for the module itself
    line: int
    lines: int
    limit: int
    reason: str  # the "one piece" comment, or ""

    def __str__(self) -> str:
        what = f"{self.path}:{self.line} {self.name}()" if self.name else self.path
        why = f"  [{self.reason}]" if self.reason else ""
        return f"{what}: {self.lines} lines > {self.limit}{why}"


def _mark_near(lines: list[str], first: int, last: int) -> str:
    for text in lines[max(first, 0) : last]:
        stripped = text.strip()
        if stripped.lower().startswith(MARK):
            return stripped[len(MARK) :].strip()
    return ""


def oversized(path: Path) -> list[Oversize]:
    """Every module/function of ``path`` over its limit, with its "one piece" reason if any."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    found = []
    if len(lines) > MODULE_LIMIT:
        found.append(Oversize(rel, "", 1, len(lines), MODULE_LIMIT, _mark_near(lines, 0, 40)))
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        first = node.body[0]
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            length -= (first.end_lineno or first.lineno) - first.lineno + 1  # the docstring is not code
        if length <= FUNCTION_LIMIT:
            continue
        top = min([node.lineno] + [d.lineno for d in node.decorator_list])
        body = node.body[0]
        # the comment above the def, or between the def line (and docstring) and the first code
        first_code = node.body[1].lineno if isinstance(body, ast.Expr) and len(node.body) > 1 else body.lineno
        reason = _mark_near(lines, top - 3, top - 1) or _mark_near(lines, node.lineno, first_code)
        found.append(Oversize(rel, node.name, node.lineno, length, FUNCTION_LIMIT, reason))
    return found


def check(paths: list[Path]) -> list[Oversize]:
    files = sorted({f for p in paths for f in ([p] if p.is_file() else p.rglob("*.py"))})
    return [o for f in files for o in oversized(f)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[ROOT / "medload"])
    parser.add_argument("--strict", action="store_true", help="exit 1 when one is over without a reason")
    args = parser.parse_args(argv)
    found = check(args.paths)
    for item in found:
        print(item)
    unexplained = [o for o in found if not o.reason]
    print(
        f"{len(found)} over the limits ({MODULE_LIMIT} lines a module, {FUNCTION_LIMIT} a function), "
        f"{len(unexplained)} without a '{MARK}' comment"
    )
    return 1 if args.strict and unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
