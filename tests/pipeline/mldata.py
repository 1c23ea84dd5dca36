"""Small labelled data sets and hand-made models with known answers, for the ML tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def blob_image(rng: np.random.Generator, tumor: bool, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Return a noisy grey 'scan' and its mask; a tumor is a bright disc away from the border."""
    image = rng.normal(60, 10, (size, size)).clip(0, 255)
    mask = np.zeros((size, size), dtype=bool)
    if tumor:
        cy, cx = rng.integers(10, size - 10, 2)
        yy, xx = np.mgrid[:size, :size]
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= 36
        image[mask] = 220
    return image.astype(np.uint8), mask


# Case B's "no tumor" slices show the bright spot a bright-spot model calls tumor: a doubtful label.
DOUBTFUL_CASE_LAYOUT = (("tumor", "A", (True, True)), ("no_tumor", "B", (True, True)),
                        ("no_tumor", "C", (False, False)))


def write_cases(root: Path, layout=DOUBTFUL_CASE_LAYOUT, seed: int = 4) -> Path:
    """Write ``<class>/<case>/<case><i>.jpg`` blob slices, a bright spot where ``layout`` says."""
    rng = np.random.default_rng(seed)
    for folder, case, spots in layout:
        (root / folder / case).mkdir(parents=True)
        for i, spot in enumerate(spots):
            Image.fromarray(blob_image(rng, spot)[0]).save(root / folder / case / f"{case}{i}.jpg")
    return root


def write_class_folder(folder: Path, label: str, count: int, rng: np.random.Generator) -> None:
    """Write ``count`` blob images (with ``_mask.png`` beside each tumor) into ``folder``."""
    folder.mkdir(parents=True)
    for i in range(count):
        image, mask = blob_image(rng, label == "yes")
        Image.fromarray(image).save(folder / f"{label}{i}.png")
        if mask.any():
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{label}{i}_mask.png")


def make_prepared(root: Path, per_class: dict[str, int], seed: int = 0) -> Path:
    """Write TRAIN/VALIDATION/TEST/{yes,no} of blob images, and a manifest.csv."""
    rng = np.random.default_rng(seed)
    for split, count in per_class.items():
        for label in ("yes", "no"):
            write_class_folder(root / split / label, label, count, rng)
    (root / "manifest.csv").write_text("path,class,split\nyes0.png,yes,TRAIN\n")
    return root


def bright_spot_model(folder: Path, size: int = 32) -> Path:
    """Save a model that calls 'tumor' when bright pixels are present, with its model.json.

    One 1x1 conv feature (ReLU(x - 0.5)) feeds GAP -> Dense, so its CAM is the bright spot.
    """
    import keras

    from pipeline.model.spec import write_spec

    inputs = keras.Input((size, size, 1))
    features = keras.layers.Conv2D(1, 1, activation="relu", name="spot")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D()(features)
    outputs = keras.layers.Dense(2, activation="softmax")(pooled)
    model = keras.Model(inputs, outputs)
    model.get_layer("spot").set_weights([np.ones((1, 1, 1, 1)), np.array([-0.5])])
    model.layers[-1].set_weights([np.array([[-500.0, 500.0]]), np.array([4.5, -4.5])])
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    write_spec({"name": "bright-spot", "file": "model.keras", "input_size": [size, size],
                "color_mode": "grayscale", "preprocessing": "unit",
                "class_names": ["no_tumor", "tumor"], "positive_classes": ["tumor"],
                "output": "probabilities"}, folder)
    return folder
