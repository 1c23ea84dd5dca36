"""Tiny classifiers with their model.json, for tests everywhere.

``build_model`` makes random-weight models of every shape the analysis must handle;
``train_blob_model`` trains one in seconds on a task whose right answer has a known place.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

KINDS = ("sequential", "functional", "nested_small", "nested_sequential", "separate_softmax",
         "nested_xception", "nested_inception")
OUTPUTS = ("probabilities", "logits", "sigmoid")
FORMATS = ("keras", "h5", "savedmodel")
MODEL_FILES = {"keras": "model.keras", "h5": "model.h5", "savedmodel": "saved_model"}
BLOB_SIZE = 40
BLOB_SIGMA = 2.5


def class_names_for(classes: int) -> tuple[list[str], list[str]]:
    """Return (class_names, positive_classes) for a classifier with ``classes`` classes."""
    if classes == 2:
        return ["no_tumor", "tumor"], ["tumor"]
    if classes == 4:
        return ["glioma", "meningioma", "no_tumor", "pituitary"], ["glioma", "meningioma", "pituitary"]
    names = [f"class_{i}" for i in range(classes)]
    return names, names[1:]


def build_model(folder: Path, kind: str, input_size: tuple[int, int] = (48, 48), classes: int = 2,
                output: str = "probabilities", color_mode: str = "rgb", preprocessing: str = "unit",
                fmt: str = "keras", seed: int = 0) -> Path:
    """Write a random-weight classifier and its model.json into ``folder``; return the json path."""
    import keras

    from pipeline.model.spec import write_spec

    keras.utils.set_random_seed(seed)
    width, height = input_size
    shape = (height, width, 3 if color_mode == "rgb" else 1)
    model = BUILDERS[kind](keras, shape, _head(keras, kind, classes, output))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _save(model, folder / MODEL_FILES[fmt], fmt)
    names, positives = class_names_for(classes)
    return write_spec({"name": f"{kind}-{output}", "file": MODEL_FILES[fmt], "input_size": list(input_size),
                       "color_mode": color_mode, "preprocessing": preprocessing, "class_names": names,
                       "positive_classes": positives, "output": output}, folder)


def build_once(root: Path, kind: str, **options) -> Path:
    """Return the model.json of ``build_model(kind, **options)`` under ``root``, built on first use."""
    folder = Path(root) / "-".join([kind, *(f"{key}={value}" for key, value in sorted(options.items()))])
    if not (folder / "model.json").exists():
        build_model(folder, kind, **options)
    return folder / "model.json"


def _head(keras, kind: str, classes: int, output: str) -> list:
    if output == "sigmoid":
        return [keras.layers.Dense(1, activation="sigmoid", name="score")]
    if kind == "separate_softmax" and output == "probabilities":
        return [keras.layers.Dense(classes, name="score"), keras.layers.Softmax(name="softmax")]
    activation = "softmax" if output == "probabilities" else None
    return [keras.layers.Dense(classes, activation=activation, name="score")]


def _apply(layers: list, x):
    for layer in layers:
        x = layer(x)
    return x


def _conv(keras, filters: int, name: str):
    return keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=name)


def _sequential(keras, shape, head):
    return keras.Sequential([keras.Input(shape), _conv(keras, 4, "conv1"),
                             keras.layers.MaxPooling2D(name="pool"),
                             _conv(keras, 8, "conv2"), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dropout(0.2), *head], name="sequential_cnn")


def _functional(keras, shape, head):
    inputs = keras.Input(shape)
    x = keras.layers.MaxPooling2D(name="pool")(_conv(keras, 8, "conv1")(inputs))
    residual = _conv(keras, 8, "conv2")(x)
    x = keras.layers.Add(name="add")([x, residual])
    x = keras.layers.Activation("relu", name="last_act")(keras.layers.BatchNormalization()(x))
    outputs = _apply([keras.layers.GlobalAveragePooling2D(), *head], x)
    return keras.Model(inputs, outputs, name="functional_cnn")


def _small_base(keras, shape):
    inputs = keras.Input(shape)
    x = keras.layers.MaxPooling2D(name="base_pool")(_conv(keras, 6, "base_conv1")(inputs))
    x = _conv(keras, 8, "base_conv2")(x)
    return keras.Model(inputs, x, name="base")


def _nested(keras, base, shape, head):
    inputs = keras.Input(shape)
    outputs = _apply([keras.layers.GlobalAveragePooling2D(), keras.layers.Dropout(0.2), *head],
                     base(inputs, training=False))
    return keras.Model(inputs, outputs, name="classifier")


def _nested_sequential(keras, shape, head):
    base = keras.Sequential([keras.Input(shape), _conv(keras, 6, "seq_conv1"),
                             keras.layers.MaxPooling2D(name="seq_pool"),
                             _conv(keras, 8, "seq_conv2")], name="features")
    return keras.Sequential([keras.Input(shape), base, keras.layers.GlobalAveragePooling2D(), *head],
                            name="nested_sequential")


BUILDERS = {
    "sequential": _sequential,
    "functional": _functional,
    "separate_softmax": _functional,
    "nested_small": lambda keras, shape, head: _nested(keras, _small_base(keras, shape), shape, head),
    "nested_sequential": _nested_sequential,
    "nested_xception": lambda keras, shape, head: _nested(
        keras, keras.applications.Xception(include_top=False, weights=None, input_shape=shape),
        shape, head),
    "nested_inception": lambda keras, shape, head: _nested(
        keras, keras.applications.InceptionV3(include_top=False, weights=None, input_shape=shape),
        shape, head),
}


def _save(model, path: Path, fmt: str) -> None:
    if fmt == "savedmodel":
        model.export(path, format="tf_saved_model", verbose=False)
    else:
        model.save(path)


def blob_images(count: int, seed: int, size: int = BLOB_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (pixels (N, size, size) uint8, labels (N,), blob centres (N, 2) as x, y).

    Class 1 images hold one bright Gaussian blob at a random place on a noisy background;
    class 0 images are background only (their centre is -1, -1).
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    centres = rng.uniform(6, size - 6, (count, 2)) * labels[:, None] - (1 - labels[:, None])
    ys, xs = np.mgrid[0:size, 0:size]
    dist2 = (xs[None] - centres[:, 0, None, None]) ** 2 + (ys[None] - centres[:, 1, None, None]) ** 2
    blobs = 150 * np.exp(-dist2 / (2 * BLOB_SIGMA**2)) * labels[:, None, None]
    background = rng.normal(70, 20, (count, size, size))
    return np.clip(background + blobs, 0, 255).astype(np.uint8), labels, centres


def train_blob_model(folder: Path, seed: int = 0, epochs: int = 3) -> Path:
    """Train a GAP -> Dense CNN to tell blob from no blob; write it with model.json, return its path."""
    import keras

    from pipeline.model.preprocess import PREPROCESS
    from pipeline.model.spec import write_spec

    keras.utils.set_random_seed(seed)
    pixels, labels, _ = blob_images(1500, seed)
    model = keras.Sequential([
        keras.Input((BLOB_SIZE, BLOB_SIZE, 1)), _conv(keras, 8, "conv1"), _conv(keras, 16, "conv2"),
        keras.layers.MaxPooling2D(name="pool"), _conv(keras, 16, "conv3"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, activation="softmax", name="score")], name="blob_cnn")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    # Centred inputs: on [0, 1] inputs this tiny net sometimes never leaves chance level.
    model.fit(PREPROCESS["symmetric"](pixels[..., None].astype(np.float32)), labels, batch_size=16,
              epochs=epochs, verbose=0)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    return write_spec({"name": "blob", "file": "model.keras", "input_size": [BLOB_SIZE, BLOB_SIZE],
                       "color_mode": "grayscale", "preprocessing": "symmetric",
                       "class_names": ["no_blob", "blob"], "positive_classes": ["blob"],
                       "output": "probabilities"}, folder)
