"""Load a classifier described by a spec and find the conv layer its class activation maps use.

Imports TensorFlow/Keras: keep it out of modules that must load fast.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter drowns our logs

import keras  # noqa: E402

from pipeline.model.spec import ModelSpec  # noqa: E402

SAVED_MODEL_ENDPOINTS = ("serving_default", "serve")
CANDIDATES_SHOWN = 12


class ModelError(ValueError):
    """A model that cannot be loaded or analysed; the message says why and what to do."""


def load_model(spec: ModelSpec) -> keras.Model:
    """Load the model a spec describes, leaving the file untouched.

    Args:
        spec: the validated model description.

    Returns:
        A Keras model mapping a preprocessed batch to the model's raw output. A SavedModel
        directory comes back wrapped: it predicts, but its inner layers are out of reach.

    Raises:
        ModelError: the file cannot be read as a Keras model.
    """
    if spec.is_saved_model:
        return _wrap_saved_model(spec)
    try:
        model = keras.models.load_model(spec.model_path, compile=False, safe_mode=spec.safe_mode)
    except Exception as exc:  # Keras raises anything from OSError to TypeError on a bad file
        if "safe_mode" in str(exc):
            raise ModelError(f"{spec.model_path.name} holds Python code (a Lambda layer), which Keras "
                             'runs only from a file you trust: set "safe_mode": false in model.json '
                             "if you trust where this model came from") from exc
        raise ModelError(f"cannot load {spec.model_path.name} as a Keras model: {exc}") from exc
    check_input(model, spec)
    return model


def image_input(model: keras.Model) -> tuple[int | None, int | None, int | None]:
    """Return the (height, width, channels) of a model's one image input, None where open.

    Raises:
        ModelError: several inputs, or one that is not (batch, height, width, channels).
    """
    shapes = [tuple(tensor.shape) for tensor in model.inputs]
    if len(shapes) != 1 or len(shapes[0]) != 4:
        found = " and ".join(shape_text(shape) for shape in shapes)
        count = "1 input" if len(shapes) == 1 else f"{len(shapes)} inputs"
        raise ModelError(f"the model takes {count} of shape {found}; tumorlens feeds one image "
                         "input of shape (batch, height, width, channels)")
    return shapes[0][1:]


def check_input(model: keras.Model, spec: ModelSpec) -> tuple[int, int, int]:
    """Return the (height, width, channels) the model is fed: its own sizes, the spec's where open.

    Raises:
        ModelError: not one image input, or sizes that disagree with model.json, named by field.
    """
    height, width, channels = image_input(model)
    wanted_width, wanted_height = spec.input_size
    if channels is not None and channels != spec.channels:
        mode = {1: "grayscale", 3: "rgb"}.get(channels)
        fix = f'set "color_mode" to "{mode}"' if mode else "tumorlens feeds 1 or 3 channels"
        raise ModelError(f'model.json says "color_mode": "{spec.color_mode}" ({spec.channels} '
                         f"channel{'s' if spec.channels > 1 else ''}) but the model's input takes "
                         f"{channels}; {fix}")
    if (height, width) != (None, None) and (height or wanted_height, width or wanted_width) != (
            wanted_height, wanted_width):
        raise ModelError(f'model.json says "input_size": [{wanted_width}, {wanted_height}] but the '
                         f"model takes images {width or 'any'} wide and {height or 'any'} high; "
                         f'set "input_size" to [{width or wanted_width}, {height or wanted_height}]')
    return height or wanted_height, width or wanted_width, channels or spec.channels


def is_saved_model_wrapper(model: keras.Model) -> bool:
    """Return whether ``model`` is a SavedModel run as one opaque layer."""
    return any(isinstance(layer, keras.layers.TFSMLayer) for layer in model.layers)


def is_graph_model(layer: keras.layers.Layer) -> bool:
    """Return whether a layer is a Sequential or functional model whose layers can be re-run."""
    return isinstance(layer, keras.Sequential) or (
        isinstance(layer, keras.Model) and hasattr(layer, "_run_through_graph"))


def iter_layers(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yield (path, layer) for every layer in order, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        path = f"{prefix}{layer.name}"
        if is_graph_model(layer):
            yield from iter_layers(layer, path + "/")
        else:
            yield path, layer


def spatial_candidates(model: keras.Model) -> list[str]:
    """Return the paths of layers whose output is a 4-D map with more than one position."""
    return [path for path, layer in iter_layers(model) if _is_spatial(layer)]


def find_target(model: keras.Model, target_layer: str | None) -> tuple[str, keras.layers.Layer]:
    """Return (path, layer) of the CAM target: the named one, or the last spatial map.

    Args:
        model: the loaded classifier.
        target_layer: a path like ``"xception/block14_sepconv2_act"``, or None for automatic.

    Returns:
        The layer's full path and the layer.

    Raises:
        ModelError: the path names no layer, or names one without a 4-D output.
    """
    if is_saved_model_wrapper(model):
        raise ModelError(
            "class activation maps need the model's inner layers, and Keras 3 can only run a "
            "TensorFlow SavedModel folder as a whole. Convert it once: load it with the TensorFlow/"
            "Keras version that saved it, call model.save('model.keras'), and point \"file\" in "
            "model.json at model.keras")
    if not is_graph_model(model):
        raise ModelError(f"{model.name} is a subclassed Keras model: its layers cannot be re-run to "
                         "reach a feature map. Rebuild it as a Sequential or functional model")
    candidates = spatial_candidates(model)
    if target_layer is None:
        if not candidates:
            raise ModelError("the model has no layer with a 4-D (batch, height, width, channels) "
                             "output of more than 1x1 positions: there is no map to explain")
        target_layer = candidates[-1]
    layer = _layer_at(model, target_layer, candidates)
    if not _is_spatial(layer):
        raise ModelError(f'target layer "{target_layer}" outputs shape {_output_shape(layer)}; a 4-D '
                         f"(batch, height, width, channels) map is needed. {_listing(candidates)}")
    return target_layer, layer


def shape_text(shape: tuple) -> str:
    """Return a tensor shape for messages: ``(batch, 224, 224, 3)``."""
    return "(" + ", ".join("batch" if i == 0 and d is None else str(d) for i, d in enumerate(shape)) + ")"


def final_layer(model: keras.Model, index: int = 0) -> keras.layers.Layer:
    """Return the layer that computes output ``index``, looking inside nested models."""
    history = getattr(model.outputs[index], "_keras_history", None)
    if history is None:  # a model without a graph of its own: its last layer computes it
        layer, inner = model.layers[-1], 0
    else:
        layer, inner = history.operation, history.tensor_index
    return final_layer(layer, inner) if is_graph_model(layer) else layer


def final_activation(layer: keras.layers.Layer) -> str | None:
    """Return "softmax" or "sigmoid" when a layer ends in one of those, else None."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    return name if name in ("softmax", "sigmoid") else None


def _layer_at(model: keras.Model, path: str, candidates: list[str]) -> keras.layers.Layer:
    layer: keras.layers.Layer = model
    for depth, name in enumerate(path.split("/")):
        inner = [child for child in getattr(layer, "layers", ()) if child.name == name]
        if not inner:
            where = "/".join(path.split("/")[:depth]) or "the model"
            raise ModelError(f'target layer "{path}": {where} has no layer named "{name}". '
                             f"{_listing(candidates)}")
        layer = inner[0]
        if depth < path.count("/") and not is_graph_model(layer):
            raise ModelError(f'target layer "{path}": "{name}" is not a nested model whose layers '
                             f"can be reached. {_listing(candidates)}")
    return layer


def _listing(candidates: list[str]) -> str:
    if not candidates:
        return "The model has no layer with a 4-D output."
    shown = candidates[-CANDIDATES_SHOWN:]
    more = f" (the last {len(shown)} of {len(candidates)})" if len(shown) < len(candidates) else ""
    return f"Layers with a 4-D output{more}: {', '.join(shown)}"


def _output_shape(layer: keras.layers.Layer) -> tuple | None:
    try:
        return tuple(layer.output.shape)
    except (AttributeError, ValueError):  # a layer never called, or called in several places
        return None


def _is_spatial(layer: keras.layers.Layer) -> bool:
    shape = _output_shape(layer)
    if isinstance(layer, keras.layers.InputLayer) or shape is None or len(shape) != 4:
        return False
    return (shape[1] or 2) * (shape[2] or 2) > 1  # unknown (None) sizes count as spatial


def _wrap_saved_model(spec: ModelSpec) -> keras.Model:
    last_error: Exception | None = None
    for endpoint in SAVED_MODEL_ENDPOINTS:
        try:
            layer = keras.layers.TFSMLayer(str(spec.model_path), call_endpoint=endpoint)
            break
        except Exception as exc:  # noqa: BLE001 - each endpoint is tried in turn
            last_error = exc
    else:
        raise ModelError(f"cannot run the SavedModel {Path(spec.file).name}: {last_error}")
    width, height = spec.input_size
    inputs = keras.Input((height, width, spec.channels))
    outputs = layer(inputs)
    if isinstance(outputs, dict):
        if len(outputs) != 1:
            raise ModelError(f"the SavedModel {spec.file} has {len(outputs)} outputs "
                             f"({', '.join(outputs)}); a classifier with one output is needed")
        outputs = next(iter(outputs.values()))
    return keras.Model(inputs, outputs, name=spec.name)
