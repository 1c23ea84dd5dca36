"""Which of a model's outputs holds the class scores, and the layer that computes it.

A Keras classifier's output may be one tensor, or a list, tuple or dict of them: Keras 3 keeps
whatever structure the model was built with (a one-element list is common in saved configs).
The outputs are numbered as Keras flattens them (``model.outputs``: a dict by sorted key) and
named by their dict key and by the layer that computes them; the spec's ``model_output`` picks
one by either, and is needed only when there are several.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import keras

from pipeline.model.loading import ModelError, final_layer, shape_text
from pipeline.model.spec import ModelSpec


@dataclasses.dataclass(frozen=True)
class ModelOutput:
    """One output of a model: its place, its names and the layer that computes it."""

    index: int
    names: tuple[str, ...]  # the dict key (if any), then the computing layer's name
    shape: tuple
    layer: keras.layers.Layer  # inside nested models, the innermost layer that computes it

    def describe(self) -> str:
        """Return e.g. ``0 "diagnosis" (batch, 4)`` for messages."""
        names = " / ".join(f'"{name}"' for name in dict.fromkeys(self.names))
        return f"{self.index} {names} {shape_text(self.shape)}"


def model_outputs(model: keras.Model) -> list[ModelOutput]:
    """Return the model's outputs in Keras's flat order."""
    structure = getattr(model, "output", None)
    keys = sorted(structure) if isinstance(structure, dict) else [None] * len(model.outputs)
    found = []
    for index, (key, tensor) in enumerate(zip(keys, model.outputs)):
        layer = final_layer(model, index)
        names = tuple(n for n in (key, layer.name) if n is not None)
        found.append(ModelOutput(index, names, tuple(tensor.shape), layer))
    return found


def choose_output(model: keras.Model, spec: ModelSpec) -> ModelOutput:
    """Return the output named by the spec's ``model_output``, or the only one.

    Raises:
        ModelError: several outputs and none chosen, or a choice that names none of them.
    """
    outputs = model_outputs(model)
    selector = spec.model_output
    listing = "; ".join(output.describe() for output in outputs)
    if selector is None:
        if len(outputs) == 1:
            return outputs[0]
        raise ModelError(f"the model has {len(outputs)} outputs ({listing}); set \"model_output\" "
                         "in model.json to the name or index of the one that holds the class scores")
    for output in outputs:
        if selector == output.index or selector in output.names:
            return output
    raise ModelError(f'model.json says "model_output": {json.dumps(selector)}, but the model\'s outputs are: '
                     f"{listing}; give one of these names or indices")


def pick(structure: Any, output: ModelOutput) -> Any:
    """Return the chosen tensor from an output structure (a tensor, list, tuple or dict)."""
    return keras.tree.flatten(structure)[output.index]
