"""The batch job's pipelines: the user's ``pipeline`` argument as the spec a store records."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from medload.errors import TransformError

__all__ = ["resolve_pipelines", "pipeline_for", "AUTO_MODALITIES"]

#: Modalities with their own entry when presets are chosen by modality.
AUTO_MODALITIES = ("CT", "MR", "CR", "DX", "MG", "OT")


def _as_config(spec: Any, where: str) -> dict[str, Any]:
    """One pipeline spec (None/"none", preset name, file path, Pipeline, config dict) -> config."""
    from medload.transforms import Pipeline, preset

    if spec is None or (isinstance(spec, str) and spec.lower() in ("none", "raw")):
        return Pipeline([]).to_config()
    if isinstance(spec, Pipeline):
        return spec.to_config()
    if isinstance(spec, Mapping):
        return Pipeline.from_config(spec).to_config()
    if isinstance(spec, (str, os.PathLike)):
        text = os.fspath(spec)
        if text.endswith((".json", ".toml")) or os.path.sep in text:
            return Pipeline.load(text).to_config()
        return preset(text).to_config()
    raise TransformError(
        f"{where}: expected a preset name, a .json/.toml pipeline file, a Pipeline or a config dict; "
        f"found {type(spec).__name__}"
    )


def resolve_pipelines(pipeline: Any = None, *, size: int | Sequence[int] | None = None,
                      resize_mode: str = "resize", grayscale: bool = False) -> dict[str, Any]:
    """Turn the user's ``pipeline`` argument into the JSON-able spec recorded in the store.

    Parameters
    ----------
    pipeline : None, str, path, Pipeline, dict, or mapping of modality -> one of these
        ``None``: by modality (see the module doc). A preset name, a ``.json``/``.toml`` file,
        a :class:`~medload.transforms.Pipeline` or its config: the same for every series.
        ``{"CT": "ct-brain", "MR": "pipe.toml", "*": "none"}``: by modality, ``"*"`` for the
        rest; modalities not named keep their default.
    size : int or (int, int), optional
        Append ``ResizeSlices(size, mode=resize_mode)`` to every pipeline.
    resize_mode : {"resize", "pad-crop"}
        How slices reach ``size``.
    grayscale : bool
        Put ``Grayscale()`` (ITU-R BT.601 luma; grey volumes pass unchanged) first in every
        pipeline, so colour images are stored as one grey channel.

    Returns
    -------
    dict
        Either one pipeline config (``{"medload_pipeline": 1, "steps": [...]}``) or
        ``{"medload_pipelines": 1, "by_modality": {mod: config}, "other": config}``.

    Examples
    --------
    >>> spec = resolve_pipelines("ct-brain", size=64)
    >>> [s["name"] for s in spec["steps"]]
    ['window', 'resize_slices']
    >>> sorted(resolve_pipelines(None)["by_modality"])
    ['CR', 'CT', 'DX', 'MG', 'MR', 'OT']
    >>> [s["name"] for s in resolve_pipelines(None, grayscale=True)["by_modality"]["OT"]["steps"]]
    ['grayscale', 'scale_stored_range']
    """
    from medload.transforms import Grayscale, Pipeline, ResizeSlices, default_preset

    def finish(config: dict[str, Any]) -> dict[str, Any]:
        if size is None and not grayscale:
            return config
        steps = Pipeline.from_config(config)
        if grayscale and not any(step.name == "grayscale" for step in steps.steps):
            steps = Pipeline([Grayscale(), *steps.steps])
        if size is not None:
            steps = steps + ResizeSlices(size, mode=resize_mode)
        return steps.to_config()

    is_mapping = isinstance(pipeline, Mapping) and "steps" not in pipeline
    if pipeline is not None and not is_mapping:
        return finish(_as_config(pipeline, "pipeline"))
    chosen = {str(k).upper() if k != "*" else "*": v for k, v in (pipeline or {}).items()}
    by_modality = {}
    for modality in sorted(set(AUTO_MODALITIES) | (set(chosen) - {"*"})):
        spec = chosen[modality] if modality in chosen else default_preset(modality)
        by_modality[modality] = finish(_as_config(spec, f"pipeline for {modality}"))
    other = finish(_as_config(chosen.get("*"), "pipeline for other modalities"))
    return {"medload_pipelines": 1, "by_modality": by_modality, "other": other}


def pipeline_for(spec: Mapping[str, Any], modality: str) -> dict[str, Any]:
    """The pipeline config of ``modality`` in a spec made by :func:`resolve_pipelines`.

    Examples
    --------
    >>> [s["name"] for s in pipeline_for(resolve_pipelines(None), "CT")["steps"]]
    ['window']
    """
    if "by_modality" not in spec:
        return dict(spec)
    return dict(spec["by_modality"].get(modality, spec["other"]))
