"""How many workers: one meaning of ``workers=`` for every function that takes it.

``workers=None`` uses every core this process may use; ``workers=0`` works in the calling
process and thread, no pool (for notebooks, debuggers and nested parallelism); ``workers=n``
uses ``n`` processes (the batch job) or threads (slice-wise transforms).
"""

from __future__ import annotations

import os

import numpy as np

from medload.errors import ConfigError

__all__ = ["available_cores", "resolve_workers"]


def available_cores() -> int:
    """Number of cores this process may use (``os.sched_getaffinity`` where available).

    Examples
    --------
    >>> available_cores() >= 1
    True
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: int | None) -> int:
    """``workers=`` as a count: ``None`` -> every core, ``0`` -> 0 (in this process), ``n`` -> n.

    Raises
    ------
    ConfigError
        A negative or non-integer count.

    Examples
    --------
    >>> resolve_workers(2), resolve_workers(0), resolve_workers(None) == available_cores()
    (2, 0, True)
    """
    if workers is None:
        return available_cores()
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ConfigError(f"workers must be >= 0 (0 = in this process, None = every core), found {workers!r}.")
    return int(workers)
