"""The overlay of a scan and its heatmap, and its thumbnail: pure functions of the two.

The scan path stores the map and the thumbnail; the full-size overlay is drawn from the source scan
and the stored map when someone asks for it (the web's scan page, ``tumorlens export --overlays``),
or at once with ``scan --overlays eager``. Every path draws it with ``overlay_png``, so a rendered
overlay is byte-for-byte the one an eager job writes. Needs no TensorFlow: the web process draws.

Each step was measured on 200 Br35H scans (~370 x 370 px; ``benchmarks/bench_overlay.py``): the
blend is one 3-byte gather per pixel, the map is upsampled by two small matrix products
(``pipeline.io.heatmaps``), the PNG is written by fpng (``pipeline.io.png``). The thumbnail is
blended at its own size from the grayscale scan resized (one channel) and the map upsampled to that
size, cheaper than resizing the three-channel overlay, with the same table gathered as 4-byte words
that Pillow unpacks (the same pixels, ~0.05 ms less a scan). libdeflate, the JPEG encoder, Pillow's
resize and numpy's loops release the GIL; fpng holds it for its ~1.4 ms a scan.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.io.heatmaps import as_map, colormap_lut, upsample
from pipeline.io.png import png_bytes
from pipeline.io.scans import ScanError, read_scan, sha256_file

# The report shows thumbnails 56 px wide (112 device pixels on a dense screen); the page of a scan
# whose source is gone shows one under its map. 192 px at quality 80 fits a 4 KiB-block disk's
# 12 KiB where 256 px at 85 took 16 (benchmarks/bench_overlays.py: the disk a scan takes).
THUMBNAIL_SIZE = 192


def grayscale(pixels: np.ndarray) -> np.ndarray:
    """Return the (H, W) uint8 luminance of an (H, W), (H, W, 3) or (H, W, 4) uint8 scan."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3) or (
            pixels.ndim == 3 and pixels.shape[2] not in (1, 3, 4)):
        raise ValueError("a scan must be a uint8 array of shape (H, W), (H, W, 3) or (H, W, 4), "
                         f"not {pixels.dtype} {pixels.shape}")
    if pixels.ndim == 2 or pixels.shape[2] == 1:
        return pixels.reshape(pixels.shape[:2])
    return np.asarray(Image.fromarray(np.ascontiguousarray(pixels[..., :3])).convert("L"))


@functools.lru_cache(maxsize=8)
def blend_table(alpha: float = 0.4, cmap: str = "turbo") -> np.ndarray:
    """Return the (256 * 256, 3) uint8 overlay colour for every (gray, heat level) pair.

    One table lookup per pixel replaces the per-pixel arithmetic of an alpha blend; the gain is
    measured by ``benchmarks/bench_overlay.py``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie between 0 and 1, not {alpha}")
    weight = (np.arange(256) / 255 * alpha)[None, :, None]  # heat level -> opacity
    gray = np.arange(256, dtype=float)[:, None, None]
    table = gray * (1 - weight) + colormap_lut(cmap)[None, :, :] * weight
    return np.rint(table).astype(np.uint8).reshape(256 * 256, 3)


@functools.lru_cache(maxsize=8)
def _blend_words(alpha: float, cmap: str) -> np.ndarray:
    """Return ``blend_table`` with each colour as one little-endian word, bytes R, G, B, 0."""
    table = blend_table(alpha, cmap).astype("<u4")
    words = table[:, 0] | table[:, 1] << 8 | table[:, 2] << 16
    words.flags.writeable = False
    return words


def _blend(gray: np.ndarray, levels: np.ndarray, alpha: float, cmap: str) -> np.ndarray:
    index = (gray.astype(np.uint16) << 8) | levels
    # Each table row seen as one 3-byte item: the gather moves whole pixels, ~25 % faster than
    # taking rows of a (65536, 3) array.
    pixels = np.take(blend_table(alpha, cmap).view("V3").reshape(-1), index)
    return pixels.view(np.uint8).reshape(*index.shape, 3)


def render_overlay(pixels: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4,
                   cmap: str = "turbo") -> np.ndarray:
    """Blend a colour-mapped heatmap over the grayscale scan, more opaque where it is hotter.

    Args:
        pixels: (H, W[, C]) uint8 scan.
        heatmap: (H, W) map in [0, 1] at the scan's size; a cold pixel shows the scan unchanged.
        alpha: opacity of the hottest pixels.
        cmap: a perceptual colormap, ``turbo`` or ``inferno``.

    Returns:
        (H, W, 3) uint8 RGB overlay.
    """
    gray = grayscale(pixels)
    heat = as_map(heatmap)
    if heat.shape != gray.shape:
        raise ValueError(f"heatmap {heat.shape} and scan {gray.shape} differ in size; upsample first")
    return _blend(gray, _levels(heat), alpha, cmap)


def _levels(heat: np.ndarray) -> np.ndarray:
    """Return a [0, 1] map quantised to the 256 levels of a colormap."""
    return (heat * 255 + 0.5).astype(np.uint8)


def thumbnail_size(width: int, height: int, longest: int = THUMBNAIL_SIZE) -> tuple[int, int]:
    """Return the (width, height) whose longest side is ``longest`` pixels, aspect kept."""
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def render_thumbnail(gray: np.ndarray, cam: np.ndarray, alpha: float = 0.4, cmap: str = "turbo",
                     longest: int = THUMBNAIL_SIZE) -> Image.Image:
    """Return the overlay's preview: the scan resized, the map blended over it at that size.

    Args:
        gray: (H, W) uint8 grayscale scan at its original size.
        cam: (h, w) map in [0, 1] at any resolution.
        alpha: opacity of the hottest pixels.
        cmap: ``turbo`` or ``inferno``.
        longest: the preview's longest side in pixels.

    Returns:
        An RGB image ``longest`` pixels on its longest side.
    """
    size = thumbnail_size(gray.shape[1], gray.shape[0], longest)
    small = np.asarray(Image.fromarray(gray).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    heat = upsample(as_map(cam), size)  # cleaned at the map's own size: bilinear stays in [0, 1]
    index = small.astype(np.uint16) << 8
    index |= _levels(heat)
    # _blend's pixels, gathered as 4-byte words (a native gather) that Pillow unpacks as RGBX:
    # ~0.05 ms of a Br35H scan's ~0.4 ms less than the 3-byte gather and the (H, W, 3) array
    # Pillow then copied again (benchmarks/bench_scan.py's scans).
    words = np.take(_blend_words(alpha, cmap), index)
    return Image.frombytes("RGB", size, words, "raw", "RGBX")


def overlay_png(pixels: np.ndarray, cam: np.ndarray, alpha: float = 0.4, cmap: str = "turbo") -> bytes:
    """Return the full-size overlay PNG of a scan and its raw map, as every path writes it.

    Args:
        pixels: (H, W[, C]) uint8 scan at its original size.
        cam: (h, w) map in [0, 1] at any resolution, as stored (``as_map``); upsampled bilinearly.
        alpha: opacity of the hottest pixels.
        cmap: ``turbo`` or ``inferno``.
    """
    height, width = np.shape(pixels)[:2]
    heat = upsample(as_map(cam), (width, height))
    return png_bytes(_blend(grayscale(pixels), _levels(heat), alpha, cmap))


class SourceChanged(ScanError):
    """The scan an overlay is drawn from is gone or no longer what was analysed."""


def source_frames(path: str | Path, sha256: str | None) -> dict[int, np.ndarray]:
    """Read an analysed scan again to draw its overlays: ``{frame: pixels}`` (frame 0 for one image).

    The content must still be what was analysed, or the map would be drawn over another image.

    Raises:
        SourceChanged: the file is gone, unreadable, or its SHA-256 differs from ``sha256``.
        ScanError: it can no longer be decoded.
    """
    try:
        digest = sha256_file(path)
    except ScanError as exc:
        raise SourceChanged(f"the scan file cannot be read again ({exc})") from exc
    if sha256 is not None and digest != sha256:
        raise SourceChanged("the scan file has changed since it was analysed (its SHA-256 no longer "
                            "matches the one recorded)")
    return {scan.frame or 0: scan.pixels for scan in read_scan(path)}
