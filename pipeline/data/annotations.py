"""Tumor outlines as boolean masks at the image's original size.

Three sources are read: VGG Image Annotator (VIA) JSON (polygons, rotated ellipses, circles),
YOLO box files (one ``.txt`` per image: ``class cx cy w h`` normalised) and mask images
(``<stem>_mask.png``, white = region, beside the image or in a folder). A NIfTI volume's outlines
are a mask volume named as BraTS names them (``X_seg.nii.gz`` or ``X_mask.nii.gz`` for ``X.nii.gz``,
``<case>_seg.nii.gz`` for ``<case>_flair``/``_t1``/``_t1ce``/``_t2``, and BraTS 2023's ``-seg``
for ``-t1n``/``-t1c``/``-t2w``/``-t2f``), beside the volume or in the folder; this module only
finds it (reading it is ``pipeline.io.nifti``'s, used by evaluation).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MASK_SUFFIX = "_mask.png"
ELLIPSE_POINTS = 90
VOLUME_SUFFIXES = (".nii.gz", ".nii")
MASK_VOLUME_TAGS = ("_seg", "_mask", "-seg")
# A BraTS case's image volumes: <case>_flair, _t1, _t1ce, _t2 (2018-2021), <case>-t1n, -t1c, -t2w,
# -t2f (2023); all share <case>_seg (or <case>-seg).
BRATS_IMAGE = re.compile(r"(?P<case>.+?)(?:(?P<us>_)(?:flair|t1ce|t1|t2)|-(?:t1n|t1c|t2w|t2f))",
                         re.IGNORECASE)


class AnnotationError(ValueError):
    """An annotation file that cannot be read; the message says which and why."""


def _ellipse_points(cx: float, cy: float, rx: float, ry: float, theta: float) -> list[tuple]:
    """Return points on an ellipse rotated by ``theta`` radians (VIA's convention)."""
    angles = np.linspace(0.0, 2.0 * math.pi, ELLIPSE_POINTS, endpoint=False)
    x, y = rx * np.cos(angles), ry * np.sin(angles)
    cos, sin = math.cos(theta), math.sin(theta)
    return list(zip(cx + x * cos - y * sin, cy + x * sin + y * cos))


def _draw_shape(draw: ImageDraw.ImageDraw, shape: dict) -> None:
    kind = shape.get("name")
    if kind == "polygon" or kind == "polyline":
        points = list(zip(shape["all_points_x"], shape["all_points_y"]))
        if len(points) >= 3:
            draw.polygon(points, fill=1, outline=1)
    elif kind == "ellipse":
        draw.polygon(_ellipse_points(shape["cx"], shape["cy"], shape["rx"], shape["ry"],
                                     shape.get("theta", 0.0)), fill=1, outline=1)
    elif kind == "circle":
        cx, cy, r = shape["cx"], shape["cy"], shape["r"]
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=1, outline=1)
    elif kind == "rect":
        x, y = shape["x"], shape["y"]
        draw.rectangle((x, y, x + shape["width"], y + shape["height"]), fill=1, outline=1)
    else:
        raise AnnotationError(f"unsupported VIA shape {kind!r}: expected polygon, ellipse, "
                              "circle or rect")


def shapes_mask(shapes: list[dict], size: tuple[int, int]) -> np.ndarray:
    """Rasterise VIA ``shape_attributes`` dicts into one boolean mask.

    Args:
        shapes: VIA shape dicts in original pixel coordinates.
        size: the image's (width, height).

    Returns:
        (height, width) bool, True inside any shape.
    """
    canvas = Image.new("1", size, 0)
    draw = ImageDraw.Draw(canvas)
    for shape in shapes:
        _draw_shape(draw, shape)
    return np.asarray(canvas, dtype=bool)


def load_via(path: str | Path) -> dict[str, list[dict]]:
    """Return the shapes of a VIA JSON file by image file name (regions of repeated names merge)."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AnnotationError(f"cannot read VIA annotations {path}: {exc}") from exc
    entries = content.get("_via_img_metadata", content)  # a whole VIA project or its export
    shapes: dict[str, list[dict]] = {}
    for entry in entries.values():
        if not isinstance(entry, dict) or "filename" not in entry:
            raise AnnotationError(f"{path} is not VIA JSON: entries need 'filename' and 'regions'")
        regions = entry.get("regions") or []
        if isinstance(regions, dict):  # VIA 1 stored regions keyed by index
            regions = list(regions.values())
        shapes.setdefault(entry["filename"], []).extend(r["shape_attributes"] for r in regions)
    return shapes


def yolo_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Rasterise a YOLO box file (``class cx cy w h`` per line, normalised) into a mask."""
    width, height = size
    canvas = Image.new("1", size, 0)
    draw = ImageDraw.Draw(canvas)
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            cx, cy, w, h = (float(v) for v in fields[1:5])
        except ValueError:
            cx = None
        if cx is None or len(fields) < 5:
            raise AnnotationError(f"{path} line {number}: expected 'class cx cy w h' with "
                                  f"numbers, found {line.strip()!r}")
        draw.rectangle(((cx - w / 2) * width, (cy - h / 2) * height,
                        (cx + w / 2) * width - 1, (cy + h / 2) * height - 1), fill=1)
    return np.asarray(canvas, dtype=bool)


def image_mask(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Read a mask image (white = region), resized (nearest) to ``size`` when it differs."""
    with Image.open(path) as image:
        gray = image.convert("L")
        if gray.size != tuple(size):
            gray = gray.resize(size, Image.Resampling.NEAREST)
        return np.asarray(gray) > 127


def volume_stem(name: str) -> str | None:
    """Return a NIfTI file name without ``.nii`` / ``.nii.gz`` (any case), or None if not NIfTI."""
    lower = name.lower()
    suffix = next((s for s in VOLUME_SUFFIXES if lower.endswith(s)), None)
    return name[:-len(suffix)] if suffix else None


def is_mask_volume(name: str) -> bool:
    """Tell whether a file name is a mask volume's (``*_seg``, ``*_mask``, ``*-seg`` NIfTI)."""
    stem = volume_stem(name)
    return stem is not None and stem.lower().endswith(MASK_VOLUME_TAGS)


def is_outline_file(name: str) -> bool:
    """Tell whether a file name is an outline's, not a scan's: a mask image or a mask volume."""
    return name.endswith(MASK_SUFFIX) or is_mask_volume(name)


def volume_case(name: str) -> str:
    """Return the case (patient) a NIfTI image volume belongs to: its BraTS case, else its stem."""
    stem = volume_stem(name) or name
    brats = BRATS_IMAGE.fullmatch(stem)
    return brats["case"] if brats else stem


def mask_volume_names(name: str) -> list[str]:
    """Return the file names a NIfTI image volume's mask volume may have, the likeliest first."""
    stem = volume_stem(name)
    if stem is None:
        return []
    stems = [stem + "_seg", stem + "_mask"]
    brats = BRATS_IMAGE.fullmatch(stem)
    if brats:
        stems.append(brats["case"] + ("_seg" if brats["us"] else "-seg"))
    return [s + suffix for s in stems for suffix in VOLUME_SUFFIXES]


class Annotations:
    """Finds the region mask of an image from VIA JSON, YOLO files or mask images."""

    def __init__(self, source: str | Path | None = None):
        """Use ``source``: a VIA JSON file or a folder of YOLO ``.txt``/``_mask.png`` files.

        Mask images beside an image are always found, with or without a source.
        """
        self.via: dict[str, list[dict]] = {}
        self.folder: Path | None = None
        self.source = str(source)  # names the outlines in cache keys and reports
        if source is not None:
            source = Path(source)
            if source.is_file():
                self.via = load_via(source)
            elif source.is_dir():
                self.folder = source
            else:
                raise AnnotationError(f"annotations {source} do not exist")

    def _candidates(self, image: Path) -> list[Path]:
        places = [image.parent] + ([self.folder] if self.folder else [])
        return [place / name for place in places
                for name in (image.stem + MASK_SUFFIX, image.stem + ".txt")]

    def has(self, image: str | Path) -> bool:
        """Tell whether an outline of ``image`` is known."""
        image = Path(image)
        return (image.name in self.via or any(c.is_file() for c in self._candidates(image))
                or self.mask_volume(image) is not None)

    def mask_volume(self, image: str | Path) -> Path | None:
        """Return the mask volume of a NIfTI image volume, beside it or in the folder, or None."""
        image = Path(image)
        places = [image.parent] + ([self.folder] if self.folder else [])
        return next((place / name for place in places for name in mask_volume_names(image.name)
                     if (place / name).is_file()), None)

    def mask(self, image: str | Path, size: tuple[int, int]) -> np.ndarray | None:
        """Return the mask of ``image`` at ``size`` (width, height), or None when unannotated."""
        image = Path(image)
        if image.name in self.via:
            return shapes_mask(self.via[image.name], size)
        for candidate in self._candidates(image):
            if candidate.is_file():
                read = yolo_mask if candidate.suffix == ".txt" else image_mask
                return read(candidate, size)
        return None
