"""Evaluation through the product's own analysis path, on a model whose answers are known."""

import numpy as np
import pytest

from pipeline.data import datasets
from pipeline.data.annotations import Annotations
from pipeline.evaluate.evaluation import choose_method, domain_reports, evaluate, sample
from pipeline.model.spec import load_spec
from tests.pipeline.mldata import bright_spot_model, make_prepared, write_cases


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_prepared(tmp_path_factory.mktemp("data"), {"TRAIN": 2, "VALIDATION": 4, "TEST": 10})


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return load_spec(bright_spot_model(tmp_path_factory.mktemp("model")))


@pytest.fixture(scope="module")
def report(spec, prepared):
    examples = datasets.find_split(prepared, "TEST")
    return evaluate(spec, examples, ("cam", "gradcam"), Annotations(), batch_size=6, faithful=4)


def test_a_perfect_classifier_scores_perfectly(report):
    classification = report["classification"]
    assert classification["n"] == 20
    assert classification["accuracy"] == 1.0
    assert classification["sensitivity"] == 1.0 and classification["specificity"] == 1.0
    assert classification["roc_auc"] == 1.0
    assert classification["confusion_matrix"] == [[10, 0], [0, 10]]
    assert classification["ece"] < 0.01  # its probabilities are all but 0 and 1
    intervals = classification["intervals"]
    assert intervals["clusters"] == 20  # no manifest groups: every scan is its own
    assert intervals["accuracy"] == intervals["roc_auc"] == [1.0, 1.0]  # no resample errs
    assert classification["errors"] == {"scans": 0, "groups": 0, "of_groups": 20, "by_group": []}
    by_size = classification["sensitivity_by_size"]  # the 10 outlined tumor scans, all found
    assert sum(b["n"] for b in by_size) == 10
    assert all(b["sensitivity"] == 1.0 for b in by_size if b["n"])


def test_maps_of_the_bright_spot_point_at_the_outlined_tumor(report):
    for method in ("cam", "gradcam"):
        scores = report["localisation"][method]
        assert scores["n"] == 10
        assert scores["pointing"] == 1.0
        assert scores["energy"] > 0.6
        assert scores["iou"] > 0.3
    baseline = report["localisation"]["centre_baseline"]
    assert baseline["n"] == 10
    assert baseline["energy"] < report["localisation"]["gradcam"]["energy"]


def test_neuron_summary_comes_from_the_target_layer(report):
    assert report["neurons"]["n_neurons"] == 1


def test_deleting_what_the_map_points_at_removes_the_evidence(report):
    curves = report["faithfulness"]["gradcam"]
    assert curves["n"] == 4
    assert curves["deletion"] < 0.3 < 0.7 < curves["insertion"]


def test_domain_reports_and_the_best_method(spec, prepared):
    reports = domain_reports(spec, [prepared], ("gradcam", "layercam"), Annotations(),
                             "VALIDATION", only_annotated=True)
    assert set(reports) == {prepared.name}
    assert reports[prepared.name]["classification"]["n"] == 4  # the four tumors only
    method, means = choose_method(reports)
    assert method in ("gradcam", "layercam")
    assert set(means) == {"gradcam", "layercam"}
    assert means[method]["pointing"] == max(m["pointing"] for m in means.values())


def test_choose_method_prefers_pointing_then_energy():
    def report(pointing, energy):
        return {"localisation": {"gradcam": {"n": 5, "pointing": pointing, "energy": energy, "iou": 0},
                                 "scorecam": {"n": 5, "pointing": 0.9, "energy": 0.5, "iou": 0},
                                 "centre_baseline": {"n": 5, "pointing": 1.0, "energy": 1.0, "iou": 1}}}
    assert choose_method({"a": report(0.8, 0.9)})[0] == "scorecam"
    assert choose_method({"a": report(0.9, 0.6)})[0] == "gradcam"
    assert choose_method({})[0] == "gradcam"


def test_sample_is_seeded_and_keeps_order():
    items = list(range(100))
    first, second = sample(items, 10), sample(items, 10)
    assert first == second == sorted(first) and len(set(first)) == 10
    assert sample(items, None) == items and sample(items, 500) == items


def test_no_outlines_means_no_localisation(spec, prepared):
    examples = [e for e in datasets.find_split(prepared, "TEST") if not e.label]
    report = evaluate(spec, examples, ("gradcam",))
    assert report["localisation"]["gradcam"] == {"n": 0}
    assert report["classification"]["roc_auc"] is None
    assert report["classification"]["specificity"] == 1.0
    assert np.isfinite(report["seconds"])


def test_an_unreadable_scan_is_reported_and_the_rest_measured(spec, tmp_path):
    data = make_prepared(tmp_path / "data", {"TEST": 3})
    (data / "TEST" / "yes" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    report = evaluate(spec, datasets.find_split(data, "TEST"))
    assert report["classification"]["n"] == 6
    [skipped] = report["skipped"]
    assert skipped["path"].endswith("broken.png") and skipped["error"]


def test_nothing_readable_is_refused_in_words(spec, tmp_path):
    folder = tmp_path / "yes"
    folder.mkdir()
    (folder / "empty.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match="none of the scans could be read"):
        evaluate(spec, datasets.find_examples(tmp_path))


def test_doubtful_labels_are_reported_both_ways_and_never_relabelled(tmp_path):
    from pipeline.data.datasets import evaluation_examples

    write_cases(tmp_path)  # case B: bright spots in no-tumor slices, a doubtful label
    spec = load_spec(bright_spot_model(tmp_path / "model", size=48))
    examples = evaluation_examples(tmp_path)
    report = evaluate(spec, examples, review={"B": "bright spots in no-tumor slices", "Z": "not here"})
    assert report["classification"]["n"] == 6 and report["classification"]["specificity"] == 0.5
    without = report["without_label_review"]
    assert without["n"] == 4 and without["specificity"] == 1.0 and without["accuracy"] == 1.0
    assert without["excluded"] == {"B": {"reason": "bright spots in no-tumor slices", "scans": 2}}
    assert "without_label_review" not in evaluate(spec, examples)
