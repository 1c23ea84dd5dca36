"""Overlays, thumbnails and heatmap files of one analysed scan."""

from __future__ import annotations

import sys
import zipfile

import imagecodecs
import numpy as np
import pytest
from PIL import Image

from pipeline.explain.overlay import write_outputs
from pipeline.io.overlays import blend_table, grayscale, overlay_png, render_overlay, render_thumbnail
from pipeline.io.heatmaps import colormap_lut, load_heatmap, peak, upsample
from pipeline.io.npz import ZIP_DATE
from pipeline.io.png import jpeg_bytes


def blob(size: tuple[int, int], centre: tuple[float, float], sigma: float = 2.0) -> np.ndarray:
    """Return a (height, width) Gaussian bump in [0, 1] peaking at centre (x, y)."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    return np.exp(-((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2 * sigma**2)).astype(np.float32)


def scan(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Return an RGB uint8 scan whose channels differ, so gray conversion matters."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("width, height, centre", [(630, 400, (30, 12)), (400, 630, (5, 40)),
                                                   (1920, 1080, (44, 3))])
def test_peak_of_a_blob_maps_to_original_coordinates(tmp_path, width, height, centre):
    cam = blob((48, 48), centre)
    result = write_outputs(tmp_path / "scan", scan(width, height), cam)
    expected = ((centre[0] + 0.5) * width / 48 - 0.5, (centre[1] + 0.5) * height / 48 - 0.5)
    assert abs(result.peak[0] - expected[0]) <= 1 and abs(result.peak[1] - expected[1]) <= 1


def test_outputs_have_the_expected_sizes_and_contents(tmp_path):
    pixels, cam = scan(630, 400), blob((48, 48), (20, 20), sigma=6)
    result = write_outputs(tmp_path / "deep" / "folder" / "y12", pixels, cam, overlay=True)
    assert [p.name for p in (result.overlay, result.thumbnail, result.heatmap)] == [
        "y12.overlay.png", "y12.thumb.jpg", "y12.heatmap.npz"]
    with Image.open(result.overlay) as overlay:
        assert overlay.size == (630, 400) and overlay.mode == "RGB"
    with Image.open(result.thumbnail) as thumb:
        assert thumb.size == (192, 122) and thumb.mode == "RGB"
    with np.load(result.heatmap) as saved:
        assert saved["cam"].dtype == np.float32 and saved["cam"].shape == (48, 48)
        np.testing.assert_array_equal(saved["cam"], cam)  # the raw map, not an upsampled one
        assert saved["size"].tolist() == [630, 400]
    with zipfile.ZipFile(result.heatmap) as archive:
        assert archive.testzip() is None  # every entry's CRC checks out
        assert {i.compress_type for i in archive.infolist()} == {zipfile.ZIP_DEFLATED}
        assert sum(i.compress_size for i in archive.infolist()) < sum(i.file_size for i in archive.infolist())
    heatmap = load_heatmap(result.heatmap)
    assert heatmap.dtype == np.float32 and heatmap.shape == (400, 630)
    np.testing.assert_array_equal(heatmap, upsample(cam, (630, 400)))
    assert peak(heatmap) == result.peak


@pytest.mark.parametrize("size, thumb", [((400, 630), (122, 192)), ((150, 150), (192, 192)),
                                         ((1920, 1080), (192, 108))])
def test_thumbnail_longest_side_is_192_with_aspect_kept(tmp_path, size, thumb):
    result = write_outputs(tmp_path / "s", scan(*size), np.zeros((7, 7), np.float32))
    with Image.open(result.thumbnail) as image:
        assert image.size == thumb


def test_thumbnail_is_the_map_blended_over_the_resized_scan(tmp_path):
    pixels, cam = scan(630, 400, seed=2), blob((48, 48), (36, 12), sigma=4)
    gray = np.asarray(Image.fromarray(pixels).convert("L"))
    cold = np.asarray(render_thumbnail(gray, np.zeros((48, 48), np.float32)))
    resized = np.asarray(Image.fromarray(gray).resize((192, 122), Image.Resampling.BILINEAR, reducing_gap=2.0))
    np.testing.assert_array_equal(cold, np.repeat(resized[..., None], 3, axis=2))
    hot = np.asarray(render_thumbnail(gray, cam)).astype(int)
    changed = np.abs(hot - cold).sum(axis=2)
    y, x = np.unravel_index(np.argmax(changed), changed.shape)
    assert abs(x - (36.5 * 192 / 48)) <= 4 and abs(y - (12.5 * 122 / 48)) <= 4  # where the blob is
    result = write_outputs(tmp_path / "s", pixels, cam)
    assert result.thumbnail.read_bytes() == jpeg_bytes(render_thumbnail(gray, cam))


def test_all_zero_map_leaves_the_grayscale_scan(tmp_path):
    pixels = scan(120, 90)
    gray = np.asarray(Image.fromarray(pixels).convert("L"))
    overlay = render_overlay(pixels, np.zeros((90, 120)))
    assert np.array_equal(overlay, np.repeat(gray[..., None], 3, axis=2))
    result = write_outputs(tmp_path / "zero", pixels, np.zeros((48, 48), np.float32), overlay=True)
    with Image.open(result.overlay) as written:
        assert np.array_equal(np.asarray(written), overlay)


@pytest.mark.parametrize("width, height", [(630, 400), (33, 517), (1, 1)])
def test_overlay_png_holds_exactly_the_rendered_pixels(tmp_path, width, height):
    pixels, cam = scan(width, height, seed=3), blob((48, 48), (20, 28), sigma=8)
    result = write_outputs(tmp_path / "s", pixels, cam, overlay=True)
    expected = render_overlay(pixels, upsample(cam, (width, height)))
    with Image.open(result.overlay) as written:
        assert written.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(written), expected)
    # libpng, which checks every chunk's CRC and the deflate stream's checksum, reads the same
    np.testing.assert_array_equal(imagecodecs.png_decode(result.overlay.read_bytes()), expected)


def test_a_gray_scan_and_its_colour_copy_give_the_same_outputs(tmp_path):
    gray = scan(57, 43)[..., 0]
    cam = blob((7, 7), (2, 5))
    one = write_outputs(tmp_path / "gray", gray, cam, overlay=True)
    other = write_outputs(tmp_path / "rgb", np.dstack([gray] * 3), cam, overlay=True)
    for kind in ("overlay", "thumbnail", "heatmap"):
        assert getattr(one, kind).read_bytes() == getattr(other, kind).read_bytes()


def test_overlay_pixels_are_the_blend_table_entries():
    rng = np.random.default_rng(6)
    gray, heat = rng.integers(0, 256, (40, 50), dtype=np.uint8), rng.random((40, 50))
    levels = (heat * 255 + 0.5).astype(np.intp)
    expected = blend_table(0.4, "inferno")[gray.astype(np.intp) * 256 + levels]
    np.testing.assert_array_equal(render_overlay(gray, heat, alpha=0.4, cmap="inferno"), expected)


def test_hot_pixels_take_the_colormap_at_alpha():
    gray = np.full((1, 2), 100, np.uint8)
    overlay = render_overlay(gray, np.array([[0.0, 1.0]]), alpha=0.4, cmap="inferno")
    hottest = colormap_lut("inferno")[255].astype(float)
    np.testing.assert_allclose(overlay[0, 1], 100 * 0.6 + hottest * 0.4, atol=1)
    assert tuple(overlay[0, 0]) == (100, 100, 100)


def test_nan_and_out_of_range_maps_give_clean_outputs(tmp_path):
    cam = np.full((48, 48), np.nan, np.float32)
    cam[10, 10], cam[20, 20], cam[30, 30] = 1.0, np.inf, -5.0
    result = write_outputs(tmp_path / "odd", scan(64, 64), cam)
    with np.load(result.heatmap) as saved:
        assert np.isfinite(saved["cam"]).all()
        assert saved["cam"].min() >= 0 and saved["cam"].max() <= 1
    assert np.isfinite(load_heatmap(result.heatmap)).all()


def test_outputs_are_byte_identical_over_two_runs(tmp_path):
    pixels, cam = scan(300, 200, seed=4), blob((48, 48), (12, 30), sigma=5)
    first = write_outputs(tmp_path / "a" / "s", pixels, cam, overlay=True)
    second = write_outputs(tmp_path / "b" / "s", pixels, cam, overlay=True)
    for a, b in zip((first.overlay, first.thumbnail, first.heatmap),
                    (second.overlay, second.thumbnail, second.heatmap)):
        assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(first.heatmap) as archive:
        assert [i.date_time for i in archive.infolist()] == [ZIP_DATE, ZIP_DATE]


def test_rewriting_replaces_the_files_and_leaves_no_partials(tmp_path):
    write_outputs(tmp_path / "s", scan(50, 40), np.zeros((7, 7), np.float32), overlay=True)
    result = write_outputs(tmp_path / "s", scan(50, 40), np.ones((7, 7), np.float32), overlay=True)
    assert load_heatmap(result.heatmap).min() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.heatmap.npz", "s.overlay.png", "s.thumb.jpg"]


@pytest.mark.parametrize("pixels", [np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 2), np.uint8),
                                    np.zeros((10,), np.uint8)])
def test_bad_scans_are_refused_in_words(pixels):
    with pytest.raises(ValueError, match="a scan must be a uint8 array"):
        grayscale(pixels)


def test_bad_maps_and_options_are_refused_in_words(tmp_path):
    with pytest.raises(ValueError, match="non-empty 2-D"):
        write_outputs(tmp_path / "s", scan(10, 10), np.zeros((1, 7, 7)))
    with pytest.raises(ValueError, match="differ in size"):
        render_overlay(scan(10, 10), np.zeros((9, 10)))
    with pytest.raises(ValueError, match="alpha must lie between 0 and 1"):
        render_overlay(scan(10, 10), np.zeros((10, 10)), alpha=1.5)
    with pytest.raises(ValueError, match="unknown colormap 'jet'"):
        render_overlay(scan(10, 10), np.zeros((10, 10)), cmap="jet")
    assert not list(tmp_path.iterdir())


def test_gray_rgba_and_rgb_scans_are_all_accepted(tmp_path):
    gray = np.random.default_rng(2).integers(0, 256, (30, 40), dtype=np.uint8)
    rgb = np.repeat(gray[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full((30, 40, 1), 255, np.uint8)], axis=2)
    heat = blob((40, 30), (5, 5))
    assert np.array_equal(render_overlay(gray, heat), render_overlay(rgb, heat))
    assert np.array_equal(render_overlay(rgba, heat), render_overlay(rgb, heat))


def test_by_default_the_overlay_is_left_to_be_rendered_on_demand(tmp_path):
    pixels, cam = scan(120, 90, seed=5), blob((48, 48), (30, 10), sigma=5)
    lazy = write_outputs(tmp_path / "lazy" / "s", pixels, cam)
    eager = write_outputs(tmp_path / "eager" / "s", pixels, cam, overlay=True)
    assert not lazy.overlay_written and not lazy.overlay.exists() and lazy.overlay.name == "s.overlay.png"
    assert sorted(p.name for p in lazy.thumbnail.parent.iterdir()) == ["s.heatmap.npz", "s.thumb.jpg"]
    assert eager.overlay_written and lazy.peak == eager.peak
    with np.load(lazy.heatmap) as stored:  # rendered later from what was stored: the eager bytes
        assert overlay_png(pixels, stored["cam"]) == eager.overlay.read_bytes()


def test_importing_overlay_loads_neither_tensorflow_nor_matplotlib():
    import subprocess

    code = "import sys, pipeline.explain.overlay; print(sorted(m for m in ('tensorflow', 'matplotlib') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_read_only_scans_are_accepted(tmp_path):
    """Scans come from read_scan as read-only arrays; writing outputs must not modify them."""
    pixels = scan(64, 48)
    pixels.setflags(write=False)
    result = write_outputs(tmp_path / "ro", pixels, blob((48, 48), (10, 10)), overlay=True)
    assert result.overlay.is_file() and not pixels.flags.writeable
