"""Maps that are right, not just well shaped.

Batched Grad-CAM must equal the plain one-image-at-a-time GradientTape recipe (keras.io) on
hand-computed logits; on a task whose answer has a known place every method must point there.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.explain.analysis import METHODS, Analyzer
from pipeline.io.heatmaps import upsample
from pipeline.model.spec import load_spec, write_spec
from tests.builders.models import BLOB_SIGMA, blob_images, build_once, train_blob_model

Forward = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]  # image batch -> (features, scores)
BATCH = 8
TOLERANCE = 1e-4


def dense_scores(model: keras.Model, penultimate: tf.Tensor) -> tf.Tensor:
    """Apply the "score" Dense layer's kernel and bias by hand: the logits, whatever its activation."""
    dense = model.get_layer("score")
    return penultimate @ dense.kernel + dense.bias


def flat_forward(model: keras.Model, target: str) -> Forward:
    """The keras.io recipe's grad model, with the logits computed by hand instead of mutating the model."""
    outputs = [model.get_layer(target).output, model.get_layer("score").input]
    grad_model = keras.Model(model.inputs[0], outputs)

    def forward(images):
        features, penultimate = grad_model(images)
        return features, dense_scores(model, penultimate)

    return forward


def nested_forward(model: keras.Model, base: str, target: str) -> Forward:
    """Tap the nested base as its own model, then apply the outer head (GAP -> Dense) by hand."""
    inner = model.get_layer(base)
    tapped = keras.Model(inner.inputs[0], [inner.get_layer(target).output, inner.output])

    def forward(images):
        features, base_out = tapped(images)
        return features, dense_scores(model, tf.reduce_mean(base_out, axis=(1, 2)))

    return forward


def sequential_forward(model: keras.Model, base: str, target: str) -> Forward:
    """Run a nested Sequential base layer by layer, keeping the target's output, then the head."""
    inner = model.get_layer(base)

    def forward(images):
        x, features = images, None
        for layer in inner.layers:
            x = layer(x)
            if layer.name == target:
                features = x
        return features, dense_scores(model, tf.reduce_mean(x, axis=(1, 2)))

    return forward


def distinct_images(count: int, shape: tuple[int, int, int]) -> np.ndarray:
    """Return images that differ in layout and contrast, not only in noise."""
    rng = np.random.default_rng(5)
    height, width, channels = shape
    coarse = rng.uniform(0, 1, (count, 6, 6, channels)) * rng.uniform(0.2, 1, (count, 1, 1, 1))
    smooth = tf.image.resize(coarse, (height, width), method="bicubic").numpy()
    return np.clip(smooth + rng.normal(0, 0.05, smooth.shape), 0, 1).astype(np.float32)


def chosen_score(scores: tf.Tensor, sigmoid: bool) -> tf.Tensor:
    """Score of the predicted class: argmax, or for one sigmoid unit z: +z if z >= 0 else -z."""
    if sigmoid:
        return tf.abs(scores[:, 0])
    return tf.gather(scores, tf.argmax(scores, axis=1), axis=1, batch_dims=1)


def heatmap(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Grad-CAM's map at the features' resolution, divided by its maximum."""
    raw = tf.nn.relu(tf.reduce_sum(features * weights, axis=-1)).numpy()
    return raw / raw.max() if raw.max() > 0 else raw


def reference_gradients(forward: Forward, image: np.ndarray, sigmoid: bool) -> tuple[np.ndarray, ...]:
    """Return (features, gradients of the chosen logit, gradients of its probability) of one image."""
    with tf.GradientTape(persistent=True) as tape:
        features, scores = forward(image[None])
        score = chosen_score(scores, sigmoid)
        probability = tf.sigmoid(score) if sigmoid else tf.reduce_max(tf.nn.softmax(scores), axis=1)
    return features[0].numpy(), tape.gradient(score, features)[0].numpy(), \
        tape.gradient(probability, features)[0].numpy()


CASES = {
    # name: (kind, output, target, forward builder)
    "flat-softmax": ("functional", "probabilities", "conv1", lambda m: flat_forward(m, "conv1")),
    "flat-sigmoid": ("functional", "sigmoid", "conv1", lambda m: flat_forward(m, "conv1")),
    "nested-functional": ("nested_small", "probabilities", "base/base_conv1",
                          lambda m: nested_forward(m, "base", "base_conv1")),
    "nested-sequential-logits": ("nested_sequential", "logits", "features/seq_conv1",
                                 lambda m: sequential_forward(m, "features", "seq_conv1")),
    # The target feeds GAP -> Dense: Grad-CAM is taken from the class weights, no backward pass.
    "flat-softmax-last": ("functional", "probabilities", "last_act",
                          lambda m: flat_forward(m, "last_act")),
    "flat-sigmoid-last": ("functional", "sigmoid", "last_act", lambda m: flat_forward(m, "last_act")),
    "nested-functional-last": ("nested_small", "probabilities", "base/base_conv2",
                               lambda m: nested_forward(m, "base", "base_conv2")),
    "nested-sequential-logits-last": ("nested_sequential", "logits", "features/seq_conv2",
                                      lambda m: sequential_forward(m, "features", "seq_conv2")),
}


def analyzer_for(root: Path, kind: str, output: str, target: str, **options) -> Analyzer:
    spec = load_spec(build_once(root, kind, output=output, **options))
    folder = root / f"{kind}-{output}-{target.replace('/', '.')}"
    folder.mkdir(exist_ok=True)
    (folder / spec.file).write_bytes(spec.model_path.read_bytes())
    return Analyzer(load_spec(write_spec({**spec.to_json(), "target_layer": target}, folder)), "gradcam")


def check_against_reference(analyzer: Analyzer, forward: Forward, sigmoid: bool,
                            behind_gap: bool = False) -> None:
    images = distinct_images(BATCH, analyzer.input_shape)
    maps = analyzer.analyze(images).cams
    per_image = [reference_gradients(forward, image, sigmoid) for image in images]
    expected = np.stack([heatmap(f, g.mean(axis=(0, 1))) for f, g, _ in per_image])
    assert maps.shape == expected.shape  # the target layer's resolution
    np.testing.assert_allclose(maps, expected, atol=TOLERANCE)
    assert (expected.max(axis=(1, 2)) > 0).sum() >= BATCH // 2, "too few non-empty maps to compare"
    if behind_gap:
        # Right behind GAP -> Dense every image's gradients are the class weights over h * w, so
        # batch means and probabilities change nothing; the comparison can still fail: the other
        # direction of the weights (the other class, or a sign slip) draws other maps.
        flipped = np.stack([heatmap(f, -g.mean(axis=(0, 1))) for f, g, _ in per_image])
        assert np.abs(flipped - expected).max() > 100 * TOLERANCE
        return
    # The comparison can fail: averaging gradients over the batch, or taking them on the
    # probabilities instead of the logits, gives maps a hundred tolerances from the reference.
    batch_mean = np.mean([g.mean(axis=(0, 1)) for _, g, _ in per_image], axis=0)
    mixed = np.stack([heatmap(f, batch_mean) for f, _, _ in per_image])
    assert np.abs(mixed - expected).max() > 100 * TOLERANCE
    if not sigmoid:  # for one sigmoid unit the two gradients differ by a positive factor only
        on_probability = np.stack([heatmap(f, p.mean(axis=(0, 1))) for f, _, p in per_image])
        assert np.abs(on_probability - expected).max() > 100 * TOLERANCE


@pytest.mark.parametrize("case", CASES)
def test_batched_gradcam_equals_the_per_image_recipe(tmp_path: Path, case: str) -> None:
    kind, output, target, make_forward = CASES[case]
    analyzer = analyzer_for(tmp_path, kind, output, target)
    model = keras.models.load_model(analyzer.spec.model_path, compile=False)
    check_against_reference(analyzer, make_forward(model), sigmoid=output == "sigmoid",
                            behind_gap=case.endswith("-last"))
    # which path ran: the class-weight form right behind GAP -> Dense, the gradients elsewhere
    assert (analyzer.graph.class_kernel is not None) == case.endswith("-last")


@pytest.mark.slow
def test_batched_gradcam_equals_the_per_image_recipe_inside_xception(tmp_path: Path) -> None:
    analyzer = analyzer_for(tmp_path, "nested_xception", "probabilities", "xception/block14_sepconv1_act",
                            input_size=(71, 71))
    model = keras.models.load_model(analyzer.spec.model_path, compile=False)
    check_against_reference(analyzer, nested_forward(model, "xception", "block14_sepconv1_act"), False)


@pytest.fixture(scope="module")
def blob_model(tmp_path_factory) -> Path:
    return train_blob_model(tmp_path_factory.mktemp("blob"))


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_every_method_points_at_the_blob(blob_model: Path, method: str) -> None:
    pixels, labels, centres = blob_images(200, seed=99)
    analyzer = Analyzer(load_spec(blob_model), method)
    result = analyzer.analyze(np.stack([analyzer.prepare(image) for image in pixels]))
    assert (result.predicted == labels).mean() >= 0.97, "the blob model did not learn its task"
    height, width = pixels.shape[1:3]
    maps = np.stack([upsample(cam, (width, height)) for cam in result.cams[labels == 1]])  # as written
    ys, xs = np.unravel_index(maps.reshape(len(maps), -1).argmax(axis=1), maps.shape[1:])
    distance = np.hypot(xs - centres[labels == 1, 0], ys - centres[labels == 1, 1])
    assert (distance <= 2 * BLOB_SIGMA).mean() >= 0.95


def pooled_forward(model: keras.Model, base: str, target: str) -> Forward:
    """Tap a nested base built with ``pooling="avg"`` (its output is pooled), then the Dense by hand."""
    inner = model.get_layer(base)
    tapped = keras.Model(inner.inputs[0], [inner.get_layer(target).output, inner.output])

    def forward(images):
        features, pooled = tapped(images)
        return features, dense_scores(model, pooled)

    return forward


MOBILENET = "mobilenetv2_0.35_64"
SHAPE_CASES = {
    # shape: (target, forward builder, right behind GAP -> Dense)
    "output-list": ("conv1", lambda m: flat_forward(m, "conv1"), False),
    "two-outputs-by-name": ("conv1", lambda m: flat_forward(m, "conv1"), False),
    "mobilenetv2-pooling-avg": (f"{MOBILENET}/out_relu",
                                lambda m: pooled_forward(m, MOBILENET, "out_relu"), True),
    "mobilenetv2-pooling-avg-inner": (f"{MOBILENET}/block_16_expand_relu",
                                      lambda m: pooled_forward(m, MOBILENET, "block_16_expand_relu"), False),
}


@pytest.mark.parametrize("case", SHAPE_CASES)
def test_batched_gradcam_equals_the_per_image_recipe_on_real_world_shapes(tmp_path: Path, case: str) -> None:
    from tests.builders.shapes import SHAPES, write_shape

    target, make_forward, behind_gap = SHAPE_CASES[case]
    spec = load_spec(write_shape(tmp_path, SHAPES[case.removesuffix("-inner")]))
    spec = load_spec(write_spec({**spec.to_json(), "target_layer": target}, tmp_path))
    analyzer = Analyzer(spec, "gradcam")
    model = keras.models.load_model(spec.model_path, compile=False)
    check_against_reference(analyzer, make_forward(model), sigmoid=False, behind_gap=behind_gap)
    assert (analyzer.graph.class_kernel is not None) == behind_gap
