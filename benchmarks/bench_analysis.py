"""Images per second of the fused analysis next to bare prediction and two other ways to get Grad-CAM.

On the same model and the same prepared arrays, in one process, interleaved round by round
(the best round of each counts):

- ``predict``: bare ``model.predict(batch)``, probabilities only: the floor.
- ``analysis``: ``Analyzer.analyze`` (gradcam): probabilities, maps and GAP neurons in one pass.
- ``tf-keras-vis``: its ``Gradcam`` on the same batches, maps only, for a fixed class (no
  prediction pass charged to it, which flatters it). It cannot reach a layer inside
  a nested model, so for Xception it runs on a flat model of the same architecture holding the same
  weights (the base's layers inlined); the small CNN is flat already.
- ``recipe``: the keras.io Grad-CAM recipe as published, one image at a time: ``model.predict`` for
  the class, then ``make_gradcam_heatmap`` (which builds its grad model on each call and runs one
  GradientTape), on the same flat model with its final softmax made linear as the recipe does.
- ``lean recipe``: the same per-image GradientTape with the grad model built once and no separate
  predict: what a careful user of the recipe would write.

Models have random weights (weights=None): speed does not depend on what they learned. Scans are
Br35H JPEGs from ../shared/data where present, otherwise synthetic images.

    .venv/bin/python benchmarks/bench_analysis.py [--rounds 2] [--batch 16]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from tf_keras_vis.gradcam import Gradcam  # noqa: E402
from tf_keras_vis.utils.model_modifiers import ReplaceToLinear  # noqa: E402
from tf_keras_vis.utils.scores import CategoricalScore  # noqa: E402

from pipeline.explain.analysis import Analyzer  # noqa: E402
from pipeline.model.spec import load_spec, write_spec  # noqa: E402

SCANS = ROOT.parent / "shared" / "data" / "br35h" / "yes"
CASES = {  # name: (input side, images per round, builder)
    "small CNN 224 px": (224, 64, "small"),
    "Xception 150 px": (150, 32, "xception"),
}


def small_cnn(side: int) -> tuple[keras.Model, keras.Model, str]:
    """Return (model, flat model, target layer): four conv blocks, GAP, softmax Dense."""
    inputs = keras.Input((side, side, 3))
    x = inputs
    for i, filters in enumerate((16, 32, 64, 64)):
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        x = keras.layers.MaxPooling2D()(x) if i < 3 else x
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="score")(x))
    return model, model, "conv3"


def xception(side: int) -> tuple[keras.Model, keras.Model, str]:
    """Return (Xception nested as one layer, the same network flat with the same weights, target)."""
    def classifier(nested: bool) -> keras.Model:
        inputs = keras.Input((side, side, 3))
        if nested:  # the base is one layer of the classifier
            base_out = keras.applications.Xception(include_top=False, weights=None,
                                                   input_shape=(side, side, 3))(inputs)
        else:  # the base's layers are the classifier's own
            base_out = keras.applications.Xception(include_top=False, weights=None,
                                                   input_tensor=inputs).output
        x = keras.layers.GlobalAveragePooling2D()(base_out)
        return keras.Model(inputs, keras.layers.Dense(2, activation="softmax", name="score")(x))

    nested, flat = classifier(True), classifier(False)
    flat.set_weights(nested.get_weights())
    return nested, flat, "block14_sepconv2_act"


def prepared_batch(analyzer: Analyzer, count: int) -> np.ndarray:
    """Decode and prepare ``count`` scans once; every contender gets these arrays."""
    paths = sorted(SCANS.glob("*.jpg"))[:count] if SCANS.is_dir() else []
    rng = np.random.default_rng(0)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    images += [rng.integers(0, 256, (256, 256, 3), dtype=np.uint8) for _ in range(count - len(images))]
    return np.stack([analyzer.prepare(image) for image in images])


def make_gradcam_heatmap(img_array: np.ndarray, model: keras.Model, last_conv_layer_name: str,
                         grad_model: keras.Model | None = None) -> np.ndarray:
    """The keras.io recipe's function; it builds its grad model on every call unless given one."""
    grad_model = grad_model or keras.Model(
        model.inputs, [model.get_layer(last_conv_layer_name).output, model.output])
    with tf.GradientTape() as tape:
        last_conv_layer_output, preds = grad_model(img_array)
        class_channel = preds[:, tf.argmax(preds[0])]
    grads = tape.gradient(class_channel, last_conv_layer_output)
    pooled_grads = tf.reduce_mean(grads, axis=(0, 1, 2))
    heatmap = tf.squeeze(last_conv_layer_output[0] @ pooled_grads[..., tf.newaxis])
    return (tf.maximum(heatmap, 0) / tf.math.reduce_max(heatmap)).numpy()


def recipe(linear: keras.Model, target: str) -> Callable[[np.ndarray], list]:
    """The recipe as published, per image: ``model.predict`` for the class, then the heatmap."""
    return lambda batch: [(linear.predict(image[None], verbose=0),
                           make_gradcam_heatmap(image[None], linear, target)) for image in batch]


def lean_recipe(linear: keras.Model, target: str) -> Callable[[np.ndarray], list]:
    """The recipe with its grad model built once and no separate prediction: per image still."""
    grad_model = keras.Model(linear.input, [linear.get_layer(target).output, linear.output])
    return lambda batch: [make_gradcam_heatmap(image[None], linear, target, grad_model) for image in batch]


def contenders(analyzer: Analyzer, model: keras.Model, flat: keras.Model, target: str,
               batch_size: int) -> dict[str, Callable[[np.ndarray], object]]:
    """Return name -> function of a batch, each doing its whole job on that batch."""
    linear = keras.models.clone_model(flat)
    linear.set_weights(flat.get_weights())
    linear.layers[-1].activation = keras.activations.linear  # as the recipe tells its readers
    vis = Gradcam(flat, model_modifier=ReplaceToLinear(), clone=True)

    def run_vis(batch: np.ndarray) -> np.ndarray:
        return vis(CategoricalScore([1] * len(batch)), batch, penultimate_layer=target)

    return {
        "predict": lambda batch: model.predict(batch, batch_size=batch_size, verbose=0),
        "analysis": lambda batch: [analyzer.analyze(batch[i:i + batch_size])
                                   for i in range(0, len(batch), batch_size)],
        "tf-keras-vis": lambda batch: [run_vis(batch[i:i + batch_size])
                                       for i in range(0, len(batch), batch_size)],
        "recipe": recipe(linear, target),
        "lean recipe": lean_recipe(linear, target),
    }


def measure(case: str, rounds: int, batch_size: int, folder: Path) -> dict[str, float]:
    """Return images/second of every contender on one model (best of ``rounds``)."""
    side, count, kind = CASES[case]
    keras.utils.set_random_seed(0)
    model, flat, target = (small_cnn if kind == "small" else xception)(side)
    model.save(folder / f"{kind}.keras")
    spec = load_spec(write_spec({"name": kind, "file": f"{kind}.keras", "input_size": [side, side],
                                 "color_mode": "rgb", "preprocessing": "symmetric",
                                 "class_names": ["no_tumor", "tumor"], "positive_classes": ["tumor"],
                                 "output": "probabilities"}, folder))
    analyzer = Analyzer(spec, "gradcam")
    batch = prepared_batch(analyzer, count)
    runs = contenders(analyzer, model, flat, target, batch_size)
    for run in runs.values():  # load, trace and compile outside the timing
        run(batch[:batch_size])
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run(batch)
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: count / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    # Keras warns when the recipe calls a model built on a list of inputs with one tensor.
    warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match")
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs, "
          f"batch {args.batch}, best of {args.rounds} rounds; scans from "
          f"{SCANS if SCANS.is_dir() else 'synthetic images'}")
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            rates = measure(case, args.rounds, args.batch, Path(tmp))
            print(f"\n{case} ({CASES[case][1]} images): images/second")
            for name, rate in rates.items():
                print(f"  {name:<13} {rate:8.1f}")
            analysis = rates["analysis"]
            print(f"  analysis / tf-keras-vis = {analysis / rates['tf-keras-vis']:.1f}x   "
                  f"analysis / recipe = {analysis / rates['recipe']:.1f}x   "
                  f"analysis / lean recipe = {analysis / rates['lean recipe']:.1f}x   "
                  f"predict / analysis = {rates['predict'] / analysis:.2f}x")


if __name__ == "__main__":
    main()
