"""The fused pass: shapes for every model shape, Grad-CAM equal to a per-image reference, localisation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest

from pipeline.explain.analysis import METHODS, Analyzer
from pipeline.model.loading import ModelError
from pipeline.model.spec import load_spec, write_spec
from tests.builders.models import build_once

RNG = np.random.default_rng(11)
FLAT_KINDS = ("sequential", "functional", "separate_softmax", "nested_small", "nested_sequential")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("analysis_models")


def built(models_dir: Path, kind: str, output: str = "probabilities", fmt: str = "keras", **kw) -> Path:
    return build_once(models_dir, kind, output=output, fmt=fmt, **kw)


def random_batch(analyzer: Analyzer, count: int) -> np.ndarray:
    return RNG.uniform(0, 1, (count, *analyzer.input_shape)).astype(np.float32)


def check_result(result, count: int, analyzer: Analyzer, channels: int) -> None:
    k = len(analyzer.spec.class_names)
    _, height, width, _ = analyzer.graph.model.outputs[1].shape  # the target layer's resolution
    assert result.probabilities.shape == (count, k) and result.probabilities.dtype == np.float32
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1, atol=1e-5)
    assert result.cams.shape == (count, height, width) and result.cams.dtype == np.float32
    assert np.isfinite(result.cams).all() and result.cams.min() >= 0 and result.cams.max() <= 1
    assert result.neurons.shape == (count, channels) and result.neurons.dtype == np.float32
    assert result.predicted.shape == (count,)
    np.testing.assert_array_equal(result.predicted, result.probabilities.argmax(axis=1))
    positives = list(analyzer.spec.positive_indices)
    tumor = result.probabilities[:, positives].sum(axis=1)
    np.testing.assert_allclose(result.tumor_probability, tumor, atol=1e-6)
    assert result.class_names == analyzer.spec.class_names


@pytest.mark.parametrize("fmt", ["keras", "h5"])
@pytest.mark.parametrize("output", ["probabilities", "logits", "sigmoid"])
@pytest.mark.parametrize("kind", FLAT_KINDS)
def test_every_kind_output_and_format_analyses_from_its_model_json(models_dir, kind, output, fmt) -> None:
    analyzer = Analyzer(load_spec(built(models_dir, kind, output, fmt)), "gradcam")
    check_result(analyzer.analyze(random_batch(analyzer, 5)), 5, analyzer, channels=8)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["sequential", "nested_small", "nested_sequential"])
def test_every_method_on_flat_and_nested_models(models_dir, kind, method) -> None:
    analyzer = Analyzer(load_spec(built(models_dir, kind)), method)
    check_result(analyzer.analyze(random_batch(analyzer, 3)), 3, analyzer, channels=8)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gradcam", "cam"])
def test_xception_nested_as_one_layer(models_dir, method) -> None:
    analyzer = Analyzer(load_spec(built(models_dir, "nested_xception", input_size=(71, 71))), method)
    check_result(analyzer.analyze(random_batch(analyzer, 2)), 2, analyzer, channels=2048)
    assert analyzer.graph.target == "xception/block14_sepconv2_act"


@pytest.mark.slow
def test_inception_nested_as_one_layer(models_dir) -> None:
    """At 75 px InceptionV3's last block is 1 x 1, so the last map with positions lies in a branch."""
    spec = load_spec(built(models_dir, "nested_inception", input_size=(75, 75)))
    analyzer = Analyzer(spec, "gradcam")
    check_result(analyzer.analyze(random_batch(analyzer, 2)), 2, analyzer, channels=192)
    assert analyzer.graph.target == "inception_v3/activation_74"
    with pytest.raises(ModelError, match=r"this model has inception_v3/activation_74 -> \w+ -> \w+ -> "
                                         r"\(\d+ more layers\) -> global_average_pooling2d\w* -> "):
        Analyzer(spec, "cam").analyze(random_batch(analyzer, 1))


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_four_classes_grayscale_non_square_input(models_dir, method) -> None:
    json_path = built(models_dir, "nested_small", classes=4, color_mode="grayscale", input_size=(40, 32))
    analyzer = Analyzer(load_spec(json_path), method)
    assert analyzer.input_shape == (32, 40, 1)
    result = analyzer.analyze(random_batch(analyzer, 3))
    check_result(result, 3, analyzer, channels=8)
    np.testing.assert_allclose(result.tumor_probability, 1 - result.probabilities[:, 2], atol=1e-6)


def test_sigmoid_model_predicts_positive_class_from_half_probability(models_dir) -> None:
    analyzer = Analyzer(load_spec(built(models_dir, "functional", "sigmoid")), "gradcam")
    result = analyzer.analyze(random_batch(analyzer, 6))
    np.testing.assert_array_equal(result.predicted, (result.tumor_probability >= 0.5).astype(int))


def test_saved_model_analysis_explains_how_to_convert(models_dir) -> None:
    analyzer = Analyzer(load_spec(built(models_dir, "functional", fmt="savedmodel")), "gradcam")
    with pytest.raises(ModelError, match="SavedModel folder as a whole. Convert it once"):
        analyzer.analyze(random_batch(analyzer, 2))


def test_cam_on_a_head_that_is_not_gap_dense_names_the_layers(models_dir) -> None:
    spec = load_spec(built(models_dir, "nested_small"))
    folder = spec.folder.parent / "early_target"
    folder.mkdir(exist_ok=True)
    (folder / "model.keras").write_bytes(spec.model_path.read_bytes())
    spec = load_spec(write_spec({**spec.to_json(), "target_layer": "base/base_conv1"}, folder))
    analyzer = Analyzer(spec, "cam")
    with pytest.raises(ModelError, match="cam needs the target layer followed by GlobalAveragePooling2D"
                                         r" -> \(Dropout\) -> Dense; this model has base/base_conv1 -> "
                                         "base_pool -> base_conv2 -> global_average_pooling2d"):
        analyzer.analyze(random_batch(analyzer, 1))


def test_all_zero_input_gives_all_zero_maps_for_every_method(models_dir) -> None:
    spec = load_spec(built(models_dir, "sequential"))  # zero input, zero conv biases: zero maps
    for method in METHODS:
        result = Analyzer(spec, method).analyze(np.zeros((2, 48, 48, 3), np.float32))
        assert not np.isnan(result.cams).any(), method
        assert (result.cams == 0).all(), method
        np.testing.assert_allclose(result.probabilities.sum(axis=1), 1, atol=1e-6)


def test_batch_sizes_share_one_trace(models_dir) -> None:
    analyzer = Analyzer(load_spec(built(models_dir, "functional")), "gradcam")
    for count in (4, 1, 7, 4):
        assert analyzer.analyze(random_batch(analyzer, count)).cams.shape[0] == count
    assert analyzer._compiled().experimental_get_tracing_count() == 1


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_memory_stays_flat_over_many_batches(models_dir, method) -> None:
    """A worker analyses batches for days: after warm-up, 300 more batches must not grow it."""
    analyzer = Analyzer(load_spec(built(models_dir, "nested_small")), method)
    batches = [random_batch(analyzer, size) for size in range(1, 17)]
    for batch in batches * 2:
        analyzer.analyze(batch)
    before = psutil.Process().memory_info().rss
    for i in range(300):
        analyzer.analyze(batches[i % len(batches)])
    assert psutil.Process().memory_info().rss - before < 20e6


def test_empty_batch_gives_empty_results(models_dir) -> None:
    analyzer = Analyzer(load_spec(built(models_dir, "functional")), "gradcam")
    result = analyzer.analyze(np.zeros((0, 48, 48, 3), np.float32))
    assert result.probabilities.shape == (0, 2) and result.cams.shape == (0, 24, 24)  # conv2's maps
    assert result.neurons.shape == (0, 8) and result.predicted.shape == (0,)


def test_wrong_batch_shape_and_unknown_method_are_explained(models_dir) -> None:
    spec = load_spec(built(models_dir, "functional"))
    expected = r"expected a batch of shape \(N, 48, 48, 3\) from Analyzer.prepare, got \(2, 48, 48, 1\)"
    with pytest.raises(ValueError, match=expected):
        Analyzer(spec).analyze(np.zeros((2, 48, 48, 1), np.float32))
    with pytest.raises(ValueError, match='unknown CAM method "gradcam2"; choose one of cam, gradcam'):
        Analyzer(spec, "gradcam2")


def test_model_loads_lazily_and_module_imports_without_tensorflow(models_dir) -> None:
    analyzer = Analyzer(load_spec(built(models_dir, "functional")), "gradcam")
    assert analyzer.graph is None
    code = ("import sys, pipeline.explain.analysis as a; import numpy as np\n"
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[3])
    assert result.stdout.split() == ["False", "False"]


def with_threshold(models_dir: Path, tmp_path: Path, threshold: float | None, **build) -> Analyzer:
    """Return an Analyzer of a built model whose spec carries ``threshold``."""
    spec = load_spec(built(models_dir, "sequential", **build))
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / spec.file).write_bytes(spec.model_path.read_bytes())
    fields = {**spec.to_json(), "threshold": threshold}
    return Analyzer(load_spec(write_spec(fields, tmp_path)), "gradcam")


@pytest.mark.parametrize("output", ["probabilities", "sigmoid"])
def test_the_spec_threshold_decides_the_predicted_class(models_dir, tmp_path, output) -> None:
    batch = random_batch(with_threshold(models_dir, tmp_path / "none", None, output=output), 16)
    runs = {t: with_threshold(models_dir, tmp_path / str(t), t, output=output).analyze(batch)
            for t in (None, 1e-6, 0.999999)}
    tumor = runs[None].class_names.index("tumor")
    default = runs[None].predicted
    assert (default == tumor).tolist() == (runs[None].tumor_probability >= 0.5).tolist()
    assert (runs[1e-6].predicted == tumor).all() and (runs[0.999999].predicted != tumor).all()
    np.testing.assert_array_equal(runs[1e-6].probabilities, runs[None].probabilities)
    assert not np.array_equal(runs[1e-6].cams, runs[0.999999].cams)  # each map explains its class


def test_with_several_positive_classes_the_likeliest_of_the_side_called_is_explained(models_dir, tmp_path):
    analyzer = with_threshold(models_dir, tmp_path, 0.999999, classes=4)
    result = analyzer.analyze(random_batch(analyzer, 8))
    negative = analyzer.spec.class_names.index("no_tumor")
    assert (result.tumor_probability < 0.999999).all() and (result.predicted == negative).all()
    tumor_side = with_threshold(models_dir, tmp_path / "low", 1e-6, classes=4).analyze(random_batch(analyzer, 8))
    positives = list(analyzer.spec.positive_indices)
    expected = np.array(positives)[tumor_side.probabilities[:, positives].argmax(axis=1)]
    np.testing.assert_array_equal(tumor_side.predicted, expected)


def test_ready_prepares_once_and_keeps_the_loaded_model(models_dir) -> None:
    analyzer = Analyzer(load_spec(built(models_dir, "sequential")), "gradcam")
    graph = analyzer.ready()
    assert analyzer.prepared and analyzer.model is not None and analyzer.model.name != graph.model.name

    def no_second_pass(batch):
        raise AssertionError("ready() ran the blank pass again")

    analyzer.analyze = no_second_pass  # a job's batches call ready() each: it must cost nothing
    assert analyzer.ready() is graph
