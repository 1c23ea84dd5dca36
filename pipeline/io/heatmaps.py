"""The stored heatmap: its file, its resampling to a scan's size, and its colours.

A heatmap file (``<stem>.heatmap.npz``) keeps the raw map as the model's target layer gives it
(e.g. 28 x 28, float32, deflated by ``pipeline.io.npz``: ~3 KiB in a few microseconds) and the
scan's width and height; upsampling it is exact and cheap to repeat, so the full-size map is never
stored (kept at the model input's 224 x 224 instead, it took ~0.9 ms and ~69 KiB a scan even as
float16). Reading one needs neither TensorFlow nor the analysis: the web shows stored maps with it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from pipeline.io.npz import npz_bytes

COLORMAPS = ("turbo", "inferno")
NPZ_COMPRESS_LEVEL = 1


@functools.cache
def colormap_lut(name: str = "turbo") -> np.ndarray:
    """Return the (256, 3) uint8 RGB table of a perceptual matplotlib colormap, built once."""
    if name not in COLORMAPS:
        raise ValueError(f"unknown colormap {name!r}; choose one of {', '.join(COLORMAPS)}")
    import matplotlib  # only here: a process that writes no overlay never pays for it

    table = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    return np.round(table * 255).astype(np.uint8)


def as_map(cam: np.ndarray) -> np.ndarray:
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


def heatmap_bytes(cam: np.ndarray, size: tuple[int, int]) -> bytes:
    """Return the heatmap file of a cleaned map (``as_map``) for a scan of ``size`` (width, height)."""
    return npz_bytes(NPZ_COMPRESS_LEVEL, cam=cam, size=np.array(size, np.int32))


def load_heatmap(path: str | Path) -> np.ndarray:
    """Return a stored heatmap at its scan's original size, as the overlay drew it.

    The file keeps the raw map at the target layer's resolution and the scan's size, not the
    upsampled map: compressing a full-size float map cost more than the model's whole forward pass
    on a small CNN (``benchmarks/bench_overlay.py``), and upsampling is exact and cheap to repeat.

    Args:
        path: a ``.heatmap.npz`` written with ``heatmap_bytes``.

    Returns:
        (height, width) float32 map in [0, 1].
    """
    from pipeline.io.npz import load_arrays

    arrays = load_arrays(path)
    cam, (width, height) = arrays["cam"], arrays["size"].tolist()
    return upsample(cam, (width, height))
