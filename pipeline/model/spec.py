"""The model description ``model.json``: reading, validating, writing, fingerprinting.

No TensorFlow here: the web floor and the store read specs without loading a model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

SPEC_NAME = "model.json"
COLOR_MODES = ("rgb", "grayscale")
PREPROCESSINGS = ("unit", "symmetric", "caffe", "torch", "none")
OUTPUTS = ("probabilities", "logits", "sigmoid")
MODEL_SUFFIXES = (".keras", ".h5")
DEFAULT_THRESHOLD = 0.5
RGB_ONLY_PREPROCESSINGS = ("caffe", "torch")  # their per-channel ImageNet statistics need 3 channels


class SpecError(ValueError):
    """A model.json that cannot be used; the message names the field and what was expected."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A classifier as described by its model.json, with the model file resolved."""

    format: int
    name: str
    file: str
    input_size: tuple[int, int]  # (width, height)
    color_mode: str
    preprocessing: str
    class_names: tuple[str, ...]
    positive_classes: tuple[str, ...]
    output: str
    target_layer: str | None
    folder: Path
    model_path: Path
    model_output: str | int | None = None  # which output holds the class scores, when several
    safe_mode: bool = True  # False lets Keras load Python code (Lambda layers) from a trusted file
    threshold: float | None = None  # the operating point: tumor when P(tumor) >= it (default 0.5)
    in_distribution: str | None = None  # the file of the training distribution, beside model.json

    @property
    def channels(self) -> int:
        """Return the number of input channels the model expects."""
        return 3 if self.color_mode == "rgb" else 1

    @property
    def positive_indices(self) -> tuple[int, ...]:
        """Return the indices of the positive (tumor) classes in ``class_names``."""
        return tuple(self.class_names.index(name) for name in self.positive_classes)

    @property
    def decision_threshold(self) -> float:
        """Return the tumor probability from which a scan is called tumor."""
        return DEFAULT_THRESHOLD if self.threshold is None else self.threshold

    @property
    def distribution_path(self) -> Path | None:
        """Return the in-distribution statistics' file, or None when the model ships none."""
        return None if self.in_distribution is None else self.folder / self.in_distribution

    @property
    def is_saved_model(self) -> bool:
        """Return whether the model is a TensorFlow SavedModel directory."""
        return self.model_path.is_dir()

    def to_json(self) -> dict[str, Any]:
        """Return the model.json fields as plain JSON values."""
        return {
            "format": self.format,
            "name": self.name,
            "file": self.file,
            "input_size": list(self.input_size),
            "color_mode": self.color_mode,
            "preprocessing": self.preprocessing,
            "class_names": list(self.class_names),
            "positive_classes": list(self.positive_classes),
            "output": self.output,
            "target_layer": self.target_layer,
            # Optional fields appear only when set, so a spec without them keeps its digest.
            **{key: getattr(self, key) for key, (default, _, _) in _OPTIONAL_RULES.items()
               if getattr(self, key) != default},
        }

    def digest(self) -> str:
        """Return the sha256 of the canonical spec JSON and the model's bytes: its identity."""
        digest = hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode())
        extra = [] if self.distribution_path is None else [(self.in_distribution, self.distribution_path)]
        for name, path in [*_model_files(self.model_path), *extra]:
            digest.update(name.encode() + b"\0")
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()


def load_spec(path: str | Path) -> ModelSpec:
    """Read and validate a model.json.

    Args:
        path: the model.json file, or a folder holding one.

    Returns:
        The validated spec with ``model_path`` resolved beside it.

    Raises:
        SpecError: the file is missing, is not JSON, or a field is invalid.
    """
    path = Path(path)
    if path.is_dir():
        path = path / SPEC_NAME
    if not path.is_file():
        raise SpecError(f"no model description: {path} does not exist")
    try:
        fields = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"{path.name} is not valid JSON: {exc}") from exc
    return spec_from_dict(fields, path.parent, source=path.name)


def write_spec(spec_dict: Mapping[str, Any], folder: str | Path) -> Path:
    """Validate a spec and write it as ``model.json`` into the folder holding the model file.

    Args:
        spec_dict: the model.json fields; ``format`` and ``target_layer`` may be left out.
        folder: where the model file already is and the json goes.

    Returns:
        The path of the written model.json.

    Raises:
        SpecError: a field is invalid or the model file is not in ``folder``.
    """
    folder = Path(folder)
    fields = {"format": 1, "target_layer": None, **spec_dict}
    spec = spec_from_dict(fields, folder)
    path = folder / SPEC_NAME
    path.write_text(json.dumps(spec.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def spec_from_dict(fields: Any, folder: Path, source: str = SPEC_NAME) -> ModelSpec:
    """Validate raw model.json fields and resolve the model file in ``folder``."""
    if not isinstance(fields, dict):
        raise SpecError(f"{source}: must hold a JSON object, got {type(fields).__name__}")
    fields = {"target_layer": None, **{k: d for k, (d, _, _) in _OPTIONAL_RULES.items()}, **fields}
    _check_keys(fields, source)
    rules = {**_FIELD_RULES, **{key: rule for key, (_, *rule) in _OPTIONAL_RULES.items()}}
    for key, (check, expected) in rules.items():
        if not check(fields[key]):
            raise SpecError(f'{source}: "{key}" must be {expected} (got {json.dumps(fields[key])})')
    _check_classes(fields, source)
    if fields["color_mode"] == "grayscale" and fields["preprocessing"] in RGB_ONLY_PREPROCESSINGS:
        raise SpecError(f'{source}: "preprocessing" {fields["preprocessing"]} needs "color_mode" rgb '
                        "(its ImageNet statistics are per colour channel)")
    model_path = _resolve_model(folder, fields["file"], source)
    return ModelSpec(
        format=1, name=fields["name"], file=fields["file"], input_size=tuple(fields["input_size"]),
        color_mode=fields["color_mode"], preprocessing=fields["preprocessing"],
        class_names=tuple(fields["class_names"]), positive_classes=tuple(fields["positive_classes"]),
        output=fields["output"], target_layer=fields["target_layer"], folder=folder.resolve(),
        model_path=model_path, model_output=fields["model_output"], safe_mode=fields["safe_mode"],
        threshold=None if fields["threshold"] is None else float(fields["threshold"]),
        in_distribution=_resolve_distribution(folder, fields["in_distribution"], source),
    )


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _is_size(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and all(type(v) is int and v > 0 for v in value))


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and all(_is_text(v) for v in value)


def _one_of(options: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda value: value in options), "one of " + ", ".join(options)


_FIELD_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "format": (lambda value: type(value) is int and value == 1, "1 (the only format this version reads)"),
    "name": (_is_text, "a non-empty string"),
    "file": (_is_text, "a non-empty string naming the model file beside model.json"),
    "input_size": (_is_size, "two positive integers [width, height]"),
    "color_mode": _one_of(COLOR_MODES),
    "preprocessing": _one_of(PREPROCESSINGS),
    "class_names": (_is_names, "a list of non-empty strings"),
    "positive_classes": (_is_names, "a list of non-empty strings"),
    "output": _one_of(OUTPUTS),
    "target_layer": (lambda value: value is None or _is_text(value),
                     'null or a layer path like "xception/block14_sepconv2_act"'),
}

# Optional fields: (default, check, what is expected). A model.json without them behaves as before.
_OPTIONAL_RULES: dict[str, tuple[Any, Callable[[Any], bool], str]] = {
    "model_output": (None, lambda value: value is None or _is_text(value) or (type(value) is int and value >= 0),
                     "null (the model's only output), or the name or index of the output that holds "
                     "the class scores"),
    "threshold": (None, lambda value: value is None or (type(value) in (int, float) and 0 < value < 1),
                  "null (0.5), or the tumor probability between 0 and 1 from which a scan is called "
                  "tumor (the operating point train chooses on VALIDATION)"),
    "in_distribution": (None, lambda value: value is None or _is_text(value),
                        "null, or the file beside model.json holding the model's training "
                        "distribution (written by tumorlens fit-distribution)"),
    "safe_mode": (True, lambda value: type(value) is bool,
                  "true, or false to let Keras run Python code (a Lambda layer) stored in a model "
                  "file you trust"),
}


def _check_keys(fields: dict[str, Any], source: str) -> None:
    missing = [key for key in _FIELD_RULES if key not in fields]
    if missing:
        raise SpecError(f'{source}: "{missing[0]}" is missing (required: {", ".join(_FIELD_RULES)})')
    known = [*_FIELD_RULES, *_OPTIONAL_RULES]
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise SpecError(f'{source}: unknown field "{unknown[0]}" (known fields: {", ".join(known)})')


def _check_classes(fields: dict[str, Any], source: str) -> None:
    names, positives = fields["class_names"], fields["positive_classes"]
    if fields["output"] == "sigmoid" and len(names) != 2:
        raise SpecError(f'{source}: "class_names" must hold exactly 2 names for output sigmoid '
                        f"(got {len(names)})")
    if len(names) < 2 or len(set(names)) != len(names):
        raise SpecError(f'{source}: "class_names" must hold at least 2 distinct names '
                        f"(got {json.dumps(names)})")
    strangers = [name for name in positives if name not in names]
    if not positives or strangers or len(set(positives)) != len(positives):
        raise SpecError(f'{source}: "positive_classes" must be a non-empty list of distinct names from '
                        f"class_names {json.dumps(names)} (got {json.dumps(positives)})")


def _resolve_model(folder: Path, file: str, source: str) -> Path:
    path = (folder / file).resolve()
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise SpecError(f'{source}: "file" {file} is a folder but not a SavedModel (no saved_model.pb)')
        return path
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise SpecError(f'{source}: "file" must be a .keras or .h5 file or a SavedModel folder '
                        f'(got "{file}")')
    if not path.is_file():
        raise SpecError(f'{source}: "file" {file} does not exist in {folder}')
    return path


def _resolve_distribution(folder: Path, file: str | None, source: str) -> str | None:
    if file is not None and not (folder / file).is_file():
        raise SpecError(f'{source}: "in_distribution" {file} does not exist in {folder}')
    return file


def _model_files(model_path: Path) -> list[tuple[str, Path]]:
    """List (name, path) of the model's files, sorted, so a directory hashes reproducibly."""
    if model_path.is_file():
        return [(model_path.name, model_path)]
    files = sorted(p for p in model_path.rglob("*") if p.is_file())
    return [(p.relative_to(model_path).as_posix(), p) for p in files]
