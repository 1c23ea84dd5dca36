"""Read DICOM files into display-ready frames with pydicom.

Each frame goes through the file's own display chain: modality LUT (rescale slope/intercept), then
its VOI LUT or window (or, lacking both, the frame's own range), then MONOCHROME1 is inverted so it
shows like MONOCHROME2. Compressed transfer syntaxes decode through whatever pydicom plugins are
installed (pylibjpeg, GDCM); a missing one gives an error that says what to install.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pydicom
from pydicom import uid as uids
from pydicom.datadict import dictionary_description
from pydicom.dataset import Dataset
from pydicom.pixels import (
    apply_color_lut,
    apply_modality_lut,
    apply_voi,
    apply_voi_lut,
    get_decoder,
    iter_pixels,
)
from pydicom.pixels.utils import get_expected_length

from pipeline.io.pixels import (NOT_READABLE, Scan, ScanError, check_pixel_count, gray_if_equal_channels,
                                 scale_to_uint8)

PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
# What a decoder must know to lay out the pixel data (PS3.3 C.7.6.3, the Image Pixel module).
IMAGE_TAGS = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "PhotometricInterpretation")
# Numbers and coded values only. Free text (series and study descriptions, protocol names, comments)
# is left out on purpose: operators type patient names, dates and IDs into it.
INFO_TAGS = {
    "Modality": "modality",
    "Rows": "rows",
    "Columns": "columns",
    "BitsAllocated": "bits_allocated",
    "BitsStored": "bits_stored",
    "PhotometricInterpretation": "photometric_interpretation",
    "NumberOfFrames": "frames",
    "SliceThickness": "slice_thickness_mm",
    "PixelSpacing": "pixel_spacing_mm",
    "MagneticFieldStrength": "magnetic_field_strength_t",
}
_CODE = re.compile(r"[A-Z0-9_]+( [A-Z0-9_]+)*")  # the shape of a DICOM code string (CS)
_PLUGINS = (
    (uids.RLETransferSyntaxes, "pylibjpeg-rle"),
    (uids.JPEGTransferSyntaxes + uids.JPEGLSTransferSyntaxes, "pylibjpeg-libjpeg"),
    (uids.JPEG2000TransferSyntaxes, "pylibjpeg-openjpeg"),
)


def read_dicom(data: bytes, preamble: bool = True) -> list[Scan]:
    """Decode a DICOM file's frames into display-ready images: gray (H, W) or RGB (H, W, 3).

    Args:
        data: the whole file.
        preamble: False for a file without the 128-byte preamble and "DICM" (read by force).

    Returns:
        One Scan (frame None) for a single-frame file, else one per frame numbered from 0.
    """
    ds = _parse(data, preamble)
    _check_pixel_data(ds)
    info = dicom_info(ds)
    frames = int(ds.get("NumberOfFrames") or 1)
    try:
        images = [_display(frame, ds) for frame in iter_pixels(ds)]
    except ScanError:
        raise
    except Exception as exc:
        raise ScanError(f"damaged DICOM: the image data cannot be decoded "
                        f"({_syntax_label(_transfer_syntax(ds))})") from exc
    return [Scan(pixels=image, frame=index if frames > 1 else None, info=info)
            for index, image in enumerate(images)]


def dicom_info(ds: Dataset) -> dict[str, str]:
    """Return non-identifying metadata: image geometry, encoding and acquisition numbers."""
    info = {"format": "DICOM", "transfer_syntax": _transfer_syntax(ds).name}
    for keyword, key in INFO_TAGS.items():
        value = _info_value(ds.get(keyword))
        if value is not None:
            info[key] = value
    return info


def _parse(data: bytes, preamble: bool) -> Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not preamble)
    except Exception as exc:
        message = "damaged DICOM: the file header cannot be read" if preamble else NOT_READABLE
        raise ScanError(message) from exc
    if not preamble and "SOPClassUID" not in ds and not any(tag in ds for tag in PIXEL_TAGS):
        raise ScanError(NOT_READABLE)  # random bytes parse as a few nonsense elements under force
    _fill_transfer_syntax(ds)
    return ds


def _check_pixel_data(ds: Dataset) -> None:
    if not any(tag in ds for tag in PIXEL_TAGS):
        raise ScanError("DICOM file without pixel data: it holds no image (perhaps a report or a plan)")
    missing = [dictionary_description(keyword) for keyword in IMAGE_TAGS if keyword not in ds]
    if missing:
        raise ScanError(f"damaged DICOM: the image description lacks {', '.join(missing)}")
    check_pixel_count(int(ds.get("Columns") or 0), int(ds.get("Rows") or 0))
    syntax = _transfer_syntax(ds)
    if _is_encapsulated(syntax):
        _check_decoder(syntax)
    elif "PixelData" in ds and len(ds.PixelData) < get_expected_length(ds):
        raise ScanError(f"truncated DICOM: the image data holds {len(ds.PixelData)} bytes "
                        f"where {get_expected_length(ds)} are needed")


def _check_decoder(syntax: uids.UID) -> None:
    try:
        available = get_decoder(syntax).is_available
    except NotImplementedError:  # pydicom has no decoder at all for this syntax (e.g. video)
        raise ScanError(f"no decoder for transfer syntax {_syntax_label(syntax)}: tumorlens reads still "
                        "images only, so convert the file to an uncompressed transfer syntax") from None
    if not available:
        package = next((name for group, name in _PLUGINS if syntax in group), "pylibjpeg")
        raise ScanError(f"no decoder for transfer syntax {_syntax_label(syntax)}: "
                        f"install {package} or python-gdcm")


def _display(frame: np.ndarray, ds: Dataset) -> np.ndarray:
    """Turn one decoded frame into uint8, gray (H, W) or RGB (H, W, 3), as a viewer would show it."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric in MONOCHROME:
        gray = _windowed(apply_modality_lut(frame, ds), ds)
        return 255 - gray if photometric == "MONOCHROME1" else gray
    if photometric == "PALETTE COLOR":
        frame = apply_color_lut(frame, ds)
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise ScanError(f"unsupported DICOM image: photometric interpretation {photometric} "
                        "cannot be shown as RGB")
    return gray_if_equal_channels(frame if frame.dtype == np.uint8 else scale_to_uint8(frame))


def _windowed(values: np.ndarray, ds: Dataset) -> np.ndarray:
    """Apply the file's VOI LUT or window and map its output range to 0..255."""
    try:
        windowed = apply_voi_lut(values, ds)
    except ValueError:  # an impossible window (zero width): the frame's own range still shows it
        return scale_to_uint8(values)
    if windowed is values:  # pydicom hands its input back when there is no VOI LUT and no window
        return scale_to_uint8(values)
    return scale_to_uint8(windowed, *_voi_range(ds))


def _voi_range(ds: Dataset) -> tuple[float, float]:
    """Return what the VOI maps the darkest and the brightest input values to."""
    sequence = ds.get("VOILUTSequence")
    if sequence and "LUTDescriptor" in sequence[0] and "LUTData" in sequence[0]:
        entries, first = sequence[0].LUTDescriptor[0] or 2**16, sequence[0].LUTDescriptor[1]
        table = apply_voi(np.arange(first, first + entries), ds)
        return float(table.min()), float(table.max())
    # A window sends everything below it to its lowest output and above it to its highest.
    with np.errstate(over="ignore"):
        ends = apply_voi_lut(np.array([-1e12, 1e12]), ds)
    return float(ends[0]), float(ends[1])


def _transfer_syntax(ds: Dataset) -> uids.UID:
    return ds.file_meta.TransferSyntaxUID


def _fill_transfer_syntax(ds: Dataset) -> None:
    """Record how a file without meta information was encoded: pydicom's decoders ask for it."""
    if ds.file_meta.get("TransferSyntaxUID") is None:
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            uids.ImplicitVRLittleEndian if implicit
            else uids.ExplicitVRBigEndian if little is False else uids.ExplicitVRLittleEndian)


def _is_encapsulated(syntax: uids.UID) -> bool:
    return not syntax.is_transfer_syntax or syntax.is_encapsulated


def _syntax_label(syntax: uids.UID) -> str:
    return f"{syntax.name} ({syntax})" if syntax.name != str(syntax) else str(syntax)


def _info_value(value: object) -> str | None:
    """Format a numeric or coded value; anything else (free text, sequences) gives None."""
    if value is None:
        return None
    parts = []
    for item in value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]:
        if isinstance(item, (int, float)):  # pydicom's IS and DS values subclass these
            parts.append(f"{float(item):g}")
        elif isinstance(item, str) and _CODE.fullmatch(item.strip()) and len(item) <= 16:
            parts.append(item.strip())
        else:
            return None
    return " x ".join(parts) or None
