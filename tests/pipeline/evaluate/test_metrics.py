"""Metric functions against answers worked out by hand."""

import numpy as np
import pytest

from pipeline.evaluate import metrics


def square_mask(shape=(100, 100), top=40, left=60, side=20):
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


def test_classification_metrics_count_the_confusion_matrix():
    labels = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
    probability = [0.9, 0.8, 0.6, 0.2, 0.1, 0.3, 0.4, 0.7, 0.05, 0.2]
    result = metrics.classification_metrics(labels, probability)
    assert result["confusion_matrix"] == [[5, 1], [1, 3]]
    assert result["accuracy"] == pytest.approx(0.8)
    assert result["sensitivity"] == pytest.approx(0.75)
    assert result["specificity"] == pytest.approx(5 / 6)
    # 24 positive/negative pairs, 2 ranked the wrong way round (0.2 < 0.3, 0.2 < 0.4, 0.2 < 0.7
    # and 0.6 < 0.7, with the tie 0.2 = 0.2 counted half): (24 - 4 - 0.5) / 24
    assert result["roc_auc"] == pytest.approx((24 - 4.5) / 24)
    assert result["n"] == 10


def test_one_class_leaves_auc_and_the_missing_rate_undefined():
    result = metrics.classification_metrics([0, 0, 0], [0.1, 0.2, 0.9])
    assert result["roc_auc"] is None
    assert result["sensitivity"] is None
    assert result["specificity"] == pytest.approx(2 / 3)


def test_empty_labels_are_refused_with_a_reason():
    with pytest.raises(ValueError, match="empty"):
        metrics.classification_metrics([], [])


@pytest.mark.parametrize(
    "labels, probability, expected",
    [
        ([1, 1, 0, 0], [1.0, 1.0, 0.0, 0.0], 0.0),  # certain and right
        ([1, 0], [0.8, 0.8], 0.3),  # confidence 0.8 in one bin, accuracy 0.5
        ([1, 1, 1, 1], [0.7, 0.7, 0.9, 0.9], 0.2),  # two bins: gaps 0.3 and 0.1, half the weight each
    ],
)
def test_expected_calibration_error(labels, probability, expected):
    assert metrics.expected_calibration_error(np.array(labels), np.array(probability)) == pytest.approx(expected)


def test_ece_uses_fifteen_bins_by_default():
    # 0.60 and 0.65 share a bin of width 1/15 only when there are 15 bins: gap |0.625 - 1|.
    value = metrics.expected_calibration_error(np.array([1, 1]), np.array([0.61, 0.64]))
    assert value == pytest.approx(1 - 0.625)


@pytest.mark.parametrize(
    "point, hit",
    [
        ((70, 50), True),  # inside (the region spans x 60..79, y 40..59)
        ((45, 50), True),  # 15 px left of the region's first column
        ((44, 50), False),  # 16 px away
        ((79, 59), True),  # the region's last pixel
        ((94, 59), True),  # 15 px right of it
        ((95, 59), False),
        ((50, 30), True),  # diagonal to (60, 40): sqrt(200) = 14.1
        ((49, 29), False),  # diagonal: sqrt(242) = 15.6, although only 11 px away on each axis
    ],
)
def test_pointing_hit_uses_a_15_pixel_euclidean_tolerance(point, hit):
    assert metrics.pointing_hit(point, square_mask()) is hit


def test_pointing_hit_near_the_border_does_not_wrap():
    mask = np.zeros((50, 50), dtype=bool)
    mask[0, 49] = True
    assert metrics.pointing_hit((0, 0), mask) is False
    assert metrics.pointing_hit((40, 5), mask) is True


def test_energy_counts_the_share_inside_the_region():
    heatmap = np.zeros((100, 100))
    heatmap[40:60, 60:80] = 1.0  # 400 units inside
    heatmap[0:10, 0:40] = 0.5  # 200 units outside
    assert metrics.energy_inside(heatmap, square_mask()) == pytest.approx(400 / 600)


def test_energy_of_an_all_zero_map_is_zero_not_nan():
    assert metrics.energy_inside(np.zeros((10, 10)), np.ones((10, 10), bool)) == 0.0


def test_iou_thresholds_at_half_the_maximum():
    heatmap = np.zeros((100, 100))
    heatmap[40:60, 60:80] = 4.0  # the region, exactly
    heatmap[40:60, 80:90] = 2.0  # at the threshold: counted
    heatmap[0:10, 0:10] = 1.9  # below it: not counted
    assert metrics.heatmap_iou(heatmap, square_mask()) == pytest.approx(400 / 600)
    assert metrics.heatmap_iou(np.zeros((100, 100)), square_mask()) == 0.0


def test_centre_map_peaks_in_the_middle_and_decays_symmetrically():
    centre = metrics.centre_map((61, 81))
    assert metrics.argmax_point(centre) == (40, 30)
    assert centre[30, 40] == pytest.approx(1.0)
    assert centre[30, 40 - 20] == pytest.approx(centre[30, 40 + 20])
    # sigma is a quarter of the side: one sigma off centre horizontally is exp(-1/2)
    assert centre[30, 40 + 20] == pytest.approx(np.exp(-0.5 * (20 / (81 / 4)) ** 2))


def test_localisation_scores_of_a_perfect_and_a_wrong_map():
    mask = square_mask()
    perfect = metrics.localisation_scores(mask.astype(float), mask)
    assert perfect == {"pointing": 1.0, "energy": 1.0, "iou": 1.0}
    wrong = np.zeros((100, 100))
    wrong[0:10, 0:10] = 1.0
    assert metrics.localisation_scores(wrong, mask) == {"pointing": 0.0, "energy": 0.0, "iou": 0.0}


def test_localisation_scores_refuse_maps_of_another_size():
    with pytest.raises(ValueError, match="differ in size"):
        metrics.localisation_scores(np.zeros((10, 10)), np.zeros((20, 20), bool))


def test_summarise_averages_and_counts():
    summary = metrics.summarise([{"pointing": 1.0, "energy": 0.5}, {"pointing": 0.0, "energy": 0.25}])
    assert summary == {"n": 2, "pointing": 0.5, "energy": 0.375}
    assert metrics.summarise([]) == {"n": 0}


def masked_mean(images):
    """A 'model' whose score is the mean brightness of the left half of the image."""
    return images[:, :, :4, 0].mean(axis=(1, 2))


def test_deletion_and_insertion_reward_a_map_that_points_at_the_evidence():
    images = np.ones((2, 8, 8, 1), dtype=np.float32)
    faithful = np.zeros((2, 8, 8), dtype=np.float32)
    faithful[:, :, :4] = 1.0 + np.arange(32).reshape(8, 4) / 100  # the left half, most salient first
    backwards = 1.0 - faithful
    calls = []

    def predict(batch):
        calls.append(len(batch))
        return masked_mean(batch)

    good = metrics.deletion_insertion(predict, images, faithful, steps=8)
    bad = metrics.deletion_insertion(predict, images, backwards, steps=8)
    # Deleting the left half first: the score falls linearly to 0 over the first half, area 1/4.
    assert good["deletion"] == pytest.approx(0.25)
    assert good["insertion"] == pytest.approx(0.75)
    # Deleting the right half first changes nothing until halfway: area 3/4; insertion 1/4.
    assert bad["deletion"] == pytest.approx(0.75)
    assert bad["insertion"] == pytest.approx(0.25)
    assert good["n"] == 2
    assert set(calls) == {9}  # each image's 9 steps go through the model as one batch


def skilled_scores(n: int = 200, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return labels, np.clip(0.35 * labels + 0.65 * rng.random(n), 0, 1).round(2)  # with ties


def test_weighted_auc_matches_sklearn_with_sample_weights():
    from sklearn.metrics import roc_auc_score

    labels, scores = skilled_scores()
    weights = np.random.default_rng(2).integers(0, 4, (6, labels.size)).astype(float)
    expected = [roc_auc_score(labels, scores, sample_weight=w) for w in weights]
    np.testing.assert_allclose(metrics._weighted_auc(labels.astype(float), scores, weights), expected)


def test_bootstrap_intervals_hold_the_estimate_and_repeat_with_the_seed():
    labels, scores = skilled_scores()
    point = metrics.classification_metrics(labels, scores)
    intervals = metrics.bootstrap_intervals(labels, scores)
    assert (intervals["level"], intervals["clusters"]) == (0.95, labels.size)
    for key in ("accuracy", "sensitivity", "specificity", "roc_auc"):
        low, high = intervals[key]
        assert 0 <= low < point[key] < high <= 1, key
    assert metrics.bootstrap_intervals(labels, scores) == intervals
    assert metrics.bootstrap_intervals(labels, scores, seed=1) != intervals
    narrow = metrics.bootstrap_intervals(labels, scores, level=0.5)["accuracy"]
    assert intervals["accuracy"][0] < narrow[0] < narrow[1] < intervals["accuracy"][1]


def test_copies_drawn_as_one_group_count_as_one_scan():
    """Five copies of every scan: drawn one by one they fake a precise estimate, drawn by group not."""
    labels, scores = skilled_scores(60)
    alone = metrics.bootstrap_intervals(labels, scores)
    copies = np.repeat(labels, 5), np.repeat(scores, 5)
    by_scan = metrics.bootstrap_intervals(*copies)
    by_group = metrics.bootstrap_intervals(*copies, groups=np.repeat(np.arange(60).astype(str), 5))
    width = {name: r["accuracy"][1] - r["accuracy"][0]
             for name, r in (("alone", alone), ("scan", by_scan), ("group", by_group))}
    assert by_group["clusters"] == 60
    assert width["scan"] < 0.6 * width["alone"]
    assert width["group"] == pytest.approx(width["alone"], rel=0.25)


def test_intervals_need_both_classes_where_the_metric_does():
    intervals = metrics.bootstrap_intervals([0, 0, 0, 0], [0.1, 0.2, 0.7, 0.3])
    assert intervals["sensitivity"] is None and intervals["roc_auc"] is None
    assert intervals["specificity"] is not None


@pytest.mark.parametrize("args, message", [
    (([], []), "at least one scan"),
    (([0, 1], [0.5]), "one probability per label"),
    (([0, 1], [0.2, 0.8], ["a"]), "one group per scan"),
])
def test_bootstrap_refuses_inputs_that_do_not_match(args, message):
    with pytest.raises(ValueError, match=message):
        metrics.bootstrap_intervals(*args)


def test_errors_are_gathered_by_group_most_first():
    labels = [0, 0, 0, 1, 1, 1, 0, 1]
    probability = [0.9, 0.8, 0.1, 0.2, 0.3, 0.7, 0.4, 0.5]  # 0.5 is called tumor: right
    groups = ["a", "a", "a", "b", "b", "b", "c", "d"]
    paths = [f"s{i}.jpg" for i in range(8)]
    errors = metrics.errors_by_group(labels, probability, groups, paths)
    assert (errors["scans"], errors["groups"], errors["of_groups"]) == (4, 2, 4)
    assert errors["by_group"] == [
        {"group": "a", "wrong": 2, "scans": 3, "label": "no tumor", "paths": ["s0.jpg", "s1.jpg"]},
        {"group": "b", "wrong": 2, "scans": 3, "label": "tumor", "paths": ["s3.jpg", "s4.jpg"]},
    ]
    mixed = metrics.errors_by_group([0, 1], [0.9, 0.9], ["g", "g"], ["x", "y"])
    assert mixed["by_group"][0]["label"] == "mixed" and mixed["by_group"][0]["paths"] == ["x"]
    assert metrics.errors_by_group([1, 0], [0.9, 0.1], ["g", "h"], ["x", "y"]) == {
        "scans": 0, "groups": 0, "of_groups": 2, "by_group": []}
    with pytest.raises(ValueError, match="one probability, group and path per label"):
        metrics.errors_by_group([0, 1], [0.9, 0.1], ["g"], ["x", "y"])


def test_sensitivity_by_size_bins_the_tumor_share_of_the_image():
    shares = [0.001, 0.002, 0.005, 0.02, 0.03, 0.5]
    probability = [0.1, 0.5, 0.9, 0.8, 0.49, 0.7]  # 0.5 is called tumor
    bins = metrics.sensitivity_by_size(shares, probability)
    assert bins == [
        {"from": 0.0, "to": 0.0025, "n": 2, "sensitivity": 0.5},
        {"from": 0.0025, "to": 0.01, "n": 1, "sensitivity": 1.0},
        {"from": 0.01, "to": 0.04, "n": 2, "sensitivity": 0.5},
        {"from": 0.04, "to": None, "n": 1, "sensitivity": 1.0},
    ]
    assert sum(b["n"] for b in metrics.sensitivity_by_size([0.0025, 0.01, 0.04, 1.0], [0.9] * 4)) == 4
    assert metrics.sensitivity_by_size([], [])[0] == {"from": 0.0, "to": 0.0025, "n": 0, "sensitivity": None}
    with pytest.raises(ValueError, match="one probability per tumor share"):
        metrics.sensitivity_by_size([0.1], [0.9, 0.1])
