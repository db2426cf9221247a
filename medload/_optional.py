"""Import optional heavy packages only when a feature needs them."""

from __future__ import annotations

import importlib
from types import ModuleType

from medload.errors import MissingDependencyError

_EXTRA = {
    "torch": "torch",
    "dask": "dask",
    "distributed": "dask",
    "h5py": "store",
    "hdf5plugin": "store",
    "matplotlib": "preview",
    "torchvision": "augment",
    "monai": "augment",
    "torchio": "augment",
    "albumentations": "augment",
    "tensorflow": "tf",
    "keras": "tf",
}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise a :class:`MissingDependencyError` naming the install.

    Examples
    --------
    >>> np = require("numpy", "arrays")
    >>> np.__name__
    'numpy'
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        extra = _EXTRA.get(top)
        hint = f"pip install 'medload[{extra}]'" if extra else f"pip install {top}"
        raise MissingDependencyError(
            f"{feature} needs the package {top!r}, which is not installed ({exc}); install it with: {hint}"
        ) from exc
