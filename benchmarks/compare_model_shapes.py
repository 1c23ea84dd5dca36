"""Which real-world model shapes tumorlens and tf-keras-vis each explain, side by side.

Every shape of ``tests/builders/shapes.py`` (random weights, small inputs) is saved and loaded
back as a user's file would be, then explained by:
- tumorlens: ``Analyzer(spec).ready()`` and one batch, from the shape's model.json alone;
- tf-keras-vis ``Gradcam`` with its own target search (``penultimate_layer=None``) and its
  ``ReplaceToLinear`` modifier, as its documentation shows.

pytorch-grad-cam explains PyTorch modules, so none of these Keras files apply to it.

    .venv/bin/python benchmarks/compare_model_shapes.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tf_keras_vis.gradcam import Gradcam  # noqa: E402
from tf_keras_vis.utils.model_modifiers import ReplaceToLinear  # noqa: E402
from tf_keras_vis.utils.scores import CategoricalScore  # noqa: E402

from pipeline.explain.analysis import Analyzer  # noqa: E402
from pipeline.model.spec import load_spec  # noqa: E402
from tests.builders.shapes import SHAPES, write_shape  # noqa: E402


def first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:90] if text else ''}"


def ours(spec, batch: np.ndarray) -> str:
    try:
        analyzer = Analyzer(spec, "gradcam")
        analyzer.ready()
        cams = analyzer.analyze(batch).cams
    except Exception as exc:  # noqa: BLE001 - the outcome is what is reported
        return "fails: " + first_line(exc)
    return f"ok, map {cams.shape[1]}x{cams.shape[2]} at {analyzer.graph.target}"


def tf_keras_vis(spec, batch: np.ndarray) -> str:
    try:
        model = keras.models.load_model(spec.model_path, compile=False, safe_mode=spec.safe_mode)
        maps = Gradcam(model, model_modifier=ReplaceToLinear(), clone=True)(
            CategoricalScore([1] * len(batch)), batch)
        maps = maps[0] if isinstance(maps, list) else maps
    except Exception as exc:  # noqa: BLE001 - the outcome is what is reported
        return "fails: " + first_line(exc)
    if not np.isfinite(maps).all():
        return "runs, but its maps hold NaN"
    return f"ok, map {maps.shape[1]}x{maps.shape[2]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=sorted(SHAPES), help="shapes to try")
    names = parser.parse_args().only or list(SHAPES)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            spec = load_spec(write_shape(Path(folder) / name, SHAPES[name]))
            width, height = spec.input_size
            batch = rng.uniform(0, 255, (2, height, width, spec.channels)).astype(np.float32)
            print(f"{name:30s} tumorlens: {ours(spec, batch)}")
            print(f"{'':30s} tf-keras-vis: {tf_keras_vis(spec, batch)}", flush=True)


if __name__ == "__main__":
    main()
