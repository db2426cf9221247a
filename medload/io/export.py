"""Write a Volume as NIfTI, with the BIDS diffusion files beside it on request."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medload.errors import MedloadError
from medload.io.diffusion import bvecs_for_affine
from medload.volume import Volume

__all__ = ["save_nifti"]


def _stem(path: Path) -> Path:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)])
    raise MedloadError(f"{path}: a NIfTI file name ends in .nii or .nii.gz; pass such a path.")


def save_nifti(volume: Volume, path: str | os.PathLike[str], *, bids: bool = False) -> list[str]:
    """Write ``volume.to_nifti()`` to ``path``; with ``bids``, ``.bval``/``.bvec`` beside it.

    The diffusion files are written when ``volume.meta["diffusion"]`` holds the table
    (DICOM diffusion series): b-values one line, gradients three lines, one column per frame
    in the volume's frame order, as dcm2niix writes them. The bvec convention is FSL's for
    this file's own grid (see :func:`medload.io.diffusion.bvecs_for_affine`).

    Returns
    -------
    list of str
        The paths written.

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> vol = Volume(np.zeros((2, 3, 4, 5), np.int16), np.eye(4),
    ...              meta={"diffusion": {"bvals": [0.0, 1000.0], "gradients_lps": [[0, 0, 0], [0, 1, 0]]}})
    >>> out = save_nifti(vol, os.path.join(tempfile.mkdtemp(), "dwi.nii.gz"), bids=True)
    >>> [os.path.basename(p) for p in out]
    ['dwi.nii.gz', 'dwi.bval', 'dwi.bvec']
    >>> open(out[2]).read().splitlines()[1]  # y: the image's rows run along -y (LPS +y is RAS -y)
    '0 -1'
    """
    import nibabel as nib

    path = Path(path)
    stem = _stem(path)
    image = volume.to_nifti()
    nib.save(image, str(path))
    written = [str(path)]
    table = volume.meta.get("diffusion") if bids else None
    if table:
        bvals = np.asarray(table["bvals"], dtype=float)
        bvecs = bvecs_for_affine(np.asarray(table["gradients_lps"], dtype=float), image.affine)
        n_frames = volume.shape[0] if len(volume.shape) == 4 else 1
        if len(bvals) != n_frames:
            raise MedloadError(
                f"{path}: the diffusion table has {len(bvals)} entries for {n_frames} frames; "
                "it was not made for this volume (a transform changed the frames?)."
            )
        stem.with_suffix(".bval").write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
        stem.with_suffix(".bvec").write_text("\n".join(" ".join(f"{v:.6g}" for v in row) for row in bvecs) + "\n")
        written += [str(stem.with_suffix(".bval")), str(stem.with_suffix(".bvec"))]
    return written
