"""Keras classifiers in the shapes real projects save them, small and with random weights.

Each builder returns the model and what its model.json says beyond the defaults of
``write_shape``; ``SHAPES`` must scan as they are, ``FAULTS`` must be refused in words.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras

from pipeline.model.spec import write_spec

Built = tuple[keras.Model, dict]
SIZE = 32  # what the small models take; the applications take what their depth needs
APPLICATION_SIZES = {"Xception": 71, "InceptionV3": 75, "ResNet50": 64, "MobileNetV2": 64,
                     "EfficientNetB0": 64, "DenseNet121": 64, "VGG16": 64}


def features(inputs, name: str = "conv"):
    """Return a small conv stack's pooled features."""
    x = keras.layers.Conv2D(8, 3, activation="relu", name=f"{name}1")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name=f"{name}2")(x)
    return keras.layers.GlobalAveragePooling2D(name="gap")(x)


def small_cnn(head: list, size: int = 16, channels: int = 3) -> keras.Model:
    """Return conv -> pool -> conv -> ``head``, random weights."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((size, size, channels)),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(name="pool"),
        keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="conv2"), *head])


def scores(x, classes: int = 2, activation: str | None = "softmax", name: str = "score"):
    return keras.layers.Dense(classes, activation=activation, name=name)(x)


def _input(channels: int = 3, size: int | None = SIZE):
    return keras.Input((size, size, channels))


def output_container(kind: str) -> Callable[[], Built]:
    def build() -> Built:
        inputs = _input()
        out = scores(features(inputs))
        structure = {"list": [out], "tuple": (out,), "dict": {"probabilities": out}}[kind]
        return keras.Model(inputs, structure), {}
    return build


def two_outputs(selector) -> Callable[[], Built]:
    def build() -> Built:
        inputs = _input()
        pooled = features(inputs)
        outputs = {"diagnosis": scores(pooled), "grade": scores(pooled, 3, None, "grade")}
        return keras.Model(inputs, outputs), ({} if selector is None else {"model_output": selector})
    return build


def application(name: str) -> Callable[[], Built]:
    def build() -> Built:
        size = APPLICATION_SIZES[name]
        options = {"alpha": 0.35} if name == "MobileNetV2" else {}
        base = getattr(keras.applications, name)(input_shape=(size, size, 3), include_top=False,
                                                 weights=None, pooling="avg", **options)
        inputs = _input(size=size)
        return keras.Model(inputs, scores(base(inputs))), {"preprocessing": "none"}
    return build


def reported_xception() -> Built:
    """The model a user reported: Xception nested as one layer, 150 px, 4 logits, a list output."""
    base = keras.applications.Xception(input_shape=(150, 150, 3), include_top=False, weights=None)
    inputs = _input(size=150)
    logits = scores(keras.layers.GlobalAveragePooling2D()(base(inputs)), 4, None)
    classes = ["glioma", "meningioma", "no_tumor", "pituitary"]
    return keras.Model(inputs, [logits]), {"output": "logits", "preprocessing": "symmetric",
                                           "class_names": classes,
                                           "positive_classes": ["glioma", "meningioma", "pituitary"]}


def functional_in_sequential() -> Built:
    inputs = _input()
    base = keras.Model(inputs, keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs),
                       name="base")
    return keras.Sequential([_input(), base, keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(2, activation="softmax")]), {}


def sequential_in_functional() -> Built:
    base = keras.Sequential([_input(), keras.layers.Conv2D(8, 3, activation="relu"),
                             keras.layers.Conv2D(8, 3, activation="relu")], name="features")
    inputs = _input()
    pooled = keras.layers.GlobalAveragePooling2D()(base(inputs))
    return keras.Model(inputs, scores(pooled)), {}


def normalising_layers() -> Built:
    inputs = _input()
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Normalization(mean=[0.4] * 3, variance=[0.05] * 3)(x)
    return keras.Model(inputs, scores(features(x))), {"preprocessing": "none"}


def lambda_head(trusted: bool) -> Callable[[], Built]:
    def build() -> Built:
        inputs = _input()
        doubled = keras.layers.Lambda(lambda t: t * 2.0, name="double")(features(inputs))
        return keras.Model(inputs, scores(doubled, activation=None)), (
            {"output": "logits", **({"safe_mode": False} if trusted else {})})
    return build


def variable_input() -> Built:
    inputs = _input(size=None)
    return keras.Model(inputs, scores(features(inputs))), {"input_size": [40, 36]}


def one_channel() -> Built:
    inputs = _input(channels=1)
    return keras.Model(inputs, scores(features(inputs))), {"color_mode": "grayscale"}


def legacy_h5() -> Built:
    inputs = _input()
    return keras.Model(inputs, scores(features(inputs))), {"file": "model.h5"}


def two_inputs() -> Built:
    first, second = _input(), _input()
    return keras.Model([first, second], scores(features(keras.layers.Add()([first, second])))), {}


def not_an_image() -> Built:
    inputs = keras.Input((20,))
    return keras.Model(inputs, scores(inputs)), {"input_size": [20, 1]}


def spec_says(fields: dict) -> Callable[[], Built]:
    def build() -> Built:
        inputs = _input()
        return keras.Model(inputs, scores(features(inputs))), fields
    return build


SHAPES: dict[str, Callable[[], Built]] = {
    "output-list": output_container("list"),
    "output-tuple": output_container("tuple"),
    "output-dict": output_container("dict"),
    "two-outputs-by-name": two_outputs("diagnosis"),
    "two-outputs-by-index": two_outputs(0),
    **{f"{name.lower()}-pooling-avg": application(name) for name in APPLICATION_SIZES},
    "xception-150-logits-4-list-output": reported_xception,
    "functional-in-sequential": functional_in_sequential,
    "sequential-in-functional": sequential_in_functional,
    "rescaling-and-normalization": normalising_layers,
    "lambda-in-head-trusted": lambda_head(trusted=True),
    "legacy-h5": legacy_h5,
    "variable-input-size": variable_input,
    "one-channel-fed-gray": one_channel,
    "three-channels-fed-gray": spec_says({}),
}
# name: (builder, words the refusal must hold)
FAULTS: dict[str, tuple[Callable[[], Built], tuple[str, ...]]] = {
    "two-outputs-unchosen": (two_outputs(None), ('"model_output"', '0 "diagnosis"', '1 "grade"')),
    "two-outputs-wrong-name": (two_outputs("tumour"), ('"model_output": "tumour"', '"diagnosis"')),
    "lambda-in-head-untrusted": (lambda_head(trusted=False), ('"safe_mode": false', "Lambda")),
    "two-inputs": (two_inputs, ("2 inputs", "one image input")),
    "not-an-image": (not_an_image, ("(batch, 20)", "one image input")),
    "wrong-color-mode": (spec_says({"color_mode": "grayscale"}), ('"color_mode"', '"rgb"')),
    "wrong-input-size": (spec_says({"input_size": [40, 40]}), ('"input_size"', "[32, 32]")),
}


def write_shape(folder: Path, build: Callable[[], Built]) -> Path:
    """Build a shape, save it and its model.json in ``folder``; return the model.json path."""
    model, fields = build()
    folder.mkdir(parents=True, exist_ok=True)
    width_height = list(model.inputs[0].shape[1:3])[::-1]  # a shape's own fields may say otherwise
    fields = {"name": folder.name, "file": "model.keras", "input_size": width_height,
              "color_mode": "rgb", "preprocessing": "unit", "class_names": ["no_tumor", "tumor"],
              "positive_classes": ["tumor"], "output": "probabilities", **fields}
    model.save(folder / fields["file"])
    return write_spec(fields, folder)
