"""One Keras graph from a scan batch to (pre-softmax class scores, target feature maps).

The user's model is re-run layer by layer on fresh inputs, descending into nested models (a base
network used as one layer), so a layer deep inside a nested model becomes an output of the same
forward pass. Weights are shared, never copied, and the saved model is never altered.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import keras
import numpy as np
from keras import ops

from pipeline.model.loading import ModelError, check_input, final_activation, find_target, is_graph_model
from pipeline.model.outputs import choose_output, pick
from pipeline.model.spec import ModelSpec

PASSTHROUGH = (keras.layers.Dropout, keras.layers.SpatialDropout2D, keras.layers.GaussianNoise,
               keras.layers.GaussianDropout, keras.layers.AlphaDropout, keras.layers.Flatten,
               keras.layers.ActivityRegularization)  # identities at inference
EPSILON = 1e-7
HEAD_SHOWN = 8  # a longer path from the target to the output is shortened in messages


@dataclasses.dataclass(frozen=True)
class CamGraph:
    """A model's forward pass exposing the scores and feature maps CAM methods need."""

    model: keras.Model  # batch -> [scores (N, K) in class order, features (N, h, w, C)]
    target: str  # path of the target layer, e.g. "xception/block14_sepconv2_act"
    activation: str  # "softmax" or "sigmoid": how scores become probabilities
    head: tuple[str, ...]  # the layers from the target to the output, in call order
    class_kernel: np.ndarray | None  # (C, K) class weights when the head is GAP -> Dense, for CAM

    def require_class_kernel(self) -> np.ndarray:
        """Return the GAP -> Dense class weights, or explain why the head has none."""
        if self.class_kernel is None:
            path = (self.target, *self.head)
            if len(path) > HEAD_SHOWN:
                path = (*path[:3], f"({len(path) - 6} more layers)", *path[-3:])
            found = " -> ".join(path)
            raise ModelError("cam needs the target layer followed by GlobalAveragePooling2D -> "
                             f"(Dropout) -> Dense; this model has {found}. Use gradcam, which "
                             "equals cam on such heads and works on any head")
        return self.class_kernel


class _LinearDense(keras.layers.Layer):
    """A Dense layer's affine part, on the same variables: its pre-activation scores."""

    def __init__(self, dense: keras.layers.Dense, **kwargs: Any) -> None:
        super().__init__(name=f"{dense.name}_linear", **kwargs)
        self.dense = dense

    def call(self, inputs: Any) -> Any:
        outputs = ops.matmul(inputs, self.dense.kernel)
        return outputs if self.dense.bias is None else outputs + self.dense.bias


class _Tracer:
    """Re-run a model's layers, keeping the target's output and the layers that consume it."""

    def __init__(self, target: keras.layers.Layer, final: keras.layers.Layer) -> None:
        self.target, self.final = target, final
        self.bypassed = False  # a final softmax/sigmoid was skipped: outputs are pre-activation
        self.features: Any = None
        self.downstream: set[int] = set()
        self.head: list[tuple[keras.layers.Layer, bool]] = []  # (layer, its input is the target)

    def run(self, model: keras.Model, inputs: Any) -> Any:
        if isinstance(model, keras.Sequential):
            return functools.reduce(lambda x, layer: self.call(layer, x), model.layers, inputs)
        # Private, but it is how Keras itself re-runs a functional graph (clone_model uses it).
        return model._run_through_graph(inputs, operation_fn=lambda op: functools.partial(self.call, op))

    def call(self, layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        if is_graph_model(layer):
            return self.run(layer, args[0])
        outputs = self._apply(layer, args, kwargs)
        if any(id(x) in self.downstream for x in keras.tree.flatten((args, kwargs))):
            self.head.append((layer, args[0] is self.features))
            self.downstream.update(id(x) for x in keras.tree.flatten(outputs))
        if layer is self.target:
            self.features = outputs
            self.downstream = {id(outputs)}
            self.head = []
        return outputs

    def _apply(self, layer: keras.layers.Layer, args: tuple, kwargs: dict) -> Any:
        if layer is not self.final or final_activation(layer) is None:
            return layer(*args, **kwargs)
        self.bypassed = True
        if isinstance(layer, keras.layers.Dense):
            return _LinearDense(layer)(args[0])
        if isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
            return args[0]
        self.bypassed = False
        return layer(*args, **kwargs)


def build_cam_graph(model: keras.Model, spec: ModelSpec) -> CamGraph:
    """Build the fused forward pass of a loaded classifier.

    Args:
        model: the classifier loaded by ``pipeline.model.loading.load_model``.
        spec: its description (output kind, class names, target layer).

    Returns:
        The graph with scores in class order: pre-softmax where the final activation could be
        bypassed, otherwise log-probabilities (same softmax, same argmax, no saturation).

    Raises:
        ModelError: the target cannot be found, or the model's output disagrees with the spec.
    """
    path, target = find_target(model, spec.target_layer)
    chosen = choose_output(model, spec)
    final = chosen.layer
    _check_activation(final, spec)
    tracer = _Tracer(target, final)
    inputs = keras.Input(check_input(model, spec), dtype=model.inputs[0].dtype)
    outputs = pick(tracer.run(model, inputs), chosen)
    if tracer.features is None:
        raise ModelError(f'target layer "{path}" does not lie on the path from input to output')
    scores = _class_scores(outputs, spec, tracer.bypassed)
    graph = keras.Model(inputs, [scores, tracer.features], name=f"{model.name}_cam")
    kernel = _class_kernel(tracer, final, spec)
    return CamGraph(graph, path, "sigmoid" if spec.output == "sigmoid" else "softmax",
                    tuple(layer.name for layer, _ in tracer.head), kernel)


def _check_activation(final: keras.layers.Layer, spec: ModelSpec) -> None:
    found = final_activation(final)
    expected = {"probabilities": "softmax", "sigmoid": "sigmoid", "logits": None}[spec.output]
    if expected and isinstance(final, keras.layers.Dense) and found is None:
        raise ModelError(f'model.json says "output": "{spec.output}" but the model\'s last layer '
                         f'"{final.name}" is a Dense layer without {expected}: its outputs are '
                         'logits; set "output" to "logits"')
    if found is not None and found != expected:
        raise ModelError(f'model.json says "output": "{spec.output}" but the model\'s last layer '
                         f'"{final.name}" applies {found}; set "output" to '
                         f'"{"probabilities" if found == "softmax" else "sigmoid"}"')


def _class_scores(outputs: Any, spec: ModelSpec, bypassed: bool) -> Any:
    units = 1 if spec.output == "sigmoid" else len(spec.class_names)
    if len(outputs.shape) != 2 or outputs.shape[-1] != units:
        raise ModelError(f"the model's output has shape {tuple(outputs.shape)} but model.json "
                         f"(output {spec.output}, {len(spec.class_names)} classes) needs (batch, {units})")
    if spec.output != "logits" and not bypassed:
        clipped = ops.clip(outputs, EPSILON, 1 - EPSILON)
        outputs = ops.log(clipped) - (ops.log1p(-clipped) if spec.output == "sigmoid" else 0)
    if spec.output != "sigmoid":
        return outputs
    return _signed_columns(outputs, spec)


def _class_kernel(tracer: _Tracer, final: keras.layers.Layer, spec: ModelSpec) -> np.ndarray | None:
    head = [(layer, first) for layer, first in tracer.head
            if not (layer is final and tracer.bypassed and not isinstance(layer, keras.layers.Dense))]
    layers = [layer for layer, _ in head]
    if not (len(head) >= 2 and head[0][1] and _is_gap(layers[0])
            and all(isinstance(layer, PASSTHROUGH) for layer in layers[1:-1])
            and _is_affine(layers[-1], final, tracer.bypassed)):
        return None
    kernel = layers[-1].kernel
    if spec.output == "sigmoid":
        kernel = _signed_columns(kernel, spec)
    return np.asarray(ops.convert_to_numpy(kernel), dtype=np.float32)


def _is_gap(layer: keras.layers.Layer) -> bool:
    return isinstance(layer, keras.layers.GlobalAveragePooling2D) and not layer.keepdims


def _is_affine(layer: keras.layers.Layer, final: keras.layers.Layer, bypassed: bool) -> bool:
    if not isinstance(layer, keras.layers.Dense):
        return False
    return getattr(layer.activation, "__name__", None) == "linear" or (layer is final and bypassed)


def _signed_columns(values: Any, spec: ModelSpec) -> Any:
    """Turn the one sigmoid column z into two class columns: +z for the positive class, -z else."""
    columns = [-values, values] if spec.positive_indices[0] == 1 else [values, -values]
    return ops.concatenate(columns, axis=-1)
