"""model.json: validation names the field, digests identify spec + weights, no TensorFlow needed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.model.spec import ModelSpec, SpecError, load_spec, write_spec

VALID = {
    "format": 1,
    "name": "br35h-lens-v1",
    "file": "model.keras",
    "input_size": [224, 160],
    "color_mode": "rgb",
    "preprocessing": "unit",
    "class_names": ["no_tumor", "tumor"],
    "positive_classes": ["tumor"],
    "output": "probabilities",
    "target_layer": None,
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "model.keras").write_bytes(b"weights v1")
    return tmp_path


def write_raw(folder: Path, **changes) -> Path:
    fields = {**VALID, **changes}
    fields = {key: value for key, value in fields.items() if value is not ...}
    path = folder / "model.json"
    path.write_text(json.dumps(fields))
    return path


def test_valid_spec_loads_from_file_or_folder(folder: Path) -> None:
    write_raw(folder)
    from_file, from_folder = load_spec(folder / "model.json"), load_spec(folder)
    assert from_file == from_folder
    assert isinstance(from_file, ModelSpec)
    assert from_file.input_size == (224, 160)
    assert from_file.model_path == (folder / "model.keras").resolve()
    assert from_file.positive_indices == (1,)
    assert from_file.channels == 3
    assert from_file.to_json() == VALID


def test_target_layer_may_be_left_out(folder: Path) -> None:
    write_raw(folder, target_layer=...)
    assert load_spec(folder).target_layer is None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"preprocessing": "imagenet"},
         'model.json: "preprocessing" must be one of unit, symmetric, caffe, torch, none (got "imagenet")'),
        ({"format": 2}, '"format" must be 1'),
        ({"format": True}, '"format" must be 1'),
        ({"input_size": [224]}, '"input_size" must be two positive integers [width, height] (got [224])'),
        ({"input_size": [224, 0]}, '"input_size" must be two positive integers'),
        ({"input_size": [224.0, 224]}, '"input_size" must be two positive integers'),
        ({"input_size": "224x224"}, '"input_size" must be two positive integers'),
        ({"color_mode": "bgr"}, '"color_mode" must be one of rgb, grayscale (got "bgr")'),
        ({"output": "softmax"}, '"output" must be one of probabilities, logits, sigmoid (got "softmax")'),
        ({"class_names": ["tumor"]}, '"class_names" must hold at least 2 distinct names'),
        ({"class_names": ["tumor", "tumor"]}, '"class_names" must hold at least 2 distinct names'),
        ({"class_names": ["a", 3]}, '"class_names" must be a list of non-empty strings'),
        ({"class_names": ["a", "b", "tumor"], "output": "sigmoid"},
         '"class_names" must hold exactly 2 names for output sigmoid (got 3)'),
        ({"positive_classes": []}, '"positive_classes" must be a non-empty list'),
        ({"positive_classes": ["glioma"]}, '(got ["glioma"])'),
        ({"positive_classes": "tumor"}, '"positive_classes" must be a list of non-empty strings'),
        ({"target_layer": 3}, '"target_layer" must be null or a layer path'),
        ({"target_layer": ""}, '"target_layer" must be null or a layer path'),
        ({"name": ""}, '"name" must be a non-empty string'),
        ({"name": ...}, '"name" is missing'),
        ({"output": ...}, '"output" is missing'),
        ({"targetlayer": "x"}, 'unknown field "targetlayer"'),
        ({"color_mode": "grayscale", "preprocessing": "caffe"},
         '"preprocessing" caffe needs "color_mode" rgb'),
        ({"file": "model.pt"},
         '"file" must be a .keras or .h5 file or a SavedModel folder (got "model.pt")'),
        ({"file": "other.keras"}, '"file" other.keras does not exist'),
        ({"model_output": ""}, '"model_output" must be null (the model\'s only output), or the name or index'),
        ({"model_output": -1}, '"model_output" must be null'),
        ({"model_output": True}, '"model_output" must be null'),
        ({"safe_mode": "no"}, '"safe_mode" must be true, or false to let Keras run Python code'),
        ({"threshold": 1.5}, '"threshold" must be null (0.5), or the tumor probability between 0 and 1'),
        ({"threshold": 0}, '"threshold" must be null'),
        ({"threshold": "0.3"}, '"threshold" must be null'),
        ({"threshold": True}, '"threshold" must be null'),
        ({"in_distribution": "stats.npz"}, '"in_distribution" stats.npz does not exist'),
        ({"in_distribution": 3}, '"in_distribution" must be null, or the file beside model.json'),
    ],
)
def test_invalid_field_is_named(folder: Path, changes: dict, message: str) -> None:
    write_raw(folder, **changes)
    with pytest.raises(SpecError) as caught:
        load_spec(folder)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "model.json is not valid JSON"), ("[1, 2]", "must hold a JSON object, got list"),
     (b"\xff\xfe", "model.json is not valid JSON")],
)
def test_unreadable_json_is_explained(folder: Path, content, message: str) -> None:
    path = folder / "model.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SpecError, match=message):
        load_spec(path)


def test_missing_spec_is_explained(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no model description: .*model.json does not exist"):
        load_spec(tmp_path)


def test_folder_that_is_not_a_saved_model_is_refused(folder: Path) -> None:
    (folder / "export").mkdir()
    write_raw(folder, file="export")
    with pytest.raises(SpecError, match="is a folder but not a SavedModel"):
        load_spec(folder)


def test_digest_changes_with_weights_and_spec_not_with_rereading(folder: Path) -> None:
    write_raw(folder)
    first = load_spec(folder).digest()
    assert load_spec(folder).digest() == first
    assert len(first) == 64
    write_raw(folder, target_layer="conv2")
    retargeted = load_spec(folder).digest()
    (folder / "model.keras").write_bytes(b"weights v2")
    retrained = load_spec(folder).digest()
    assert len({first, retargeted, retrained}) == 3


def test_digest_of_saved_model_folder_covers_every_file(folder: Path) -> None:
    saved = folder / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"graph")
    (saved / "variables" / "variables.index").write_bytes(b"index")
    write_raw(folder, file="saved")
    spec = load_spec(folder)
    assert spec.is_saved_model
    before = spec.digest()
    (saved / "variables" / "variables.index").write_bytes(b"other index")
    assert spec.digest() != before


def test_optional_fields_default_and_leave_the_digest_of_a_spec_without_them(folder: Path) -> None:
    plain = load_spec(write_raw(folder))
    assert (plain.model_output, plain.safe_mode) == (None, True)
    assert "model_output" not in plain.to_json() and "safe_mode" not in plain.to_json()
    same = load_spec(write_raw(folder, model_output=None, safe_mode=True))  # defaults spelled out
    assert same.digest() == plain.digest()
    chosen = load_spec(write_raw(folder, model_output="diagnosis", safe_mode=False))
    assert (chosen.model_output, chosen.safe_mode) == ("diagnosis", False)
    assert chosen.to_json()["model_output"] == "diagnosis" and chosen.digest() != plain.digest()
    assert load_spec(write_raw(folder, model_output=1)).model_output == 1
    assert (plain.threshold, plain.decision_threshold) == (None, 0.5)
    (folder / "stats.npz").write_bytes(b"v1")
    familiar = load_spec(write_raw(folder, in_distribution="stats.npz"))
    assert familiar.distribution_path == folder.resolve() / "stats.npz"
    before = familiar.digest()
    (folder / "stats.npz").write_bytes(b"v2")  # other statistics: another model identity
    assert load_spec(folder).digest() != before
    operating = load_spec(write_raw(folder, threshold=0.37))
    assert operating.decision_threshold == 0.37 and operating.to_json()["threshold"] == 0.37


def test_write_spec_fills_defaults_and_round_trips(folder: Path) -> None:
    fields = {key: value for key, value in VALID.items() if key not in ("format", "target_layer")}
    path = write_spec(fields, folder)
    assert path == folder / "model.json"
    assert json.loads(path.read_text()) == VALID
    assert load_spec(path).to_json() == VALID


def test_write_spec_refuses_invalid_fields_and_writes_nothing(folder: Path) -> None:
    with pytest.raises(SpecError, match='"output" must be one of'):
        write_spec({**VALID, "output": "softmax"}, folder)
    assert not (folder / "model.json").exists()


def test_spec_module_does_not_import_tensorflow() -> None:
    code = "import sys, pipeline.model.spec; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[3])
    assert result.stdout.split() == ["False", "False"]
