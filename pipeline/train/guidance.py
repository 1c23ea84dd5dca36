"""Teach the class activation map where tumors are, from outlines, while training the classifier.

For a GAP -> Dense classifier the tumor class's CAM is ``features · W_tumor``, the very map
Grad-CAM and CAM show. On tumor scans with a known outline a second loss asks that map to put its
mass inside the outline: the cross-entropy between the outline (as a distribution over positions)
and a softmax of the map over positions. Shifting the whole map leaves this loss unchanged, so it
ranks positions without fighting the classification, which reads the map's mean. Scans without an
outline, and no-tumor scans, carry an all-zero target and so add nothing.

Only the training graph has the second output; the saved classifier is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from pipeline.train.augment import GEOMETRIC, INTENSITY, build_augmenter

CLASS_MAP = "class_map"
PREDICTIONS = "predictions"


def spatial_cross_entropy(target, logits):
    """Return, per scan, -sum(q · log softmax(logits)) with q the target normalised to sum 1.

    Args:
        target: (N, h, w, 1) non-negative outline weights; all zero means no outline.
        logits: (N, h, w) map.

    Returns:
        (N,) losses, 0 where the target is all zero.
    """
    ops = keras.ops
    batch = ops.shape(logits)[0]
    weights = ops.reshape(ops.cast(target, logits.dtype), (batch, -1))
    flat = ops.reshape(logits, (batch, -1))
    share = weights / ops.maximum(ops.sum(weights, axis=1, keepdims=True), 1e-6)
    return -ops.sum(share * ops.log_softmax(flat, axis=1), axis=1)


def guided_model(classifier: keras.Model, positive: int = 1) -> keras.Model:
    """Wrap a GAP -> Dense classifier so it also outputs its positive class's CAM logits.

    Args:
        classifier: a model with layers named ``gap`` and ``predictions`` (as built here).
        positive: index of the tumor class in the Dense layer.

    Returns:
        A model sharing every weight with ``classifier``, with outputs ``predictions`` and
        ``class_map`` (N, h, w).
    """
    dense = classifier.get_layer(PREDICTIONS)
    features = classifier.get_layer("gap").input
    # A Lambda, not a layer holding the Dense, so the kernel is tracked once (by the classifier).
    class_map = keras.layers.Lambda(
        lambda f: keras.ops.einsum("bhwc,c->bhw", f, dense.kernel[:, positive]),
        name=CLASS_MAP)(features)
    return keras.Model(classifier.input, {PREDICTIONS: classifier.output, CLASS_MAP: class_map},
                       name=f"{classifier.name}_guided")


def guided_datasets(images, masks, labels, val_images, val_masks, val_labels, *, augment: Sequence[str],
                    seed: int, batch_size: int, preprocess, map_size: tuple[int, int]):
    """Return (train, validation) tf.data pipelines yielding images and both targets.

    Geometric augmentation moves each scan and its outline together (the outline rides along as
    an extra channel); intensity augmentation touches the scan only.
    """
    import tensorflow as tf

    geometric = build_augmenter([a for a in augment if a in GEOMETRIC], seed=seed)
    intensity = build_augmenter([a for a in augment if a in INTENSITY], seed=seed + len(augment))

    def targets(mask, label):
        return {PREDICTIONS: label,
                CLASS_MAP: tf.image.resize(mask / 255.0, map_size, method="area")}

    def train_map(x, m, y):
        both = geometric(tf.concat([tf.cast(x, tf.float32), tf.cast(m, tf.float32)], -1),
                         training=True)
        image = intensity(both[..., :-1], training=True)
        return preprocess(image), targets(both[..., -1:], y)

    def val_map(x, m, y):
        return preprocess(tf.cast(x, tf.float32)), targets(tf.cast(m, tf.float32), y)

    train = (tf.data.Dataset.from_tensor_slices((images, masks, labels))
             .shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
             .batch(batch_size).map(train_map, num_parallel_calls=tf.data.AUTOTUNE)
             .prefetch(tf.data.AUTOTUNE))
    val = (tf.data.Dataset.from_tensor_slices((val_images, val_masks, val_labels)).batch(batch_size)
           .map(val_map).cache().prefetch(2))
    return train, val


def compile_guided(model: keras.Model, learning_rate: Any, mask_weight: float) -> None:
    """Compile a ``guided_model`` with both losses (``learning_rate``: a number or a schedule)."""
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss={PREDICTIONS: "sparse_categorical_crossentropy",
                        CLASS_MAP: spatial_cross_entropy},
                  loss_weights={PREDICTIONS: 1.0, CLASS_MAP: mask_weight},
                  metrics={PREDICTIONS: ["accuracy"]})
