"""The batch job's pipelines: the user's ``pipeline`` argument as the spec a store records."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from medload.errors import ConfigError, TransformError

__all__ = ["resolve_pipelines", "pipeline_for", "AUTO_MODALITIES", "KNOWN_MODALITIES", "ORIENTATIONS"]

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
        f"{where}: expected a preset name, a .json/.toml pipeline file, a Pipeline or a config dict; found {type(spec).__name__}"
    )


#: Modality keys a ``{modality: pipeline}`` mapping may name (DICOM's codes medload reads);
#: anything else is a typo and refused. Sources that do not say their modality get ``"*"``'s
#: pipeline, or the one of the modality ``convert(modality=...)`` gives them.
# fmt: off
KNOWN_MODALITIES = frozenset({
    "CT", "MR", "PT", "NM", "US", "CR", "DX", "MG", "XA", "RF", "OT", "SC", "IO", "PX", "ES", "XC",
    "SM", "OCT", "OP",
})
# fmt: on

#: ``orientation=`` values: one stored orientation per plane, or the source's own.
ORIENTATIONS = ("radiological", "acquisition")


def resolve_pipelines(
    pipeline: Any = None,
    *,
    size: int | Sequence[int] | None = None,
    resize_mode: str = "resize",
    grayscale: bool = False,
    orientation: str = "radiological",
    force: bool = False,
) -> dict[str, Any]:
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
    orientation : {"radiological", "acquisition"}
        ``"radiological"``: every pipeline starts with
        :class:`~medload.transforms.CanonicalSlices` (unless it reorients already), so stored
        slices have one orientation per plane whatever the source; ``"acquisition"``: as read.
    force : bool
        Set ``force=True`` on every step that has it (CT windows on volumes whose modality is
        not CT, e.g. a NIfTI without a sidecar); ``modality=`` in ``convert`` is the cleaner fix.

    Returns
    -------
    dict
        Either one pipeline config (``{"medload_pipeline": 1, "steps": [...]}``) or
        ``{"medload_pipelines": 1, "by_modality": {mod: config}, "other": config}``.

    Examples
    --------
    >>> spec = resolve_pipelines("ct-brain", size=64)
    >>> [s["name"] for s in spec["steps"]]
    ['canonical_slices', 'window', 'resize_slices']
    >>> [s["name"] for s in resolve_pipelines("ct-brain", orientation="acquisition")["steps"]]
    ['window']
    >>> sorted(resolve_pipelines(None)["by_modality"])
    ['CR', 'CT', 'DX', 'MG', 'MR', 'OT']
    >>> [s["name"] for s in resolve_pipelines(None, grayscale=True)["by_modality"]["OT"]["steps"]]
    ['grayscale', 'scale_stored_range']
    """
    from medload.transforms import CanonicalSlices, Grayscale, Pipeline, ResizeSlices, default_preset
    from medload.transforms.orientation import PROJECTION_MODALITIES

    if orientation not in ORIENTATIONS:
        raise ConfigError(f"orientation must be one of {list(ORIENTATIONS)}, found {orientation!r}")

    def finish(config: dict[str, Any], modality: str | None = None) -> dict[str, Any]:
        if force:
            config = {
                **config,
                "steps": [
                    {**step, "params": {**step["params"], "force": True}} if "force" in step.get("params", {}) else step
                    for step in config["steps"]
                ],
            }
        steps = Pipeline.from_config(config)
        names = {step.name for step in steps.steps}
        if grayscale and "grayscale" not in names:
            steps = Pipeline([Grayscale(), *steps.steps])
        # Radiographs and image files keep their one plane: no step for them (it would do nothing).
        if (
            orientation == "radiological"
            and not names & {"reorient", "canonical_slices"}
            and modality not in PROJECTION_MODALITIES
        ):
            steps = Pipeline([CanonicalSlices(), *steps.steps])
        if size is not None:
            steps = steps + ResizeSlices(size, mode=resize_mode)
        return steps.to_config()

    is_mapping = isinstance(pipeline, Mapping) and "steps" not in pipeline
    if pipeline is not None and not is_mapping:
        return finish(_as_config(pipeline, "pipeline"))
    chosen = {str(k).upper() if k != "*" else "*": v for k, v in (pipeline or {}).items()}
    unknown = sorted(set(chosen) - KNOWN_MODALITIES - {"*"})
    if unknown:
        raise ConfigError(
            f"pipeline: {unknown} {'is not a modality' if len(unknown) == 1 else 'are not modalities'} "
            f"medload knows ({', '.join(sorted(KNOWN_MODALITIES))}); name one of those, '*' for the rest, or "
            "give sources that do not say theirs a modality (convert(modality=...), medload convert --modality)."
        )
    by_modality = {}
    for modality in sorted(set(AUTO_MODALITIES) | (set(chosen) - {"*"})):
        spec = chosen[modality] if modality in chosen else default_preset(modality)
        by_modality[modality] = finish(_as_config(spec, f"pipeline for {modality}"), modality)
    other = finish(_as_config(chosen.get("*"), "pipeline for other modalities"))
    return {"medload_pipelines": 1, "by_modality": by_modality, "other": other}


def pipeline_for(spec: Mapping[str, Any], modality: str) -> dict[str, Any]:
    """The pipeline config of ``modality`` in a spec made by :func:`resolve_pipelines`.

    Examples
    --------
    >>> [s["name"] for s in pipeline_for(resolve_pipelines(None), "CT")["steps"]]
    ['canonical_slices', 'window']
    """
    if "by_modality" not in spec:
        return dict(spec)
    return dict(spec["by_modality"].get(modality, spec["other"]))
