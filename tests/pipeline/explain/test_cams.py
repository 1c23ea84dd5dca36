"""The CAM family on hand-made tensors: weights per method, per image, normalisation without NaN."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from pipeline.explain.cams import (
    METHOD_CLASSES,
    CamInputs,
    ClassActivationMap,
    GradCam,
    GradCamPlusPlus,
    LayerCam,
    ScoreCam,
    divide_by_max,
)

RNG = np.random.default_rng(3)
SIZE = (12, 16)  # (height, width) of the input images: not square, so swapped axes show


def inputs(n: int = 3, h: int = 4, w: int = 5, c: int = 6, zero: bool = False) -> CamInputs:
    features = np.zeros((n, h, w, c)) if zero else RNG.uniform(0, 2, (n, h, w, c))
    gradients = np.zeros((n, h, w, c)) if zero else RNG.normal(0, 1, (n, h, w, c))
    return CamInputs(tf.constant(RNG.uniform(-1, 1, (n, *SIZE, 1)), tf.float32),
                     tf.constant(features, tf.float32), tf.constant(gradients, tf.float32),
                     tf.constant(RNG.integers(0, 2, n), tf.int32))


def sum_of_image(images: tf.Tensor) -> tf.Tensor:
    """Score a batch: class 1 = brightness of the left half, class 0 = of the right half."""
    width = images.shape[2]
    return tf.stack([tf.reduce_sum(images[:, :, width // 2:], axis=(1, 2, 3)),
                     tf.reduce_sum(images[:, :, : width // 2], axis=(1, 2, 3))], axis=1)


def all_methods() -> list:
    return [GradCam(), GradCamPlusPlus(), LayerCam(),
            ClassActivationMap(RNG.normal(0, 1, (6, 2)).astype(np.float32)), ScoreCam(sum_of_image, 4)]


def reference_map(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ReLU of the weighted sum divided by its max, at the features' resolution (one image, numpy)."""
    raw = np.maximum((features * weights).sum(-1), 0)
    return raw / raw.max() if raw.max() > 0 else raw


def test_family_is_complete() -> None:
    assert set(METHOD_CLASSES) == {"cam", "gradcam", "gradcampp", "scorecam", "layercam"}


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.name)
def test_maps_have_the_features_resolution_and_lie_in_unit_interval(method) -> None:
    maps = method.maps(inputs(h=4, w=5)).numpy()
    assert maps.shape == (3, 4, 5)  # upsampling to the scan is the writer's job, done once
    assert np.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1
    for image in maps:  # each map reaches 1, or is all zero
        assert image.max() == pytest.approx(1.0, abs=1e-6) or image.max() == 0


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.name)
def test_all_zero_features_give_all_zero_maps_without_nan(method) -> None:
    maps = method.maps(inputs(zero=True)).numpy()
    assert not np.isnan(maps).any()
    assert (maps == 0).all()


def test_normalising_divides_by_max_without_stretching_or_inverting() -> None:
    maps = tf.constant([[[2.0, 4.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    np.testing.assert_allclose(divide_by_max(maps), [[[0.5, 1.0], [0.75, 1.0]], [[0, 0], [0, 0]]])


@pytest.mark.parametrize("method", all_methods(), ids=lambda m: m.name)
def test_each_image_is_explained_alone(method) -> None:
    """A batch gives the same maps as each image on its own: nothing is shared across the batch."""
    batch = inputs(n=4)
    together = method.maps(batch).numpy()
    for i in range(4):
        alone = CamInputs(*(t[i:i + 1] for t in dataclass_values(batch)))
        np.testing.assert_allclose(method.maps(alone).numpy()[0], together[i], atol=1e-5)


def dataclass_values(batch: CamInputs) -> tuple:
    return batch.images, batch.features, batch.gradients, batch.chosen


def test_gradcam_weights_are_spatial_means_of_each_images_gradients() -> None:
    batch = inputs()
    maps = GradCam().maps(batch).numpy()
    for i in range(3):
        weights = batch.gradients.numpy()[i].mean(axis=(0, 1))
        np.testing.assert_allclose(maps[i], reference_map(batch.features.numpy()[i], weights), atol=1e-5)


def test_gradcampp_matches_the_closed_form() -> None:
    batch = inputs()
    maps = GradCamPlusPlus().maps(batch).numpy()
    for i in range(3):
        a, g = batch.features.numpy()[i].astype(np.float64), batch.gradients.numpy()[i].astype(np.float64)
        alpha = g**2 / (2 * g**2 + a.sum(axis=(0, 1)) * g**3)
        weights = (alpha * np.maximum(g, 0)).sum(axis=(0, 1))
        np.testing.assert_allclose(maps[i], reference_map(a, weights), atol=1e-5)


def test_layercam_weights_each_position_by_its_positive_gradient() -> None:
    batch = inputs()
    maps = LayerCam().maps(batch).numpy()
    for i in range(3):
        weights = np.maximum(batch.gradients.numpy()[i], 0)
        np.testing.assert_allclose(maps[i], reference_map(batch.features.numpy()[i], weights), atol=1e-5)


def test_cam_uses_the_chosen_class_column_of_the_kernel() -> None:
    kernel = RNG.normal(0, 1, (6, 2)).astype(np.float32)
    batch = inputs()
    maps = ClassActivationMap(kernel).maps(batch).numpy()
    for i, chosen in enumerate(batch.chosen.numpy()):
        np.testing.assert_allclose(maps[i], reference_map(batch.features.numpy()[i], kernel[:, chosen]),
                                   atol=1e-5)


@pytest.mark.parametrize("per_pass", [1, 4, 6, 8])
def test_scorecam_weights_are_softmaxed_masked_scores_for_any_chunking(per_pass: int) -> None:
    batch = inputs()
    maps = ScoreCam(sum_of_image, per_pass).maps(batch).numpy()
    for i in range(3):
        features = batch.features.numpy()[i]
        masks = tf.image.resize(features[None], SIZE).numpy()[0]  # (H, W, C)
        low, high = masks.min(axis=(0, 1)), masks.max(axis=(0, 1))
        masks = (masks - low) / (high - low)
        masked = batch.images.numpy()[i][None] * np.moveaxis(masks, -1, 0)[..., None]
        scores = sum_of_image(tf.constant(masked)).numpy()[:, batch.chosen.numpy()[i]]
        weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
        np.testing.assert_allclose(maps[i], reference_map(features, weights), atol=1e-5)


def test_scorecam_puts_weight_on_the_channel_that_shows_the_class() -> None:
    """Channel 0 covers the left half (class 1 in sum_of_image), channel 1 the right half."""
    features = np.zeros((1, 4, 4, 2), np.float32)
    features[0, :, :2, 0], features[0, :, 2:, 1] = 1.0, 1.0
    images = tf.ones((1, 8, 8, 1))
    batch = CamInputs(images, tf.constant(features), None, tf.constant([1], tf.int32))
    weights = ScoreCam(sum_of_image, 2).channel_weights(batch).numpy()[0]
    assert weights[0] > 0.99 > 0.01 > weights[1]
