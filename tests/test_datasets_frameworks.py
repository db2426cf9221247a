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
