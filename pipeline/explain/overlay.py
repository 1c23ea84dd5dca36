"""Outputs of an analysed scan: its heatmap file and thumbnail, and, when asked, its overlay.

Everything written is byte-for-byte the same for the same input (PNG without time chunks, an npz
whose zip entries carry a fixed date), so a re-run or a redelivered batch can be compared with, or
safely overwrite, an earlier one.

By default the full-size overlay is not written: it is a pure function of the source scan and the
stored map (``pipeline.io.overlays.overlay_png``), drawn on demand by the web and by ``export
--overlays``, and it was ~90 % of a scan's disk. ``overlay=True`` (``scan --overlays eager``)
writes it at once, with the same bytes. ``worker.cpu`` keeps numpy's BLAS on one thread in job
processes, where its idle threads would spin; the encoders release the GIL, so the writer threads
of ``worker/local.py`` run beside the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.io.heatmaps import as_map, heatmap_bytes, peak, upsample
from pipeline.io.overlays import grayscale, overlay_png, render_thumbnail
from pipeline.io.png import jpeg_bytes


@dataclass(frozen=True)
class Outputs:
    """Paths for one scan and the heatmap's peak in the scan's pixel coordinates (x, y).

    ``overlay`` is where the overlay is, or will be when rendered; ``overlay_written`` tells which.
    """

    overlay: Path
    thumbnail: Path
    heatmap: Path
    peak: tuple[int, int]
    overlay_written: bool = False


def output_paths(stem: str | Path) -> tuple[Path, Path, Path]:
    """Return the overlay, thumbnail and heatmap paths of a scan's outputs beside ``stem``."""
    stem = Path(stem)
    return (stem.with_name(f"{stem.name}.overlay.png"), stem.with_name(f"{stem.name}.thumb.jpg"),
            stem.with_name(f"{stem.name}.heatmap.npz"))


def replace_file(path: Path, data: bytes) -> None:
    """Write bytes through a temporary file beside ``path`` so a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    partial.write_bytes(data)
    os.replace(partial, path)


def write_outputs(stem: str | Path, pixels: np.ndarray, cam: np.ndarray, alpha: float = 0.4,
                  cmap: str = "turbo", overlay: bool = False) -> Outputs:
    """Write ``<stem>.thumb.jpg`` and ``<stem>.heatmap.npz`` for one scan, and ``<stem>.overlay.png``
    when ``overlay`` is true.

    The npz holds ``cam`` (the raw map as given, float32) and ``size`` (the scan's width and
    height); ``load_heatmap`` gives it back at the scan's size, exactly as drawn.

    Args:
        stem: output path without suffix; parent folders are created.
        pixels: (H, W[, C]) uint8 scan at its original size.
        cam: (h, w) map in [0, 1] at any resolution, usually the target layer's; it is upsampled
            once, bilinearly, to the scan's size.
        alpha: opacity of the hottest overlay pixels.
        cmap: ``turbo`` or ``inferno``.
        overlay: write the full-size overlay now (otherwise it is rendered on demand).

    Returns:
        The paths written and the peak (x, y) in the scan's pixel coordinates.
    """
    cam = as_map(cam)  # float32, stored as it is drawn: load_heatmap gives back the same map
    height, width = np.shape(pixels)[:2]
    gray = grayscale(pixels)
    overlay_path, thumbnail, heatmap = output_paths(stem)
    paths = Outputs(overlay_path, thumbnail, heatmap, peak(upsample(cam, (width, height))), overlay)
    thumbnail.parent.mkdir(parents=True, exist_ok=True)
    if overlay:
        replace_file(overlay_path, overlay_png(pixels, cam, alpha, cmap))
    replace_file(thumbnail, jpeg_bytes(render_thumbnail(gray, cam, alpha, cmap)))
    replace_file(heatmap, heatmap_bytes(cam, (width, height)))
    return paths
