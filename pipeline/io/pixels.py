"""The scan record and the pixel helpers that every reader (images, DICOM) shares.

A scan is display-ready: uint8 at the original size, (H, W) for a gray source and (H, W, 3) RGB
for a colour one. Whatever is wrong with a file ends as a ``ScanError`` whose message is one
sentence for a person.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Far above any MRI slice (a 4k x 4k scan is 16 megapixels), far below what exhausts memory.
MAX_PIXELS = 100_000_000
FORMATS_READ = "JPEG, PNG, BMP, TIFF, WebP, JPEG 2000, DICOM or NIfTI"
NOT_READABLE = f"not an image: the file is in no format tumorlens reads ({FORMATS_READ})"


class ScanError(ValueError):
    """A file that cannot be read as a scan; the message says why in plain words."""


@dataclass
class Scan:
    """One display-ready image: a plain image file or one frame of a DICOM file."""

    pixels: np.ndarray = field(repr=False)  # uint8 at the original size: (H, W) gray or (H, W, 3) RGB
    frame: int | None = None  # None for a single image
    info: dict[str, str] = field(default_factory=dict)  # non-identifying metadata only

    def __post_init__(self) -> None:
        # Read-only whatever the decoder produced: one scan feeds the model, the overlay and the
        # thumbnail, and none of them may change what the others see.
        self.pixels.flags.writeable = False


def scale_to_uint8(values: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Map values linearly so that lo becomes 0 and hi 255 (default: the array's own range).

    Args:
        values: any numeric array; NaN and infinities become 0.
        lo, hi: the values shown black and white; hi < lo inverts.

    Returns:
        uint8 array of the same shape; all zeros when the range is empty.
    """
    values = np.asarray(values, dtype=np.float32)
    if lo is None or hi is None:
        own_lo, own_hi = _finite_range(values)
        lo, hi = own_lo if lo is None else lo, own_hi if hi is None else hi
    if hi == lo:  # a flat image stays black rather than dividing by zero
        return np.zeros(values.shape, np.uint8)
    scaled = values - np.float32(lo)  # float32 in place throughout: these are whole frames
    scaled *= np.float32(255.0 / (hi - lo))
    scaled += np.float32(0.5)
    np.clip(scaled, 0, 255, out=scaled)
    np.nan_to_num(scaled, copy=False, nan=0.0)
    return scaled.astype(np.uint8)


def _finite_range(values: np.ndarray) -> tuple[float, float]:
    """Return the smallest and largest finite values, (0, 0) when there are none."""
    lo, hi = float(values.min()), float(values.max())
    if np.isfinite(lo) and np.isfinite(hi):  # the common case needs no masked copy
        return lo, hi
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)


def check_pixel_count(width: int, height: int) -> None:
    """Refuse an image larger than MAX_PIXELS before it is decoded."""
    if width * height > MAX_PIXELS:
        raise ScanError(f"image too large: {width * height} pixels, the limit is {MAX_PIXELS}")


def gray_if_equal_channels(pixels: np.ndarray) -> np.ndarray:
    """Return an RGB image whose three channels are equal as its one (H, W) channel, else unchanged.

    MRI slices exported as JPEG are mostly gray images stored as colour (175 of the first 199
    Br35H scans). Kept as one channel they show and analyse exactly the same (Pillow's resize and
    luminance treat equal channels alike), and every later step handles a third of the bytes:
    the model's resize and the overlay's luminance cost 1.8-2.6x less (benchmarks/bench_scans.py)
    for a check of ~0.4 ms.
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        return pixels
    flat = pixels.reshape(-1, 3)
    if (flat[:, 0] == flat[:, 1]).all() and (flat[:, 1] == flat[:, 2]).all():
        return np.ascontiguousarray(pixels[..., 0])
    return pixels
