"""Preprocessing: a scan becomes the model input its spec describes, gray or colour alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.model.preprocess import prepare_pixels
from pipeline.model.spec import load_spec, write_spec


@pytest.fixture
def spec_for(tmp_path: Path):
    """Return ``make(**fields)``: a spec over a dummy file, for preprocessing tests."""
    (tmp_path / "model.keras").write_bytes(b"unused")

    def make(**fields):
        return load_spec(write_spec({"name": "p", "file": "model.keras", "input_size": [4, 2],
                                     "color_mode": "rgb", "preprocessing": "unit",
                                     "class_names": ["a", "b"], "positive_classes": ["b"],
                                     "output": "logits", **fields}, tmp_path))

    return make


PIXEL = np.array([[[10, 120, 250]]], np.uint8)  # one RGB pixel, resized to a 4 x 2 constant image


@pytest.mark.parametrize(
    ("fields", "expected"),
    [({"preprocessing": "unit"}, [10 / 255, 120 / 255, 250 / 255]),
     ({"preprocessing": "symmetric"}, [10 / 127.5 - 1, 120 / 127.5 - 1, 250 / 127.5 - 1]),
     ({"preprocessing": "caffe"}, [250 - 103.939, 120 - 116.779, 10 - 123.68]),
     ({"preprocessing": "torch"}, [(10 / 255 - 0.485) / 0.229, (120 / 255 - 0.456) / 0.224,
                                   (250 / 255 - 0.406) / 0.225]),
     ({"preprocessing": "none"}, [10, 120, 250]),
     ({"color_mode": "grayscale"}, [(0.299 * 10 + 0.587 * 120 + 0.114 * 250) / 255])],
)
def test_prepare_applies_colour_mode_and_preprocessing(spec_for, fields, expected) -> None:
    prepared = prepare_pixels(PIXEL, spec_for(**fields))
    assert prepared.dtype == np.float32
    assert prepared.shape == (2, 4, len(expected))  # input_size is (width, height)
    np.testing.assert_allclose(prepared[1, 3], expected, atol=2e-3)


def test_prepare_resizes_bilinearly_and_accepts_gray_arrays(spec_for) -> None:
    ramp = np.tile(np.array([0, 255], np.uint8), (2, 1))  # 2 x 2: black left, white right
    prepared = prepare_pixels(ramp, spec_for(preprocessing="none"))
    assert prepared.shape == (2, 4, 3)
    np.testing.assert_allclose(prepared[0, :, 0], [0, 63.75, 191.25, 255], atol=1)


@pytest.mark.parametrize("preprocessing", ["unit", "symmetric", "caffe", "torch", "none"])
@pytest.mark.parametrize("shape", [(37, 53), (1, 1), (2, 9)])
def test_a_gray_scan_gives_the_rgb_model_what_its_colour_copy_gives(spec_for, preprocessing, shape) -> None:
    # read_scan keeps a gray image stored as colour as one channel; the model must not see a difference
    gray = np.random.default_rng(3).integers(0, 256, shape, dtype=np.uint8)
    spec = spec_for(preprocessing=preprocessing)
    np.testing.assert_array_equal(prepare_pixels(gray, spec), prepare_pixels(np.dstack([gray] * 3), spec))


@pytest.mark.parametrize("pixels", [np.zeros((4, 4), np.float32), np.zeros((4,), np.uint8),
                                    np.zeros((0, 4, 3), np.uint8)])
def test_prepare_refuses_what_is_not_an_8_bit_image(spec_for, pixels) -> None:
    with pytest.raises(ValueError, match="expected 8-bit image pixels"):
        prepare_pixels(pixels, spec_for())
