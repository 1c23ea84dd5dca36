"""Training-time augmentation as Keras preprocessing layers, applied in the tf.data pipeline.

Augmentation runs on float images in [0, 255] before the model's preprocessing, so the same
layers serve every architecture; it is never part of the saved model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import keras

GEOMETRIC = ("flip", "rotation", "zoom")
INTENSITY = ("contrast", "gamma", "noise", "blur")
AUGMENTATIONS = GEOMETRIC + INTENSITY


class _RandomIntensity(keras.layers.Layer):
    """A per-image random intensity change of [0, 255] images, applied only in training."""

    def __init__(self, factor: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        if not training:
            return images
        shape = (keras.ops.shape(images)[0], 1, 1, 1)
        return self.transform(images, keras.random.uniform(shape, seed=self.seed_generator))

    def transform(self, images, draw):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}


class RandomGamma(_RandomIntensity):
    """Raise each image to a random power in [1/(1+factor), 1+factor] (log-uniform)."""

    def transform(self, images, draw):
        bound = math.log1p(self.factor)
        unit = keras.ops.clip(images / 255.0, 0.0, 1.0)
        return 255.0 * keras.ops.power(unit, keras.ops.exp(bound * (2.0 * draw - 1.0)))


class RandomNoise(_RandomIntensity):
    """Add Gaussian noise whose standard deviation is drawn per image in [0, factor x 255]."""

    def transform(self, images, draw):
        noise = keras.random.normal(keras.ops.shape(images), seed=self.seed_generator)
        return images + noise * draw * (self.factor * 255.0)


def _layer(name: str, seed: int) -> keras.layers.Layer:
    # Black background outside the head: fill new pixels with 0 rather than reflecting anatomy.
    factories = {
        "flip": lambda: keras.layers.RandomFlip("horizontal", seed=seed),
        "rotation": lambda: keras.layers.RandomRotation(10 / 360, fill_mode="constant", seed=seed),
        "zoom": lambda: keras.layers.RandomZoom(0.15, fill_mode="constant", seed=seed),
        "contrast": lambda: keras.layers.RandomContrast(0.3, value_range=(0, 255), seed=seed),
        "gamma": lambda: RandomGamma(0.4, seed=seed),
        "noise": lambda: RandomNoise(0.04, seed=seed),
        "blur": lambda: keras.layers.RandomGaussianBlur(0.5, kernel_size=5, sigma=(0.1, 1.2),
                                                        value_range=(0, 255), seed=seed),
    }
    return factories[name]()


def build_augmenter(names: Iterable[str] = GEOMETRIC, seed: int = 0) -> keras.Sequential:
    """Build the augmentation stack for batched float images in [0, 255].

    Args:
        names: which augmentations, from ``AUGMENTATIONS``, in the order they apply.
        seed: base seed; each layer gets its own derived seed.

    Returns:
        A Sequential that changes images only when called with ``training=True``.
    """
    names = list(names)
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(f"unknown augmentation {', '.join(unknown)}; "
                         f"choose from {', '.join(AUGMENTATIONS)}")
    layers = [_layer(name, seed + i) for i, name in enumerate(names)]
    # Intensity changes can push values past the range; keep them where the model expects them.
    return keras.Sequential([*layers, keras.layers.Lambda(lambda x: keras.ops.clip(x, 0.0, 255.0))],
                            name="augmentation")
