"""In-distribution statistics: fitted on TRAIN, limited on VALIDATION, and what the shipped model calls foreign."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.explain.analysis import Analyzer
from pipeline.explain.distribution import Distribution, fit_distribution
from pipeline.io.scans import read_scan
from pipeline.model.spec import load_spec
from tests.builders.phantoms import PHANTOMS

ROOT = Path(__file__).resolve().parents[3]
RNG = np.random.default_rng(3)


def gaussian(n: int, width: int = 12, shift: float = 0.0) -> np.ndarray:
    scales = np.linspace(0.5, 3, width)  # unequal spreads: the covariance must matter
    return RNG.normal(shift, 1, (n, width)) * scales


def test_the_limit_keeps_its_share_of_validation_and_far_vectors_score_above_one():
    distribution = fit_distribution(gaussian(2000), validation := gaussian(1000))
    inside = (distribution.scores(validation) <= 1).mean()
    assert 0.985 <= inside <= 0.995  # LIMIT_QUANTILE = 0.99
    assert (distribution.scores(gaussian(200, shift=6.0)) > 1).all()
    assert (distribution.scores(gaussian(200)) <= 1).mean() > 0.95


def test_distances_follow_the_covariance_not_the_raw_scale():
    distribution = fit_distribution(gaussian(4000), gaussian(1000))
    narrow, wide = np.zeros((1, 12)), np.zeros((1, 12))
    narrow[0, 0], wide[0, -1] = 3 * 0.5, 3 * 3  # three spreads out on each axis
    np.testing.assert_allclose(distribution.distances(narrow), distribution.distances(wide), rtol=0.1)


def test_the_statistics_round_trip_byte_for_byte():
    distribution = fit_distribution(gaussian(300), gaussian(100))
    data = distribution.to_bytes()
    again = Distribution.from_bytes(data)
    assert again.to_bytes() == data and again.limit == distribution.limit
    vectors = gaussian(5)
    np.testing.assert_array_equal(again.scores(vectors), distribution.scores(vectors))


@pytest.mark.parametrize(("train", "validation"), [(np.zeros((1, 4)), np.zeros((3, 4))),
                                                     (np.zeros((5, 4)), np.zeros((3, 5)))])
def test_too_few_or_mismatched_vectors_are_refused(train, validation):
    with pytest.raises(ValueError, match="TRAIN and"):
        fit_distribution(train, validation)


@pytest.fixture(scope="module")
def default_analyzer() -> Analyzer:
    spec = load_spec(ROOT / "models" / "default")
    assert spec.distribution_path is not None, "the shipped model must ship its distribution"
    return Analyzer(spec)


@pytest.mark.parametrize("phantom", sorted(PHANTOMS))
def test_the_shipped_model_calls_non_brain_images_outside_its_experience(default_analyzer, phantom):
    result = default_analyzer.analyze(default_analyzer.prepare(PHANTOMS[phantom]())[None])
    assert result.ood_score[0] > 1.2, result.ood_score  # well beyond the limit, not at its edge


def test_the_shipped_model_finds_the_brain_samples_inside_its_experience(default_analyzer):
    paths = sorted((ROOT / "samples").glob("*/*.*"))
    pixels = [read_scan(p)[0].pixels for p in paths if p.suffix in (".jpg", ".dcm")]
    result = default_analyzer.analyze(np.stack([default_analyzer.prepare(p) for p in pixels]))
    assert len(pixels) >= 9 and (result.ood_score < 1).all(), result.ood_score
