"""Series aggregations, runs and results against sequences worked out by hand."""

import json

import numpy as np
import pytest

from pipeline.evaluate import series

SPURIOUS = [0.1, 0.1, 0.95, 0.1, 0.1, 0.1, 0.1]  # one confident slice alone
RUN_OF_THREE = [0.1, 0.1, 0.7, 0.8, 0.75, 0.1, 0.1]  # three moderately confident neighbours


@pytest.mark.parametrize(
    "name, k, probabilities, expected",
    [
        ("max", 3, SPURIOUS, 0.95),
        ("max", 3, RUN_OF_THREE, 0.8),
        ("top-k-mean", 3, SPURIOUS, (0.95 + 0.1 + 0.1) / 3),
        ("top-k-mean", 3, RUN_OF_THREE, 0.75),
        ("top-k-mean", 2, RUN_OF_THREE, 0.775),
        ("top-k-mean", 5, [0.2, 0.6], 0.4),  # shorter than k: the mean of all slices
        ("noisy-or", 3, [0.5, 0.5], 0.75),
        ("noisy-or", 3, [0.1] * 10, 1 - 0.9 ** 10),  # grows with length alone
        ("noisy-or-top-k", 3, [0.1] * 10, 1 - 0.9 ** 3),
        ("noisy-or-top-k", 2, [0.5, 0.2, 0.5], 0.75),
        ("consecutive", 3, SPURIOUS, 0.1),
        ("consecutive", 3, RUN_OF_THREE, 0.7),
        ("consecutive", 2, [0.9, 0.1, 0.9, 0.6, 0.1], 0.6),  # (0.9, 0.6) is the best pair
        ("consecutive", 5, [0.8, 0.6], 0.6),  # shorter than k: one window
    ],
)
def test_aggregations(name, k, probabilities, expected):
    assert series.aggregate(probabilities, name, k) == pytest.approx(expected)


def test_a_single_spurious_slice_passes_max_but_not_the_run_rules():
    for name in ("top-k-mean", "consecutive"):
        assert series.summarise_series(SPURIOUS, 0.5, name).tumor is False
        assert series.summarise_series(RUN_OF_THREE, 0.5, name).tumor is True
    assert series.summarise_series(SPURIOUS, 0.5, "max").tumor is True


def test_order_matters_only_to_consecutive():
    scattered = [0.8, 0.1, 0.8, 0.1, 0.8]
    assert series.aggregate(scattered, "consecutive", 3) == pytest.approx(0.1)
    assert series.aggregate(sorted(scattered), "consecutive", 3) == pytest.approx(0.8)
    for name in ("max", "top-k-mean", "noisy-or", "noisy-or-top-k"):
        assert series.aggregate(scattered, name) == pytest.approx(series.aggregate(sorted(scattered), name))


def test_every_registered_aggregation_stays_within_zero_and_one():
    rng = np.random.default_rng(0)
    for values in ([0.0], [1.0], rng.uniform(0, 1, 40), np.ones(50), np.zeros(50)):
        for name in series.AGGREGATIONS:
            assert 0.0 <= series.aggregate(values, name, 3) <= 1.0


@pytest.mark.parametrize("bad", [[], np.zeros((0,))])
def test_an_empty_series_is_refused_with_a_reason(bad):
    with pytest.raises(ValueError, match="empty"):
        series.aggregate(bad, "max")
    with pytest.raises(ValueError, match="empty"):
        series.summarise_series(bad)


@pytest.mark.parametrize("bad, message", [([0.2, float("nan")], r"\[0, 1\]"), ([0.2, 1.5], r"\[0, 1\]"),
                                          ([-0.1], r"\[0, 1\]"), ([[0.2, 0.3]], "one sequence")])
def test_invalid_probabilities_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        series.summarise_series(bad)


def test_unknown_names_bad_k_and_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="top-k-mean"):  # the message lists the choices
        series.aggregate([0.5], "mean")
    for k in (0, -1, 2.5):
        with pytest.raises(ValueError, match="k must"):
            series.aggregate([0.5], "top-k-mean", k)
    for threshold in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="threshold"):
            series.summarise_series([0.5], threshold)


@pytest.mark.parametrize(
    "probabilities, threshold, runs",
    [
        ([0.1, 0.2, 0.3], 0.5, ()),
        ([0.9, 0.9, 0.9], 0.5, ((0, 2),)),
        ([0.6, 0.1, 0.7, 0.8, 0.1, 0.9], 0.5, ((0, 0), (2, 3), (5, 5))),  # runs at both ends
        ([0.5, 0.49, 0.5], 0.5, ((0, 0), (2, 2))),  # at the threshold counts as tumor
        ([0.6, 0.7, 0.8], 0.75, ((2, 2),)),
    ],
)
def test_tumor_runs(probabilities, threshold, runs):
    assert series.tumor_runs(probabilities, threshold) == runs


def test_longest_run_breaks_ties_by_peak_then_position():
    values = [0.6, 0.6, 0.1, 0.9, 0.6, 0.1, 0.7, 0.7, 0.7]
    assert series.longest_run(((0, 1), (3, 4), (6, 8)), values) == (6, 8)
    assert series.longest_run(((0, 1), (3, 4)), values) == (3, 4)  # same length, higher peak
    assert series.longest_run(((0, 1), (3, 4)), [0.6, 0.6, 0.1, 0.6, 0.6]) == (0, 1)
    assert series.longest_run((), values) is None


def test_summarise_series_reports_slices_and_ranges():
    values = [0.1, 0.55, 0.1, 0.6, 0.9, 0.7, 0.2]
    result = series.summarise_series(values, threshold=0.5, name="top-k-mean", k=3)
    assert result.probability == pytest.approx((0.9 + 0.7 + 0.6) / 3)
    assert result.tumor is True
    assert result.strongest_slice == 4
    assert result.runs == ((1, 1), (3, 5))
    assert result.longest_run == (3, 5)
    assert result.slices == 7
    assert json.loads(json.dumps(result.to_json()))["longest_run"] == [3, 5]


def test_a_clean_series_has_no_runs_and_is_called_clean():
    result = series.summarise_series([0.1, 0.3, 0.2], name="max")
    assert (result.tumor, result.runs, result.longest_run, result.strongest_slice) == (False, (), None, 1)
    assert result.to_json()["longest_run"] is None


def test_the_strongest_slice_is_the_first_of_equal_peaks():
    assert series.summarise_series([0.2, 0.8, 0.8]).strongest_slice == 1


def test_the_result_is_frozen():
    result = series.summarise_series([0.9])
    with pytest.raises(AttributeError):
        result.tumor = False
