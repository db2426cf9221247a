"""Docstrings name only parameters the public callables take (a stale doc misleads users)."""

from __future__ import annotations

import importlib
import inspect
import re

import pytest

MODULES = ["medload.io", "medload.transforms", "medload.batch", "medload.store"]


def documented_parameters(obj) -> list[str]:
    """Names in the numpydoc ``Parameters`` section of ``obj``'s docstring."""
    doc = inspect.getdoc(obj) or ""
    section = re.search(r"^Parameters\n-+\n(.*?)(?:\n\n[A-Z][a-z]+\n-+\n|\Z)", doc, re.S | re.M)
    if not section:
        return []
    names: list[str] = []
    for line in section.group(1).splitlines():
        if line and not line.startswith(" "):
            names += [n.strip().lstrip("*") for n in line.split(" : ")[0].split(",")]
    return names


def public_callables():
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            if callable(obj):
                yield f"{name}.{attr}", obj


@pytest.mark.parametrize("name,obj", list(public_callables()), ids=lambda v: v if isinstance(v, str) else "")
def test_documented_parameters_exist(name, obj):
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        pytest.skip(f"{name} has no signature")
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        pytest.skip(f"{name} takes **kwargs")
    stale = [p for p in documented_parameters(obj) if p not in signature.parameters]
    assert stale == [], f"{name} documents parameters it does not take: {stale}"


def test_pipeline_documents_steps_only():
    from medload.transforms import Pipeline

    assert documented_parameters(Pipeline) == ["steps"]
    assert list(inspect.signature(Pipeline).parameters) == ["steps"]
