"""tf.data, Keras 3 and numpy (JAX-style) batches over a store of 2D images, with patient splits."""

from __future__ import annotations

import numpy as np
import pytest

import medload
from fixtures.images import write_image_folder
from medload.datasets import NumpyBatches, split


@pytest.fixture(scope="module")
def image_store(tmp_path_factory):
    """A store of class-folder images (grey), labelled by folder, patients from the file names."""
    root = tmp_path_factory.mktemp("images")
    truth = write_image_folder(root / "src", n_per_class=8, images_per_patient=2)
    classes = sorted({t["class"] for t in truth.values()})
    pipe = medload.preset("image-grayscale")
    path = root / "store.h5"
    with medload.Store.create(path) as store:
        for series in medload.scan(root / "src", patient_pattern=r"(?P<patient>\d+)_"):
            vol = pipe(medload.load(series))
            name = series.info["class_folder"]
            vol = medload.Volume(
                vol.array, vol.affine, modality=vol.modality, meta={**vol.meta, "class_name": name}, history=vol.history
            )
            store.add(vol, label=classes.index(name))
    return path


def _patients_of(path, batches):
    reader = medload.open(path)
    return {reader.volumes[int(v)].patient_key for b in batches for v in b["volume"]}


def test_numpy_batches_keep_patients_apart_and_carry_class_names(image_store):
    parts = split(image_store, fractions={"train": 0.5, "val": 0.25, "test": 0.25}, seed=1)
    seen = {}
    for name in parts:
        batches = NumpyBatches(image_store, name, splits=parts, batch_size=5)
        seen[name] = _patients_of(image_store, batches)
        assert batches.classes == ["effusion", "normal", "pneumonia"]
    assert not (seen["train"] & seen["val"]) and not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"])
    assert sum(len(s) for s in seen.values()) == 12  # 24 images, 2 per patient


def test_seeded_shuffle_repeats_and_changes_per_epoch(image_store):
    a = NumpyBatches(image_store, batch_size=6, shuffle=True, seed=3)
    b = NumpyBatches(image_store, batch_size=6, shuffle=True, seed=3)
    first_a = np.concatenate([x["volume"] for x in a])
    first_b = np.concatenate([x["volume"] for x in b])
    second_a = np.concatenate([x["volume"] for x in a])
    np.testing.assert_array_equal(first_a, first_b)
    assert not np.array_equal(first_a, second_a) and sorted(first_a) == sorted(second_a)


def test_jax_style_loop_learns_from_numpy_batches(image_store):
    """A plain-numpy training loop (what a JAX step does with jnp arrays) fits the labels."""
    batches = NumpyBatches(image_store, batch_size=8, shuffle=True, seed=0, channels_last=True)
    n_classes = 3

    # Features: the row and column means (the fixture's classes differ in brightness).
    def features(x):
        return np.concatenate([x.mean(axis=(2, 3)), x.mean(axis=(1, 3))], 1)

    dim = features(batches.batch(0)["image"]).shape[1]
    w, bias = np.zeros((dim, n_classes)), np.zeros(n_classes)
    losses = []
    for _ in range(40):
        for batch in batches:
            f, y = features(batch["image"]), batch["label"]
            logits = f @ w + bias
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            losses.append(float(-np.log(p[np.arange(len(y)), y] + 1e-9).mean()))
            grad = p.copy()
            grad[np.arange(len(y)), y] -= 1
            w -= 2.0 * f.T @ grad / len(y)
            bias -= 2.0 * grad.mean(0)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])


def test_normalize_train_uses_training_split_statistics(image_store):
    parts = split(image_store, fractions={"train": 0.5, "val": 0.5}, seed=0)
    train = NumpyBatches(image_store, "train", splits=parts, batch_size=64, normalize="train")
    val = NumpyBatches(image_store, "val", splits=parts, batch_size=64, normalize="train")
    x = np.concatenate([b["image"] for b in train])
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 1e-3
    np.testing.assert_allclose(val.normalize.mean, train.normalize.mean)  # val is scaled by train's numbers
    imagenet = NumpyBatches(image_store, batch_size=4, channels="replicate3", normalize="imagenet").batch(0)["image"]
    raw = NumpyBatches(image_store, batch_size=4).batch(0)["image"]
    np.testing.assert_allclose(imagenet[:, 0], (raw[:, 0] - 0.485) / 0.229, rtol=1e-5)


tf = pytest.importorskip("tensorflow", reason="tensorflow-cpu (the 'tf' extra) is not installed")


def test_tf_dataset_matches_numpy_batches_and_splits(image_store):
    from medload.datasets import tf_dataset

    parts = split(image_store, fractions={"train": 0.5, "val": 0.5}, seed=2)
    for name in parts:
        ds = tf_dataset(image_store, name, splits=parts, batch_size=4)
        ref = NumpyBatches(image_store, name, splits=parts, batch_size=4, channels_last=True)
        got = [(x.numpy(), y.numpy()) for x, y in ds]
        assert len(got) == len(ref)
        for (x, y), r in zip(got, ref):
            np.testing.assert_array_equal(x, r["image"])
            np.testing.assert_array_equal(y, r["label"])
    # Channel choices take the float path; the batches are still NumpyBatches' own.
    x, _ = next(iter(tf_dataset(image_store, batch_size=4, channels="replicate3", channels_last=False)))
    ref = NumpyBatches(image_store, batch_size=4, channels="replicate3").batch(0)["image"]
    np.testing.assert_array_equal(x.numpy(), ref)
    # Three channels, channels last (the transpose path; one channel is a reshape).
    x, _ = next(iter(tf_dataset(image_store, batch_size=4, channels="replicate3")))
    np.testing.assert_array_equal(x.numpy(), ref.transpose(0, 2, 3, 1))


def test_tf_dataset_deterministic_shuffle(image_store):
    from medload.datasets import tf_dataset

    def labels(seed):
        ds = tf_dataset(image_store, batch_size=5, shuffle=True, seed=seed, deterministic=True)
        return [np.concatenate([y.numpy() for _, y in ds]) for _ in range(2)]  # two epochs

    a, b = labels(7), labels(7)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    x = np.concatenate(
        [
            img.numpy().reshape(len(img), -1).mean(1)
            for img, _ in tf_dataset(image_store, batch_size=5, shuffle=True, seed=7, deterministic=True)
        ]
    )
    y = np.concatenate([img.numpy().reshape(len(img), -1).mean(1) for img, _ in tf_dataset(image_store, batch_size=5)])
    assert not np.array_equal(x, y) and np.allclose(np.sort(x), np.sort(y))


def test_keras_model_trains_from_tf_dataset_and_pydataset(image_store):
    import keras

    from medload.datasets import KerasBatches, tf_dataset

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((24, 32, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.copy() for w in model.get_weights()]
    history = model.fit(tf_dataset(image_store, batch_size=8, shuffle=True), epochs=3, verbose=0, shuffle=False)
    losses = history.history["loss"]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    data = KerasBatches(image_store, batch_size=8, shuffle=True)
    assert data.classes == ["effusion", "normal", "pneumonia"]
    history = model.fit(data, epochs=2, verbose=0, shuffle=False)
    assert all(np.isfinite(history.history["loss"]))


@pytest.fixture(scope="module")
def one_file_and_shards(tmp_path_factory):
    """The same six volumes (5 slices each, every slice different) as one file and as 3 shards.

    Keys sort in the order the volumes were written, so both stores number the slices alike,
    as a parallel convert's shards (whole volumes per shard) and a one-file convert do.
    """
    root = tmp_path_factory.mktemp("layouts")
    rng = np.random.default_rng(11)
    vols = []
    for v in range(6):
        array = rng.random((5, 6, 7)) + np.arange(5)[:, None, None]
        meta = {"patient_key": f"p{v}", "series_key": f"s{v}", "source_hash": f"h{v}"}
        vols.append((medload.Volume(array, np.eye(4), meta=meta), v % 3))
    with medload.Store.create(root / "one.h5", value_range=(0, 6)) as store:
        for vol, label in vols:
            store.add(vol, label=label, key=vol.meta["series_key"])
    for shard in range(3):
        with medload.Store.create(root / "shards" / f"shard-{shard:04d}.h5", value_range=(0, 6)) as store:
            for vol, label in vols[2 * shard : 2 * shard + 2]:
                store.add(vol, label=label, key=vol.meta["series_key"])
    return root / "one.h5", root / "shards"


def test_a_folder_of_shards_serves_what_one_file_serves_for_a_seed(one_file_and_shards):
    """tf.data (parallel batch reads), numpy and Keras batches: a seed gives the same batches
    from a folder of shards as from one file, and each epoch serves every slice once."""
    from medload.datasets import KerasBatches, tf_dataset

    one, shards = one_file_and_shards
    assert len(medload.open(shards).shards) == 3
    flat = np.concatenate([r["image"] for r in NumpyBatches(one, batch_size=30)])  # every slice, in order

    def tf_epochs(path, calls):
        ds = tf_dataset(path, batch_size=4, shuffle=True, seed=5, deterministic=True, num_parallel_calls=calls)
        return [[(x.numpy(), y.numpy()) for x, y in ds] for _ in range(2)]

    ref = tf_epochs(one, 1)
    for path, calls in ((shards, 1), (shards, None), (one, None)):
        got = tf_epochs(path, calls)
        for epoch_ref, epoch_got in zip(ref, got, strict=True):
            for (xr, yr), (xg, yg) in zip(epoch_ref, epoch_got, strict=True):
                np.testing.assert_array_equal(xg, xr)
                np.testing.assert_array_equal(yg, yr)
    for epoch in ref:
        served = np.concatenate([x for x, _ in epoch])[..., 0]
        assert served.shape[0] == 30
        # Every slice once: sorted by content, the epoch is the store's slices.
        key = lambda a: np.lexsort(a.reshape(len(a), -1).T[::-1])  # noqa: E731
        np.testing.assert_array_equal(served[key(served)], flat[:, 0][key(flat[:, 0])])
    assert not np.array_equal(np.concatenate([x for x, _ in ref[0]]), np.concatenate([x for x, _ in ref[1]]))
    for make in (
        lambda p: NumpyBatches(p, batch_size=4, shuffle=True, seed=5, channels_last=True),
        lambda p: KerasBatches(p, batch_size=4, shuffle=True, seed=5),
    ):
        a, b = make(one), make(shards)
        for i in range(len(a)):
            xa, xb = (a[i], b[i]) if isinstance(a, KerasBatches) else (a.batch(i), b.batch(i))
            for key_ in ("image", "label") if isinstance(xa, dict) else (0, 1):
                np.testing.assert_array_equal(xa[key_], xb[key_])
