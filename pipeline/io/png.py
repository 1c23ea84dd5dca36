"""PNG and JPEG bytes of rendered images: deterministic, without time chunks or metadata.

The overlay PNG is written by fpng (~1.4 ms a scan where libdeflate level 1 on Up-filtered rows took
~5.7 ms and Pillow ~12 ms, for files ~25 % larger than libdeflate's; ``benchmarks/bench_overlay.py``);
gray and RGBA images go the libdeflate way. libdeflate and the JPEG encoder release the GIL; fpng
holds it for its ~1.4 ms a scan.
"""

from __future__ import annotations

import io
import struct
import zlib

import fpng
import imagecodecs
import numpy as np
from PIL import Image

# libdeflate level 1 on Up-filtered rows: ~3 ms an overlay, 4x faster than Pillow's level 1 with
# adaptive filters and 2x faster than libpng's fixed Paeth filter with zlib's run-length strategy
# (imagecodecs.png_encode), and smaller than either (benchmarks/bench_overlay.py).
PNG_DEFLATE_LEVEL = 1
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOUR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> gray, RGB, RGBA
PNG_FILTER_UP = 2  # each byte minus the one above: a vectorised subtraction, smooth overlays shrink
# fpng writes a side of 65536 pixels or more modulo 65536 (a corrupt PNG, without an error):
# longer images, say a 1 x 70000 strip, take the libdeflate path.
FPNG_MAX_SIDE = 65535
# Thumbnails are previews: JPEG encodes one in a fraction of a millisecond where PNG took ~4 ms
# (deflate is most of a scan's output cost on a small CNN), at a third of the size.
THUMBNAIL_QUALITY = 80


def png_bytes(image: np.ndarray) -> bytes:
    """Return an (H, W), (H, W, 3) or (H, W, 4) uint8 image as PNG bytes, without any time chunk.

    RGB images up to 65535 pixels a side (every real overlay) are encoded by fpng: ~4x faster
    than libdeflate level 1 here, for files ~25 % larger (``benchmarks/bench_overlay.py``). Its
    output is plain PNG (IHDR, IDAT, IEND and fpng's constant ``fdEC`` marker, an ancillary chunk
    that readers skip), the same bytes for the same pixels. Other images carry the Up filter
    (computed here with numpy) on every row and are deflated in one call to libdeflate.
    """
    image = np.asarray(image)
    channels = image.shape[2] if image.ndim == 3 else 1
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or channels not in PNG_COLOUR_TYPES:
        raise ValueError(f"a PNG needs a uint8 array of 1, 3 or 4 channels, not {image.dtype} {image.shape}")
    if channels == 3 and max(image.shape[:2]) <= FPNG_MAX_SIDE:
        return fpng.from_ndarray(np.ascontiguousarray(image))
    return deflated_png(image)


def deflated_png(image: np.ndarray) -> bytes:
    """Return a uint8 image as PNG bytes: the Up filter on every row, libdeflate level 1."""
    image = np.asarray(image)
    channels = image.shape[2] if image.ndim == 3 else 1
    height, width = image.shape[:2]
    flat = image.reshape(height, width * channels)
    rows = np.empty((height, 1 + flat.shape[1]), np.uint8)
    rows[:, 0] = PNG_FILTER_UP
    rows[:1, 1:] = flat[:1]  # the first row's "above" is zeros
    np.subtract(flat[1:], flat[:-1], out=rows[1:, 1:])  # uint8 arithmetic wraps modulo 256, as PNG's does
    header = struct.pack(">IIBBBBB", width, height, 8, PNG_COLOUR_TYPES[channels], 0, 0, 0)
    return b"".join((PNG_SIGNATURE, _png_chunk(b"IHDR", header),
                     _png_chunk(b"IDAT", imagecodecs.deflate_encode(rows, level=PNG_DEFLATE_LEVEL)),
                     _png_chunk(b"IEND", b"")))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return b"".join((struct.pack(">I", len(data)), kind, data,
                     struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))))


def jpeg_bytes(image: Image.Image, quality: int = THUMBNAIL_QUALITY) -> bytes:
    """Return an image as baseline JPEG bytes (no metadata, so the same pixels give the same bytes)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
