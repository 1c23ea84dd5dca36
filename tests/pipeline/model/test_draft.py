"""What ``init-model`` infers from a Keras file: input size, colour mode, output kind, preprocessing."""

from __future__ import annotations

import keras
import pytest

from pipeline.model.draft import draft_spec, read_model_file
from pipeline.model.loading import ModelError
from pipeline.model.spec import load_spec, write_spec
from tests.builders.models import build_model
from tests.builders.shapes import small_cnn


@pytest.mark.parametrize(("output", "color_mode", "classes", "names"), [
    ("probabilities", "rgb", 2, ["no_tumor", "tumor"]),
    ("sigmoid", "grayscale", 2, ["no_tumor", "tumor"]),
    ("logits", "rgb", 4, ["class_0", "class_1", "class_2", "class_3"]),
])
def test_draft_spec_infers_what_the_model_shows(tmp_path, output, color_mode, classes, names):
    build_model(tmp_path / "m", "sequential", input_size=(40, 24), classes=classes, output=output,
                color_mode=color_mode)
    path = tmp_path / "m" / "model.keras"
    draft = draft_spec(read_model_file(path), path, "drafted", tmp_path / "elsewhere")
    fields = draft.fields
    assert fields["input_size"] == [40, 24]  # width, height
    assert fields["color_mode"] == color_mode and fields["output"] == output
    assert fields["class_names"] == names and fields["positive_classes"] == names[-1:]
    assert fields["preprocessing"] == "unit" and fields["target_layer"] is None
    assert fields["file"] == "../m/model.keras"
    assert "conv2" in draft.reasons["target_layer"]
    (tmp_path / "elsewhere").mkdir()
    spec = load_spec(write_spec(fields, tmp_path / "elsewhere"))
    assert spec.model_path == path.resolve() and spec.name == "drafted"


def test_a_rescaling_layer_means_no_preprocessing(tmp_path):
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Rescaling(1 / 255, name="scale"),
                              keras.layers.Conv2D(4, 3, name="conv"), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2, activation="softmax")])
    draft = draft_spec(model, tmp_path / "model.keras", "scaled", tmp_path)
    assert draft.fields["preprocessing"] == "none" and "scale" in draft.reasons["preprocessing"]
    assert draft.fields["color_mode"] == "grayscale"


def test_a_model_of_any_size_needs_the_size_given(tmp_path):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(ModelError, match="any size.*--input-size WIDTH HEIGHT"):
        draft_spec(model, tmp_path / "model.keras", "free", tmp_path)
    assert draft_spec(model, tmp_path / "model.keras", "free", tmp_path, (64, 48)).fields["input_size"] == [64, 48]


def test_a_given_size_must_match_a_fixed_one(tmp_path):
    with pytest.raises(ModelError, match="fixed at 16 wide and 16 high"):
        model = small_cnn([keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
        draft_spec(model, tmp_path / "model.keras", "fixed", tmp_path, (32, 32))


def test_two_inputs_are_refused_in_words(tmp_path):
    first, second = keras.Input((16, 16, 3)), keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Add()([first, second]))
    model = keras.Model([first, second], keras.layers.Dense(2, activation="softmax")(x))
    with pytest.raises(ModelError, match=r"the model takes 2 inputs of shape \(batch, 16, 16, 3\) and "
                                         r"\(batch, 16, 16, 3\); tumorlens feeds one image input "
                                         r"of shape \(batch, height, width, channels\)"):
        draft_spec(model, tmp_path / "model.keras", "two", tmp_path)


def test_a_vector_input_is_refused_in_words(tmp_path):
    model = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2, activation="softmax")])
    with pytest.raises(ModelError, match=r"takes 1 input of shape \(batch, 10\); tumorlens feeds one image input"):
        draft_spec(model, tmp_path / "model.keras", "vector", tmp_path)


def test_one_unit_without_sigmoid_is_refused(tmp_path):
    model = small_cnn([keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, name="score")])
    with pytest.raises(ModelError, match='"score" gives 1 unit without an activation'):
        draft_spec(model, tmp_path / "model.keras", "one", tmp_path)


def test_files_that_are_not_keras_models_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.keras").write_text("not a zip archive")
    with pytest.raises(ModelError, match="must end in .keras or .h5"):
        read_model_file(tmp_path / "notes.txt")
    with pytest.raises(ModelError, match="fake.keras cannot be read as a Keras model"):
        read_model_file(tmp_path / "fake.keras")
    with pytest.raises(ModelError, match="is a folder"):
        read_model_file(tmp_path)
