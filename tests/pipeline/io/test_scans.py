"""Reading plain image files, and refusing bad input with plain words."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from pipeline.io.scans import ScanError, is_scan_candidate, read_scan, sha256_file
from tests.builders.scans import PHI, make_dicom, synthetic_slice, write_bad_scans, write_good_scans

ROOT = Path(__file__).resolve().parents[3]
BR35H = ROOT.parent / "shared" / "data" / "br35h"
SAMPLES = ROOT / "samples"
RNG = np.random.default_rng(7)
GRAY = RNG.integers(0, 256, (30, 40), dtype=np.uint8)
RGB = RNG.integers(0, 256, (30, 40, 3), dtype=np.uint8)
SMOOTH = synthetic_slice(np.random.default_rng(3), (40, 30))

BAD_WORDS = {
    "empty": "the file is empty",
    "truncated_jpeg": "truncated JPEG",
    "truncated_png": "truncated PNG",
    "text_jpg": "the file holds text",
    "random_png": "no format tumorlens reads",
    "bomb_png": "image too large: 900000000 pixels, the limit is 100000000",
    "large_png": "image too large: 120000000 pixels, the limit is 100000000",
    "gif_png": "the file is a GIF image",
    "corrupt_header_jpeg": "damaged JPEG",
    "damaged_png": "damaged PNG",
    "html_dcm": "text (a web page)",
    "dicom_no_pixels": "DICOM file without pixel data",
    "dicom_truncated": "truncated DICOM",
    "dicom_short_pixels": "truncated DICOM: the image data holds 1920 bytes where 3840 are needed",
    "dicom_no_decoder": "no decoder for transfer syntax MPEG2 Main Profile / Main Level "
                        "(1.2.840.10008.1.2.4.100)",
    "unreadable": "permission denied" if os.geteuid() else "the path is a named pipe",
    "directory": "the path is a folder",
    "loop": "the path is a folder",
    "self_link": "link loop",
    "broken_link": "broken link",
}


def rgb_of(gray: np.ndarray) -> np.ndarray:
    return np.stack([gray, gray, gray], axis=-1)


def saved(path: Path, image: Image.Image, **options) -> Path:
    image.save(path, **options)
    return path


def read_one(path: Path):
    scans = read_scan(path)
    assert len(scans) == 1 and scans[0].frame is None
    pixels = scans[0].pixels
    assert pixels.dtype == np.uint8 and (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3))
    return scans[0]


def assert_plain_sentence(message: str) -> None:
    assert message and "\n" not in message and len(message) < 250
    assert not re.search(r"Traceback|[A-Za-z]+(Error|Exception)\b|errno|\[Err", message), message


def composited_on_black(image: Image.Image) -> np.ndarray:
    black = Image.new("RGBA", image.size, (0, 0, 0, 255))
    return np.asarray(Image.alpha_composite(black, image.convert("RGBA")).convert("RGB"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_bad_scans(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("suffix", ["png", "bmp", "tif"])
@pytest.mark.parametrize("array", [GRAY, RGB], ids=["gray", "rgb"])
def test_lossless_formats_keep_every_pixel(tmp_path, suffix, array):
    scan = read_one(saved(tmp_path / f"scan.{suffix}", Image.fromarray(array)))
    np.testing.assert_array_equal(scan.pixels, array)  # gray stays one channel, colour stays RGB


# Lossless WebP and JPEG 2000, as Pillow writes them (WebP stores gray as three equal channels).
LOSSLESS_OPTIONS = {"webp": {"lossless": True}, "jp2": {"irreversible": False},
                    "j2k": {"irreversible": False, "no_jp2": True}}


@pytest.mark.parametrize("suffix", sorted(LOSSLESS_OPTIONS))
@pytest.mark.parametrize("array", [GRAY, RGB], ids=["gray", "rgb"])
def test_webp_and_jpeg_2000_read_like_the_others(tmp_path, suffix, array):
    scan = read_one(saved(tmp_path / f"scan.{suffix}", Image.fromarray(array), **LOSSLESS_OPTIONS[suffix]))
    np.testing.assert_array_equal(scan.pixels, array)
    assert scan.info["format"] == ("WebP" if suffix == "webp" else "JPEG 2000")


def test_16_bit_jpeg_2000_spans_the_8_bit_range_by_its_own_range(tmp_path):
    values = 1000 + GRAY.astype(np.uint16) * 10
    scan = read_one(saved(tmp_path / "scan16.jp2", Image.fromarray(values), irreversible=False))
    assert scan.info["bits"] == "16" and scan.pixels.min() == 0 and scan.pixels.max() == 255
    assert np.abs(scan.pixels - (values - 1000) * 255.0 / (values.max() - 1000)).max() <= 0.5 + 1e-6


@pytest.mark.parametrize("suffix", sorted(LOSSLESS_OPTIONS))
def test_truncated_webp_and_jpeg_2000_fail_in_words(tmp_path, suffix):
    whole = saved(tmp_path / f"whole.{suffix}", Image.fromarray(RGB), **LOSSLESS_OPTIONS[suffix])
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(whole.read_bytes()[:len(whole.read_bytes()) * 2 // 3])
    with pytest.raises(ScanError) as error:
        read_scan(cut)
    kind = "WebP" if suffix == "webp" else "JPEG 2000"
    assert str(error.value).startswith((f"truncated {kind}", f"damaged {kind}"))
    assert_plain_sentence(str(error.value))


@pytest.mark.parametrize("suffix", ["png", "bmp", "tif"])
def test_colour_files_of_a_gray_image_read_as_one_channel(tmp_path, suffix):
    scan = read_one(saved(tmp_path / f"scan.{suffix}", Image.fromarray(rgb_of(GRAY))))
    np.testing.assert_array_equal(scan.pixels, GRAY)
    assert scan.info["mode"] == "RGB"  # the file's own mode is still what the metadata says
    one_off = rgb_of(GRAY)
    one_off[29, 39, 2] ^= 1  # a single pixel that is not gray keeps the scan in colour
    np.testing.assert_array_equal(read_one(saved(tmp_path / f"off.{suffix}", Image.fromarray(one_off))).pixels,
                                  one_off)


def test_rgb_dicom_of_a_gray_image_reads_as_one_channel(tmp_path):
    scan = read_one(make_dicom(tmp_path / "gray.dcm", rgb_of(GRAY), photometric="RGB"))
    np.testing.assert_array_equal(scan.pixels, GRAY)
    np.testing.assert_array_equal(read_one(make_dicom(tmp_path / "rgb.dcm", RGB, photometric="RGB")).pixels, RGB)


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
def test_jpeg_reads_close_to_what_was_written(tmp_path, mode):
    original = rgb_of(SMOOTH)
    path = saved(tmp_path / "scan.jpg", Image.fromarray(original).convert(mode), quality=95)
    scan = read_one(path)
    # a gray picture saved as a colour (RGB or CMYK) JPEG decodes to three equal channels: one is kept
    assert scan.pixels.shape == (30, 40)
    assert np.abs(scan.pixels.astype(int) - SMOOTH).mean() < 4
    assert scan.info["format"] == "JPEG" and scan.info["mode"] == mode


@pytest.mark.parametrize("suffix", ["png", "tif"])
def test_16_bit_gray_spans_the_8_bit_range_by_its_own_range(tmp_path, suffix):
    values = 1000 + GRAY.astype(np.uint16) * 10  # a 12-bit-like range inside 16 bits
    scan = read_one(saved(tmp_path / f"scan16.{suffix}", Image.fromarray(values)))
    expected = (values - 1000) * 255.0 / (values.max() - 1000)
    assert scan.pixels.shape == GRAY.shape
    assert np.abs(scan.pixels - expected).max() <= 0.5 + 1e-6
    assert scan.pixels.min() == 0 and scan.pixels.max() == 255
    assert scan.info["bits"] == "16"


def test_32_bit_float_tiff_with_nan_scales_and_blanks_the_nan(tmp_path):
    values = GRAY.astype(np.float32) / 7 - 3
    values[0, 0] = np.nan
    scan = read_one(saved(tmp_path / "float.tif", Image.fromarray(values)))
    assert scan.pixels.shape == GRAY.shape and scan.pixels[0, 0] == 0
    assert scan.pixels[1:].max() == 255 and scan.info["mode"] == "F"


@pytest.mark.parametrize("mode, suffix", [("RGBA", "png"), ("LA", "png"), ("RGBA", "tif")])
def test_transparency_is_composited_on_black(tmp_path, mode, suffix):
    rgba = np.dstack([RGB, GRAY])
    path = saved(tmp_path / f"alpha.{suffix}", Image.fromarray(rgba).convert(mode))
    scan = read_one(path)
    expected = composited_on_black(Image.open(path))
    if mode == "LA":  # gray over black: one channel, the three of the composite being equal
        assert scan.pixels.ndim == 2 and (expected[..., 0] == expected[..., 2]).all()
        expected = expected[..., 0]
    assert np.abs(scan.pixels.astype(int) - expected).max() <= 1


def test_palette_png_maps_through_its_palette(tmp_path):
    image = Image.fromarray(RGB).quantize(32)
    scan = read_one(saved(tmp_path / "palette.png", image))
    np.testing.assert_array_equal(scan.pixels, np.asarray(image.convert("RGB")))


def test_palette_with_a_transparent_entry_shows_it_black(tmp_path):
    image = Image.fromarray(RGB).quantize(32)
    scan = read_one(saved(tmp_path / "palette.png", image, transparency=int(np.asarray(image)[0, 0])))
    assert scan.pixels[0, 0].tolist() == [0, 0, 0]
    expected = composited_on_black(Image.open(tmp_path / "palette.png"))
    assert np.abs(scan.pixels.astype(int) - expected).max() <= 1


def test_one_bit_bmp_becomes_black_and_white(tmp_path):
    bits = GRAY > 127
    scan = read_one(saved(tmp_path / "mask.bmp", Image.fromarray(bits)))
    np.testing.assert_array_equal(scan.pixels, bits * 255)
    assert scan.info["bits"] == "1"


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    scan = read_one(saved(tmp_path / "sideways.png", Image.fromarray(GRAY), exif=exif))
    np.testing.assert_array_equal(scan.pixels, np.rot90(GRAY, k=-1))


def test_multi_page_tiff_gives_one_scan_per_page(tmp_path):
    pages = [Image.fromarray(GRAY), Image.fromarray(255 - GRAY), Image.fromarray(GRAY // 2)]
    path = saved(tmp_path / "stack.tif", pages[0], save_all=True, append_images=pages[1:])
    scans = read_scan(path)
    assert [scan.frame for scan in scans] == [0, 1, 2]
    for scan, page in zip(scans, pages):
        np.testing.assert_array_equal(scan.pixels, np.asarray(page))


def test_image_info_names_format_mode_and_bits(tmp_path):
    scan = read_one(saved(tmp_path / "x.png", Image.fromarray(RGB)))
    assert scan.info == {"format": "PNG", "mode": "RGB", "bits": "8"}


def test_corpus_has_at_least_fifteen_kinds_of_bad_input(corpus):
    assert len(corpus.bad) >= 15 and set(corpus.bad) == set(BAD_WORDS)
    assert {"gray16_png", "palette_png", "rgba_png", "cmyk_jpeg", "gray16_tiff", "gray_jpeg",
            "upper_case", "dicom_no_suffix"} <= set(corpus.good)


@pytest.mark.parametrize("kind", sorted(BAD_WORDS))
def test_each_bad_file_fails_with_a_plain_sentence(corpus, kind):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ScanError) as error:
            read_scan(corpus.bad[kind])
    assert BAD_WORDS[kind] in str(error.value)
    assert_plain_sentence(str(error.value))
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


@pytest.mark.parametrize("kind", ["gray16_png", "palette_png", "rgba_png", "cmyk_jpeg", "gray16_tiff",
                                  "gray_jpeg", "upper_case", "png_named_jpg", "rgb_bmp", "exif_rotated",
                                  "dicom_no_suffix"])
def test_each_awkward_but_valid_file_reads(corpus, kind):
    scan = read_one(corpus.good[kind])
    gray = kind in {"gray16_png", "gray16_tiff", "gray_jpeg", "png_named_jpg", "exif_rotated",
                    "dicom_no_suffix"}
    size = (48, 40) if kind == "exif_rotated" else (40, 48)
    assert scan.pixels.shape == (size if gray else (*size, 3))
    assert scan.pixels.std() > 10  # the head-like oval is there, not a blank


def test_reading_from_several_threads_gives_the_same_pixels(tmp_path):
    paths = write_good_scans(tmp_path, 12, size=(48, 40), seed=5)
    alone = [read_scan(path)[0].pixels for path in paths]
    with ThreadPoolExecutor(4) as pool:
        together = [scans[0].pixels for scans in pool.map(read_scan, paths)]
    for one, other in zip(alone, together):
        np.testing.assert_array_equal(one, other)


def test_good_scans_are_distinct_and_of_varied_formats(tmp_path):
    paths = write_good_scans(tmp_path, 6, size=(50, 40))
    assert {path.suffix for path in paths} == {".jpg", ".png", ".bmp", ".tif"}
    assert len({sha256_file(path) for path in paths}) == 6
    assert {read_one(path).info["mode"] for path in paths} == {"L", "RGB"}
    assert all(read_one(path).pixels.shape == {"L": (40, 50), "RGB": (40, 50, 3)}[read_one(path).info["mode"]]
               for path in paths)


def test_real_br35h_scans_read_at_their_original_size():
    if not BR35H.is_dir():
        pytest.skip(f"the Br35H data set is not at {BR35H} (it lives outside the repository)")
    paths = sorted((BR35H / "yes").glob("*.jpg"))[:15] + sorted((BR35H / "no").glob("*.jpg"))[:15]
    for path in paths:
        scan = read_one(path)
        with Image.open(path) as image:
            assert scan.pixels.shape[1::-1] == image.size
            decoded = np.asarray(image.convert("RGB"))
        gray = bool((decoded == decoded[..., :1]).all())  # a gray slice stored as colour, or not
        assert scan.pixels.ndim == (2 if gray else 3)
        np.testing.assert_array_equal(scan.pixels, decoded[..., 0] if gray else decoded)


def test_samples_all_read_and_stay_small():
    files = sorted(path for path in SAMPLES.rglob("*") if path.is_file() and is_scan_candidate(path))
    assert [path.parent.name for path in files].count("yes") == 4
    assert [path.parent.name for path in files].count("no") == 4
    assert [path.name for path in files if path.parent.name == "dicom"] == ["no613.dcm"]
    assert sum(path.stat().st_size for path in SAMPLES.rglob("*") if path.is_file()) <= 2 * 1024 * 1024
    modes = {read_one(path).info["mode"] for path in files if path.suffix == ".jpg"}
    assert {"L", "RGB"} <= modes
    assert "b614673f0ad08212cf03cf9fddea6c0a5f3e41e2" in (SAMPLES / "README.md").read_text()


def test_sample_dicom_is_regenerated_byte_for_byte_without_patient_data(tmp_path):
    source = BR35H / "no" / "no613.jpg"
    if not source.is_file():
        pytest.skip(f"the Br35H image the sample DICOM is made from is not at {source}")
    out = tmp_path / "again.dcm"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "make_sample_dicom.py"), "--out", str(out)],
                   check=True, capture_output=True, timeout=120)
    assert out.read_bytes() == (SAMPLES / "dicom" / "no613.dcm").read_bytes()
    with Image.open(source) as image:
        np.testing.assert_array_equal(read_one(out).pixels, np.asarray(image.convert("L")))
    dataset = pydicom.dcmread(out)
    assert [keyword for keyword in PHI if keyword in dataset] == []


@pytest.mark.parametrize("name", ["yes/y266.jpg", "no/no408.jpg", "dicom/no613.dcm"])
def test_pixels_are_read_only_whatever_the_decoder(name):
    scan = read_one(SAMPLES / name)
    with pytest.raises(ValueError, match="read-only"):
        scan.pixels[0, 0] = 1


def test_reading_plain_images_does_not_load_pydicom(tmp_path):
    path = saved(tmp_path / "x.png", Image.fromarray(GRAY))
    code = (f"import sys; from pipeline.io.scans import read_scan; read_scan({str(path)!r}); "
            "print('pydicom' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == "False", run.stderr
