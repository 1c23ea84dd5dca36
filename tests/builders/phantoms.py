"""Images that are clearly not brain MRI: what a model must call outside its experience."""

from __future__ import annotations

import numpy as np
from PIL import Image


def abdomen(size: int = 256, seed: int = 0) -> np.ndarray:
    """Return a gray axial 'abdomen': a wide body, two kidneys, a bright spine, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    image = np.zeros((size, size))
    image[((xx - 0.5) / 0.43) ** 2 + ((yy - 0.5) / 0.31) ** 2 <= 1] = 90
    for centre in (0.35, 0.65):
        image[((xx - centre) / 0.1) ** 2 + ((yy - 0.47) / 0.14) ** 2 <= 1] = 160
    image[((xx - 0.5) / 0.06) ** 2 + ((yy - 0.62) / 0.05) ** 2 <= 1] = 230
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def photo(size: int = 256, seed: int = 0) -> np.ndarray:
    """Return a smooth colourful RGB picture, like a photograph's colour fields."""
    coarse = np.random.default_rng(seed).uniform(0, 255, (8, 8, 3)).astype(np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))


def gradient(size: int = 256) -> np.ndarray:
    """Return a flat left-to-right gray gradient."""
    return np.tile(np.linspace(0, 255, size), (size, 1)).astype(np.uint8)


PHANTOMS = {"abdomen": abdomen, "photo": photo, "gradient": gradient}
