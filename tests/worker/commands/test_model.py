"""``tumorlens check-model`` and ``init-model`` from the command line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.explain.analysis import METHODS
from pipeline.model.spec import load_spec
from tests.builders.cli import tumorlens
from tests.builders.models import build_model
from tests.pipeline.model.test_inspect import flatten_model, hidden_activation_model, save_model

ROOT = Path(__file__).resolve().parents[3]
SCAN_SIZE = (120, 90)  # width, height: not the model's, so the peak must be scaled to the scan


@pytest.fixture(scope="module")
def nested(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("nested")
    build_model(folder, "nested_small", input_size=(32, 32))
    return folder


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scans") / "slice.png"
    width, height = SCAN_SIZE
    pixels = np.random.default_rng(3).integers(0, 256, (height, width), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_check_model_prints_what_the_run_will_use(nested, scan):
    output = tumorlens("check-model", nested, "--scan", scan).output
    assert re.search(r"target layer\s+base/base_conv2", output)
    assert "16x16x8 (height x width x channels)" in output
    assert "32x32 -> 16x16, 2x smaller" in output
    assert re.search(r"head\s+GAP -> Dense", output)
    assert re.search(r"CAM methods\s+cam, gradcam, gradcampp, layercam, scorecam", output)
    assert re.search(r"predicted\s+(no_tumor|tumor), tumor probability 0\.\d{3}", output)
    assert re.search(r"gradcam peak\s+x=\d+, y=\d+ in the scan's pixels", output)
    assert re.search(r"throughput\s+\d+\.\d scans/s, \d+\.\d ms per scan", output)
    assert "WARNING" not in output


def test_check_model_json_holds_the_same_facts(nested, scan):
    facts = json.loads(tumorlens("check-model", nested / "model.json", "--scan", scan, "--json").stdout)
    assert {"model", "usable", "method", "spec", "graph", "warnings", "scan", "throughput"} <= set(facts)
    assert facts["usable"] is True and facts["warnings"] == []
    assert facts["spec"]["name"] == load_spec(nested).name and facts["spec"]["target_layer"] is None
    graph = facts["graph"]
    assert graph["target"] == "base/base_conv2" and graph["map_size"] == [16, 16, 8]
    assert graph["shrink"] == [2.0, 2.0] and graph["head_kind"] == "GAP -> Dense"
    assert {name for name, m in graph["methods"].items() if m["applies"]} == set(METHODS)
    result = facts["scan"]
    assert result["predicted_class"] in ("no_tumor", "tumor")
    assert sum(result["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert result["tumor_probability"] == result["probabilities"]["tumor"]
    assert (result["width"], result["height"]) == SCAN_SIZE
    assert 0 <= result["peak"][0] < SCAN_SIZE[0] and 0 <= result["peak"][1] < SCAN_SIZE[1]
    assert facts["throughput"]["scans_per_second"] > 0 and facts["throughput"]["batch_size"] == 16


def test_check_model_without_a_scan_skips_the_prediction(nested):
    facts = json.loads(tumorlens("check-model", nested, "--json").stdout)
    assert facts["scan"] is None and facts["throughput"]["calls"] >= 1


def test_an_unreadable_scan_exits_1_naming_the_file(nested, tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    result = tumorlens("check-model", nested, "--scan", tmp_path / "empty.png", expect=1)
    assert f"cannot read the scan {tmp_path / 'empty.png'}: not an image" in result.output


def test_a_broken_spec_exits_1_with_the_field(nested, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.keras").write_bytes((nested / "model.keras").read_bytes())
    fields = {**load_spec(nested).to_json(), "output": "maybe"}
    (folder / "model.json").write_text(json.dumps(fields))
    result = tumorlens("check-model", folder, expect=1)
    assert "cannot be used" in result.output and '"output" must be one of' in result.output


def test_a_model_that_cannot_be_prepared_exits_1_naming_it(tmp_path):
    spec = save_model(flatten_model(), tmp_path / "flat", "probabilities")
    result = tumorlens("check-model", spec.folder, "--method", "cam", expect=1)
    assert f"{spec.name} cannot be used: cam needs the target layer followed by" in result.output
    as_json = json.loads(tumorlens("check-model", spec.folder, "--method", "cam", "--json", expect=1).stdout)
    assert as_json["usable"] is False and as_json["error"].startswith("cam needs")


def test_a_flatten_head_is_usable_with_gradcam_but_not_cam(tmp_path):
    spec = save_model(flatten_model(), tmp_path / "flat", "probabilities")
    output = tumorlens("check-model", spec.folder).output
    assert re.search(r"head\s+flatten -> score", output)
    assert re.search(r"CAM methods\s+gradcam, gradcampp, layercam, scorecam\n", output)
    assert "not cam: it needs the target followed by GlobalAveragePooling2D" in output


def test_a_suspicious_output_is_warned_about(tmp_path):
    spec = save_model(hidden_activation_model(2, None, bias=2.0), tmp_path / "raw", "probabilities")
    output = tumorlens("check-model", spec.folder).output
    assert re.search(r'WARNING\s+model.json says "output": "probabilities"', output)


def test_a_map_that_is_zero_everywhere_has_no_peak(tmp_path, scan):
    import keras

    from tests.pipeline.model.test_inspect import small_cnn

    zero = small_cnn([keras.layers.GlobalAveragePooling2D(),
                      keras.layers.Dense(2, activation="softmax", kernel_initializer="zeros", name="score")])
    spec = save_model(zero, tmp_path / "zero", "probabilities")
    facts = json.loads(tumorlens("check-model", spec.folder, "--scan", scan, "--json").stdout)
    assert facts["scan"]["peak"] is None and facts["scan"]["tumor_probability"] == 0.5
    assert "none: the map is zero everywhere" in tumorlens("check-model", spec.folder, "--scan", scan).output


def test_init_model_writes_a_spec_check_model_accepts(tmp_path):
    build_model(tmp_path / "m", "nested_small", input_size=(40, 24), output="sigmoid", color_mode="grayscale")
    (tmp_path / "m" / "model.json").unlink()
    output = tumorlens("init-model", tmp_path / "m" / "model.keras").output
    assert "placeholders" in output and "check-model" in output
    spec = load_spec(tmp_path / "m")
    assert spec.name == "m" and spec.input_size == (40, 24)
    assert (spec.color_mode, spec.output, spec.class_names) == ("grayscale", "sigmoid", ("no_tumor", "tumor"))
    facts = json.loads(tumorlens("check-model", tmp_path / "m", "--json").stdout)
    assert facts["usable"] is True and facts["warnings"] == []
    assert facts["graph"]["target"] == "base/base_conv2"


def test_init_model_refuses_to_overwrite_without_force(nested):
    before = (nested / "model.json").read_text()
    result = tumorlens("init-model", nested / "model.keras", expect=1)
    assert "already exists; give --force to replace it" in result.output
    assert (nested / "model.json").read_text() == before


def test_init_model_force_and_out(nested, tmp_path):
    tumorlens("init-model", nested / "model.keras", "--out", tmp_path / "spec", "--name", "mine")
    spec = load_spec(tmp_path / "spec")
    assert spec.name == "mine" and spec.model_path == (nested / "model.keras").resolve()
    assert json.loads((tmp_path / "spec" / "model.json").read_text())["file"].startswith("../")
    tumorlens("init-model", nested / "model.keras", "--out", tmp_path / "spec", "--name", "again", "--force")
    assert load_spec(tmp_path / "spec").name == "again"


def test_init_model_explains_a_file_that_is_no_model(tmp_path):
    (tmp_path / "model.keras").write_text("not a model")
    result = tumorlens("init-model", tmp_path / "model.keras", expect=1)
    assert "model.keras cannot be read as a Keras model" in result.output
    assert not (tmp_path / "model.json").exists()


def test_init_model_asks_for_the_size_of_a_size_free_model(tmp_path):
    import keras

    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="conv")(inputs))
    keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x)).save(tmp_path / "free.keras")
    result = tumorlens("init-model", tmp_path / "free.keras", expect=1)
    assert "--input-size WIDTH HEIGHT" in result.output
    tumorlens("init-model", tmp_path / "free.keras", "--input-size", "64", "48")
    spec = load_spec(tmp_path)
    assert spec.input_size == (64, 48) and spec.name == "free"


def test_the_help_of_the_model_commands_does_not_load_tensorflow():
    code = ("import sys; from worker.cli import main\n"
            "for command in ('check-model', 'init-model'):\n"
            "    try:\n        main([command, '--help'])\n"
            "    except SystemExit as exit_:\n        assert exit_.code in (0, None), exit_.code\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "Show how tumorlens understands MODEL" in done.stdout
    assert done.stdout.strip().endswith("False False")
