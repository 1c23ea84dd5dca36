"""A demo classifier, for trying tumorlens before a trained model is installed.

Its weights are random (seeded, so every build is identical and a re-run can reuse results):
the whole path runs, but its predictions and heatmaps mean nothing about tumors.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pipeline.model.spec import SPEC_NAME, SpecError, load_spec, write_spec

DEMO_NAME = "demo-random-weights"
DEMO_INPUT = (128, 128)
DEMO_SEED = 0


def demo_spec_fields() -> dict:
    """Return the model.json fields of the demo classifier."""
    return {"name": DEMO_NAME, "file": "model.keras", "input_size": list(DEMO_INPUT),
            "color_mode": "rgb", "preprocessing": "unit", "class_names": ["no_tumor", "tumor"],
            "positive_classes": ["tumor"], "output": "probabilities"}


def ensure_demo_model(folder: str | Path) -> Path:
    """Build the demo classifier into ``folder`` unless a valid one is already there.

    Args:
        folder: where model.keras and model.json go (created; written atomically).

    Returns:
        The path of the demo's model.json.
    """
    folder = Path(folder)
    try:
        load_spec(folder)
        return folder / SPEC_NAME
    except SpecError:
        pass
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=folder.parent))
    try:
        _build(staging)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)  # two builds at once: the loser's rename fails, the model exists
    except OSError:
        if not (folder / SPEC_NAME).is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder / SPEC_NAME


def _build(folder: Path) -> None:
    import keras

    keras.utils.set_random_seed(DEMO_SEED)
    width, height = DEMO_INPUT
    conv = dict(kernel_size=3, padding="same", activation="relu")
    model = keras.Sequential([
        keras.Input((height, width, 3)),
        keras.layers.Conv2D(8, name="conv1", **conv), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, name="conv2", **conv), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, name="conv3", **conv),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, activation="softmax", name="score"),
    ], name="demo_cnn")
    model.save(folder / "model.keras")
    write_spec(demo_spec_fields(), folder)
