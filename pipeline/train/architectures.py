"""Classifier architectures: the compact ``lens`` network and keras.applications backbones.

Keras is imported inside the builders so the command line can list architectures quickly.

Every classifier ends in global average pooling and one Dense softmax layer, so the class
activation map of its last conv layer is defined (CAM needs GAP -> Dense).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Backbone:
    """How to build one keras.applications network and feed it."""

    factory: str
    preprocessing: str  # the model.json preprocessing the network was designed for


APPLICATIONS = {
    "inceptionv3": Backbone("InceptionV3", "symmetric"),
    "xception": Backbone("Xception", "symmetric"),
    "resnet50": Backbone("ResNet50", "caffe"),
    "mobilenetv2": Backbone("MobileNetV2", "symmetric"),
    "efficientnetb0": Backbone("EfficientNetB0", "none"),
}
ARCHITECTURES = ("lens", *APPLICATIONS)


def preprocessing_for(arch: str) -> str:
    """Return the model.json ``preprocessing`` an architecture is trained with."""
    return "unit" if arch == "lens" else APPLICATIONS[arch].preprocessing


def color_mode_for(arch: str) -> str:
    """Return the colour mode: MRI is grey, so ``lens`` reads one channel; backbones expect RGB."""
    return "grayscale" if arch == "lens" else "rgb"


def _conv(x, filters: int, stride: int = 1, dilation: int = 1, name: str = ""):
    import keras

    x = keras.layers.Conv2D(filters, 3, strides=stride, dilation_rate=dilation, padding="same",
                            use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _head(features, n_classes: int, dropout: float):
    import keras

    x = keras.layers.GlobalAveragePooling2D(name="gap")(features)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    return keras.layers.Dense(n_classes, activation="softmax", name="predictions")(x)


def build_lens(input_size: tuple[int, int], channels: int = 1, width: int = 24,
               n_classes: int = 2, dropout: float = 0.3) -> Any:
    """Build ``lens``: stride-8 features kept fine, context from dilated convs, GAP -> Dense.

    The last conv map is 1/8 of the input (28x28 at 224 px), so a CAM resolves a tumor to a few
    pixels of the original scan, while dilations 2 and 4 give each position a receptive field of
    about 135 px. Each image is standardised (zero mean, unit variance) inside the model, which
    removes the scanner-dependent brightness and contrast differences between archives.

    Args:
        input_size: (width, height) in pixels.
        channels: 1 for grayscale input, 3 for RGB.
        width: filters of the first stage; later stages use 2x and 4x (context 5x).
        n_classes: number of softmax outputs.
        dropout: dropout rate before the Dense layer.

    Returns:
        An uncompiled Keras model taking float images in [0, 1].
    """
    import keras

    inputs = keras.Input((input_size[1], input_size[0], channels), name="image")
    x = keras.layers.LayerNormalization(axis=(1, 2, 3), center=False, scale=False,
                                        name="standardise")(inputs)
    x = _conv(x, width, stride=2, name="stem")
    x = _conv(x, 2 * width, stride=2, name="block1a")
    x = _conv(x, 2 * width, name="block1b")
    x = _conv(x, 4 * width, stride=2, name="block2a")
    x = _conv(x, 4 * width, name="block2b")
    x = _conv(x, 5 * width, dilation=2, name="context1")
    x = _conv(x, 5 * width, dilation=4, name="context2")
    return keras.Model(inputs, _head(x, n_classes, dropout), name="lens")


def build_application(arch: str, input_size: tuple[int, int], weights: str | None = None,
                      n_classes: int = 2, dropout: float = 0.3) -> Any:
    """Build a keras.applications backbone with a GAP -> Dense head.

    Args:
        arch: a key of ``APPLICATIONS``.
        input_size: (width, height) in pixels.
        weights: None (random), ``"imagenet"`` (needs the internet) or a local weights file
            for the backbone without its top.
        n_classes: number of softmax outputs.
        dropout: dropout rate before the Dense layer.

    Returns:
        An uncompiled Keras model with the backbone nested as one layer.
    """
    import keras

    factory = getattr(keras.applications, APPLICATIONS[arch].factory)
    shape = (input_size[1], input_size[0], 3)
    local = weights not in (None, "imagenet")
    if local and not Path(weights).is_file():
        raise FileNotFoundError(f"weights file {weights} does not exist")
    base = factory(include_top=False, weights=None if local else weights, input_shape=shape)
    if local:
        base.load_weights(weights)
    inputs = keras.Input(shape, name="image")
    return keras.Model(inputs, _head(base(inputs), n_classes, dropout), name=arch)


def build_model(arch: str, input_size: tuple[int, int], weights: str | None = None,
                **kwargs) -> Any:
    """Build any architecture named in ``ARCHITECTURES``."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    if arch == "lens":
        if weights not in (None, "none"):
            raise ValueError("lens has no pretrained weights: use --weights none")
        return build_lens(input_size, **kwargs)
    return build_application(arch, input_size, None if weights == "none" else weights, **kwargs)
