"""PNG bytes of rendered images: lossless, deterministic, readable by Pillow and libpng."""

from __future__ import annotations

import io

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from pipeline.io.png import png_bytes


def png_chunks(data: bytes) -> list[bytes]:
    """Return the chunk types of a PNG in order."""
    kinds, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at:at + 4], "big")
        kinds.append(data[at + 4:at + 8])
        at += 12 + length
    return kinds


@pytest.mark.parametrize("shape, mode", [((7, 5), "L"), ((7, 5, 3), "RGB"), ((7, 5, 4), "RGBA"),
                                         ((1, 300, 3), "RGB"), ((300, 1, 3), "RGB")])
def test_png_bytes_round_trip_through_pillow_and_libpng(shape, mode):
    image = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    data = png_bytes(image)
    with Image.open(io.BytesIO(data)) as decoded:
        assert decoded.mode == mode and decoded.size == (shape[1], shape[0])
        np.testing.assert_array_equal(np.asarray(decoded), image)
    np.testing.assert_array_equal(imagecodecs.png_decode(data).reshape(shape), image)
    # nothing that varies between runs; fdEC is fpng's constant marker on RGB images
    assert png_chunks(data) == ([b"IHDR", b"fdEC", b"IDAT", b"IEND"] if mode == "RGB" else [b"IHDR", b"IDAT", b"IEND"])
    assert png_bytes(image.copy()) == data


@pytest.mark.parametrize("shape", [(1, 65535, 3), (1, 65536, 3), (70000, 1, 3)])
def test_png_bytes_keeps_sides_beyond_what_fpng_can_write(shape):
    image = np.random.default_rng(8).integers(0, 256, shape, dtype=np.uint8)
    with Image.open(io.BytesIO(png_bytes(image))) as decoded:
        np.testing.assert_array_equal(np.asarray(decoded), image)


def test_png_bytes_of_a_strided_view_holds_the_view(tmp_path):
    image = np.random.default_rng(6).integers(0, 256, (40, 60, 3), dtype=np.uint8)[::3, 1::2]
    with Image.open(io.BytesIO(png_bytes(image))) as decoded:
        np.testing.assert_array_equal(np.asarray(decoded), image)


@pytest.mark.parametrize("image", [np.zeros((4, 4, 3), np.float32), np.zeros((4, 4, 2), np.uint8),
                                   np.zeros((4,), np.uint8)])
def test_png_bytes_refuses_arrays_it_cannot_store(image):
    with pytest.raises(ValueError, match="a PNG needs a uint8 array"):
        png_bytes(image)
