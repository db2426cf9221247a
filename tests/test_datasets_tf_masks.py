"""Masks through tf.data and Keras: image and mask move together, masks stay integer labels.

A Keras preprocessing layer (``RandomFlip``, ``RandomRotation``) applied to the image but not to
its mask is the classic silent failure of segmentation in Keras: the model learns from masks
that lie elsewhere. ``tf_dataset(with_mask=True, augment=layer)`` calls the layer in Keras' own
dictionary form (``{"images", "segmentation_masks"}``), which moves both alike and resamples the
mask with nearest neighbours; checked with the image's value under each label.
"""

from __future__ import annotations

import numpy as np
import pytest

import medload
from medload.datasets import NumpyBatches

tf = pytest.importorskip("tensorflow", reason="tensorflow-cpu (the 'tf' extra) is not installed")
keras = pytest.importorskip("keras")

LEVEL = {1: 0.3, 2: 0.8}  # image value of each label; 0 elsewhere
SHAPE = (6, 32, 24)


@pytest.fixture(scope="module")
def mask_store(tmp_path_factory):
    """Three volumes, each an L (arm label 1, foot label 2) placed off-centre, so a flip or turn moves it."""
    path = tmp_path_factory.mktemp("tf-masks") / "store.h5"
    with medload.Store.create(path, value_range=(0.0, 1.0)) as store:
        for v in range(3):
            mask = np.zeros(SHAPE, np.uint8)
            mask[:, 3 + v : 14 + v, 3:8] = 1
            mask[:, 14 + v : 18 + v, 3:16] = 2
            image = np.select([mask == 1, mask == 2], [LEVEL[1], LEVEL[2]], 0.0).astype(np.float32)
            meta = {"patient_key": f"p{v}", "series_key": f"s{v}", "source_hash": f"h{v}"}
            store.add(medload.Volume(image, np.eye(4), modality="CT", meta=meta), mask=mask, label=v % 2)
    return path


def levels(image: np.ndarray, mask: np.ndarray) -> dict[int, float]:
    """Median image value inside each label (over the batch)."""
    return {k: float(np.median(image[mask == k])) for k in LEVEL if (mask == k).sum() >= 8}


def _augment_layer():
    return keras.layers.Pipeline(
        [keras.layers.RandomFlip("horizontal_and_vertical", seed=1), keras.layers.RandomRotation(0.25, seed=2)]
    )


def test_tf_dataset_serves_the_stored_masks(mask_store):
    from medload.datasets import tf_dataset

    ds = tf_dataset(mask_store, batch_size=5, with_mask=True)
    ref = NumpyBatches(mask_store, batch_size=5, channels_last=True, with_mask=True)
    got = [(x.numpy(), m.numpy()) for x, m in ds]
    assert len(got) == len(ref) == 4
    for (x, m), r in zip(got, ref):
        assert m.dtype == np.int64 and m.shape == x.shape  # (B, H, W, 1), channels as the image
        np.testing.assert_array_equal(m, r["mask"])
        np.testing.assert_allclose(x, r["image"], atol=1e-6)
        for k, level in levels(x, m).items():
            assert abs(level - LEVEL[k]) < 1 / 255 + 1e-6


def test_keras_layers_through_augment_move_image_and_mask_together(mask_store):
    from medload.datasets import tf_dataset

    plain = [m.numpy() for _, m in tf_dataset(mask_store, batch_size=6, with_mask=True)]
    augmented = list(tf_dataset(mask_store, batch_size=6, with_mask=True, augment=_augment_layer()))
    moved = 0
    for (x, m), before in zip(augmented, plain):
        x, m = x.numpy(), m.numpy()
        assert m.dtype == np.int64 and set(np.unique(m).tolist()) <= {0, 1, 2}  # nearest: no new labels
        for k, level in levels(x, m).items():
            assert abs(level - LEVEL[k]) < 0.1, (k, level)
        moved += int(not np.array_equal(m, before))
    assert moved >= 2, "the layer left the masks as they were: the check proves nothing"


def test_a_layer_on_the_image_alone_leaves_the_mask_behind(mask_store):
    # The classic failure, as users write it: the check above catches it.
    from medload.datasets import tf_dataset

    layer = _augment_layer()
    ds = tf_dataset(mask_store, batch_size=6, with_mask=True).map(lambda x, m: (layer(x), m))
    worst = 0.0
    for x, m in ds:
        for k, level in levels(x.numpy(), m.numpy()).items():
            worst = max(worst, abs(level - LEVEL[k]))
    assert worst > 0.2, worst


def test_an_augment_that_interpolates_the_mask_is_stopped(mask_store):
    from medload.datasets import tf_dataset

    def blur(data):
        mask = tf.cast(data["segmentation_masks"], tf.float32)
        return {"images": data["images"], "segmentation_masks": (mask + tf.roll(mask, 1, axis=1)) / 2}

    with pytest.raises(tf.errors.InvalidArgumentError, match="interpolated the mask"):
        list(tf_dataset(mask_store, batch_size=6, with_mask=True, augment=blur))


def test_a_segmentation_model_trains_on_augmented_pairs(mask_store):
    from medload.datasets import tf_dataset

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((*SHAPE[1:], 1)), keras.layers.Conv2D(8, 3, padding="same", activation="relu"), keras.layers.Conv2D(3, 1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = tf_dataset(mask_store, batch_size=6, shuffle=True, with_mask=True, augment=_augment_layer())
    losses = model.fit(data, epochs=4, verbose=0, shuffle=False).history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], losses


def test_keras_batches_serve_masks_and_augment_pairs(mask_store):
    from medload.datasets import KerasBatches

    plain = KerasBatches(mask_store, batch_size=6, with_mask=True)
    ref = NumpyBatches(mask_store, batch_size=6, channels_last=True, with_mask=True)
    for i in range(len(plain)):
        x, m = plain[i]
        assert m.dtype == np.int64
        np.testing.assert_array_equal(m, ref.batch(i)["mask"])
    augmented = KerasBatches(mask_store, batch_size=6, with_mask=True, augment=_augment_layer())
    moved = 0
    for i in range(len(augmented)):
        x, m = augmented[i]
        assert m.dtype == np.int64 and set(np.unique(m).tolist()) <= {0, 1, 2}
        for k, level in levels(x, m).items():
            assert abs(level - LEVEL[k]) < 0.1, (i, k, level)
        moved += int(not np.array_equal(m, plain[i][1]))
    assert moved >= 2

    def blur(data):
        return {
            "images": data["images"],
            "segmentation_masks": (data["segmentation_masks"] + np.roll(data["segmentation_masks"], 1, 1)) / 2,
        }

    with pytest.raises(medload.MedloadError, match="interpolated the mask"):
        KerasBatches(mask_store, batch_size=6, with_mask=True, augment=blur)[0]


# --- segmentation and classification together ---------------------------------------------


def test_tf_dataset_with_label_serves_mask_and_label_for_a_two_output_model(mask_store):
    from medload.datasets import tf_dataset

    ref = NumpyBatches(mask_store, batch_size=5, channels_last=True, with_mask=True)
    got = list(tf_dataset(mask_store, batch_size=5, with_mask=True, with_label=True))
    assert len(got) == len(ref) == 4
    for (x, targets), r in zip(got, ref):
        assert sorted(targets) == ["label", "mask"]
        np.testing.assert_array_equal(targets["mask"].numpy(), r["mask"])
        np.testing.assert_array_equal(targets["label"].numpy(), r["label"])  # volume v has label v % 2
        assert targets["label"].dtype == tf.int64 and targets["mask"].dtype == tf.int64
        np.testing.assert_allclose(x.numpy(), r["image"], atol=1e-6)
    # Shuffled: each slice's label is its own volume's (volume v's arm starts at row 3 + v, its label is v % 2).
    for _, targets in tf_dataset(mask_store, batch_size=4, shuffle=True, seed=2, with_mask=True, with_label=True):
        mask = targets["mask"].numpy()[..., 0]
        volume = np.array([np.argwhere(m == 1)[:, 0].min() - 3 for m in mask])
        np.testing.assert_array_equal(targets["label"].numpy(), volume % 2)
    # The default stays (image, mask): labels beside a mask only when asked for.
    x, m = next(iter(tf_dataset(mask_store, batch_size=5, with_mask=True)))
    assert m.shape == x.shape


def test_augment_moves_image_and_mask_and_keeps_each_slices_label(mask_store):
    from medload.datasets import tf_dataset

    ref = NumpyBatches(mask_store, batch_size=6, with_mask=True)
    data = tf_dataset(mask_store, batch_size=6, with_mask=True, with_label=True, augment=_augment_layer())
    moved = 0
    for (x, targets), r in zip(data, ref):
        m = targets["mask"].numpy()
        np.testing.assert_array_equal(targets["label"].numpy(), r["label"])
        for k, level in levels(x.numpy(), m).items():
            assert abs(level - LEVEL[k]) < 0.1, (k, level)
        moved += int(not np.array_equal(m, r["mask"].transpose(0, 2, 3, 1)))
    assert moved >= 2


def test_a_two_output_keras_model_trains_on_mask_and_label(mask_store):
    from medload.datasets import tf_dataset

    keras.utils.set_random_seed(0)
    inputs = keras.Input((*SHAPE[1:], 1))
    features = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    mask_out = keras.layers.Conv2D(3, 1, name="mask")(features)
    label_out = keras.layers.Dense(2, name="label")(keras.layers.GlobalAveragePooling2D()(features))
    model = keras.Model(inputs, {"mask": mask_out, "label": label_out})
    xent = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss={"mask": xent, "label": xent})
    data = tf_dataset(mask_store, batch_size=6, shuffle=True, with_mask=True, with_label=True)
    history = model.fit(data, epochs=4, verbose=0, shuffle=False).history
    assert {"mask_loss", "label_loss"} <= set(history), sorted(history)
    assert history["mask_loss"][-1] < 0.5 * history["mask_loss"][0], history["mask_loss"]


def test_with_label_without_labels_is_refused(tmp_path):
    from medload.datasets import KerasBatches, tf_dataset

    path = tmp_path / "unlabelled.h5"
    with medload.Store.create(path) as store:
        meta = {"patient_key": "p", "series_key": "s", "source_hash": "h"}
        store.add(medload.Volume(np.zeros((2, 8, 8), np.float32), np.eye(4), meta=meta), mask=np.ones((2, 8, 8), np.uint8))
    with pytest.raises(medload.MedloadError, match="with_label=True"):
        tf_dataset(path, with_mask=True, with_label=True)
    with pytest.raises(medload.MedloadError, match="with_label=True"):
        KerasBatches(path, with_mask=True, with_label=True)


def test_keras_batches_with_label_serve_mask_and_label(mask_store):
    from medload.datasets import KerasBatches

    ref = NumpyBatches(mask_store, batch_size=6, channels_last=True, with_mask=True)
    data = KerasBatches(mask_store, batch_size=6, with_mask=True, with_label=True, augment=_augment_layer())
    for i in range(len(data)):
        x, targets = data[i]
        np.testing.assert_array_equal(targets["label"], ref.batch(i)["label"])
        assert targets["mask"].dtype == np.int64
        for k, level in levels(x, targets["mask"]).items():
            assert abs(level - LEVEL[k]) < 0.1, (i, k, level)
    assert KerasBatches(mask_store, with_label=False)[0].shape == (3 * SHAPE[0], *SHAPE[1:], 1)
