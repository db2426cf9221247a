"""Patient-level splits: deterministic, seeded, never by slice or file.

Each patient is placed by a hash of ``(seed, patient_key)`` alone, so

* the same seed gives the same split on every machine and in every run;
* adding or removing other patients never moves a patient to another split (a model
  evaluated on ``test`` yesterday is not evaluated on its own training patients today);
* no patient can appear in two splits, because splits are made of patients.

Volumes written without a patient key share the store's placeholder key (``"none"``) and
so land together in one split; give every volume a ``patient_key`` before splitting.

The stratified variant (``stratify=...``) gives each split the same label proportions. It
orders the patients of each label by the same hash and cuts that order by the fractions
(or deals it round-robin into folds). Proportions are then exact to one patient, but a
newly added patient can shift the cut by one place: stratification trades the
"stable when patients are added" guarantee for balance. Use it for a fixed cohort.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medload.errors import MedloadError

__all__ = ["split", "patient_hash", "DEFAULT_FRACTIONS"]

#: Fractions used when neither ``fractions`` nor ``folds`` is given.
DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}


def patient_hash(patient_key: str, *, seed: int = 0) -> float:
    """Map ``(seed, patient_key)`` to a number in ``[0, 1)``, the same everywhere.

    SHA-256, not Python's ``hash()``: the latter is salted per process.

    Examples
    --------
    >>> patient_hash("pat-0001", seed=0) == patient_hash("pat-0001", seed=0)
    True
    >>> 0.0 <= patient_hash("pat-0001", seed=1) < 1.0
    True
    """
    digest = hashlib.sha256(f"medload-split:{int(seed)}:{patient_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def _patients_and_labels(source: Any) -> tuple[list[str], dict[str, Any]]:
    """Patient keys (and per-patient store labels, if any) of a store, a path or a list of keys."""
    if isinstance(source, (str, Path)):
        from medload.store import open as open_store

        with open_store(source) as reader:  # opened here, so closed here (a reader passed in stays open)
            return _patients_and_labels(reader)
    if hasattr(source, "volumes") and hasattr(source, "patient_keys"):
        per_patient: dict[str, list[int]] = {}
        for rec in source.volumes:
            labels = per_patient.setdefault(str(rec.patient_key), [])
            if rec.label is not None and int(rec.label) >= 0:
                labels.append(int(rec.label))
        return list(per_patient), {p: _majority(v) for p, v in per_patient.items() if v}
    if isinstance(source, Mapping):
        raise MedloadError(
            "split() takes a store, a store path or a list of patient keys, found a mapping; "
            "to stratify by a mapping patient_key -> label pass split(list(m), stratify=m)."
        )
    keys = [str(k) for k in source]
    return list(dict.fromkeys(keys)), {}


def _majority(labels: list[int]) -> int:
    # A patient whose volumes carry different labels is stratified by its most common one.
    counts = Counter(labels)
    return min(counts, key=lambda lab: (-counts[lab], lab))


def _check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    if not fractions:
        raise MedloadError("split(): fractions is empty; give e.g. {'train': 0.8, 'val': 0.2}.")
    out = {}
    for name, frac in fractions.items():
        if not isinstance(name, str) or not name:
            raise MedloadError(f"split(): split names must be non-empty strings, found {name!r}.")
        frac = float(frac)
        if not (0.0 <= frac <= 1.0) or math.isnan(frac):
            raise MedloadError(f"split(): fraction of {name!r} must be in [0, 1], found {frac}.")
        out[name] = frac
    total = sum(out.values())
    if abs(total - 1.0) > 1e-6:
        raise MedloadError(f"split(): fractions must add up to 1, found {total:g} ({out}); scale them or add the missing split.")
    return out


def _bucket(u: float, names: list[str], edges: list[float]) -> str:
    for name, edge in zip(names, edges):
        if u < edge:
            return name
    return names[-1]


def split(
    source: Any,
    *,
    fractions: Mapping[str, float] | None = None,
    folds: int | None = None,
    fold: int | None = None,
    seed: int = 0,
    stratify: str | Mapping[str, Any] | None = None,
) -> dict[str, list[str]]:
    """Split patients (never slices or files) into named sets, deterministically.

    Parameters
    ----------
    source : StoreReader, str, Path or iterable of str
        A store (or its path: ``medload.open`` is called) or the patient keys themselves.
    fractions : mapping of str to float, optional
        Split name to fraction of patients, adding up to 1. Default
        ``{"train": 0.8, "val": 0.1, "test": 0.1}``.
    folds, fold : int, optional
        k-fold cross-validation instead of fractions: patients are dealt into ``folds``
        folds; the result is ``{"train": <the other folds>, "val": <fold number fold>}``.
    seed : int
        Another seed gives another, equally deterministic, split.
    stratify : "label" or mapping of str to label, optional
        Balance labels across splits. ``"label"`` uses the per-volume labels stored in the
        store (a patient's most common label); a mapping gives one label per patient key.
        Patients without a label form a group of their own. See the module notes: the
        stratified split is exact in proportions but not stable when patients are added.

    Returns
    -------
    dict of str to list of str
        Split name to sorted patient keys; every patient is in exactly one split.

    Raises
    ------
    MedloadError
        Fractions that do not add up to 1, ``fold`` out of range, both ``fractions`` and
        ``folds``, or ``stratify="label"`` on keys without labels.

    Examples
    --------
    >>> keys = [f"pat-{i:03d}" for i in range(100)]
    >>> parts = split(keys, seed=0)
    >>> sorted(parts), sum(len(v) for v in parts.values())
    (['test', 'train', 'val'], 100)
    >>> bigger = split(keys + [f"pat-{i:03d}" for i in range(100, 150)], seed=0)
    >>> set(parts["test"]) <= set(bigger["test"])
    True
    >>> cv = split(keys, folds=5, fold=0)
    >>> len(cv["val"]) + len(cv["train"])
    100
    """
    if fractions is not None and folds is not None:
        raise MedloadError("split(): give either fractions or folds/fold, not both.")
    if folds is not None:
        folds = int(folds)
        if folds < 2:
            raise MedloadError(f"split(): folds must be at least 2, found {folds}.")
        if fold is None or not (0 <= int(fold) < folds):
            raise MedloadError(f"split(): with folds={folds} pass fold=0..{folds - 1} (the held-out fold), found {fold!r}.")
        fold = int(fold)
    elif fold is not None:
        raise MedloadError("split(): fold= needs folds=k as well.")
    fracs = _check_fractions(fractions if fractions is not None else DEFAULT_FRACTIONS)

    patients, store_labels = _patients_and_labels(source)
    hashes = {p: patient_hash(p, seed=seed) for p in patients}

    if folds is not None:
        names = [f"fold{i}" for i in range(folds)]
        fracs = {name: 1.0 / folds for name in names}
    names = list(fracs)
    edges = list(_cumulative(fracs.values()))

    assigned: dict[str, list[str]] = {name: [] for name in names}
    if stratify is None:
        for p in patients:
            assigned[_bucket(hashes[p], names, edges)].append(p)
    else:
        labels = _stratify_labels(stratify, store_labels, patients)
        groups: dict[Any, list[str]] = {}
        for p in patients:
            groups.setdefault(labels.get(p), []).append(p)
        for members in groups.values():
            members.sort(key=lambda p: (hashes[p], p))
            n = len(members)
            for rank, p in enumerate(members):
                if folds is not None:
                    name = names[rank % folds]
                else:
                    name = _bucket((rank + 0.5) / n, names, edges)
                assigned[name].append(p)

    if folds is not None:
        held = assigned[f"fold{fold}"]
        rest = [p for name in names if name != f"fold{fold}" for p in assigned[name]]
        return {"train": sorted(rest), "val": sorted(held)}
    return {name: sorted(members) for name, members in assigned.items()}


def _cumulative(values: Iterable[float]) -> Iterable[float]:
    total = 0.0
    for v in values:
        total += v
        yield total


def _stratify_labels(stratify: Any, store_labels: dict[str, Any], patients: list[str]) -> dict[str, Any]:
    if isinstance(stratify, Mapping):
        return {str(k): v for k, v in stratify.items()}
    if stratify == "label":
        if not store_labels:
            raise MedloadError(
                "split(stratify='label'): no patient has a stored label (labels come from "
                "Store.add(..., label=...)); pass stratify={patient_key: label, ...} instead."
            )
        return store_labels
    raise MedloadError(f"split(): stratify must be None, 'label' or a mapping patient_key -> label, found {stratify!r}.")
