"""Outputs of an analysed scan: the heatmap over the scan, a thumbnail, the raw map.

Everything written is byte-for-byte the same for the same input (PNG without time chunks, an npz
whose zip entries carry a fixed date), so a re-run or a redelivered batch can be compared with, or
safely overwrite, an earlier one.

Writing is the costliest stage of a scan on a small model, so each step was measured on 200 Br35H
scans (~370 x 370 px; ``benchmarks/bench_overlay.py``): the overlay PNG is written by fpng (~1.4 ms
a scan where libdeflate level 1 on Up-filtered rows took ~5.7 ms and Pillow ~12 ms, for files ~25 %
larger than libdeflate's; gray and RGBA images still go the libdeflate way), the blend is one
3-byte gather per pixel, the map is upsampled by two small matrix products with Pillow's bilinear
weights (4-6x faster than Pillow's float resize; ``worker.cpu`` keeps numpy's BLAS on one thread in
job processes, where its idle threads would spin), and the heatmap npz keeps the raw map at the
target layer's resolution (a few KiB). The thumbnail is blended at its own size from the
grayscale scan resized (one channel) and the map upsampled to that size, cheaper than resizing
the three-channel overlay (``benchmarks/bench_overlay.py``). libdeflate, the JPEG encoder,
Pillow's resize and numpy's loops release the GIL, so the writer threads of ``worker/local.py``
run beside the model; fpng holds it for its ~1.4 ms a scan.
"""

from __future__ import annotations

import functools
import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import fpng
import imagecodecs
import numpy as np
from PIL import Image

from pipeline.io.npz import npz_bytes

COLORMAPS = ("turbo", "inferno")
THUMBNAIL_SIZE = 256
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
THUMBNAIL_QUALITY = 85
# The raw heatmap is the map as the model's target layer gives it (e.g. 28 x 28), float32 and
# deflated (pipeline.io.npz): ~3 KiB in a few microseconds. Kept upsampled to the model input
# (224 x 224) instead, it took ~0.9 ms and ~69 KiB a scan even as float16.
NPZ_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class Outputs:
    """Paths written for one scan and the heatmap's peak in the scan's pixel coordinates (x, y)."""

    overlay: Path
    thumbnail: Path
    heatmap: Path
    peak: tuple[int, int]


@functools.cache
def colormap_lut(name: str = "turbo") -> np.ndarray:
    """Return the (256, 3) uint8 RGB table of a perceptual matplotlib colormap, built once."""
    if name not in COLORMAPS:
        raise ValueError(f"unknown colormap {name!r}; choose one of {', '.join(COLORMAPS)}")
    import matplotlib  # only here: a process that writes no overlay never pays for it

    table = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.round(table * 255).astype(np.uint8)


def _as_map(cam: np.ndarray) -> np.ndarray:
    """Return a float32 2-D map in [0, 1] with NaN and infinities replaced."""
    cam = np.asarray(cam)
    if cam.ndim != 2 or cam.size == 0:
        raise ValueError(f"a heatmap must be a non-empty 2-D array, not one of shape {cam.shape}")
    cam = np.nan_to_num(cam.astype(np.float32, copy=False), nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(cam, 0.0, 1.0)


def upsample(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a map bilinearly, pixel centres aligned as in the model's own input resize.

    Bilinear resizing is separable, so it is two small matrix products, ``rows @ cam @ columns.T``
    (4-6x faster than Pillow's float resize at Br35H sizes, ``benchmarks/bench_overlay.py``), with
    Pillow's weights (``interpolation_matrix``): pixel centres aligned as in the model's input resize.

    Args:
        cam: (h, w) map.
        size: (width, height) wanted.

    Returns:
        (height, width) float32 map.
    """
    width, height = size
    cam = np.asarray(cam, dtype=np.float32)
    return interpolation_matrix(cam.shape[0], height) @ cam @ interpolation_matrix(cam.shape[1], width).T


@functools.lru_cache(maxsize=64)
def interpolation_matrix(source: int, target: int) -> np.ndarray:
    """Return the (target, source) float32 matrix of Pillow's 1-D bilinear resize (read-only).

    A triangle filter centred on each output pixel, ``(i + 0.5) * source / target`` in source
    coordinates, widened by the scale when shrinking and renormalised at the edges: plain
    half-pixel bilinear interpolation when enlarging, an area-aware average when shrinking.
    """
    if source < 1 or target < 1:
        raise ValueError(f"cannot resize {source} samples to {target}")
    scale = source / target
    stretch = max(scale, 1.0)
    centre = (np.arange(target) + 0.5) * scale
    taps = np.arange(source) + 0.5  # the centres of the source samples
    weights = np.clip(1 - np.abs(taps[None, :] - centre[:, None]) / stretch, 0, None)
    matrix = (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def peak(heatmap: np.ndarray) -> tuple[int, int]:
    """Return the (x, y) pixel of a map's maximum; on ties the first in row-major order.

    Args:
        heatmap: (height, width) map.

    Returns:
        (x, y) in that map's pixel coordinates.
    """
    y, x = np.unravel_index(int(np.argmax(heatmap)), np.shape(heatmap))
    return int(x), int(y)


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
    heat = _as_map(heatmap)
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
    heat = upsample(_as_map(cam), size)  # cleaned at the map's own size: bilinear stays in [0, 1]
    return Image.fromarray(_blend(small, _levels(heat), alpha, cmap))


def _replace(path: Path, data: bytes) -> None:
    """Write bytes through a temporary file beside ``path`` so a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    os.replace(partial, path)


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
    cam = _as_map(cam)  # float32, stored as it is drawn: load_heatmap gives back the same map
    height, width = np.shape(pixels)[:2]
    heat = upsample(cam, (width, height))  # bilinear: stays within the cam's [0, 1]
    gray = grayscale(pixels)
    overlay = _blend(gray, _levels(heat), alpha, cmap)
    paths = Outputs(stem.with_name(f"{stem.name}.overlay.png"), stem.with_name(f"{stem.name}.thumb.jpg"),
                    stem.with_name(f"{stem.name}.heatmap.npz"), peak(heat))
    stem.parent.mkdir(parents=True, exist_ok=True)
    _replace(paths.overlay, png_bytes(overlay))
    _replace(paths.thumbnail, jpeg_bytes(render_thumbnail(gray, cam, alpha, cmap)))
    _replace(paths.heatmap, npz_bytes(NPZ_COMPRESS_LEVEL, cam=cam, size=np.array([width, height], np.int32)))
    return paths


def load_heatmap(path: str | Path) -> np.ndarray:
    """Return a stored heatmap at its scan's original size, as ``write_outputs`` drew it.

    The file keeps the raw map at the target layer's resolution and the scan's size, not the
    upsampled map: compressing a full-size float map cost more than the model's whole forward pass
    on a small CNN (benchmarks/bench_overlay.py), and upsampling is exact and cheap to repeat.

    Args:
        path: a ``.heatmap.npz`` written by ``write_outputs``.

    Returns:
        (height, width) float32 map in [0, 1].
    """
    with np.load(path, allow_pickle=False) as arrays:
        cam, (width, height) = arrays["cam"], arrays["size"].tolist()
    return upsample(cam, (width, height))
