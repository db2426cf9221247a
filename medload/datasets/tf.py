"""``tf_dataset``: a ``tf.data.Dataset`` over a medload store, for TensorFlow and Keras.

TensorFlow is imported here alone (``pip install 'medload[tf]'``); ``import medload`` never
imports it.

How it reads: a dataset of item positions (shuffled by ``tf.data`` with a seed when asked) is
batched, and each batch of positions is read by a parallel ``map`` (``num_parallel_calls``,
``AUTOTUNE`` by default) that calls :meth:`NumpyBatches.read_stored`: runs of consecutive
slices in one store call, LZ4 chunks read with ``os.preadv`` and decoded by ``cramjam`` into the batch, both
outside Python's GIL, into one batch of stored values (uint8 for the default store), so
several batches are read at once from any shard. Scale, offset, layout and normalization are
TensorFlow ops on the batch. There is no per-image decode and no
per-image Python call, which is where a TFRecord-of-JPEG pipeline spends its time
(``bench/images.py``). Normalization runs as TensorFlow ops on the batch; ``prefetch`` overlaps
reading with training.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from medload._optional import require
from medload.datasets.normalize import ChannelNormalize, resolve_normalize
from medload.datasets.numpy_batches import NumpyBatches
from medload.errors import ConfigError

tf = require("tensorflow", "medload.datasets.tf")

__all__ = ["tf_dataset"]


def tf_dataset(
    store: Any,
    split: str | None = None,
    *,
    splits: Mapping[str, Sequence[str]] | None = None,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    deterministic: bool | None = None,
    drop_remainder: bool = False,
    channels: None | str | Sequence[str] = None,
    labels: Any = None,
    label_key: str = "patient",
    normalize: Any = None,
    channels_last: bool = True,
    num_parallel_calls: int | None = None,
    prefetch: int | None = None,
    with_mask: bool = False,
    with_label: bool | None = None,
    augment: Callable[[Any], Any] | None = None,
) -> Any:
    """A batched ``tf.data.Dataset`` of ``(image, label)`` (or ``image`` when no volume has a label),
    of ``(image, mask)`` for segmentation, or of ``(image, {"mask": mask, "label": label})`` for
    a model that does both.

    Parameters
    ----------
    store : str, Path or StoreReader
        A store file or a folder of shards.
    split, splits, seed
        Patient-level splits, exactly as :class:`~medload.datasets.SliceDataset` (the default
        split is ``medload.split(store, seed=seed)``).
    batch_size : int
        Slices per batch.
    shuffle : bool
        Shuffle every slice of the split each epoch (``Dataset.shuffle`` over all items with
        ``seed``, reshuffled each iteration).
    deterministic : bool, optional
        ``True``: batches come in the same order every run (with ``shuffle``, the same seeded
        orders); ``False``: parallel reads may deliver out of order, a little faster.
        ``None``: tf.data's default (``tf.data.Options.deterministic``, true unless changed).
    drop_remainder : bool
        Leave out the last, smaller batch (static batch shape, e.g. for TPUs).
    channels, labels, label_key
        As for :class:`~medload.datasets.SliceDataset`.
    normalize : None, "imagenet", "train", (mean, std) or ChannelNormalize
        Per-channel ``(x - mean) / std`` (see :class:`~medload.datasets.NumpyBatches`).
    channels_last : bool
        ``image`` as ``(B, H, W, C)``, Keras' default layout (``False``: ``(B, C, H, W)``).
    num_parallel_calls, prefetch : int, optional
        Batches read at once and batches kept ready; default ``tf.data.AUTOTUNE``.
    with_mask : bool
        Elements ``(image, mask)``: each slice's stored mask, int64 ``(B, H, W, 1)`` (channels
        as the image), the target of a segmentation model; every selected volume needs a mask.
    with_label : bool, optional
        Serve the class labels. ``None`` (default): beside the image when any selected volume
        has a label, but not beside a mask (``(image, mask)`` as above). ``True``: always; with
        ``with_mask`` the elements are ``(image, {"mask": mask, "label": label})``, the targets
        of a Keras model with two outputs named ``"mask"`` and ``"label"`` (segmentation and
        classification: Keras matches a dictionary of targets to the outputs by name); a store
        without labels is refused. ``False``: never (``image`` alone, or ``(image, mask)``).
    augment : callable, optional
        Random augmentation of each batch, after normalization: a Keras 3 preprocessing layer
        or ``keras.layers.Pipeline`` (channels last). With ``with_mask`` it is called as
        ``augment({"images": image, "segmentation_masks": mask})``, Keras' form that moves
        both alike and resamples the mask with nearest neighbours; the mask comes back int64
        (a mask whose values are no longer whole labels stops the run). A layer applied to the
        image alone (``dataset.map(lambda x, y: (layer(x), y))``, or inside the model) flips
        and turns the image but not its mask: the classic silent failure. Labels pass by
        ``augment`` unchanged.

    Returns
    -------
    tf.data.Dataset
        Elements ``(image float32, label int64)`` (``(image, mask int64)`` with ``with_mask``,
        ``(image, {"mask": mask, "label": label})`` with ``with_mask`` and ``with_label``);
        ``dataset.classes`` is not available on a tf.data object, so the class names are in
        ``medload.open(store).classes``.

    Examples
    --------
    >>> import tempfile, os, numpy as np, medload
    >>> path = os.path.join(tempfile.mkdtemp(), "s.h5")
    >>> with medload.Store.create(path) as st:
    ...     for i in range(4):
    ...         vol = medload.Volume(np.full((1, 8, 8), i, np.float32), np.eye(4),
    ...                              meta={"patient_key": f"p{i}", "series_key": f"s{i}", "source_hash": f"h{i}"})
    ...         _ = st.add(vol, label=i % 2)
    >>> ds = tf_dataset(path, batch_size=3)
    >>> [(tuple(x.shape), y.numpy().tolist()) for x, y in ds]
    [((3, 8, 8, 1), [0, 1, 0]), ((1, 8, 8, 1), [1])]
    """
    autotune = tf.data.AUTOTUNE
    if augment is not None and not channels_last:
        raise ConfigError("tf_dataset: augment= takes Keras layers, which expect channels last; pass channels_last=True.")
    reader = NumpyBatches(
        store,
        split,
        splits=splits,
        batch_size=batch_size,
        channels=channels,
        labels=labels,
        label_key=label_key,
        channels_last=False,
        seed=seed,
        with_mask=bool(with_mask),
    )
    norm = resolve_normalize(
        normalize,
        channels_last=channels_last,
        train_batches=None
        if not (isinstance(normalize, str) and normalize == "train")
        else NumpyBatches(store, "train", splits=splits, batch_size=256, channels=channels, with_mask=False, seed=seed),
    )
    first = reader.read_stored([0])[0]
    stored_shape = (None, *first.shape[1:])
    mask_shape = (None, *first.shape[2:], 1) if channels_last else (None, 1, *first.shape[2:])
    with_labels = _serve_labels(with_label, reader, with_mask=bool(with_mask))

    # The stored values (uint8 for the default store) cross from Python, then become float32
    # in TensorFlow ops: the Python side of a batch is reads and LZ4 decodes only.
    stored_dtype = first.dtype
    read = _batch_reader(reader, stored_dtype, with_mask=with_mask, with_labels=with_labels, channels_last=channels_last)

    def fetch(positions: Any) -> Any:  # tf.Tensor in and out (TensorFlow ships no types)
        tout = [tf.as_dtype(stored_dtype), tf.float32, tf.float32] + [tf.int64] * (int(with_mask) + int(with_labels))
        values = tf.numpy_function(read, [positions], tout, stateful=False)
        stored = tf.ensure_shape(values[0], stored_shape)
        image = tf.cast(stored, tf.float32) * tf.reshape(values[1], (-1, 1, 1, 1)) + tf.reshape(values[2], (-1, 1, 1, 1))
        if channels_last:
            image = tf.transpose(image, (0, 2, 3, 1))
        if norm is not None:
            image = _normalize_tf(image, norm, channels_last)
        label = tf.ensure_shape(values[-1], (None,)) if with_labels else None
        if with_mask:
            image, mask = _augmented(augment, image, tf.ensure_shape(values[3], mask_shape))
            return (image, mask) if label is None else (image, {"mask": mask, "label": label})
        if augment is not None:
            image = augment(image)
        return image if label is None else (image, label)

    items = tf.data.Dataset.range(reader.n_items)
    if shuffle:
        items = items.shuffle(reader.n_items, seed=seed, reshuffle_each_iteration=True)
    items = items.batch(batch_size, drop_remainder=drop_remainder)
    ds = items.map(
        fetch, num_parallel_calls=autotune if num_parallel_calls is None else num_parallel_calls, deterministic=deterministic
    )
    return ds.prefetch(autotune if prefetch is None else prefetch)


def _batch_reader(
    reader: NumpyBatches, stored_dtype: np.dtype, *, with_mask: bool, with_labels: bool, channels_last: bool
) -> Any:
    """The Python side of a batch: stored images, their scale and offset, and the masks or labels."""
    labels_of = reader._label

    def read(positions: np.ndarray) -> tuple[np.ndarray, ...]:
        image, scale, offset = reader.read_stored(positions)
        image = image.astype(stored_dtype, copy=False)
        values: tuple[np.ndarray, ...] = (image, scale, offset)
        if with_mask:
            mask = reader.read_masks(positions)  # (B, 1, H, W)
            values += (np.ascontiguousarray(mask.transpose(0, 2, 3, 1)) if channels_last else mask,)
        if with_labels:
            values += (labels_of[positions].astype(np.int64),)
        return values

    return read


def _serve_labels(with_label: bool | None, reader: NumpyBatches, *, with_mask: bool) -> bool:
    """Whether elements carry the class labels (``with_label``, checked against the store)."""
    if with_label is None:
        return reader.has_labels and not with_mask
    if with_label and not reader.has_labels:
        raise ConfigError(
            f"with_label=True but no selected volume of {reader._path or 'the store'} has a label; pass labels= "
            "(a CSV, a mapping or label_from(...)), or with_label=None."
        )
    return bool(with_label)


def _augmented(augment: Callable[[Any], Any] | None, image: Any, mask: Any) -> tuple[Any, Any]:
    """``(image, mask)`` through ``augment`` in Keras' dictionary form, the mask back to int64 labels."""
    if augment is None:
        return image, mask
    out = augment({"images": image, "segmentation_masks": mask})
    moved = tf.cast(out["segmentation_masks"], tf.float32)
    check = tf.debugging.assert_less_equal(
        tf.reduce_max(tf.abs(moved - tf.round(moved))),
        1e-3,
        message="tf_dataset: augment interpolated the mask (values between labels); resample masks with nearest neighbours.",
    )
    with tf.control_dependencies([check]):
        return out["images"], tf.cast(tf.round(moved), tf.int64)


def _normalize_tf(image: Any, norm: ChannelNormalize, channels_last: bool) -> Any:
    mean = tf.constant(norm.mean, tf.float32)
    std = tf.constant(norm.std, tf.float32)
    if not channels_last:
        mean, std = tf.reshape(mean, (1, -1, 1, 1)), tf.reshape(std, (1, -1, 1, 1))
    return (image - mean) / std
