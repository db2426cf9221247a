"""``Pipeline``: transforms applied in order, saved as JSON/TOML, rebuilt from a Volume's history."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import numpy as np

from medload.errors import TransformError
from medload.transforms.base import REGISTRY, Transform, get_transform, json_params
from medload.volume import Volume

__all__ = ["Pipeline", "CONFIG_VERSION", "config_diff"]

#: Version of the ``{"medload_pipeline": 1, "steps": [...]}`` config layout.
CONFIG_VERSION = 1


def _build(name: str, params: Mapping[str, Any], workers: int | None) -> Transform:
    cls = get_transform(name)
    kwargs = dict(params)
    if cls.slice_wise:
        kwargs["workers"] = workers
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise TransformError(f"transform {name!r}: parameters {dict(params)} do not fit ({exc})") from None


class Pipeline:
    """Transforms applied in order; ``pipe(vol)`` or ``pipe(vol, mask=mask)``.

    Masks follow spatial steps only (same crop, same resampling, nearest neighbour).

    Parameters
    ----------
    steps : sequence of Transform
        Applied in order. Threads of a slice-wise step are that step's own ``workers``
        option; :meth:`from_config`, :meth:`from_history` and :meth:`load` take ``workers=``
        for the slice-wise steps they build.

    Examples
    --------
    >>> import numpy as np
    >>> from medload.transforms import Window, ResizeSlices
    >>> vol = Volume(np.zeros((2, 10, 10), np.int16), np.eye(4), modality="CT")
    >>> pipe = Pipeline([Window("abdomen"), ResizeSlices(8)])
    >>> out = pipe(vol)
    >>> out.shape, [name for name, _ in out.history]
    ((2, 8, 8), ['window', 'resize_slices'])
    >>> Pipeline.from_history(out.history)(vol).array.tolist() == out.array.tolist()
    True
    >>> print(pipe.describe())
    1. window(window=abdomen, center=40.0, width=400.0, force=False)
    2. resize_slices(size=[8, 8], mode=pad-crop, order=1, anti_aliasing=True)
    """

    def __init__(self, steps: Sequence[Transform] = ()) -> None:
        steps = list(steps)
        for i, step in enumerate(steps):
            if not isinstance(step, Transform):
                raise TransformError(
                    f"Pipeline step {i} must be a medload Transform, found {type(step).__name__}; "
                    "build steps from medload.transforms (e.g. Window('brain'))."
                )
        self.steps = steps

    # --- running ---------------------------------------------------------------------
    @overload
    def __call__(self, volume: Volume, mask: None = None) -> Volume: ...

    @overload
    def __call__(self, volume: Volume, mask: Volume) -> tuple[Volume, Volume]: ...

    @overload
    def __call__(self, volume: Volume, mask: Volume | None) -> Volume | tuple[Volume, Volume]: ...

    def __call__(self, volume: Volume, mask: Volume | None = None) -> Volume | tuple[Volume, Volume | None]:
        if mask is not None:
            if not isinstance(mask, Volume):
                raise TransformError(f"mask must be a medload.Volume, found {type(mask).__name__}")
            same_affine = np.allclose(mask.affine, volume.affine, atol=1e-3)
            if mask.spatial_shape != volume.spatial_shape or not same_affine:
                raise TransformError(
                    f"mask grid does not match the image: mask shape {mask.spatial_shape}, image shape "
                    f"{volume.spatial_shape}; affines equal: {same_affine}. "
                    "Resample the mask onto the image grid first."
                )
            for step in self.steps:
                volume, mask = step.apply_pair(volume, mask)
            return volume, mask
        for step in self.steps:
            volume = step(volume)
        return volume

    # --- containers ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Transform]:
        return iter(self.steps)

    def __getitem__(self, index: int) -> Transform:
        return self.steps[index]

    def __add__(self, other: Pipeline | Transform | Iterable[Transform]) -> Pipeline:
        extra = [other] if isinstance(other, Transform) else list(other)
        return Pipeline(self.steps + extra)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.to_config() == other.to_config()

    def __repr__(self) -> str:
        return f"Pipeline({self.steps!r})"

    def describe(self) -> str:
        """One line per step, numbered."""
        return "\n".join(f"{i}. {step.describe()}" for i, step in enumerate(self.steps, 1)) or "(no steps)"

    # --- configs ---------------------------------------------------------------------
    def to_config(self) -> dict[str, Any]:
        """``{"medload_pipeline": 1, "steps": [{"name": ..., "params": {...}}, ...]}``, JSON-able.

        Examples
        --------
        >>> from medload.transforms import Window
        >>> Pipeline([Window("brain")]).to_config()["steps"][0]["params"]["width"]
        80.0
        """
        return {
            "medload_pipeline": CONFIG_VERSION,
            "steps": [{"name": s.name, "params": json_params(s.params())} for s in self.steps],
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, workers: int | None = 1) -> Pipeline:
        """Rebuild from :meth:`to_config`'s dict.

        Examples
        --------
        >>> from medload.transforms import Window
        >>> Pipeline.from_config(Pipeline([Window("lung")]).to_config())[0].center
        -600.0
        """
        if not isinstance(config, Mapping) or "steps" not in config:
            raise TransformError(
                "a pipeline config must be a mapping with 'medload_pipeline' and 'steps', found "
                f"{type(config).__name__} with keys {list(config) if isinstance(config, Mapping) else '-'}"
            )
        version = config.get("medload_pipeline", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise TransformError(f"pipeline config version {version!r} is not supported; expected {CONFIG_VERSION}")
        steps = []
        for i, step in enumerate(config["steps"]):
            if not isinstance(step, Mapping) or "name" not in step:
                raise TransformError(f"pipeline config step {i} must be {{'name': ..., 'params': {{...}}}}, found {step!r}")
            steps.append(_build(step["name"], step.get("params", {}), workers))
        return cls(steps)

    @classmethod
    def from_history(cls, history: Iterable[Sequence[Any]], *, unknown: str = "error", workers: int | None = 1) -> Pipeline:
        """Rebuild the steps recorded in ``Volume.history`` (tuples, or lists after JSON).

        ``unknown="skip"`` ignores entries that are not transforms (e.g. a reader's own step).

        Examples
        --------
        >>> import json, numpy as np
        >>> from medload.transforms import Window
        >>> vol = Volume(np.arange(8.0).reshape(2, 2, 2), np.eye(4), modality="CT")
        >>> out = Window(center=4, width=8)(vol)
        >>> replay = Pipeline.from_history(json.loads(json.dumps(out.history)))
        >>> bool((replay(vol).array == out.array).all())
        True
        """
        if unknown not in ("error", "skip"):
            raise TransformError(f"unknown must be 'error' or 'skip', found {unknown!r}")
        steps = []
        for entry in history:
            name, params = entry[0], entry[1]
            if name not in REGISTRY and unknown == "skip":
                continue
            steps.append(_build(name, params, workers))
        return cls(steps)

    def save(self, path: str | Path) -> Path:
        """Write the config as ``.json`` or ``.toml`` (chosen by the suffix).

        Examples
        --------
        >>> import tempfile, pathlib
        >>> from medload.transforms import Window
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "pipe.toml"
        >>> Pipeline.load(Pipeline([Window("bone")]).save(p))[0].width
        1800.0
        """
        path = Path(path)
        config = self.to_config()
        if path.suffix == ".json":
            text = json.dumps(config, indent=2) + "\n"
        elif path.suffix == ".toml":
            text = _to_toml(config)
        else:
            raise TransformError(f"pipeline file {path} must end in .json or .toml, found {path.suffix!r}")
        path.write_text(text, encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, *, workers: int | None = 1) -> Pipeline:
        """Read a ``.json`` or ``.toml`` pipeline config written by :meth:`save` or by hand.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "pipe.toml"
        >>> _ = p.write_text('medload_pipeline = 1\\n[[steps]]\\nname = "window"\\nparams = { window = "lung" }\\n')
        >>> Pipeline.load(p).describe()
        '1. window(window=lung, center=-600.0, width=1500.0, force=False)'
        """
        path = Path(path)
        if not path.is_file():
            raise TransformError(f"pipeline file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix == ".toml":
                config = tomllib.loads(text)
            elif path.suffix == ".json":
                config = json.loads(text)
            else:
                raise TransformError(f"pipeline file {path} must end in .json or .toml, found {path.suffix!r}")
        except ValueError as exc:
            if isinstance(exc, TransformError):
                raise
            raise TransformError(f"pipeline file {path} is not valid {path.suffix[1:].upper()}: {exc}") from None
        return cls.from_config(config, workers=workers)


def _steps_by_modality(config: Any) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """``({modality or "*": steps}, {other top-level option: value})`` of a converter config."""
    if not isinstance(config, Mapping):
        return {"*": []}, {"pipeline": config}
    extras = {
        k: v for k, v in config.items() if k not in ("by_modality", "other", "steps", "medload_pipeline", "medload_pipelines")
    }
    if "by_modality" in config:
        steps = {str(m): list(c.get("steps", [])) for m, c in config["by_modality"].items()}
        steps["other"] = list((config.get("other") or {}).get("steps", []))
        return steps, extras
    return {"*": list(config.get("steps", []))}, extras


def config_diff(stored: Any, wanted: Any, *, limit: int = 6) -> list[str]:
    """Short lines saying how ``wanted`` differs from ``stored``: step by step, parameter by parameter.

    Examples
    --------
    >>> a = {"steps": [{"name": "window", "params": {"center": 40.0, "width": 400.0}}]}
    >>> b = {"steps": [{"name": "window", "params": {"center": 40.0, "width": 80.0}}]}
    >>> config_diff(a, b)
    ['step 1 window: width 400.0 in the store, 80.0 now']
    """
    a, a_extra = _steps_by_modality(stored)
    b, b_extra = _steps_by_modality(wanted)
    # One pipeline for every modality against per-modality ones: compare it with each of them.
    if set(a) == {"*"} and set(b) != {"*"}:
        a = {m: a["*"] for m in b}
    if set(b) == {"*"} and set(a) != {"*"}:
        b = {m: b["*"] for m in a}
    lines: list[str] = []
    for key in sorted(set(a_extra) | set(b_extra)):
        if a_extra.get(key) != b_extra.get(key):
            lines.append(f"{key}: {json.dumps(a_extra.get(key))} in the store, {json.dumps(b_extra.get(key))} now")
    # The same difference in several modalities is said once: "CT, MR step 2 ...".
    by_body: dict[str, list[str]] = {}
    for modality in sorted(set(a) | set(b), key=lambda m: (m == "other", m)):
        old, new = a.get(modality, []), b.get(modality, [])
        if modality not in a or modality not in b:
            by_body.setdefault(f"pipeline: {'in the store only' if modality in a else 'new now'}", []).append(modality)
            continue
        for i in range(max(len(old), len(new))):
            s_old = old[i] if i < len(old) else None
            s_new = new[i] if i < len(new) else None
            name_old = s_old.get("name") if s_old else None
            name_new = s_new.get("name") if s_new else None
            if name_old != name_new:
                body = f"step {i + 1}: {name_old or '(none)'} in the store, {name_new or '(none)'} now"
                by_body.setdefault(body, []).append(modality)
                continue
            p_old = s_old.get("params", {}) if s_old else {}
            p_new = s_new.get("params", {}) if s_new else {}
            changed = [
                f"{k} {json.dumps(p_old.get(k))} in the store, {json.dumps(p_new.get(k))} now"
                for k in sorted(set(p_old) | set(p_new))
                if p_old.get(k) != p_new.get(k)
            ]
            if changed:
                by_body.setdefault(f"step {i + 1} {name_new}: " + ", ".join(changed), []).append(modality)
    for body, modalities in by_body.items():
        where = "" if modalities == ["*"] else ", ".join(modalities) + " "
        lines.append(where + body)
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more differences"]
    return lines


def _to_toml(config: Mapping[str, Any]) -> str:
    """The config as TOML (tomli_w). TOML has no null: a parameter that is None is left out, and
    a missing key takes the transform's default, which is None."""
    import tomli_w

    steps = [
        {"name": step["name"], "params": {k: v for k, v in step["params"].items() if v is not None}} for step in config["steps"]
    ]
    for i, step in enumerate(steps):
        where = _null_inside(step["params"], f"steps[{i}].params")
        if where:
            raise TransformError(f"TOML cannot hold the value None at {where}; save the pipeline as .json instead")
    return tomli_w.dumps({"medload_pipeline": int(config["medload_pipeline"]), "steps": steps})


def _null_inside(value: Any, where: str) -> str | None:
    """Where a None sits inside ``value`` (TOML has no null), or None."""
    if value is None:
        return where
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        found = _null_inside(item, f"{where}.{key}" if isinstance(value, Mapping) else f"{where}[{key}]")
        if found:
            return found
    return None
