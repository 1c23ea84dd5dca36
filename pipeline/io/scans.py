"""Read scan files (JPEG, PNG, BMP, TIFF, WebP, JPEG 2000, DICOM) into display-ready 8-bit images.

A gray source (nearly every MRI: DICOM MONOCHROME, gray PNG and JPEG, 16-bit TIFF) stays one
channel, (H, W); a colour one becomes RGB, (H, W, 3). Widening gray to three equal channels cost
three times the memory and two conversions back to gray per scan (the model input and the
overlay), ~2 ms of a 512 x 512 scan, for pixels identical to the gray ones.

Whatever is wrong with a file ends as a ``ScanError`` whose message is one sentence for a person;
no other exception leaves ``read_scan`` for a bad file. DICOM decoding lives in ``pipeline.io.dicom``
and is imported only when a DICOM file turns up, so reading plain images stays light; the
``Scan`` record and the pixel helpers both readers share live in ``pipeline.io.pixels``.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import re
import stat
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.io.nifti import is_nifti_name, looks_like_nifti, read_nifti
from pipeline.io.pixels import (FORMATS_READ, MAX_PIXELS, NOT_READABLE, Scan, ScanError,
                                 check_pixel_count, scale_to_uint8)

SCAN_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".j2k",
                           ".jpx", ".dcm", ".dicom", ".nii"})  # and .nii.gz (has_scan_name)
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
# A DICOM file without its preamble opens on a little-endian tag of group 0002 (file meta, always
# explicit VR) or 0008, then a VR of two letters, or (implicit VR) a 4-byte length.
BARE_DICOM_GROUPS = (b"\x02\x00", b"\x08\x00")
BARE_MAX_LENGTH = 1 << 12  # the first element's length: a short code, UID or string
_VRS = frozenset(b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL "
                 b"UN UR US UT UV".split())
# Files are read whole before decoding; nothing a scanner writes per slice or series comes near this.
MAX_FILE_BYTES = 1 << 30
# MPO is how Pillow names JPEGs that carry extra preview frames (many cameras and phones write them).
IMAGE_FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "BMP": "BMP", "TIFF": "TIFF", "WEBP": "WebP",
                 "JPEG2000": "JPEG 2000"}

# Pillow's own bomb check uses the same limit, so a bomb is refused before any pixel is decoded.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
# warnings.catch_warnings swaps process-wide state: decoding threads take turns while opening.
_OPEN_LOCK = threading.Lock()
_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"II*\0", "TIFF"),
               (b"MM\0*", "TIFF"), (b"BM", "BMP"), (b"\0\0\0\x0cjP  \r\n\x87\n", "JPEG 2000"),
               (b"\xff\x4f\xff\x51", "JPEG 2000"))
_BITS = {"1": 1, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16, "I": 32, "F": 32}
_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def read_scan(path: str | os.PathLike) -> list[Scan]:
    """Read one scan file into display-ready images, one per frame.

    Args:
        path: a JPEG, PNG, BMP, TIFF, WebP, JPEG 2000 or DICOM file (the content decides, not
            the suffix).

    Returns:
        One Scan for a single image; one per frame (frame 0..n-1) for a multi-frame file.

    Raises:
        ScanError: the file is missing, unreadable, not an image, damaged or too large.
    """
    path = Path(path)
    data = _read_bytes(path)
    try:
        return _decode(data, path.suffix.lower())
    except ScanError:
        raise
    except MemoryError as exc:
        raise ScanError("image too large: there is not enough memory to decode it") from exc
    except Exception as exc:  # decoders raise every kind of error on damaged data
        raise ScanError("damaged file: the image data cannot be decoded") from exc


def is_scan_candidate(path: str | os.PathLike) -> bool:
    """Tell whether a file looks like a scan by its name, or by its first bytes when unnamed.

    Args:
        path: a file found in a folder; only files without a type suffix are opened (132 bytes).

    Returns:
        True for a scan suffix (any case), or no type suffix and bytes that open like DICOM:
        "DICM" at byte 128, or, as old systems write it without that preamble, a first element of
        group 0002 or 0008 with a valid VR or a short length.
    """
    path = Path(path)
    if path.name.startswith("._"):  # AppleDouble metadata that macOS leaves beside copied files
        return False
    if is_nifti_name(path.name):
        return True
    suffix = path.suffix.lower()
    if not may_hold_dicom(path.name):
        return suffix in SCAN_SUFFIXES
    return suffix in DICOM_SUFFIXES or _opens_like_dicom(path)


def may_hold_dicom(name: str) -> bool:
    """Tell whether a file name leaves room for DICOM: a DICOM suffix, none, or digits.

    DICOM files are often named by their UID ("1.2.840.113619.2.55.3"): a digit suffix is no type.
    """
    return _dicom_suffix(os.path.splitext(name)[1].lower())


def _dicom_suffix(suffix: str) -> bool:
    return suffix in DICOM_SUFFIXES or not suffix or suffix[1:].isdigit()


def has_scan_name(path: str | os.PathLike) -> bool:
    """Tell whether a file's name alone says it is a scan (a known suffix, ``.nii.gz`` included)."""
    return Path(path).suffix.lower() in SCAN_SUFFIXES or is_nifti_name(Path(path).name)


def sha256_file(path: str | os.PathLike) -> str:
    """Return the hex SHA-256 of a file's content, read in chunks.

    Args:
        path: a regular file (a pipe or a folder is refused rather than read).

    Returns:
        64 lowercase hex digits.

    Raises:
        ScanError: the file is gone, unreadable or not a regular file.
    """
    path = Path(path)
    _regular_file_size(path)
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise ScanError(_os_error_message(exc, path)) from exc


def _decode(data: bytes, suffix: str) -> list[Scan]:
    if _is_dicom_head(data):
        return _read_dicom(data)
    if looks_like_nifti(data):
        return read_nifti(data)
    try:
        image = _open_image(data)
    except UnidentifiedImageError:
        text = _text_kind(data)
        if text:
            raise ScanError(f"not an image: the file holds {text}") from None
        kind = _signature_kind(data)
        if kind:
            raise ScanError(f"damaged {kind}: the file starts like a {kind} "
                            "but its header cannot be read") from None
        if _dicom_suffix(suffix):
            return _read_dicom(data, preamble=False)  # DICOM written without its preamble
        raise ScanError(NOT_READABLE) from None
    except OSError as exc:  # a WebP decoder is set up at open, so damage can surface here
        kind = _signature_kind(data)
        if kind is None:
            raise
        raise ScanError(f"damaged {kind}: the image data cannot be decoded") from exc
    return _image_scans(image)


def _signature_kind(data: bytes) -> str | None:
    """Name the image format whose signature the data starts with, else None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)


def _read_dicom(data: bytes, preamble: bool = True) -> list[Scan]:
    from pipeline.io.dicom import read_dicom  # pydicom loads only once a DICOM file turns up

    return read_dicom(data, preamble)


def _open_image(data: bytes) -> Image.Image:
    with _OPEN_LOCK, warnings.catch_warnings():
        # Pillow warns between one and two times its limit; check_pixel_count speaks instead.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            count = found.group(1) if found else f"more than {2 * MAX_PIXELS}"
            raise ScanError(f"image too large: {count} pixels, the limit is {MAX_PIXELS}") from exc
    check_pixel_count(*image.size)
    return image


def _image_scans(image: Image.Image) -> list[Scan]:
    kind = IMAGE_FORMATS.get(image.format or "")
    if kind is None:
        raise ScanError(f"unsupported format: the file is a {image.format} image, and tumorlens reads "
                        f"{FORMATS_READ}")
    pages = image.n_frames if kind == "TIFF" else 1  # a multi-page TIFF is a stack of slices
    scans = []
    for page in range(pages):
        image.seek(page)
        check_pixel_count(*image.size)
        pixels = _display_pixels(_load(image, kind))
        info = {"format": kind, "mode": image.mode, "bits": str(_BITS.get(image.mode, 8))}
        scans.append(Scan(pixels=pixels, frame=page if pages > 1 else None, info=info))
    return scans


def _load(image: Image.Image, kind: str) -> Image.Image:
    try:
        image.load()  # Image.open only parsed the header: decode everything now
    except Exception as exc:
        if "not available" in str(exc):  # this Pillow was built without the format's codec
            raise ScanError(f"no decoder for {kind}: this installation's Pillow cannot decode it") from exc
        if isinstance(exc, EOFError) or "truncated" in str(exc):
            raise ScanError(f"truncated {kind}: the file ends before the image is complete") from exc
        raise ScanError(f"damaged {kind}: the image data cannot be decoded") from exc
    try:
        ImageOps.exif_transpose(image, in_place=True)  # in place: a copy per scan costs a third more
    except Exception:  # broken orientation metadata: the pixels themselves are still good
        pass
    return image


def _display_pixels(image: Image.Image) -> np.ndarray:
    """Return (H, W) uint8 for a gray image, (H, W, 3) uint8 RGB for a colour one.

    Deeper than 8 bits is scaled from its own range to 0-255; transparency is shown over black.
    """
    if _BITS.get(image.mode, 8) > 8:
        return scale_to_uint8(np.asarray(image))
    gray = image.mode in ("1", "L", "LA", "La")
    if "A" in image.getbands() or "transparency" in image.info:
        pixels = np.asarray(image.convert("LA" if gray else "RGBA"), dtype=np.uint16)
        over_black = ((pixels[..., :-1] * pixels[..., -1:] + 127) // 255).astype(np.uint8)
        return over_black[..., 0] if gray else over_black
    if image.mode in ("1", "L"):
        return np.asarray(image.convert("L") if image.mode == "1" else image)
    try:
        return _gray_if_equal_bands(image if image.mode == "RGB" else image.convert("RGB"))
    except ValueError as exc:
        raise ScanError(f"unsupported colour mode: {image.mode} images cannot be shown as RGB") from exc


def _gray_if_equal_bands(image: Image.Image) -> np.ndarray:
    """Return ``gray_if_equal_channels(np.asarray(image))`` of an RGB image, the same array.

    The bands are split and compared by Pillow and memcmp, and a gray scan's one band is all that
    is copied out: the (H, W, 3) copy and numpy's strided comparison of its channels cost twice as
    much (0.21-0.36 ms against 0.11-0.15 ms a Br35H scan, ``benchmarks/bench_scan.py``'s scans).
    """
    red, green, blue = image.split()
    gray = red.tobytes()
    if gray == green.tobytes() and gray == blue.tobytes():
        return np.frombuffer(gray, np.uint8).reshape(image.height, image.width)
    return np.asarray(image)


def _text_kind(data: bytes) -> str | None:
    """Name what a file holds when it is text rather than image data, else None."""
    sample = data[:1024]
    if b"\0" in sample:
        return None
    text = sample.decode("utf-8", errors="replace")
    odd = sum(1 for char in text if char == "\ufffd" or (char < " " and char not in "\t\n\r\f"))
    if odd > len(text) // 100:
        return None
    lowered = text.lower()
    return "text (a web page)" if "<html" in lowered or "<!doctype html" in lowered else "text"


def _read_bytes(path: Path) -> bytes:
    size = _regular_file_size(path)
    if size > MAX_FILE_BYTES:
        raise ScanError(f"file too large: {size >> 20} MB, the limit is {MAX_FILE_BYTES >> 20} MB")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScanError(_os_error_message(exc, path)) from exc
    if not data:
        raise ScanError("not an image: the file is empty")
    return data


def _regular_file_size(path: Path) -> int:
    try:
        status = path.stat()
    except OSError as exc:
        raise ScanError(_os_error_message(exc, path)) from exc
    for is_kind, name in _FILE_KINDS:
        if is_kind(status.st_mode):  # opening a pipe or a device would block or never end
            raise ScanError(f"not a file: the path is {name}")
    return status.st_size


def _os_error_message(exc: OSError, path: Path) -> str:
    if isinstance(exc, FileNotFoundError):
        if path.is_symlink():
            return "broken link: the path is a link to a file that does not exist"
        return "the file is gone: it was moved or deleted before it could be read"
    if isinstance(exc, PermissionError):
        return "cannot read the file: permission denied"
    if isinstance(exc, IsADirectoryError):
        return "not a file: the path is a folder"
    if exc.errno == errno.ELOOP:
        return "link loop: the path is a chain of links that never reaches a file"
    return f"cannot read the file: {(exc.strerror or 'input/output error').lower()}"


def _opens_like_dicom(path: Path) -> bool:
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a pipe would block the caller
            return False
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return _is_dicom_head(head) or is_bare_dicom_head(head)


def is_bare_dicom_head(head: bytes) -> bool:
    """Tell whether bytes open like DICOM written without its preamble (the first 8 suffice)."""
    if len(head) < 8 or head[:2] not in BARE_DICOM_GROUPS:
        return False
    return head[4:6] in _VRS or int.from_bytes(head[4:8], "little") <= BARE_MAX_LENGTH


def _is_dicom_head(head: bytes) -> bool:
    """Tell whether bytes start with the DICOM preamble: 128 free bytes, then "DICM"."""
    return head[128:132] == b"DICM"
