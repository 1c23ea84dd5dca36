"""Images for the scan page: stored artifacts, the original as PNG, the heatmap in colour."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.io.overlays import source_frames
from pipeline.io.scans import ScanError
from web.folders import OutsideBase, resolve_inside

# Result.image_info is written without identifiers; these patterns are a second line of defence.
IDENTIFYING = re.compile(r"patient|name|birth|accession|institution|physician|operator|address|"
                         r"(^|[\s_])id$|instance.?uid|study.?id|date", re.IGNORECASE)


class ImageMissing(LookupError):
    """An image that cannot be shown; the message says why."""


def inside(base: Path, rel: str) -> Path:
    """Return ``base / rel`` if it is a file that resolves inside ``base``."""
    try:
        path = resolve_inside(base, rel)
    except OutsideBase as exc:
        raise ImageMissing("The stored path points outside its folder.") from exc
    except OSError as exc:
        raise ImageMissing("The stored path cannot be resolved.") from exc
    if not path.is_file():
        raise ImageMissing("The file is no longer there.")
    return path


def png_bytes(pixels: np.ndarray) -> bytes:
    """Encode an (H, W, 3|4) uint8 array as PNG (fast compression: it is sent, not archived)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def original_png(path: Path, frame: int, sha256: str | None = None) -> bytes:
    """Return one frame of a scan file as display-ready PNG, if it is still the scan analysed
    (``sha256``; None: not checked)."""
    try:
        frames = source_frames(path, sha256)
    except ScanError as exc:
        raise ImageMissing(str(exc)) from exc
    if frame not in frames:
        raise ImageMissing(f"The scan has no frame {frame}.")
    return png_bytes(frames[frame])


def safe_info(info: dict | None) -> dict[str, str]:
    """Return the metadata entries whose names cannot carry a person's identity."""
    return {str(k): str(v) for k, v in (info or {}).items() if not IDENTIFYING.search(str(k))}


def heatmap_png(npz: Path, size: tuple[int, int], transparent: bool = False) -> bytes:
    """Render a stored heatmap with the overlay's colormap at the scan's (width, height).

    ``transparent`` makes cold pixels see-through (alpha follows the heat), for blending the map
    over the scan in the browser the way the stored overlay does.
    """
    from pipeline.io.heatmaps import colormap_lut, load_heatmap, upsample

    try:
        heat = load_heatmap(npz)
    except (OSError, ValueError, KeyError) as exc:
        raise ImageMissing(f"The stored heatmap cannot be read ({exc}).") from exc
    if heat.shape != (size[1], size[0]):
        heat = upsample(heat, size)
    level = np.rint(np.clip(np.nan_to_num(heat), 0.0, 1.0) * 255).astype(np.uint8)
    colour = colormap_lut("turbo")[level]
    return png_bytes(np.dstack([colour, level]) if transparent else colour)
