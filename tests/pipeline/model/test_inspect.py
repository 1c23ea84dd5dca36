"""What ``check-model`` tells about a model: target, maps, head, output check, speed."""

from __future__ import annotations

import time
from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.explain.analysis import METHODS, Analyzer
from pipeline.model.camgraph import build_cam_graph
from pipeline.model.inspect import (ANY_HEAD_METHODS, GAP_DENSE_METHODS, GraphFacts, describe_graph,
                                    output_warnings, throughput)
from pipeline.model.loading import ModelError, load_model
from pipeline.model.spec import ModelSpec, load_spec, write_spec
from tests.builders.models import build_model, class_names_for
from tests.builders.shapes import small_cnn


def save_model(model: keras.Model, folder: Path, output: str, **fields) -> ModelSpec:
    """Save ``model`` as folder/model.keras with a model.json; return the loaded spec."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    height, width, channels = model.inputs[0].shape[1:]
    names, positives = class_names_for(fields.pop("classes", 2))
    return load_spec(write_spec({
        "name": folder.name, "file": "model.keras", "input_size": [width, height],
        "color_mode": "rgb" if channels == 3 else "grayscale", "preprocessing": "unit",
        "class_names": names, "positive_classes": positives, "output": output, **fields}, folder))


def hidden_activation_model(units: int, activation: str | None, bias: float) -> keras.Model:
    """Return a GAP -> Dense CNN whose last layer is Activation("linear"), hiding the Dense's activation.

    A bias of the same value on every unit moves raw scores away from any softmax-like range
    without changing the softmax itself.
    """
    model = small_cnn([keras.layers.GlobalAveragePooling2D(),
                       keras.layers.Dense(units, activation=activation, name="score",
                                          bias_initializer=keras.initializers.Constant(bias)),
                       keras.layers.Activation("linear", name="identity")])
    return model


def flatten_model() -> keras.Model:
    return small_cnn([keras.layers.Flatten(name="flatten"),
                      keras.layers.Dense(2, activation="softmax", name="score")])


def facts_of(spec: ModelSpec) -> GraphFacts:
    return describe_graph(build_cam_graph(load_model(spec), spec), spec)


def test_the_methods_split_covers_every_cam_method():
    assert set(GAP_DENSE_METHODS) | set(ANY_HEAD_METHODS) == set(METHODS)
    assert not set(GAP_DENSE_METHODS) & set(ANY_HEAD_METHODS)


def test_describe_graph_follows_the_target_into_a_nested_model(tmp_path):
    spec = load_spec(build_model(tmp_path / "nested", "nested_small", input_size=(32, 32)))
    facts = facts_of(spec)
    assert facts.target == "base/base_conv2"
    assert facts.map_size == (16, 16, 8)  # one 2x2 pooling, 8 filters
    assert facts.shrink == (2.0, 2.0)
    assert facts.resolution_line() == "32x32 -> 16x16, 2x smaller"
    assert facts.head_kind == "GAP -> Dense"
    assert facts.methods == dict.fromkeys(METHODS)


def test_a_wide_input_gives_its_height_and_width_apart(tmp_path):
    spec = load_spec(build_model(tmp_path / "wide", "nested_small", input_size=(48, 32)))
    facts = facts_of(spec)
    assert facts.input_hw == (32, 48) and facts.map_size == (16, 24, 8)
    assert facts.resolution_line() == "32x48 -> 16x24, 2x smaller"
    uneven = GraphFacts("t", (7, 14, 3), (224, 224), (), "GAP -> Dense", {})
    assert uneven.resolution_line() == "224x224 -> 7x14, 32x smaller in height, 16x in width"


def test_a_flatten_head_rules_out_cam_and_nothing_else(tmp_path):
    spec = save_model(flatten_model(), tmp_path / "flatten", "probabilities")
    facts = facts_of(spec)
    assert facts.target == "conv2" and facts.map_size == (8, 8, 6)
    assert facts.head == ("flatten", "score") and facts.head_kind == "flatten -> score"
    assert "GlobalAveragePooling2D" in facts.methods["cam"]
    assert {name for name, why in facts.methods.items() if why is None} == set(ANY_HEAD_METHODS)
    assert facts.to_json()["methods"]["cam"]["applies"] is False


@pytest.mark.parametrize("output", ["probabilities", "logits", "sigmoid"])
def test_a_correct_output_kind_gets_no_warning(tmp_path, output):
    spec = load_spec(build_model(tmp_path / output, "nested_small", input_size=(32, 32), output=output))
    assert output_warnings(load_model(spec), spec) == []


def test_raw_scores_declared_probabilities_are_reported(tmp_path):
    spec = save_model(hidden_activation_model(2, None, bias=2.0), tmp_path / "raw", "probabilities")
    Analyzer(spec).ready()  # the hidden activation gets past the graph's own check
    [warning] = output_warnings(load_model(spec), spec)
    assert '"output": "probabilities"' in warning and 'set "output" to "logits"' in warning


def test_probabilities_declared_logits_are_reported(tmp_path):
    spec = save_model(hidden_activation_model(2, "softmax", bias=0.0), tmp_path / "soft", "logits")
    Analyzer(spec).ready()
    [warning] = output_warnings(load_model(spec), spec)
    assert "look like probabilities" in warning and '"probabilities"' in warning


def test_a_raw_score_declared_sigmoid_is_reported(tmp_path):
    spec = save_model(hidden_activation_model(1, None, bias=5.0), tmp_path / "raw1", "sigmoid")
    Analyzer(spec).ready()
    [warning] = output_warnings(load_model(spec), spec)
    assert "a sigmoid lies in [0, 1]" in warning and "5" in warning


def test_a_visible_mismatch_is_refused_before_any_warning(tmp_path):
    """A Dense without softmax declared "probabilities" never reaches the output check."""
    model = small_cnn([keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, name="score")])
    spec = save_model(model, tmp_path / "visible", "probabilities")
    with pytest.raises(ModelError, match='set "output" to "logits"'):
        Analyzer(spec).ready()


class SleepyAnalyzer:
    """Takes 10 ms per call, counting its calls."""

    input_shape = (8, 8, 1)

    def __init__(self) -> None:
        self.calls = 0

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        return pixels[..., :1].astype(np.float32)

    def analyze(self, batch: np.ndarray) -> None:
        assert batch.shape == (4, 8, 8, 1)
        self.calls += 1
        time.sleep(0.01)


def test_throughput_times_calls_after_one_warm_up():
    analyzer = SleepyAnalyzer()
    speed = throughput(analyzer, batch_size=4, seconds=0.05)
    assert analyzer.calls == speed.calls + 1
    assert 3 <= speed.calls <= 10
    assert 2.5 <= speed.ms_per_scan < 10  # 10 ms for 4 scans, plus overhead
    assert speed.scans_per_second == pytest.approx(1000 / speed.ms_per_scan)


def test_throughput_of_a_real_analyzer(tmp_path):
    analyzer = Analyzer(load_spec(build_model(tmp_path / "m", "sequential", input_size=(32, 32))))
    analyzer.ready()
    speed = throughput(analyzer, batch_size=8, seconds=0.2)
    assert speed.batch_size == 8 and speed.calls >= 1 and speed.scans_per_second > 0
    assert set(speed.to_json()) == {"batch_size", "calls", "seconds", "scans_per_second", "ms_per_scan"}
