"""Reading DICOM: display chain, frames, compression, decoder errors and what metadata may leave."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import uid
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence

from pipeline.io.dicom import INFO_TAGS
from pipeline.io.scans import ScanError, read_scan
from tests.builders.scans import PHI, make_dicom, rewrite_dicom

ROOT = Path(__file__).resolve().parents[3]
INFO_KEYS = {"format", "transfer_syntax", *INFO_TAGS.values()}
# A 12-bit-like slice: dark background, a mid-gray head and a bright square "lesion".
SLICE = np.full((40, 48), 100, np.uint16)
SLICE[5:35, 6:42] = 1500
SLICE[15:25, 20:30] = 3900


def dicom_file(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom's test file {name} is not installed (it comes with pydicom-data)")
    return path


def gray(path) -> np.ndarray:
    """Return the frames of a file as (frames, H, W), checking each is one uint8 gray channel."""
    scans = read_scan(path)
    assert all(scan.pixels.ndim == 2 and scan.pixels.dtype == np.uint8 for scan in scans)
    return np.stack([scan.pixels for scan in scans]).astype(int)


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """The DICOM LINEAR window (PS3.3 C.11.2.1.2.1), mapped to 0..255."""
    return np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0, 1) * 255


def test_mr_small_is_shown_through_its_window():
    raw = pydicom.dcmread(dicom_file("MR_small.dcm")).pixel_array
    shown = gray(dicom_file("MR_small.dcm"))[0]
    assert np.abs(shown - linear_window(raw, 600, 1600)).max() <= 0.5 + 1e-6


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_bigendian.dcm",
                                  "MR_small_implicit.dcm", "MR_small_expb.dcm"])
def test_compressed_and_other_encodings_of_mr_small_decode_equal(name):
    np.testing.assert_array_equal(gray(dicom_file(name)), gray(dicom_file("MR_small.dcm")))


@pytest.mark.parametrize("name", ["emri_small_RLE.dcm", "emri_small_jpeg_2k_lossless.dcm",
                                  "emri_small_jpeg_ls_lossless.dcm", "emri_small_big_endian.dcm"])
def test_compressed_multi_frame_files_decode_equal(name):
    np.testing.assert_array_equal(gray(dicom_file(name)), gray(dicom_file("emri_small.dcm")))


def test_lossy_jpeg_decodes_close_to_the_uncompressed_original():
    lossy = read_scan(dicom_file("SC_rgb_jpeg_dcmtk.dcm"))[0].pixels.astype(int)
    original = read_scan(dicom_file("SC_rgb.dcm"))[0].pixels.astype(int)
    assert lossy.shape == original.shape == (100, 100, 3)
    assert np.abs(lossy - original).mean() < 2 and np.abs(lossy - original).max() <= 16


def test_multi_frame_gives_one_scan_per_frame_each_by_its_own_range():
    path = dicom_file("emri_small.dcm")
    scans = read_scan(path)
    raw = pydicom.dcmread(path).pixel_array.astype(float)  # no window in this file
    assert [scan.frame for scan in scans] == list(range(10))
    for scan, frame in zip(scans, raw):
        expected = (frame - frame.min()) * 255 / (frame.max() - frame.min())
        assert scan.pixels.shape == frame.shape
        assert np.abs(scan.pixels - expected).max() <= 0.5 + 1e-4
    assert len({scan.pixels.tobytes() for scan in scans}) == 10


@pytest.mark.parametrize("window", [None, (2000, 3000)])
def test_monochrome1_shows_like_its_monochrome2_original(tmp_path, window):
    mono2 = make_dicom(tmp_path / "m2.dcm", SLICE, window=window)
    inverted_window = None if window is None else (4095 - window[0] + 1, window[1])
    mono1 = make_dicom(tmp_path / "m1.dcm", 4095 - SLICE, photometric="MONOCHROME1",
                       window=inverted_window)
    shown2, shown1 = gray(mono2)[0], gray(mono1)[0]
    assert shown1[20, 25] > shown1[20, 10] > shown1[2, 2]  # lesion > head > background, as in m2
    assert np.abs(shown1 - shown2).max() <= 1


def test_rescale_comes_before_the_window(tmp_path):
    stored = (SLICE // 2).astype(np.int16)
    path = make_dicom(tmp_path / "ct.dcm", stored, rescale=(2.0, -1024.0), window=(600.0, 1200.0))
    expected = linear_window(stored * 2.0 - 1024, 600, 1200)
    assert np.abs(gray(path)[0] - expected).max() <= 0.5 + 1e-6


def test_without_window_the_frame_spans_its_own_range(tmp_path):
    shown = gray(make_dicom(tmp_path / "plain.dcm", SLICE))[0]
    expected = (SLICE - 100.0) * 255 / (3900 - 100)
    assert np.abs(shown - expected).max() <= 0.5 + 1e-6


def test_a_zero_width_window_falls_back_to_the_frame_range(tmp_path):
    path = make_dicom(tmp_path / "bad_window.dcm", SLICE, window=(1000, 0))
    np.testing.assert_array_equal(gray(path), gray(make_dicom(tmp_path / "plain.dcm", SLICE)))


def voi_lut(entries: int, first: int, bits: int, table: np.ndarray) -> Sequence:
    item = Dataset()
    item.add_new("LUTDescriptor", "US", [entries, first, bits])
    item.add_new("LUTData", "US", table.astype(int).tolist())
    return Sequence([item])


def test_voi_lut_sequence_is_used_and_scaled_by_its_output_range(tmp_path):
    values = (np.arange(40 * 48) % 4096).reshape(40, 48).astype(np.uint16)
    lut = voi_lut(4096, 0, 16, np.arange(4096) // 2)  # 12 bits in, 0..2047 out
    path = make_dicom(tmp_path / "voi.dcm", values, extra={"VOILUTSequence": lut})
    assert np.abs(gray(path)[0] - (values // 2) * 255.0 / 2047).max() <= 0.5 + 1e-6


def test_a_decreasing_voi_lut_inverts_the_display(tmp_path):
    values = (np.arange(40 * 48) % 256).reshape(40, 48).astype(np.uint8)
    inverting = voi_lut(256, 0, 8, 255 - np.arange(256))
    path = make_dicom(tmp_path / "voi.dcm", values, extra={"VOILUTSequence": inverting})
    np.testing.assert_array_equal(gray(path)[0], 255 - values)


def test_palette_colour_is_looked_up_in_its_palette():
    [scan] = read_scan(dicom_file("examples_palette.dcm"))
    assert scan.pixels.shape == (350, 800, 3)
    assert (scan.pixels[..., 0] != scan.pixels[..., 2]).any()


def test_ybr_multi_frame_jpeg_reads_every_frame_as_rgb():
    scans = read_scan(dicom_file("examples_ybr_color.dcm"))
    assert [scan.frame for scan in scans] == list(range(30))
    assert all(scan.pixels.shape == (240, 320, 3) and scan.pixels.dtype == np.uint8 for scan in scans)


def test_16_bit_rgb_rle_equals_its_uncompressed_original():
    np.testing.assert_array_equal(read_scan(dicom_file("SC_rgb_rle_16bit.dcm"))[0].pixels,
                                  read_scan(dicom_file("SC_rgb_16bit.dcm"))[0].pixels)


@pytest.mark.parametrize("syntax", [uid.RLELossless, uid.JPEG2000Lossless])
def test_files_we_compress_read_back_equal(tmp_path, syntax):
    frames = np.stack([SLICE, SLICE[::-1], 4095 - SLICE])
    plain = make_dicom(tmp_path / "plain.dcm", frames)
    packed = make_dicom(tmp_path / "packed.dcm", frames, transfer_syntax=syntax)
    assert pydicom.dcmread(packed).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(gray(packed), gray(plain))
    assert [scan.frame for scan in read_scan(packed)] == [0, 1, 2]


def test_frames_argument_repeats_a_single_image(tmp_path):
    scans = read_scan(make_dicom(tmp_path / "new" / "folder" / "rep.dcm", SLICE, frames=4))
    assert [scan.frame for scan in scans] == [0, 1, 2, 3] and scans[0].info["frames"] == "4"


def test_a_dicom_without_preamble_or_meta_is_still_read(tmp_path):
    ds = pydicom.dcmread(dicom_file("MR_small.dcm"))
    del ds.file_meta
    ds.preamble = None
    path = tmp_path / "old.dcm"
    pydicom.dcmwrite(path, ds, implicit_vr=True, little_endian=True)
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(gray(path), gray(dicom_file("MR_small.dcm")))


def test_truncated_dicom_fails_clearly():
    with pytest.raises(ScanError) as error:
        read_scan(dicom_file("MR_truncated.dcm"))
    assert str(error.value) == "truncated DICOM: the image data holds 8130 bytes where 8192 are needed"


def drop_description(ds: Dataset) -> None:
    del ds.Rows, ds.BitsAllocated


def declare_huge_size(ds: Dataset) -> None:
    ds.Rows = ds.Columns = 20_000


def use_private_syntax(ds: Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.9.9999.1"  # a vendor's own compression
    ds.PixelData = encapsulate([bytes(64)])


@pytest.mark.parametrize("change, message", [
    (drop_description, "damaged DICOM: the image description lacks Rows, Bits Allocated"),
    (declare_huge_size, "image too large: 400000000 pixels, the limit is 100000000"),
    (use_private_syntax, "no decoder for transfer syntax 1.2.826.0.1.3680043.9.9999.1: tumorlens reads "
     "still images only, so convert the file to an uncompressed transfer syntax"),
])
def test_a_dicom_that_misdescribes_its_image_fails_clearly(tmp_path, change, message):
    path = rewrite_dicom(make_dicom(tmp_path / "x.dcm", SLICE), change)
    with pytest.raises(ScanError) as error:
        read_scan(path)
    assert str(error.value) == message


MISSING_PLUGINS = """
import json, sys
import pydicom
from pydicom.pixels import get_decoder
from pipeline.io.scans import ScanError, read_scan
messages = {}
for path in sys.argv[1:]:
    decoder = get_decoder(pydicom.dcmread(path).file_meta.TransferSyntaxUID)
    for plugin in decoder.available_plugins:  # as if none of its decoders were installed
        decoder.remove_plugin(plugin)
    try:
        read_scan(path)
        messages[path] = "read without error"
    except ScanError as error:
        messages[path] = str(error)
print(json.dumps(messages))
"""


def test_a_missing_decoder_plugin_says_what_to_install():
    """Decode in a fresh process with the syntax's plugins removed, as on a machine without them."""
    expected = {
        dicom_file("MR_small_jp2klossless.dcm"): "no decoder for transfer syntax JPEG 2000 Image Compression "
        "(Lossless Only) (1.2.840.10008.1.2.4.90): install pylibjpeg-openjpeg or python-gdcm",
        dicom_file("MR_small_jpeg_ls_lossless.dcm"): "no decoder for transfer syntax JPEG-LS Lossless Image "
        "Compression (1.2.840.10008.1.2.4.80): install pylibjpeg-libjpeg or python-gdcm",
        dicom_file("MR_small_RLE.dcm"): "no decoder for transfer syntax RLE Lossless (1.2.840.10008.1.2.5): "
        "install pylibjpeg-rle or python-gdcm",
    }
    run = subprocess.run([sys.executable, "-c", MISSING_PLUGINS, *expected], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    assert json.loads(run.stdout.strip().splitlines()[-1]) == expected


def test_no_identifying_value_leaves_the_reader(tmp_path):
    path = make_dicom(tmp_path / "phi.dcm", SLICE, phi=True)
    assert str(pydicom.dcmread(path).PatientName) == PHI["PatientName"]  # the file does carry them
    [scan] = read_scan(path)
    shown = json.dumps(scan.info) + repr(scan)
    words = {word.strip(",") for value in PHI.values() for word in value.replace("^", " ").split()
             if len(word) > 2 and not word.islower()}  # names and numbers, not "for" or "axial"
    leaked = [value for value in [*PHI.values(), *words] if value in shown]
    assert leaked == []
    assert set(scan.info) <= INFO_KEYS


def test_dicom_info_holds_the_useful_numbers(tmp_path):
    [scan] = read_scan(make_dicom(tmp_path / "x.dcm", SLICE, transfer_syntax=uid.RLELossless))
    assert scan.info == {
        "format": "DICOM", "transfer_syntax": "RLE Lossless", "modality": "MR", "rows": "40",
        "columns": "48", "bits_allocated": "16", "bits_stored": "16",
        "photometric_interpretation": "MONOCHROME2", "slice_thickness_mm": "5",
        "pixel_spacing_mm": "0.5 x 0.5", "magnetic_field_strength_t": "1.5",
    }


@pytest.mark.filterwarnings("ignore:Invalid value for VR CS")  # pydicom's own complaint, on purpose here
def test_a_name_typed_into_a_coded_field_is_left_out(tmp_path):
    [scan] = read_scan(make_dicom(tmp_path / "x.dcm", SLICE, extra={"Modality": "Jane Doe"}))
    assert "modality" not in scan.info and "Jane" not in repr(scan)
