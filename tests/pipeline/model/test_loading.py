"""Loading every model format and reaching the target layer through nested models."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.model.camgraph import build_cam_graph
from pipeline.model.loading import ModelError, find_target, load_model, spatial_candidates
from pipeline.model.spec import load_spec, write_spec
from tests.builders.models import build_once

RNG = np.random.default_rng(7)


def images(count: int = 4, size: int = 48, channels: int = 3) -> np.ndarray:
    return RNG.uniform(0, 1, (count, size, size, channels)).astype(np.float32)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


def built(models_dir: Path, kind: str, output: str = "probabilities", fmt: str = "keras", **kw) -> Path:
    return build_once(models_dir, kind, output=output, fmt=fmt, **kw)


@pytest.mark.parametrize(
    ("kind", "target"),
    [("sequential", "conv2"), ("functional", "last_act"), ("separate_softmax", "last_act"),
     ("nested_small", "base/base_conv2"), ("nested_sequential", "features/seq_conv2")],
)
def test_automatic_target_is_last_spatial_layer_inside_nested_models(models_dir, kind, target) -> None:
    model = load_model(load_spec(built(models_dir, kind)))
    path, layer = find_target(model, None)
    assert path == target
    assert layer.name == target.split("/")[-1]


@pytest.mark.parametrize("kind", ["nested_small", "nested_sequential", "functional", "sequential"])
@pytest.mark.parametrize("output", ["probabilities", "logits", "sigmoid"])
def test_graph_matches_the_model_and_the_inner_layer(models_dir, kind, output) -> None:
    spec = load_spec(built(models_dir, kind, output))
    model = load_model(spec)
    graph = build_cam_graph(model, spec)
    batch = images()
    scores, features = (np.asarray(t) for t in graph.model(batch))
    expected = model.predict(batch, verbose=0)
    if output == "sigmoid":
        np.testing.assert_allclose(1 / (1 + np.exp(-scores[:, 1])), expected[:, 0], atol=1e-5)
        np.testing.assert_allclose(scores[:, 0], -scores[:, 1])
    elif output == "probabilities":
        np.testing.assert_allclose(keras.ops.softmax(scores).numpy(), expected, atol=1e-5)
    else:
        np.testing.assert_allclose(scores, expected, atol=1e-5)
    np.testing.assert_allclose(features, _reference_features(model, graph.target, batch), atol=1e-5)


def _reference_features(model: keras.Model, path: str, batch: np.ndarray) -> np.ndarray:
    """Compute the target's output the plain way: on the sub-model that owns the layer."""
    *outer, name = path.split("/")
    owner = model
    for part in outer:
        owner = owner.get_layer(part)
    if outer:  # the builders put the nested model right after the input
        return keras.Model(owner.inputs, owner.get_layer(name).output).predict(batch, verbose=0)
    return keras.Model(model.inputs, model.get_layer(name).output).predict(batch, verbose=0)


def test_scores_bypass_final_softmax_without_changing_the_model(models_dir) -> None:
    json_path = built(models_dir, "functional")
    model_file = json_path.parent / "model.keras"
    before = model_file.read_bytes()
    spec = load_spec(json_path)
    model = load_model(spec)
    batch = images()
    probabilities = model.predict(batch, verbose=0)
    scores, _ = build_cam_graph(model, spec).model(batch)
    penultimate = keras.Model(model.inputs, model.get_layer("score").input).predict(batch, verbose=0)
    dense = model.get_layer("score")
    logits = penultimate @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(scores, logits, atol=1e-5)
    np.testing.assert_allclose(model.predict(batch, verbose=0), probabilities)
    assert model_file.read_bytes() == before


@pytest.mark.parametrize("kind", ["nested_small", "functional"])
def test_h5_and_keras_files_round_trip_to_the_same_predictions(models_dir, kind) -> None:
    batch = images()
    predictions = [load_model(load_spec(built(models_dir, kind, fmt=fmt))).predict(batch, verbose=0)
                   for fmt in ("keras", "h5")]
    assert predictions[0].shape == (4, 2)
    np.testing.assert_allclose(predictions[0], predictions[1], atol=1e-6)


def test_saved_model_predicts_and_cam_explains_how_to_convert(models_dir) -> None:
    batch = images()
    spec = load_spec(built(models_dir, "functional", fmt="savedmodel"))
    predictions = load_model(spec).predict(batch, verbose=0)
    reference = load_model(load_spec(built(models_dir, "functional"))).predict(batch, verbose=0)
    np.testing.assert_allclose(predictions, reference, atol=1e-5)
    with pytest.raises(ModelError, match=r"SavedModel.*model\.save\('model\.keras'\)"):
        build_cam_graph(load_model(spec), spec)


def test_named_target_inside_nested_model(models_dir) -> None:
    spec = load_spec(built(models_dir, "nested_small"))
    spec = load_spec(write_spec({**spec.to_json(), "target_layer": "base/base_conv1"}, spec.folder))
    model = load_model(spec)
    graph = build_cam_graph(model, spec)
    batch = images()
    _, features = graph.model(batch)
    assert features.shape == (4, 48, 48, 6)
    np.testing.assert_allclose(features, _reference_features(model, "base/base_conv1", batch), atol=1e-5)
    assert graph.class_kernel is None  # base_conv1 feeds a pooling and a conv, not GAP -> Dense


@pytest.mark.parametrize(
    ("target", "message"),
    [("base/nope", r'target layer "base/nope": base has no layer named "nope"\. '
                   r"Layers with a 4-D output: base/base_conv1, base/base_pool, base/base_conv2"),
     ("nope/base_conv1", 'the model has no layer named "nope"'),
     ("score/kernel", '"score" is not a nested model'),
     ("score", r'"score" outputs shape \(None, 2\); a 4-D .* map is needed')],
)
def test_bad_target_path_lists_candidates(models_dir, target, message) -> None:
    spec = load_spec(built(models_dir, "nested_small"))
    spec = load_spec(write_spec({**spec.to_json(), "target_layer": target}, spec.folder))
    with pytest.raises(ModelError, match=message):
        build_cam_graph(load_model(spec), spec)


def test_candidates_descend_into_nested_models(models_dir) -> None:
    model = load_model(load_spec(built(models_dir, "nested_sequential")))
    assert spatial_candidates(model) == ["features/seq_conv1", "features/seq_pool", "features/seq_conv2"]


@pytest.mark.parametrize(
    ("kind", "model_output", "spec_output", "message"),
    [("functional", "probabilities", "logits", 'says "output": "logits" but .* applies softmax'),
     ("separate_softmax", "probabilities", "sigmoid", 'says "output": "sigmoid" but .* applies softmax'),
     ("functional", "logits", "sigmoid", '"score" is a Dense layer without sigmoid'),
     ("sequential", "logits", "probabilities", '"score" is a Dense layer without softmax: its outputs are '
                                               'logits; set "output" to "logits"')],
)
def test_spec_output_must_match_the_model(models_dir, kind, model_output, spec_output, message) -> None:
    spec = load_spec(built(models_dir, kind, model_output))
    spec = load_spec(write_spec({**spec.to_json(), "output": spec_output}, spec.folder))
    with pytest.raises(ModelError, match=message):
        build_cam_graph(load_model(spec), spec)


def test_class_count_must_match_the_model(models_dir) -> None:
    spec = load_spec(built(models_dir, "functional", classes=4))
    spec = load_spec(write_spec({**spec.to_json(), "class_names": ["a", "b", "c"],
                                 "positive_classes": ["c"]}, spec.folder))
    expected = r"shape \(None, 4\) but model.json .* 3 classes\) needs \(batch, 3\)"
    with pytest.raises(ModelError, match=expected):
        build_cam_graph(load_model(spec), spec)


def test_unreadable_model_file_is_explained(tmp_path: Path) -> None:
    (tmp_path / "model.keras").write_bytes(b"not a zip archive")
    spec = load_spec(write_spec({"name": "broken", "file": "model.keras", "input_size": [8, 8],
                                 "color_mode": "rgb", "preprocessing": "unit", "class_names": ["a", "b"],
                                 "positive_classes": ["b"], "output": "logits"}, tmp_path))
    with pytest.raises(ModelError, match="cannot load model.keras as a Keras model"):
        load_model(spec)


def test_model_without_spatial_layer_is_explained(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.save(tmp_path / "model.keras")
    spec = load_spec(write_spec({"name": "flat", "file": "model.keras", "input_size": [8, 8],
                                 "color_mode": "grayscale", "preprocessing": "unit",
                                 "class_names": ["a", "b"], "positive_classes": ["b"], "output": "logits"},
                                tmp_path))
    with pytest.raises(ModelError, match="no layer with a 4-D"):
        build_cam_graph(load_model(spec), spec)


class Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.pool = keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D()
        self.dense = keras.layers.Dense(2)

    def call(self, inputs):
        return self.dense(self.pool(self.conv(inputs)))


def test_subclassed_model_is_explained() -> None:
    model = Subclassed()
    model(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(ModelError, match="subclassed Keras model: .* as a Sequential or functional model"):
        find_target(model, None)


@pytest.mark.slow
def test_xception_used_as_one_layer_is_reached(models_dir) -> None:
    spec = load_spec(built(models_dir, "nested_xception", input_size=(71, 71)))
    model = load_model(spec)
    graph = build_cam_graph(model, spec)
    assert graph.target == "xception/block14_sepconv2_act"
    assert graph.class_kernel is not None and graph.class_kernel.shape == (2048, 2)
    batch = images(2, 71)
    scores, features = graph.model(batch)
    assert features.shape == (2, 3, 3, 2048)
    np.testing.assert_allclose(features, _reference_features(model, graph.target, batch), atol=1e-4)
    probabilities = model.predict(batch, verbose=0)
    np.testing.assert_allclose(keras.ops.softmax(scores).numpy(), probabilities, atol=1e-5)
