"""The operating point chosen on VALIDATION: the highest threshold that reaches the target."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluate.operating_point import choose_threshold

LABELS = [1, 1, 1, 1, 0, 0, 0, 0]
PROBABILITY = [0.9, 0.8, 0.4, 0.2, 0.7, 0.3, 0.1, 0.05]


@pytest.mark.parametrize(("target", "threshold", "sensitivity", "specificity"), [
    (0.5, 0.8, 0.5, 1.0),    # two of four tumors are enough: keep every clean scan clean
    (0.75, 0.4, 0.75, 0.75),  # the third tumor costs the 0.7 clean scan
    (1.0, 0.2, 1.0, 0.5),
    (0.74, 0.4, 0.75, 0.75),  # 0.74 of four tumors still needs three
])
def test_the_highest_threshold_that_reaches_the_target(target, threshold, sensitivity, specificity):
    point = choose_threshold(LABELS, PROBABILITY, target)
    assert point["threshold"] == pytest.approx(threshold)
    assert (point["sensitivity"], point["specificity"]) == (sensitivity, specificity)
    assert point["sensitivity"] >= target and (point["tumor_scans"], point["scans"]) == (4, 8)


def test_the_threshold_stays_strictly_inside_zero_and_one():
    assert choose_threshold([1, 0], [1.0, 0.0], 1.0)["threshold"] < 1
    point = choose_threshold([1, 1, 0], [0.0, 0.9, 0.5], 1.0)
    assert 0 < point["threshold"] <= 1e-6 and point["sensitivity"] == 0.5  # a p = 0 tumor stays missed


def test_nothing_to_choose_on_or_a_target_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="no tumor scan"):
        choose_threshold([0, 0], [0.1, 0.2], 0.9)
    with pytest.raises(ValueError, match="target sensitivity"):
        choose_threshold(LABELS, PROBABILITY, 1.5)
    assert np.isfinite(choose_threshold(LABELS, PROBABILITY, 0.01)["threshold"])
