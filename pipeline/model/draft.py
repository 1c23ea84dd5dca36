"""A draft model.json inferred from a Keras file: input size, colour mode, output kind, preprocessing.

Imports Keras: keep it out of modules that must load fast.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import keras

from pipeline.model.loading import (ModelError, final_activation, final_layer, find_target, image_input,
                                    iter_layers)
from pipeline.model.spec import MODEL_SUFFIXES

BINARY_NAMES = (["no_tumor", "tumor"], ["tumor"])


@dataclasses.dataclass(frozen=True)
class Draft:
    """A model.json inferred from a Keras model, with how each field was found."""

    fields: dict[str, Any]  # the model.json fields, ready for write_spec
    reasons: dict[str, str]  # field -> how it was inferred, in words


def read_model_file(path: str | Path) -> keras.Model:
    """Load a .keras or .h5 file on its own, without a model.json.

    Args:
        path: the model file.

    Returns:
        The Keras model, uncompiled.

    Raises:
        ModelError: the path is not a .keras or .h5 file Keras can read.
    """
    path = Path(path)
    if path.is_dir():  # a SavedModel runs only as one opaque layer in Keras 3: nothing to infer from
        raise ModelError(f"{path.name} is a folder; a .keras or .h5 file is needed (convert a "
                         "SavedModel: load it where it was saved and call model.save('model.keras'))")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelError(f"{path.name} is not a Keras model file: its name must end in .keras or .h5")
    try:
        return keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises anything from OSError to TypeError on a bad file
        raise ModelError(f"{path.name} cannot be read as a Keras model: {exc}") from exc


def draft_spec(model: keras.Model, model_path: str | Path, name: str, folder: str | Path,
               input_size: tuple[int, int] | None = None) -> Draft:
    """Infer a model.json for a Keras classifier; the class names are placeholders.

    Args:
        model: the loaded classifier.
        model_path: its file, written into ``file`` relative to ``folder``.
        name: the model's name.
        folder: where the model.json will be written.
        input_size: (width, height) for a model that accepts any size; must match a fixed one.

    Returns:
        The fields and how each was inferred.

    Raises:
        ModelError: the model is not one image in, one class-score vector out, in words.
    """
    height, width, channels = _image_input(model)
    size, size_why = _input_size(height, width, input_size)
    output, units, output_why = _output_kind(model)
    preprocessing, preprocessing_why = _preprocessing(model)
    names, positives = BINARY_NAMES if units <= 2 else (
        [f"class_{i}" for i in range(units)], [f"class_{units - 1}"])
    fields = {"format": 1, "name": name,
              "file": Path(os.path.relpath(Path(model_path).resolve(), Path(folder).resolve())).as_posix(),
              "input_size": list(size), "color_mode": "grayscale" if channels == 1 else "rgb",
              "preprocessing": preprocessing, "class_names": names, "positive_classes": positives,
              "output": output, "target_layer": None}
    reasons = {"input_size": size_why,
               "color_mode": f"{channels} input channel{'s' if channels > 1 else ''}",
               "output": output_why, "preprocessing": preprocessing_why,
               "class_names": f"placeholders for {units} output unit{'s' if units > 1 else ''}",
               "positive_classes": "placeholder: the last class",
               "target_layer": _target_note(model)}
    return Draft(fields, reasons)


def _image_input(model: keras.Model) -> tuple[int | None, int | None, int]:
    height, width, channels = image_input(model)
    if channels not in (1, 3):
        raise ModelError(f"the model's input has {channels} channels; tumorlens feeds 1 (grayscale) "
                         "or 3 (rgb)")
    return height, width, channels


def _input_size(height: int | None, width: int | None,
                given: tuple[int, int] | None) -> tuple[tuple[int, int], str]:
    if given is None:
        if height is None or width is None:
            raise ModelError("the model accepts images of any size; give the size it was trained on "
                             "with --input-size WIDTH HEIGHT")
        return (width, height), f"the model's input: {height} high, {width} wide"
    if (width or given[0], height or given[1]) != tuple(given):
        raise ModelError(f"the model's input is fixed at {width} wide and {height} high; the size "
                         f"given ({given[0]} wide, {given[1]} high) disagrees")
    return tuple(given), "given (--input-size)"


def _output_kind(model: keras.Model) -> tuple[str, int, str]:
    if len(model.outputs) != 1:
        raise ModelError(f"the model has {len(model.outputs)} outputs; init-model drafts a model.json "
                         'for one output of class scores: write it by hand with "model_output" naming '
                         "the output that holds them")
    shape = tuple(model.outputs[0].shape)
    if len(shape) != 2 or shape[1] is None:
        raise ModelError(f"the model's output has shape {shape}; tumorlens needs class scores "
                         "(batch, classes)")
    units, final = shape[1], final_layer(model)
    found = final_activation(final)
    where = f'the last layer "{final.name}"'
    if found == "softmax" and units >= 2:
        return "probabilities", units, f"{where} applies softmax"
    if found == "sigmoid" and units == 1:
        return "sigmoid", units, f"{where} applies sigmoid to one unit"
    if found is None and units >= 2:
        return "logits", units, f"{where} applies neither softmax nor sigmoid"
    raise ModelError(f"{where} gives {units} unit{'s' if units > 1 else ''} "
                     f"{'through ' + found if found else 'without an activation'}; tumorlens reads a "
                     "softmax or raw scores over 2 or more classes, or one sigmoid unit")


def _preprocessing(model: keras.Model) -> tuple[str, str]:
    inside = [path for path, layer in iter_layers(model)
              if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization))]
    if inside:
        return "none", f'the model scales its own input (layer "{inside[0]}")'
    return "unit", "a guess (x/255): the model has no Rescaling or Normalization layer"


def _target_note(model: keras.Model) -> str:
    try:
        path, layer = find_target(model, None)
    except ModelError as exc:
        return f"no automatic target: {exc}"
    return f"automatic: {path}, maps of {'x'.join(str(n) for n in layer.output.shape[1:])}"
