"""Heatmap files and their resampling: the map is upsampled exactly as the model's input resize."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipeline.io.heatmaps import peak, upsample


@pytest.mark.parametrize("cam_shape, size", [((48, 48), (630, 400)), ((7, 7), (224, 224)),
                                             ((14, 10), (33, 517)), ((48, 48), (20, 12))])
def test_upsample_gives_the_requested_size_and_keeps_the_range(cam_shape, size):
    cam = np.random.default_rng(1).random(cam_shape).astype(np.float32)
    out = upsample(cam, size)
    assert out.shape == (size[1], size[0]) and out.dtype == np.float32
    assert cam.min() - 1e-6 <= out.min() and out.max() <= cam.max() + 1e-6


def test_upsample_is_bilinear_with_centres_aligned():
    cam = np.array([[0.0, 1.0]], np.float32)
    out = upsample(cam, (4, 1))[0]
    np.testing.assert_allclose(out, [0.0, 0.25, 0.75, 1.0], atol=1e-6)


@pytest.mark.parametrize("cam_shape, size", [((20, 20), (630, 520)), ((28, 28), (211, 256)),
                                             ((7, 13), (1920, 1583)), ((5, 5), (3, 2)), ((1, 1), (9, 4))])
def test_upsample_matches_pillows_bilinear_resize(cam_shape, size):
    cam = np.random.default_rng(2).random(cam_shape).astype(np.float32)
    reference = np.asarray(Image.fromarray(cam).resize(size, Image.Resampling.BILINEAR))
    np.testing.assert_allclose(upsample(cam, size), reference, atol=1e-6)


def test_peak_is_x_then_y_and_first_on_ties():
    heat = np.zeros((5, 8), np.float32)
    heat[3, 6] = 1.0
    assert peak(heat) == (6, 3)
    heat[1, 7] = 1.0  # same value, earlier in row-major order
    assert peak(heat) == (7, 1)
