"""Patient-level splits and label tables: pure functions, no store, no torch."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from medload.datasets import label_from, read_label_csv, resolve_labels, split
from medload.errors import MedloadError


def _patients(n: int, start: int = 0) -> list[str]:
    return [f"pat-{i:04d}" for i in range(start, start + n)]


def test_every_patient_in_exactly_one_split_with_fractions_close_to_asked():
    keys = _patients(2000)
    parts = split(keys, fractions={"train": 0.7, "val": 0.2, "test": 0.1}, seed=3)
    seen = Counter(p for members in parts.values() for p in members)
    assert set(seen) == set(keys) and max(seen.values()) == 1
    sizes = {k: len(v) / len(keys) for k, v in parts.items()}
    # Hash placement is binomial: 2000 patients put each fraction within ~3 standard errors.
    assert abs(sizes["train"] - 0.7) < 0.035 and abs(sizes["val"] - 0.2) < 0.03 and abs(sizes["test"] - 0.1) < 0.025


def test_split_of_a_patient_does_not_change_when_others_are_added_or_removed():
    first = split(_patients(300), seed=7)
    grown = split(_patients(300) + _patients(200, start=5000), seed=7)
    shrunk = split(_patients(150), seed=7)
    where = {p: name for name, members in grown.items() for p in members}
    for name, members in first.items():
        assert all(where[p] == name for p in members)
    for name, members in shrunk.items():
        assert set(members) <= set(first[name])


def test_split_is_deterministic_and_seed_changes_it():
    keys = _patients(200)
    assert split(keys, seed=1) == split(list(reversed(keys)), seed=1)
    assert split(keys, seed=1) != split(keys, seed=2)


def test_folds_partition_patients_and_each_patient_is_held_out_once():
    keys = _patients(250)
    held = [split(keys, folds=5, fold=i, seed=0)["val"] for i in range(5)]
    counts = Counter(p for fold in held for p in fold)
    assert set(counts) == set(keys) and set(counts.values()) == {1}
    one = split(keys, folds=5, fold=2)
    assert not set(one["train"]) & set(one["val"]) and len(one["train"]) + len(one["val"]) == 250
    assert all(30 <= len(f) <= 70 for f in held)


def test_stratified_split_keeps_label_proportions_in_every_split():
    keys = _patients(400)
    labels = {p: (1 if i % 10 == 0 else 0) for i, p in enumerate(keys)}  # 10 % positives
    parts = split(keys, stratify=labels, seed=0)
    for name, members in parts.items():
        positives = sum(labels[p] for p in members)
        assert positives == round(0.1 * len(members)) or abs(positives - 0.1 * len(members)) <= 1, name
    assert sum(labels[p] for p in parts["test"]) == 4 and len(parts["test"]) == 40
    folds = [split(keys, folds=4, fold=i, stratify=labels)["val"] for i in range(4)]
    assert [sum(labels[p] for p in f) for f in folds] == [10, 10, 10, 10]


def test_stratify_by_store_labels_uses_each_patients_majority_label():
    recs = [SimpleNamespace(patient_key=f"p{i}", label=i % 2, key=f"v{i}") for i in range(20)]
    store = SimpleNamespace(volumes=recs, patient_keys=[r.patient_key for r in recs])
    parts = split(store, fractions={"a": 0.5, "b": 0.5}, stratify="label")
    assert [sum(int(p[1:]) % 2 for p in parts[n]) for n in ("a", "b")] == [5, 5]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"fractions": {"train": 0.8, "val": 0.1}}, "add up to 1"),
        ({"fractions": {"train": 1.2, "val": -0.2}}, "must be in [0, 1]"),
        ({"folds": 5}, "fold=0..4"),
        ({"folds": 5, "fold": 5}, "fold=0..4"),
        ({"folds": 1, "fold": 0}, "at least 2"),
        ({"fold": 1}, "needs folds"),
        ({"fractions": {"a": 1.0}, "folds": 2, "fold": 0}, "not both"),
        ({"stratify": "label"}, "no patient has a stored label"),
        ({"stratify": 3}, "stratify must be"),
    ],
)
def test_bad_split_arguments_say_what_is_wrong(kwargs, words):
    with pytest.raises(MedloadError, match=words.replace("[", r"\[").replace("]", r"\]")):
        split(_patients(10), **kwargs)


# --- labels ---------------------------------------------------------------------------------
RECS = [
    SimpleNamespace(key="tumor-a", patient_key="p1", study_key="st1", series_key="se1", label=None, meta={"folder": "tumor/a"}),
    SimpleNamespace(key="normal-b", patient_key="p2", study_key="st2", series_key="se2", label=None, meta={"folder": "normal/b"}),
    SimpleNamespace(key="tumor-c", patient_key="p3", study_key="st3", series_key="se3", label=None, meta={"folder": "tumor/c"}),
]


def test_csv_labels_by_patient_named_classes_sorted_like_imagefolder(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("patient_key,diagnosis,label\np1,x,tumor\np2,y,normal\n")
    labels, classes = resolve_labels(RECS, csv_path, label_key="patient")
    assert classes == ["normal", "tumor"]
    assert labels.tolist() == [1, 0, -1]  # p3 not in the CSV: unlabelled


def test_csv_labels_by_series_with_integer_labels(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("series_key,label\nse3,2\nse1,0\n")
    labels, classes = resolve_labels(RECS, str(csv_path), label_key="series")
    assert classes is None and labels.dtype == np.int64 and labels.tolist() == [0, -1, 2]


def test_csv_naming_unknown_keys_names_them_with_their_line(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("patient_key,label\np1,1\np9,0\np2,1\n")
    with pytest.raises(MedloadError, match=r"'p9' \(line 3\)") as err:
        resolve_labels(RECS, csv_path, label_key="patient")
    assert str(csv_path) in str(err.value)


def test_csv_keyed_by_the_wrong_kind_of_key_says_which_kind_it_is(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("key,label\nse1,1\nse2,0\n")
    with pytest.raises(MedloadError, match="label_key='series'"):
        resolve_labels(RECS, csv_path, label_key="patient")


def test_csv_with_conflicting_rows_names_both_lines(tmp_path):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("patient_key,label\np1,1\np2,0\np1,0\n")
    with pytest.raises(MedloadError, match="line 2 and '0' on line 4"):
        read_label_csv(csv_path)


def test_labels_from_a_folder_field_and_from_a_key_prefix():
    by_folder, classes = resolve_labels(RECS, label_from("folder", pattern=r"^([^/]+)/"))
    assert classes == ["normal", "tumor"] and by_folder.tolist() == [1, 0, 1]
    by_prefix, classes = resolve_labels(RECS, label_from("key", pattern=r"^(\w+?)-", classes=["tumor", "normal"]))
    assert classes == ["tumor", "normal"] and by_prefix.tolist() == [0, 1, 0]
    with pytest.raises(MedloadError, match="volume 'tumor-a' has no such field"):
        resolve_labels(RECS, label_from("nothing"))


def test_stored_labels_are_used_when_no_labels_given():
    recs = [SimpleNamespace(key="a", patient_key="p", label=3), SimpleNamespace(key="b", patient_key="q", label=None)]
    labels, classes = resolve_labels(recs)
    assert labels.tolist() == [3, -1] and classes is None
