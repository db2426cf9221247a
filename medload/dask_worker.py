"""Dask worker preload for ``--dask local``: each worker process ends with the medload process that started it.

:func:`medload.parallel.run_tasks` passes this module to ``distributed.LocalCluster(preload=...)``;
dask imports it in every worker process at start and calls :func:`dask_setup`. Dask ends its
local workers itself when their parent goes away, but from a thread that needs the GIL: a
worker busy in a long C call that holds the GIL (a decoder, a compressor) lived on for as
long as that call ran after its parent was SIGKILLed (the OOM killer's signal), writing into
an output that a re-run was writing too. :func:`medload.lifetime.die_with_parent` asks the
kernel instead (``PR_SET_PDEATHSIG`` on Linux, a watchdog thread elsewhere), as the local
pool's workers do. Workers of a cluster given by address are the cluster's, not ours: they
get no preload.
"""

from __future__ import annotations

import os
from typing import Any

from medload.lifetime import die_with_parent

__all__ = ["dask_setup"]


def dask_setup(worker: Any) -> None:
    """Dask's preload hook: end this worker process when its parent (the medload process) ends.

    Examples
    --------
    >>> callable(dask_setup)
    True
    """
    die_with_parent(os.getppid())
