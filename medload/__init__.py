"""medload: medical scanner exports to normalized 2D slices in HDF5, served to PyTorch.

``import medload`` is light: the store (h5py), the datasets (torch) and the parallel runner
(dask) are imported only when first used.

Examples
--------
>>> import medload
>>> medload.Volume.__name__
'Volume'
"""

from __future__ import annotations

import importlib
from typing import Any

from medload.errors import (
    ConfigError,
    FrameOrderError,
    GeometryError,
    MedloadError,
    MissingDependencyError,
    ReadError,
    PipelineMismatchError,
    StoreError,
    TransformError,
    UnsupportedError,
)
from medload.problems import Problem, ProblemKind
from medload.volume import Volume

__version__ = "0.1.0"

# name -> module that defines it; imported on first attribute access (PEP 562). No function
# shares its name with a submodule: importing ``medload.x`` sets the package attribute ``x`` to
# the module, which would shadow a function ``medload.x`` (hence ``medload.batch.convert``).
_LAZY = {
    "scan": "medload.io",
    "load": "medload.io",
    "save_nifti": "medload.io",
    "Series": "medload.io",
    "Pipeline": "medload.transforms",
    "preset": "medload.transforms",
    "transforms": "medload.transforms",
    "Store": "medload.store",
    "open": "medload.store",
    "SliceDataset": "medload.datasets",
    "VolumeDataset": "medload.datasets",
    "split": "medload.datasets",
    "convert": "medload.batch",
}

__all__ = [
    "ConfigError",
    "FrameOrderError",
    "GeometryError",
    "MedloadError",
    "MissingDependencyError",
    "PipelineMismatchError",
    "Problem",
    "ProblemKind",
    "ReadError",
    "StoreError",
    "TransformError",
    "UnsupportedError",
    "Volume",
    "__version__",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'medload' has no attribute {name!r}")
    mod = importlib.import_module(module)
    value = mod if module == f"medload.{name}" else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
