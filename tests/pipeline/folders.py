"""Builders of small labelled image folders with exact and near duplicates."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

VARIANTS = ("contrast", "crop", "resize", "mirror", "copy")


def scan_like(seed: int, size: int = 160) -> Image.Image:
    """Return a grayscale image with smooth random structure, unlike any other seed's."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8))
    return coarse.resize((size, size), Image.Resampling.BICUBIC)


def variant(image: Image.Image, kind: str) -> Image.Image:
    """Return the same picture with another contrast, a small crop, another size or mirrored."""
    width, height = image.size
    if kind == "contrast":
        return image.point(lambda v: int(40 + v * 0.7))
    if kind == "crop":
        return image.crop((3, 2, width - 2, height - 3))
    if kind == "resize":
        return image.resize((int(width * 1.6), int(height * 1.6)), Image.Resampling.BILINEAR)
    if kind == "mirror":
        return ImageOps.mirror(image)
    return image.copy()


def build_source(root: Path, bases: dict[str, int], variants: int = 2, first_seed: int = 0,
                 folder_names: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Write ``bases[label]`` distinct images per class, each with up to ``variants`` near copies.

    Args:
        root: SRC to create.
        bases: distinct images per class, e.g. ``{"yes": 10, "no": 8}``.
        variants: near copies of every other base image (cycling through ``VARIANTS``).
        first_seed: seed of the first base image; later ones count up.
        folder_names: the folder name per class (default YES and NO).

    Returns:
        For each base image, the SRC-relative paths of it and its copies.
    """
    names = folder_names or {"yes": "YES", "no": "NO"}
    families: dict[str, list[str]] = {}
    seed = first_seed
    for label, count in bases.items():
        folder = root / names[label]
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            base = scan_like(seed)
            members = [_save(base, folder / f"{label}{seed}.png")]
            for k in range(variants if index % 2 == 0 else 0):
                kind = VARIANTS[(index + k) % len(VARIANTS)]
                members.append(_save(variant(base, kind), folder / f"{label}{seed}_{kind}.png"))
            relative = [m.relative_to(root).as_posix() for m in members]
            families[relative[0]] = relative
            seed += 1
    return families


def _save(image: Image.Image, path: Path) -> Path:
    image.save(path)
    return path
