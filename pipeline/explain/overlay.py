"""Outputs of an analysed scan: the heatmap over the scan, a thumbnail, the raw map.

Everything written is byte-for-byte the same for the same input (PNG without time chunks, an npz
whose zip entries carry a fixed date), so a re-run or a redelivered batch can be compared with, or
safely overwrite, an earlier one.

Writing is the costliest stage of a scan on a small model, so each step was measured on 200 Br35H
scans (~370 x 370 px; ``benchmarks/bench_overlay.py``): the blend is one 3-byte gather per pixel,
the map is upsampled by two small matrix products (``pipeline.io.heatmaps``; ``worker.cpu`` keeps
numpy's BLAS on one thread in job processes, where its idle threads would spin), the overlay PNG
is written by fpng (``pipeline.io.png``), and the heatmap npz keeps the raw map at the target
layer's resolution (a few KiB). The thumbnail is blended at its own size from the grayscale scan
resized (one channel) and the map upsampled to that size, cheaper than resizing the three-channel
overlay. libdeflate, the JPEG encoder, Pillow's resize and numpy's loops release the GIL, so the
writer threads of ``worker/local.py`` run beside the model; fpng holds it for its ~1.4 ms a scan.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.io.heatmaps import as_map, colormap_lut, heatmap_bytes, peak, upsample
from pipeline.io.png import jpeg_bytes, png_bytes

THUMBNAIL_SIZE = 256


@dataclass(frozen=True)
class Outputs:
    """Paths written for one scan and the heatmap's peak in the scan's pixel coordinates (x, y)."""

    overlay: Path
    thumbnail: Path
    heatmap: Path
    peak: tuple[int, int]


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
    return Image.fromarray(_blend(small, _levels(heat), alpha, cmap))


def _replace(path: Path, data: bytes) -> None:
    """Write bytes through a temporary file beside ``path`` so a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    os.replace(partial, path)


def write_outputs(stem: str | Path, pixels: np.ndarray, cam: np.ndarray, alpha: float = 0.4,
                  cmap: str = "turbo") -> Outputs:
    """Write ``<stem>.overlay.png``, ``<stem>.thumb.jpg`` and ``<stem>.heatmap.npz`` for one scan.

    The npz holds ``cam`` (the raw map as given, float32) and ``size`` (the scan's width and
    height); ``load_heatmap`` gives it back at the scan's size, exactly as drawn.

    Args:
        stem: output path without suffix; parent folders are created.
        pixels: (H, W[, C]) uint8 scan at its original size.
        cam: (h, w) map in [0, 1] at any resolution, usually the target layer's; it is upsampled
            once, bilinearly, to the scan's size.
        alpha: opacity of the hottest overlay pixels.
        cmap: ``turbo`` or ``inferno``.

    Returns:
        The paths written and the peak (x, y) in the scan's pixel coordinates.
    """
    stem = Path(stem)
    cam = as_map(cam)  # float32, stored as it is drawn: load_heatmap gives back the same map
    height, width = np.shape(pixels)[:2]
    heat = upsample(cam, (width, height))  # bilinear: stays within the cam's [0, 1]
    gray = grayscale(pixels)
    overlay = _blend(gray, _levels(heat), alpha, cmap)
    paths = Outputs(stem.with_name(f"{stem.name}.overlay.png"), stem.with_name(f"{stem.name}.thumb.jpg"),
                    stem.with_name(f"{stem.name}.heatmap.npz"), peak(heat))
    stem.parent.mkdir(parents=True, exist_ok=True)
    _replace(paths.overlay, png_bytes(overlay))
    _replace(paths.thumbnail, jpeg_bytes(render_thumbnail(gray, cam, alpha, cmap)))
    _replace(paths.heatmap, heatmap_bytes(cam, (width, height)))
    return paths
